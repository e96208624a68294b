"""Teacher-forced scoring: bits per byte, member forwards per byte and time per byte, for the
paper's mode and the exact mode (default bound, a bound of 1, and unbounded on a short text),
against each member's own token-level score of the same text, side by side.

    python benchmarks/scoring.py [--members stories smollm2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math

import torch
from common import load_members, peak_rss_mb, print_table, timed, write_json

from chared_hf import ByteTokenizer, CharEDModel

TEXTS = {
    "story": "Once upon a time, there was a little girl named Lily. She loved to play outside "
             "in the park with her friends. One day, she saw a big red ball under a tree.",
    "code": "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + "
            "fibonacci(n - 2)\n",
    "short": "Once upon",  # for the unbounded exact mode, whose cost grows exponentially
}
MODES = [("chared", None), ("exact", 8), ("exact", 1), ("exact", None)]


def own_bits_per_byte(model, tokenizer, text: str) -> float:
    """The member's own token-level score of its canonical tokenization (after its BOS)."""
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    if tokenizer.bos_token_id is not None and ids[0, 0] != tokenizer.bos_token_id:
        ids = torch.cat([torch.tensor([[tokenizer.bos_token_id]]), ids], 1)
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].double(), -1)
    nats = -sum(float(logp[i, ids[0, i + 1]]) for i in range(ids.shape[1] - 1))
    return nats / math.log(2) / len(text.encode())


def run(names: list[str], repeats: int) -> list[dict]:
    members = load_members(names)
    tok = ByteTokenizer()
    rows = []
    for name in names:
        for label, text in TEXTS.items():
            ids = tok(text, return_tensors="pt")["input_ids"]
            n = len(text.encode())
            pair = members[name]
            own_s, own = timed(lambda pair=pair, text=text: own_bits_per_byte(*pair, text),
                               repeats)
            rows.append({"member": name, "text": label, "mode": "member's own", "bits_per_byte":
                         own, "ms_per_byte": 1000 * own_s / n, "forwards_per_byte": None})
            for mode, k in MODES:
                if k is None and mode == "exact" and label != "short":
                    continue  # exponential in the text length
                ens = CharEDModel.from_members([members[name]], marginalization=mode,
                                               max_hypotheses=k)

                def score(ens=ens, ids=ids):
                    with torch.no_grad():
                        out = ens(input_ids=ids, use_cache=True)
                    lp = out.logits[0, :-1].double().gather(-1, ids[0, 1:, None]).sum()
                    return float(lp), out.cache.forward_calls()[0][0]

                seconds, (lp, calls) = timed(score, repeats)
                rows.append({"member": name, "text": label, "mode": f"{mode} k={k}",
                             "bits_per_byte": -lp / math.log(2) / n,
                             "ms_per_byte": 1000 * seconds / n, "forwards_per_byte": calls / n})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", nargs="+", default=["stories", "smollm2"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = run(args.members, args.repeats)
    print_table(rows, ["member", "text", "mode", "bits_per_byte", "forwards_per_byte",
                       "ms_per_byte"])
    path = write_json("scoring-" + "+".join(args.members),
                      {"args": vars(args), "rows": rows, "peak_rss_mb": peak_rss_mb()})
    print(f"peak RSS {peak_rss_mb():.0f} MB; written to {path}")


if __name__ == "__main__":
    main()
