"""Long generations: memory stays within the members' KV caches for the kept context, and a
context longer than a member's window follows the documented policy (keep the start ids and
the most recent 3/4 of the window, run them again, warn once)."""

from __future__ import annotations

import warnings

import pytest
import torch
from transformers import LogitsProcessor, set_seed

from chared_hf import ByteTokenizer, CharEDModel, EnsembleCache
from chared_hf.demo import load_demo


class _Watch(LogitsProcessor):
    """Records every member's cache size (slots) and committed length at each step."""

    def __init__(self, cache: EnsembleCache):
        self.cache, self.sizes, self.lengths = cache, [], []

    def __call__(self, input_ids, scores):
        self.sizes.append([tree.size for tree in self.cache.trees])
        self.lengths.append([_committed(m) for m in self.cache.rows[0].members])
        return scores


def _committed(member) -> int:
    """A member's longest context: its committed tokens (paper mode) or its longest
    hypothesis (exact mode)."""
    nodes = [h.node for h in member.hyps] if hasattr(member, "hyps") else [member.node]
    return max((len(n) for n in nodes if n is not None), default=0)


def _long_run(window: int, new_bytes: int, mode: str):
    demo = load_demo()
    members = [(m.model, m.tokenizer) for m in demo.members]
    model = CharEDModel.from_members(members, marginalization=mode)
    for m in model.members:  # a short window, so that the policy acts many times
        m.window = window
    cache = EnsembleCache(decide="sample")
    watch = _Watch(cache)
    tok = ByteTokenizer()
    set_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = model.generate(**tok("Once upon a time", return_tensors="pt"), cache=cache,
                             max_new_tokens=new_bytes, min_new_tokens=new_bytes, do_sample=True,
                             top_k=0, logits_processor=[watch])
    return out, watch, [str(w.message) for w in caught]


def _check(window: int, new_bytes: int, mode: str = "chared"):
    out, watch, messages = _long_run(window, new_bytes, mode)
    assert out.shape[1] == len("Once upon a time") + 1 + new_bytes
    # Each member's committed context never passes its window...
    assert max(max(lengths) for lengths in watch.lengths) <= window
    # ...and its cache stays under a few windows whatever the length: unused slots are dropped
    # once they outnumber the used ones (plus a slack of 64), and a crop runs 3/4 of a
    # window again before the old slots go. The paper mode uses one context (three windows);
    # the exact mode up to K = 8 hypotheses that share their prefixes, and the tokens its
    # calls run ahead (here at most 474 slots in 600 bytes and 534 in 1,500: 12 windows).
    bound = 3 * window + 64 if mode == "chared" else 12 * window + 64
    assert max(max(sizes) for sizes in watch.sizes) <= bound
    # The policy warns once per member, naming it.
    window_warnings = [m for m in messages if "context longer than its window" in m]
    assert sorted(window_warnings) == sorted(
        f"member {name!r}: context longer than its window of {window} tokens; keeping the "
        "most recent tokens" for name in ("stories260K", "pycode"))


@pytest.mark.parametrize("mode", ["exact", "chared"])
def test_a_long_run_stays_within_the_window(mode):
    torch.manual_seed(0)
    _check(window=48, new_bytes=600, mode=mode)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["exact", "chared"])
def test_5000_bytes_keep_memory_flat(mode):
    _check(window=256, new_bytes=5000, mode=mode)
