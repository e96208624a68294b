"""What the exact mode's pruning costs and drops: bits per byte, the certified interval the
unbounded exact mode lies in, and the work, for a count bound K with relative floors θ, with
and without running ahead along the known text (side by side in one run).

Each member alone (one-member exact ensembles, so the interval is defined), teacher-forced
over the first ``--bytes`` bytes of each corpus chunk (``common.corpus``: a children's story,
HumanEval solutions, GSM8K answers), one thread:

    python benchmarks/pruning.py [--members stories smollm2] [--bytes 120] [--k 8]
        [--floors 0 1e-4 1e-3 1e-2] [--no-compare] [--lineages] [--children]

Reported per member and θ: bits per byte (every byte counted), the interval
``[lower, upper]`` and its width relative to the figure, ms per byte, and the member's forward
calls and tokens per byte (with ``--own``, the member's own forward over the same texts: its
bits per byte, time and the ratio). Each setting runs ahead (``run_ahead_bytes``) from the
heaviest hypothesis, with the lighter ones' next tokens (``Speculation.lineage_tokens``), and
once without running ahead (``--no-compare``: not); ``--lineages`` adds a run from the
heaviest hypothesis only, ``--children`` one from every child a call runs too
(``run_ahead_children``).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
from common import ForwardClock, corpus, load_members, print_table, write_json

from chared_hf import CharEDModel
from chared_hf.decoding.speculation import Speculation
from chared_hf.tools.scoring import LN2, exact_score, own_logprob


def run(pair, texts: list[str], k: int, floor: float, ahead: str, own: bool = False
        ) -> dict:
    default = Speculation()
    ens = CharEDModel.from_members([pair], marginalization="exact", max_hypotheses=k,
                                   prune_below=floor,
                                   run_ahead_bytes=default.run_ahead_bytes if ahead != "no" else 0,
                                   run_ahead_children=ahead == "from every child")
    ens.speculation = dataclasses.replace(
        ens.speculation,
        lineage_tokens=0 if ahead == "from the best only" else default.lineage_tokens)
    clock = ForwardClock([pair[0]])
    nats, lower, upper, n = 0.0, 0.0, 0.0, 0
    start = time.perf_counter()
    for text in texts:
        result = exact_score(ens, text)
        nats += float(result.byte_logprobs.sum())
        lower, upper = lower + result.bounds[0], upper + result.bounds[1]
        n += len(result.byte_logprobs)
    seconds = time.perf_counter() - start
    for handle in clock.handles:
        handle.remove()
    bits = -nats / LN2 / n
    low, high = -upper / LN2 / n, -lower / LN2 / n
    out = {"bits_per_byte": bits, "interval": f"[{low:.4f}, {high:.4f}]",
           "width_%": 100 * (high - low) / bits, "ms_per_byte": 1000 * seconds / n,
           "calls_per_byte": clock.calls / n, "tokens_per_byte": clock.tokens / n}
    if own:  # the member's own forward over its tokenization of the same texts
        start = time.perf_counter()
        own_nats = sum(own_logprob(*pair, text) for text in texts)
        own_seconds = time.perf_counter() - start
        out.update(own_bits_per_byte=-own_nats / LN2 / n, own_ms_per_byte=1000 * own_seconds / n,
                   ratio_to_own=seconds / own_seconds)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", nargs="+", default=["stories", "smollm2"])
    parser.add_argument("--bytes", type=int, default=120)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--floors", type=float, nargs="+", default=[0.0, 1e-4, 1e-3, 1e-2])
    parser.add_argument("--no-compare", action="store_true",
                        help="run ahead only (no side-by-side run without it)")
    parser.add_argument("--own", action="store_true",
                        help="also time the member's own forward over the same texts")
    parser.add_argument("--lineages", action="store_true",
                        help="also run ahead from the heaviest hypothesis only, without the "
                             "lighter ones' next tokens (lineage_tokens=0)")
    parser.add_argument("--children", action="store_true",
                        help="also run ahead from every child a call runs "
                             "(run_ahead_children, the default on accelerators)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    members = load_members(args.members)
    texts = [c.encode()[:args.bytes].decode("utf-8", "ignore") for _, c in corpus()]
    rows = []
    for name in args.members:
        for floor in args.floors:
            modes = (["from the best"] + ["from the best only"] * args.lineages +
                     ["from every child"] * args.children + ([] if args.no_compare else ["no"]))
            for ahead in modes:
                rows.append({"member": name, "K": args.k, "prune_below": floor,
                             "run_ahead": ahead, **run(members[name], texts, args.k, floor,
                                                       ahead, own=args.own)})
                print(rows[-1], flush=True)
    print_table(rows, ["member", "K", "prune_below", "run_ahead", "bits_per_byte", "interval",
                       "width_%", "ms_per_byte", "calls_per_byte", "tokens_per_byte"] + (
                           ["own_bits_per_byte", "own_ms_per_byte", "ratio_to_own"] * args.own))
    path = write_json("pruning", {"args": vars(args), "rows": rows})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
