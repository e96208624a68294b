"""Which cache layout a batch's member calls should use: measured, one forward call at a time.

The paper mode runs the queued tokens of all rows of a batch in one forward call per member.
Two layouts of that call:

  * ``shared`` (today's ``TokenTree``): every row's tokens in one batch row of the cache; a
    call runs only the rows' queued tokens (``q`` of them), each attending through a dense mask
    over all rows' slots (``rows x context``): attention and the mask grow with rows².
  * ``lanes``: each row in its own batch row of the cache; a call runs one token per row, a
    padding token for a row that queued nothing: attention grows with rows, but every row
    costs a token's MLP.

A random-weight member at SmolLM2-135M's shape (GPT-2's 50k vocabulary), one thread, the
median of ``--repeats`` calls after the cache is filled; ``--device cuda`` on a GPU:

    python benchmarks/tree_layout.py [--rows 8 32] [--context 256 2048] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import print_table, write_json
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

SMOLLM2_135M = {"hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
                "num_key_value_heads": 3, "intermediate_size": 1536}


def filled_cache(model, batch: int, slots: int, device) -> DynamicCache:
    """A cache of ``slots`` random keys and values per batch row, in the model's dtype."""
    c = model.config
    shape = (batch, c.num_key_value_heads, slots, c.hidden_size // c.num_attention_heads)
    return DynamicCache(ddp_cache_data=[
        (torch.randn(shape, device=device, dtype=model.dtype),
         torch.randn(shape, device=device, dtype=model.dtype))
        for _ in range(c.num_hidden_layers)])


def one_call(model, input_ids, mask, positions, cache) -> float:
    """Seconds for one forward call (the cache is cut back afterwards, so calls repeat)."""
    lengths = [layer.keys.shape[-2] for layer in cache.layers]
    start = time.perf_counter()
    with torch.no_grad():
        model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
              past_key_values=cache, use_cache=True)
    if input_ids.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    for layer, n in zip(cache.layers, lengths, strict=True):
        layer.keys, layer.values = layer.keys[..., :n, :], layer.values[..., :n, :]
    return seconds


def shared(model, rows: int, context: int, queued: int, device, repeats: int) -> float:
    """``queued`` tokens in one batch row; each sees its own row's ``context`` slots."""
    n = rows * context
    visible = torch.zeros(queued, n + queued, dtype=torch.bool)
    for q in range(queued):  # query q belongs to row q; its row's slots are a block
        visible[q, q * context:(q + 1) * context] = True
        visible[q, n + q] = True
    mask = torch.zeros(queued, n + queued, dtype=model.dtype).masked_fill_(
        ~visible, torch.finfo(model.dtype).min)[None, None].to(device)
    ids = torch.ones(1, queued, dtype=torch.long, device=device)
    pos = torch.full((1, queued), context, dtype=torch.long, device=device)
    cache = filled_cache(model, 1, n, device)
    one_call(model, ids, mask, pos, cache)  # warm-up
    return statistics.median(one_call(model, ids, mask, pos, cache) for _ in range(repeats))


def lanes(model, rows: int, context: int, device, repeats: int) -> float:
    """One token per row (a padding token where a row queued nothing), each in its own row."""
    mask = torch.zeros(rows, 1, 1, context + 1, dtype=model.dtype, device=device)
    ids = torch.ones(rows, 1, dtype=torch.long, device=device)
    pos = torch.full((rows, 1), context, dtype=torch.long, device=device)
    cache = filled_cache(model, rows, context, device)
    one_call(model, ids, mask, pos, cache)
    return statistics.median(one_call(model, ids, mask, pos, cache) for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--context", type=int, nargs="+", default=[256, 2048])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50257, max_position_embeddings=8192,
                         attn_implementation="sdpa", **SMOLLM2_135M)
    with torch.device(args.device):
        model = LlamaForCausalLM(config).to(getattr(torch, args.dtype)).eval()
    table = []
    for rows in args.rows:
        for context in args.context:
            lane = lanes(model, rows, context, args.device, args.repeats)
            for queued in sorted({max(1, rows // 4), rows}):
                table.append({
                    "rows": rows, "context": context, "queued tokens": queued,
                    "shared ms": 1000 * shared(model, rows, context, queued, args.device,
                                               args.repeats),
                    "lanes ms": 1000 * lane})
                print(table[-1], flush=True)
    print_table(table, ["rows", "context", "queued tokens", "shared ms", "lanes ms"])
    path = write_json(f"tree-layout-{args.device}", {"args": vars(args), "rows": table})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
