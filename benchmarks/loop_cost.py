"""What Transformers' generation loop costs per byte, against the smallest loop that could
replace it: the decision between the two, measured.

Both drive the same ensemble forward (``CharEDModel.forward``, its cache carried between
calls) greedily for at most ``--new-bytes`` bytes (a row's end of text ends it, padding after)
and must give the same bytes. The *loop's own cost*
is wall time minus the time inside the ensemble's forward: for ``generate``, logits
processors, stopping criteria, input bookkeeping and output objects; for the minimal loop, an
argmax and a concatenation. Medians of ``--repeats``, one thread, alternating the two:

    python benchmarks/loop_cost.py [--members demo|pair] [--batch 1 8] [--new-bytes 64]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import PROMPTS, CallTimer, load_members, print_table, write_json

from chared_hf import ByteTokenizer, CharEDModel
from chared_hf.decoding.cache import EnsembleCache
from chared_hf.tokenization import EOS_ID, PAD_ID


def with_generate(model, enc, new_bytes):
    """Transformers' own loop (``generate`` runs the package's by default, which calls no
    ``forward``; ``benchmarks/overhead.py`` compares the two)."""
    return model.generate(**enc, max_new_tokens=new_bytes, do_sample=False,
                          loop="transformers")


def with_minimal_loop(model, enc, new_bytes):
    """Greedy: forward, argmax, append (padding after a row's end of text); the ensemble's
    cache carried between calls."""
    ids, cache = enc["input_ids"], EnsembleCache(decide="greedy")
    done = torch.zeros(len(ids), dtype=torch.bool)
    out = model(input_ids=ids, attention_mask=enc["attention_mask"], cache=cache)
    for step in range(new_bytes):
        chosen = out.logits[:, -1].argmax(-1).masked_fill(done, PAD_ID)
        ids = torch.cat([ids, chosen[:, None]], dim=1)
        done |= chosen == EOS_ID
        if step == new_bytes - 1 or bool(done.all()):
            return ids
        out = model(input_ids=ids[:, -1:], cache=cache)
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", choices=["pair", "demo"], default="demo")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--new-bytes", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.members == "demo":
        from chared_hf.demo import load_demo

        pairs = [(m.model, m.tokenizer) for m in load_demo(weighting="fixed").members]
    else:
        loaded = load_members(["stories", "smollm2"])
        pairs = [loaded["stories"], loaded["smollm2"]]
    model = CharEDModel.from_members(pairs, marginalization="chared")
    timer = CallTimer(model, "forward")  # the ensemble's whole per-byte work
    tok = ByteTokenizer(padding_side="left")
    rows = []
    for batch in args.batch:
        enc = tok((PROMPTS * batch)[:batch], return_tensors="pt", padding=True)
        loops = {"generate": with_generate, "minimal loop": with_minimal_loop}
        texts, costs = {}, {name: [] for name in loops}
        for repeat in range(args.repeats + 1):  # the first round warms up
            for name, loop in loops.items():
                timer.reset()
                start = time.perf_counter()
                with torch.no_grad():
                    out = loop(model, enc, args.new_bytes)
                wall = time.perf_counter() - start
                steps = out.shape[1] - enc["input_ids"].shape[1]
                if repeat:
                    costs[name].append((wall - timer.seconds) / steps * 1000)
                texts[name] = out[:, enc["input_ids"].shape[1]:].tolist()
        if texts["generate"] != texts["minimal loop"]:
            raise SystemExit("the two loops gave different bytes")
        for name in loops:
            rows.append({"batch": batch, "loop": name,
                         "loop's own ms per step": statistics.median(costs[name])})
    print_table(rows, ["batch", "loop", "loop's own ms per step"])
    path = write_json(f"loop-cost-{args.members}", {"args": vars(args), "rows": rows})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
