"""Greedy texts of the real pair, to check that a change of the decoding machinery leaves them
identical (what a refactor or a speed-up must not move).

stories260K + SmolLM2-135M-Instruct (weights 0.5/0.5 and 0.1/0.9), greedy, ``--new-bytes`` new
bytes after
each benchmark prompt, in the paper mode and the exact mode (the default), one row at a time
and as one left-padded batch of all prompts, through ``generate``. ``--write FILE`` records the
texts; ``--check FILE`` generates them again and lists every text that differs (exit 1).

    python benchmarks/greedy_outputs.py --write benchmarks/data/greedy_reference.json
    python benchmarks/greedy_outputs.py --check benchmarks/data/greedy_reference.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from common import PROMPTS, load_members

from chared_hf import ByteTokenizer, CharEDModel

MODES = ("chared", "exact")
WEIGHTS = ((0.5, 0.5), (0.1, 0.9))


def texts(new_bytes: int) -> dict[str, list[str]]:
    """``{"<mode>, <weights>, batch <n>": [text per prompt]}`` for both modes and weights, one
    row at a time and all prompts as one batch."""
    loaded = load_members(["stories", "smollm2"])
    pairs = [loaded["stories"], loaded["smollm2"]]
    tok = ByteTokenizer(padding_side="left")
    out: dict[str, list[str]] = {}
    for mode, weights in ((m, w) for m in MODES for w in WEIGHTS):
        model = CharEDModel.from_members(pairs, marginalization=mode, weights=list(weights))
        case = f"{mode}, {weights[0]}/{weights[1]}"
        alone = []
        for prompt in PROMPTS:
            ids = model.generate(**tok(prompt, return_tensors="pt"), max_new_tokens=new_bytes)
            alone.append(tok.decode(ids[0], skip_special_tokens=True))
        out[f"{case}, batch 1"] = alone
        enc = tok(PROMPTS, return_tensors="pt", padding=True)
        ids = model.generate(**enc, max_new_tokens=new_bytes)
        out[f"{case}, batch {len(PROMPTS)}"] = tok.batch_decode(ids, skip_special_tokens=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--write", type=Path, help="record the texts in this JSON file")
    what.add_argument("--check", type=Path, help="compare the texts with this JSON file")
    parser.add_argument("--new-bytes", type=int, default=48, help="new bytes per prompt "
                        "(default 48; --check uses the file's)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.write:
        found = texts(args.new_bytes)
        args.write.write_text(json.dumps({"new_bytes": args.new_bytes, "texts": found},
                                         indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {sum(map(len, found.values()))} texts to {args.write}")
        return 0
    reference = json.loads(args.check.read_text())
    found = texts(reference["new_bytes"])
    differ = [(case, i, want, got) for case, wanted in reference["texts"].items()
              for i, (want, got) in enumerate(zip(wanted, found[case], strict=True))
              if want != got]
    for case, i, want, got in differ:
        print(f"{case}, prompt {i}:\n  reference {want!r}\n  now       {got!r}")
    total = sum(map(len, reference["texts"].values()))
    print(f"{total - len(differ)}/{total} texts identical")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
