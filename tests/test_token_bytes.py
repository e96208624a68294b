"""Token bytes of real tokenizers: byte maps, byte fallback, specials, end of text, lead."""

from __future__ import annotations

import functools

import pytest
from conftest import TOKENIZER_FAMILIES, asset_path, load_tokenizer
from transformers import AutoTokenizer

from chared_hf.members.token_bytes import TokenBytes


@functools.cache
def token_bytes_for(name: str) -> TokenBytes:
    return TokenBytes.from_tokenizer(load_tokenizer(name))


@pytest.fixture(scope="module", params=TOKENIZER_FAMILIES)
def family(request):
    return request.param, load_tokenizer(request.param), token_bytes_for(request.param)


def test_specials_are_never_text_and_eos_is_known(family):
    name, tok, tb = family
    for idx in tok.all_special_ids:
        assert tb.pieces[idx] is None, (name, idx)
    assert tb.eos_ids == [tok.eos_token_id]
    assert tb.start_ids  # every member can start a text


def test_token_bytes_spell_what_the_tokenizer_decodes(family):
    """For plain text, the bytes of the tokenizer's own ids are the text (plus the lead)."""
    name, tok, tb = family
    text = "The quick brown fox, 42 times.\nNew line"
    if name == "spm-unigram":  # lossy: 1,000 pieces, no newline, no byte fallback
        text = "the man said that the fox and the dog were there."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tb.spell(ids) == tb.lead + text.encode()


@pytest.mark.parametrize(
    ("name", "piece", "expected"),
    [
        ("gpt2", "Ġthe", b" the"),
        ("gpt2", "Ċ", b"\n"),
        ("qwen2", "ĠðŁĺĢ", " 😀".encode()),
        ("llama2", "▁the", b" the"),
        ("llama2", "<0x0A>", b"\n"),
        ("phi3", "<0xF0>", b"\xf0"),
        ("spm-unigram", "▁the", b" the"),
    ],
)
def test_family_byte_maps(name, piece, expected):
    tok = load_tokenizer(name)
    tb = token_bytes_for(name)
    assert tb.pieces[tok.convert_tokens_to_ids(piece)] == expected


def test_several_ids_may_share_bytes():
    """Llama 2: the byte-fallback piece <0x20> and the piece ▁ both spell a space."""
    tb = token_bytes_for("llama2")
    ids = [i for i, p in enumerate(tb.pieces) if p == b" "]
    assert len(ids) >= 2


@pytest.mark.parametrize(("name", "lead"), [("gpt2", b""), ("qwen2", b""), ("llama2", b" "),
                                            ("phi3", b" "), ("spm-unigram", b" ")])
def test_dummy_prefix_is_detected(name, lead):
    assert token_bytes_for(name).lead == lead


def test_leading_space_rule_for_llama_style_tokenizers():
    """stories260K's tokenizer drops a leading space; the member still sees lead + text."""
    path = asset_path("models/stories260K")
    tok = AutoTokenizer.from_pretrained(path)
    tb = TokenBytes.from_tokenizer(tok)
    ids = tb.encode(b" leading", at_start=True)
    assert tb.spell(ids) == b"  leading"
    assert tb.spell(tb.encode(b"mid text", at_start=False)) == b"mid text"


def test_lossy_tokenizer_uses_unk_and_never_raises():
    tb = token_bytes_for("spm-unigram")
    ids = tb.encode("tab\there 😀".encode(), at_start=False)
    assert tb.unk_id in ids
    assert all(0 <= i < len(tb.pieces) for i in ids)


def test_model_vocabulary_larger_than_tokenizer_is_not_text():
    tok = load_tokenizer("gpt2")
    tb = TokenBytes.from_tokenizer(tok, vocab_size=len(tok) + 7)
    assert len(tb.pieces) == len(tok) + 7 and tb.pieces[-1] is None


def test_slow_tokenizers_are_rejected_with_a_clear_error():
    with pytest.raises(ValueError, match="tokenizer: a fast tokenizer"):
        TokenBytes.from_tokenizer(object())
