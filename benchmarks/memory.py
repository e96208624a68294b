"""Peak memory (RSS) of the members alone against the ensemble, each in a fresh process.

Each child process loads the members, then either runs each member's own greedy ``generate``
and teacher-forced forward (``members``), or the ensemble's ``generate`` and teacher-forced
scoring in the paper's mode (``ensemble``) or the exact mode (``exact``), on the same prompts
and text, or the ensemble's greedy ``generate`` of a left-padded batch of 8 prompts
(``--new-bytes`` / 4 bytes) in either mode (``batch8-chared``, ``batch8-exact``); it reports
its peak resident set size.

    python benchmarks/memory.py [--members stories smollm2] [--new-bytes 256]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from common import PROMPTS, corpus, load_members, peak_rss_mb, print_table, write_json

RUNS = ("members", "ensemble", "exact", "batch8-chared", "batch8-exact")


def child(what: str, names: list[str], new_bytes: int) -> dict:
    import torch

    from chared_hf import ByteTokenizer, CharEDModel

    members = load_members(names)
    loaded = peak_rss_mb()
    text = corpus()[0][1]
    with torch.no_grad():
        if what == "members":
            for model, tokenizer in members.values():
                for prompt in PROMPTS:
                    enc = tokenizer(prompt, return_tensors="pt")
                    model.generate(**enc, max_new_tokens=new_bytes // 3, do_sample=False)
                model(tokenizer(text, return_tensors="pt")["input_ids"])
        elif what.startswith("batch8"):  # a left-padded batch of 8 prompts, greedy
            ens = CharEDModel.from_members([members[n] for n in names],
                                           marginalization=what.split("-")[1])
            tok = ByteTokenizer(padding_side="left")
            enc = tok((PROMPTS * 2)[:8], return_tensors="pt", padding=True)
            ens.generate(**enc, max_new_tokens=new_bytes // 4)
        else:
            ens = CharEDModel.from_members([members[n] for n in names],
                                           marginalization="exact" if what == "exact" else
                                           "chared")
            tok = ByteTokenizer()
            for prompt in PROMPTS if what != "exact" else PROMPTS[:1]:
                ens.generate(**tok(prompt, return_tensors="pt"),
                             max_new_tokens=new_bytes if what != "exact" else 16)
            ens(input_ids=tok(text if what != "exact" else text[:200],
                              return_tensors="pt")["input_ids"])
    return {"run": what, "peak_rss_mb": peak_rss_mb(), "after_loading_mb": loaded}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", nargs="+", default=["stories", "smollm2"])
    parser.add_argument("--new-bytes", type=int, default=256)
    parser.add_argument("--child", choices=list(RUNS))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.members, args.new_bytes)))
        return
    rows = []
    for what in RUNS:
        out = subprocess.run([sys.executable, __file__, "--child", what, "--members",
                              *args.members, "--new-bytes", str(args.new_bytes)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for row in rows:
        row["ratio_to_members"] = row["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    print_table(rows, list(rows[0]))
    path = write_json("memory-" + "+".join(args.members), {"args": vars(args), "rows": rows})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
