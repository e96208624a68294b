"""The ``chared`` command line: generate text with an ensemble of local or Hub models.

Only ``chared generate`` exists for now; it streams the text as it is produced. It does not
score or evaluate (later subcommands will).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TextStreamer, set_seed

from .modeling import CharEDModel
from .tokenization import ByteTokenizer


def load_member(ref: str):
    """A (model, tokenizer) pair from a Hub id, a model folder, or a ``.gguf`` file."""
    path = Path(ref)
    if path.suffix == ".gguf":
        from .gguf import load_gguf

        return load_gguf(path)
    model = AutoModelForCausalLM.from_pretrained(ref).eval()
    return model, AutoTokenizer.from_pretrained(ref)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chared", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="generate text after PROMPT, streaming it")
    gen.add_argument("prompt", help="the text to continue")
    gen.add_argument("--member", action="append", required=True,
                     help="a Hub id, a model folder or a .gguf file (repeat for each member)")
    gen.add_argument("--weights", type=float, nargs="+", help="one weight per member")
    gen.add_argument("--combine", default="mixture", choices=["mixture", "product"])
    gen.add_argument("--max-new-bytes", type=int, default=200, help="bytes to generate")
    gen.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    gen.add_argument("--temperature", type=float, default=1.0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.max_new_bytes < 1:
        raise SystemExit("chared: --max-new-bytes must be at least 1")
    members = [load_member(ref) for ref in args.member]
    try:
        model = CharEDModel.from_members(members, weights=args.weights, combine=args.combine)
    except ValueError as err:
        raise SystemExit(f"chared: {err}") from None
    tok = ByteTokenizer()
    set_seed(args.seed)
    sampling = dict(do_sample=True, temperature=args.temperature, top_p=args.top_p, top_k=0)
    sys.stdout.write(args.prompt)
    with torch.no_grad():
        model.generate(
            **tok(args.prompt, return_tensors="pt"),
            max_new_tokens=args.max_new_bytes,
            streamer=TextStreamer(tok, skip_prompt=True, skip_special_tokens=True),
            **(sampling if args.sample else {}),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
