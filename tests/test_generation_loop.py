"""The package's own decoding loop (``chared_hf.generation``, the default of ``generate``)
against Transformers' loop (``loop="transformers"``): the same bytes, scores, logits, streamed
text and random draws for every flag a user may pass, and one copy to the host per step."""

from __future__ import annotations

import sys

import pytest
import torch
from conftest import piece_tokenizer, tiny_model
from transformers import LogitsProcessor, LogitsProcessorList, TextStreamer, set_seed

from chared_hf import ByteTokenizer, CharEDModel
from chared_hf.tokenization import PAD_ID

PROMPTS = ["Once upon a time", "The dog", "abc a"]


class _BanByte(LogitsProcessor):
    """Bans one byte (mid-token, it can leave a row no byte: the loop's step 4)."""

    def __init__(self, byte: int):
        self.byte = byte

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        scores[:, self.byte] = -float("inf")
        return scores


class _Collect(TextStreamer):
    def __init__(self, tok):
        super().__init__(tok)
        self.text = ""

    def on_finalized_text(self, text: str, stream_end: bool = False):
        self.text += text + ("<end>" if stream_end else "")


@pytest.fixture(scope="module")
def tok():
    return ByteTokenizer(padding_side="left")


@pytest.fixture(scope="module", params=["chared", "exact"])
def model(request, stories):
    ptok = piece_tokenizer(["a", "b", "c", " ", "ab", "bc", "ca", " a", "abc", "e", "he"])
    return CharEDModel.from_members([(tiny_model(len(ptok), seed=1, bos=1, eos=2), ptok),
                                     stories], weights=[0.3, 0.7],
                                    marginalization=request.param)


FLAGS = {
    "greedy": dict(do_sample=False),
    "sampling": dict(do_sample=True, top_p=0.9, temperature=0.8),
    "banned byte": dict(do_sample=False, repetition_penalty=1.3,
                        logits_processor=LogitsProcessorList([_BanByte(ord("e"))])),
    "banned byte, sampling": dict(do_sample=True,
                                  logits_processor=LogitsProcessorList([_BanByte(ord("e"))])),
    "stop strings": dict(do_sample=False, stop_strings=["ily", "og"]),
    "several sequences": dict(do_sample=True, num_return_sequences=2, top_k=20),
    "max length": dict(do_sample=False, max_length=30, max_new_tokens=None),
    "eos": dict(do_sample=False, eos_token_id=ord(" ")),
}


@pytest.mark.parametrize("flags", list(FLAGS.values()), ids=list(FLAGS))
def test_the_package_loop_gives_what_transformers_loop_gives(model, tok, flags):
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    runs = []
    for loop in ("package", "transformers"):
        set_seed(7)
        runs.append(model.generate(**enc, **{"max_new_tokens": 24, **flags}, loop=loop,
                                   tokenizer=tok, return_dict_in_generate=True,
                                   output_scores=True, output_logits=True))
    ours, theirs = runs
    new = ours.sequences[:, enc["input_ids"].shape[1]:]
    for step, byte in zip(ours.scores, new.T, strict=True):  # every byte chosen was allowed
        chosen = step.gather(1, byte[:, None])[:, 0]
        assert torch.isfinite(chosen[byte != PAD_ID]).all()  # (stopped rows get padding)
    if "logits_processor" in flags:
        assert not (new == ord("e")).any()  # the bans held
        if flags["do_sample"]:
            # A row left no byte commits and draws again: the package loop draws its bytes
            # first and then that row's commit, Transformers' the other way round (one wait
            # for the device fewer per step): other draws from the same distributions.
            return
    assert torch.equal(ours.sequences, theirs.sequences)
    assert len(ours.scores) == len(theirs.scores) == ours.sequences.shape[1] - enc[
        "input_ids"].shape[1]
    for kind in ("scores", "logits"):
        for a, b in zip(getattr(ours, kind), getattr(theirs, kind), strict=True):
            assert torch.equal(a, b), kind


def test_streamed_text_is_the_same(model, tok):
    enc = tok(PROMPTS[:1], return_tensors="pt")
    texts = []
    for loop in ("package", "transformers"):
        streamer = _Collect(tok)
        model.generate(**enc, max_new_tokens=20, streamer=streamer, loop=loop)
        texts.append(streamer.text)
    assert texts[0] == texts[1] and texts[0].endswith("<end>") and len(texts[0]) > 16


def test_a_cache_returned_by_one_call_continues_in_the_next(model, tok):
    """``return_dict_in_generate`` returns the ``EnsembleCache``; a later call with it reads
    only the new ids, as Transformers' loop does."""
    enc = tok(PROMPTS[:1], return_tensors="pt")
    outs = []
    for loop in ("package", "transformers"):
        first = model.generate(**enc, max_new_tokens=8, loop=loop, return_dict_in_generate=True)
        outs.append(model.generate(first.sequences, cache=first.cache, max_new_tokens=8,
                                   loop=loop))
    assert torch.equal(outs[0], outs[1])
    whole = model.generate(**enc, max_new_tokens=16)
    assert torch.equal(outs[0], whole)


def test_one_copy_to_the_host_per_step(model, tok, monkeypatch):
    """The loop waits for the ids' device once per step (the chosen bytes with the rows'
    flags): count the copies (``tolist``, ``cpu``, ``item``, ``__bool__``, ``numpy``) made from
    ``generation.py`` over two lengths."""
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    copies = [0]
    for name in ("tolist", "cpu", "item", "__bool__", "numpy"):
        method = getattr(torch.Tensor, name)

        def counted(self, *args, _method=method, **kwargs):
            if sys._getframe(1).f_code.co_filename.endswith("generation.py"):
                copies[0] += 1
            return _method(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    counts = []
    for steps in (8, 20):
        copies[0] = 0
        model.generate(**enc, max_new_tokens=steps, min_new_tokens=steps)
        counts.append(copies[0])
    assert counts[1] - counts[0] == 12, counts


def test_bad_loop_is_refused_naming_the_argument(model, tok):
    with pytest.raises(ValueError, match="^loop: expected one of"):
        model.generate(**tok("a", return_tensors="pt"), loop="fast")


def test_a_custom_generate_of_ones_own_is_run(model, tok):
    seen = []

    def mine(model, input_ids, **kwargs):
        seen.append(input_ids.shape)
        return input_ids

    enc = tok("abc", return_tensors="pt")
    assert torch.equal(model.generate(**enc, custom_generate=mine), enc["input_ids"])
    assert seen == [enc["input_ids"].shape]
