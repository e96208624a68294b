"""End of text: several end ids, members that disagree, and a length limit inside a token."""

from __future__ import annotations

import pytest
import torch
from conftest import EosBiased, piece_tokenizer, tiny_model

from chared_hf import ByteTokenizer, CharEDModel
from chared_hf.tokenization import BOS_ID, EOS_ID


@pytest.fixture(scope="module")
def chat_like():
    """A member with two end ids (end of turn and end of text), like instruct models."""
    tok = piece_tokenizer(["a", "b", " ", "ab", "ba"],
                          specials=("<unk>", "<s>", "</s>", "<|eot|>"))
    tok.add_special_tokens({"additional_special_tokens": ["<|eot|>"]})
    model = tiny_model(len(tok), seed=7, bos=1, eos=2)
    model.generation_config.eos_token_id = [2, 3]
    return model, tok


def _biased(model, biases: dict[int, float]):
    """The model with some end logits raised or lowered, keeping its two end ids."""
    out = model
    for eos, bias in biases.items():
        out = EosBiased(out, eos=eos, bias=bias)
    out.generation_config = model.generation_config
    return out


def test_every_end_id_counts_as_end_of_text(chat_like):
    model, tok = chat_like
    ens = CharEDModel.from_members([chat_like])
    with torch.no_grad():
        got = float(ens(input_ids=torch.tensor([[BOS_ID]])).logits[0, 0, EOS_ID].exp())
        p = torch.softmax(model(input_ids=torch.tensor([[1]])).logits[0, -1].double(), -1)
    # Specials that are not an end (<unk>, <s>) are removed and the rest renormalised.
    want = float((p[2] + p[3]) / (1 - p[0] - p[1]))
    assert got == pytest.approx(want, rel=1e-5)


def test_generation_ends_at_either_end_id(chat_like):
    model, tok = chat_like
    for end in (2, 3):
        eager = (_biased(model, {end: 40.0}), tok)
        out = CharEDModel.from_members([eager]).generate(
            input_ids=torch.tensor([[BOS_ID, 97]]), max_new_tokens=20)
        assert out[0].tolist() == [BOS_ID, 97, EOS_ID]


def test_members_that_disagree_about_the_end_mix_it_by_weight(chat_like):
    """One member wants to stop, the other never does: at a token boundary (here the start)
    the end's probability is the weighted average, and greedy decoding follows it. (Inside a
    token the end needs the token to end first: J(ε)·J'(end).)"""
    model, tok = chat_like
    stop = (_biased(model, {3: 40.0}), tok)
    go = (_biased(model, {2: -80.0, 3: -80.0}), tok)
    ids = torch.tensor([[BOS_ID]])
    for w, ends in ((0.7, True), (0.1, False)):  # 0.9 over 3 bytes: one has >= 0.3 > 0.1
        ens = CharEDModel.from_members([stop, go], weights=[w, 1 - w])
        with torch.no_grad():
            p_end = float(ens(input_ids=ids).logits[0, -1, EOS_ID].exp())
        assert p_end == pytest.approx(w, abs=1e-3)
        out = ens.generate(input_ids=ids, max_new_tokens=5)
        assert (out[0, 1].item() == EOS_ID) == ends


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 8, 13])
def test_a_length_limit_inside_a_token_stops_cleanly(stories, limit):
    """Greedy text cut at any byte count (often inside a member token) is the prefix of a
    longer run, and the text can be continued from there by a new call."""
    tok = ByteTokenizer()
    ens = CharEDModel.from_members([stories])
    enc = tok("Once upon a time", return_tensors="pt")
    long = ens.generate(**enc, max_new_tokens=30)[0].tolist()
    short = ens.generate(**enc, max_new_tokens=limit)[0].tolist()
    assert short == long[: len(short)] and len(short) == enc["input_ids"].shape[1] + limit
    again = ens.generate(input_ids=torch.tensor([short]), max_new_tokens=30 - limit)[0].tolist()
    assert again[: len(short)] == short and len(again) == len(long)
