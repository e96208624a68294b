"""A long generation: speed and memory per segment of 500 bytes, over 5,000 bytes.

The demo ensemble (stories260K + the package's code model) samples 5,000 bytes after "Once
upon a time"; for every 500 bytes the script reports the seconds taken, the process's resident
memory and each member's KV-cache slots and committed tokens. ``--window`` shortens the members'
context window so that the window policy acts (default: their own, 2048 and 1024 tokens).

    python benchmarks/long_run.py [--bytes 5000] [--window 256]
"""

from __future__ import annotations

import argparse
import time

import psutil
import torch
from common import report
from transformers import LogitsProcessor, set_seed

from chared_hf import ByteTokenizer, EnsembleCache
from chared_hf.demo import load_demo


def _committed(member):
    """A row member's committed tokens: the paper mode's node, the exact mode's best
    hypothesis' node."""
    if getattr(member, "node", None) is not None:
        return member.node
    best = getattr(member, "best", None)
    return best.node if best is not None else None


class Segments(LogitsProcessor):
    """Every ``every`` bytes: time since the last mark, RSS, cache slots, committed tokens."""

    def __init__(self, cache: EnsembleCache, every: int):
        self.cache, self.every, self.rows, self.steps = cache, every, [], 0
        self.last = time.perf_counter()

    def __call__(self, input_ids, scores):
        self.steps += 1
        if self.steps % self.every == 0:
            now = time.perf_counter()
            members = self.cache.rows[0].members
            self.rows.append({
                "bytes": self.steps, "seconds": round(now - self.last, 3),
                "rss_mb": round(psutil.Process().memory_info().rss / 2**20),
                "cache_slots": "/".join(str(t.size) for t in self.cache.trees),
                "committed_tokens": "/".join(str(len(node)) for node in map(_committed,
                                                                            members)
                                             if node is not None)})
            self.last = now
        return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bytes", type=int, default=5000)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--window", type=int, default=None)
    parser.set_defaults(members=["demo"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, tok = load_demo(), ByteTokenizer()
    if args.window:
        for m in model.members:
            m.window = args.window
    cache = EnsembleCache(decide="sample")
    watch = Segments(cache, args.every)
    set_seed(0)
    model.generate(**tok("Once upon a time", return_tensors="pt"), cache=cache,
                   max_new_tokens=args.bytes, min_new_tokens=args.bytes, do_sample=True,
                   top_k=0, logits_processor=[watch])
    report("long_run", args, watch.rows)


if __name__ == "__main__":
    main()
