"""Batched generation: 8 prompts in one ``generate`` call against 8 calls one after another.

Greedy, the ensemble of the given members; medians over repeats of the wall time of each way,
the throughput ratio, and whether both ways give the same texts.

    python benchmarks/batch.py [--members stories smollm2] [--new-bytes 64] [--repeats 3]
        [--marginalization chared|exact]
"""

from __future__ import annotations

import argparse

import torch
from common import PROMPTS, load_members, report, timed

from chared_hf import ByteTokenizer, CharEDModel

BATCH = [*PROMPTS, "One day, Lily found a", "import numpy as np\n", "The cat sat on the"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", nargs="+", default=["stories", "smollm2"])
    parser.add_argument("--new-bytes", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--marginalization", choices=["chared", "exact"], default="exact")
    args = parser.parse_args()
    members = load_members(args.members)
    ens = CharEDModel.from_members([members[n] for n in args.members],
                                   marginalization=args.marginalization)
    tok = ByteTokenizer()
    kwargs = dict(max_new_tokens=args.new_bytes)

    def one_by_one():
        return [ens.generate(**tok(p, return_tensors="pt"), **kwargs)[0] for p in BATCH]

    def together():
        return ens.generate(**tok(BATCH, return_tensors="pt", padding=True), **kwargs)

    with torch.no_grad():
        seq_s, singles = timed(one_by_one, args.repeats)
        bat_s, batched = timed(together, args.repeats)
    same = all(bytes(i for i in s.tolist() if i < 256) == bytes(i for i in b.tolist() if i < 256)
               for s, b in zip(singles, batched, strict=True))
    rows = [{"members": "+".join(args.members), "mode": args.marginalization,
             "prompts": len(BATCH),
             "new_bytes": args.new_bytes, "sequential_s": seq_s, "batched_s": bat_s,
             "throughput_ratio": seq_s / bat_s, "same_texts": same}]
    report("batch", args, rows)


if __name__ == "__main__":
    main()
