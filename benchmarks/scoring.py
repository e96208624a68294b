"""Teacher-forced scoring over about 20 KB of text, ensembles against their members' own
token-level forward, side by side.

The corpus (``common.corpus``): a children's story, HumanEval canonical solutions and GSM8K
answers, in chunks of about 1,500 bytes, each scored from its start (after the member's BOS)
identically for the members and the ensembles. Reported per configuration: bits per byte,
ms per byte, member forward calls and tokens run per byte, and the ratio of its time to the
sum of its members' own time on the same text. Every byte counts: one the ensemble gives
probability zero (the paper's mode conditions each member on one tokenization, which can fail
to spell the text) makes bits per byte infinite, and such bytes are counted. The exact mode
runs on the first ``--exact-bytes`` bytes of each chunk (the default bound) and the first
``--unbounded-bytes`` (unbounded: its cost grows exponentially with the length), against the
members' own forward on the same prefixes.

    python benchmarks/scoring.py [--members stories smollm2] [--repeats 3] [--no-corpus]
        [--corpus-exact]
"""

from __future__ import annotations

import argparse
import math

import torch
from common import corpus, load_members, report, timed

from chared_hf import ByteTokenizer, CharEDModel


def own_score(model, tokenizer, texts: list[str]) -> float:
    """The member's own log-probability (nats) of each text's canonical tokenization after
    its BOS, one forward per text."""
    total = 0.0
    for text in texts:
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else (
            tokenizer.eos_token_id)
        ids = torch.cat([torch.tensor([[start]]), ids], 1)
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0].double(), -1)
        total += float(logp[:-1].gather(-1, ids[0, 1:, None]).sum())
    return total


def ensemble_score(ens: CharEDModel, texts: list[str]):
    """The ensemble's log-probability (nats; ``-inf`` if a byte has probability zero) of the
    texts after ``<s>``, the number of bytes it gives probability zero, and its members'
    forward calls and tokens run."""
    tok = ByteTokenizer()
    total, impossible = 0.0, 0
    calls, tokens = [0] * len(ens.members), [0] * len(ens.members)
    for text in texts:
        ids = tok(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = ens(input_ids=ids)
        logp = out.logits[0, :-1].double().gather(-1, ids[0, 1:, None])
        total += float(logp.sum())
        impossible += int(torch.isneginf(logp).sum())
        calls = [a + b for a, b in zip(calls, out.cache.forward_calls()[0], strict=True)]
        tokens = [a + b for a, b in zip(tokens, out.cache.forward_tokens()[0], strict=True)]
    return (total, impossible), calls, tokens


def rows_for(members: dict, names: list[str], span: str, texts: list[str], modes, repeats: int):
    """Rows for each member alone (own forward), then each ensemble configuration."""
    n = sum(len(t.encode()) for t in texts)
    rows, own = [], {}
    for name in names:
        seconds, nats = timed(lambda name=name: own_score(*members[name], texts), repeats)
        own[name] = seconds
        rows.append(_row(name, "member's own", span, n, (nats, 0), seconds, None, None, seconds))
    for config in [[name] for name in names] + ([names] if len(names) > 1 else []):
        for mode, k in modes:
            ens = CharEDModel.from_members([members[c] for c in config], marginalization=mode,
                                           max_hypotheses=k)
            seconds, (nats, calls, tokens) = timed(lambda ens=ens: ensemble_score(ens, texts),
                                                   repeats)
            label = mode if mode == "chared" else f"exact K={k}"
            rows.append(_row("+".join(config), label, span, n, nats, seconds, calls, tokens,
                             sum(own[c] for c in config)))
    return rows


def _row(config, mode, span, n, score, seconds, calls, tokens, own_seconds) -> dict:
    nats, impossible = score
    return {"config": config, "mode": mode, "text": span, "bytes": n,
            "bits_per_byte": -nats / math.log(2) / n,  # inf when a byte had probability 0
            "impossible_bytes": impossible, "ms_per_byte": 1000 * seconds / n,
            "calls_per_byte": None if calls is None else "/".join(f"{c / n:.3g}" for c in calls),
            "tokens_per_byte": None if tokens is None else "/".join(
                f"{t / n:.3g}" for t in tokens),
            "ratio_to_own": seconds / own_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", nargs="+", default=["stories", "smollm2"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--exact-bytes", type=int, default=100)
    parser.add_argument("--unbounded-bytes", type=int, default=9)
    parser.add_argument("--exact-repeats", type=int, default=2)
    parser.add_argument("--no-corpus", action="store_true",
                        help="leave out the whole-corpus rows (the prefixes only)")
    parser.add_argument("--corpus-exact", action="store_true",
                        help="score the whole corpus in the exact mode (K=8) too")
    args = parser.parse_args()
    torch.set_num_threads(1)
    members = load_members(args.members)
    chunks = [text for _, text in corpus()]
    corpus_modes = [("chared", None)] + [("exact", 8)] * args.corpus_exact
    rows = [] if args.no_corpus else rows_for(members, args.members, "corpus", chunks,
                                              corpus_modes, args.repeats)
    prefix = [c.encode()[:args.exact_bytes].decode("utf-8", "ignore") for c in chunks]
    rows += rows_for(members, args.members, f"first {args.exact_bytes} B", prefix,
                     [("chared", None), ("exact", 8)], args.exact_repeats)
    tiny = [c.encode()[:args.unbounded_bytes].decode("utf-8", "ignore") for c in chunks]
    rows += rows_for(members, args.members, f"first {args.unbounded_bytes} B", tiny,
                     [("chared", None), ("exact", 8), ("exact", None)], args.exact_repeats)
    report("scoring", args, rows)


if __name__ == "__main__":
    main()
