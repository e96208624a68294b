"""What the exact mode's prompt head changes: the first new byte's distribution and the greedy
text, reading the prompt's last N tokens over every tokenization (``exact_prompt_tokens=N``)
against reading the whole prompt that way (``None``), stories260K + SmolLM2 at the fitted
weights, on HumanEval prompts and the five benchmark prompts.

For each N: the total variation distance between the two first-byte distributions per
prompt, whether the ``--new-bytes`` greedy continuations are the same, and the time of all
prompts (prompt read and continuation) in each setting, one after the other.

With ``--read K``, first the cost of reading each of the first K HumanEval prompts alone (one
new byte): seconds and member calls in the paper mode, the exact mode reading the whole prompt
and the exact mode with the default head.

    python benchmarks/prompt_head.py [--tokens 2 4 8] [--humaneval 3:7] [--new-bytes 48]
        [--read 3]
"""

from __future__ import annotations

import argparse
import time

import torch
from common import PROMPTS, load_members, print_table, write_json

from chared_hf import ByteTokenizer, CharEDModel
from chared_hf.tools import tasks


def first_bytes(model: CharEDModel, prompts: list[str], new_bytes: int):
    """Per prompt: the first new byte's distribution and the greedy continuation's ids; and
    the seconds all of them took."""
    tok, out, start = ByteTokenizer(), [], time.perf_counter()
    for prompt in prompts:
        enc = tok(prompt, return_tensors="pt")
        with torch.no_grad():
            res = model.generate(**enc, max_new_tokens=new_bytes, return_dict_in_generate=True,
                                 output_scores=True)
        out.append((torch.softmax(res.scores[0][0].double(), -1),
                    res.sequences[0, enc["input_ids"].shape[1]:].tolist()))
    return out, time.perf_counter() - start


def reading_rows(members: dict, weights, n: int) -> list[dict]:
    """Seconds and member calls to read each of the first ``n`` HumanEval prompts (and pick one
    byte) in the paper mode, the exact mode reading it whole and with the default head."""
    tok, rows = ByteTokenizer(), []
    modes = {"paper": {"marginalization": "chared"}, "exact, whole prompt":
             {"exact_prompt_tokens": None}, "exact, default head": {}}
    for i, problem in enumerate(tasks.load_humaneval()[:n]):
        enc = tok(problem["prompt"], return_tensors="pt")
        for mode, kwargs in modes.items():
            model = CharEDModel.from_members([members["stories"], members["smollm2"]],
                                             weights=weights, **kwargs)
            start = time.perf_counter()
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=1, return_dict_in_generate=True)
            rows.append({"prompt": f"HumanEval/{i}", "bytes": len(problem["prompt"].encode()),
                         "mode": mode, "seconds": time.perf_counter() - start,
                         "calls": "/".join(map(str, out.cache.forward_calls()[0]))})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="*", default=[2, 4, 8])
    parser.add_argument("--humaneval", default="3:7", help="a slice of the problems")
    parser.add_argument("--new-bytes", type=int, default=48)
    parser.add_argument("--weights", type=float, nargs=2, default=[0.0014, 0.9986])
    parser.add_argument("--read", type=int, default=0, metavar="K")
    args = parser.parse_args()
    torch.set_num_threads(1)
    members = load_members(["stories", "smollm2"])
    if args.read:
        read = reading_rows(members, args.weights, args.read)
        print_table(read, list(read[0]))
        if not args.tokens:
            return
    lo, hi = (int(x) for x in args.humaneval.split(":"))
    names = [f"HumanEval/{i}" for i in range(lo, hi)] + [p[:16] for p in PROMPTS]
    prompts = [p["prompt"] for p in tasks.load_humaneval()[lo:hi]] + PROMPTS

    def ensemble(tokens):
        return CharEDModel.from_members([members["stories"], members["smollm2"]],
                                        weights=args.weights, exact_prompt_tokens=tokens)

    whole, whole_s = first_bytes(ensemble(None), prompts, args.new_bytes)
    rows, times = [], {"whole prompt": whole_s}
    for n in args.tokens:
        head, seconds = first_bytes(ensemble(n), prompts, args.new_bytes)
        times[f"last {n} tokens"] = seconds
        for name, (d0, t0), (d1, t1) in zip(names, whole, head, strict=True):
            rows.append({"tokens": n, "prompt": name.replace("\n", "\\n"),
                         "total_variation": 0.5 * float((d0 - d1).abs().sum()),
                         "same_text": t0 == t1})
    print_table(rows, list(rows[0]))
    print("seconds: " + "; ".join(f"{k} {v:.1f}" for k, v in times.items()))
    path = write_json("prompt-head", {"args": vars(args), "rows": rows, "seconds": times})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
