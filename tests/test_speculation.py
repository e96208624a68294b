"""The exact mode's guess of the text ahead (``speculation.predict``), for a row generating
alone: its distributions against the exact member's where every view it needs is known, and
what it changes in generation (calls, not numbers)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import REPO, TokenBiased, piece_tokenizer, tiny_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, AutoTokenizer

from chared_hf import ByteTokenizer, CharEDModel
from chared_hf.decoding import speculation
from chared_hf.decoding.combine import combine
from chared_hf.decoding.exact import ExactMember
from chared_hf.members.byte_view import EOT, EPS
from chared_hf.members.member import Member

PROMPTS = ["Once upon a time", "The little dog ran to the", "def fibonacci(n):\n"]


def _tracks(member: ExactMember) -> list:
    return [(h.node, h.pending, h.logp) for h in member.hyps]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces=st.lists(st.text(alphabet="abc", min_size=2, max_size=3), max_size=8,
                       unique=True),
       seed=st.integers(0, 50), text=st.text(alphabet="abc", min_size=1, max_size=6))
def test_the_guess_reads_the_exact_distribution_where_every_view_is_known(pieces, seed, text):
    """Unbounded, with every child run (``distribution`` ran them): the guess's first step
    sums the same token sequences as the exact member, so its distribution is the member's
    (to 1e-12) and its first byte the member's likeliest, at every byte of the text."""
    tok = piece_tokenizer(["a", "b", "c"] + [p for p in pieces if len(p) > 1])
    model = tiny_model(len(tok), seed=seed, layers=2, bos=1, eos=2).double()
    member = ExactMember(Member.build(model, tok), max_hypotheses=None)
    member.begin(b"", with_bos=False)
    member.tree.flush()
    for byte in text.encode():
        want = member.distribution()  # runs the children the next byte needs
        got = speculation._distribution(speculation._branch(_tracks(member)))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
        likeliest = int(np.argmax(want[:EPS]))
        guess = speculation.predict([member], [1.0], "mixture", limit=1)
        assert guess == (b"" if likeliest == EOT else bytes((likeliest,)))
        member.advance(byte)


def test_the_guess_leaves_out_a_member_whose_next_view_is_unknown():
    """Right after a byte, the children that byte needs have not run: a member whose mass
    sits mostly after them has no known distribution, and with no other member the guess is
    empty (nothing is run ahead on a guess nobody can make)."""
    tok = piece_tokenizer(["a", "b", "ab"])
    model = tiny_model(len(tok), seed=1, layers=2, bos=1, eos=2).double()
    member = ExactMember(Member.build(model, tok), max_hypotheses=None)
    member.begin(b"", with_bos=False)
    member.tree.flush()
    member.distribution()
    member.advance(ord("a"))  # "a" may end a token: its children have not run
    assert not any(c.ran for h in member.hyps for c in h.node.children.values())
    assert speculation._branch(_tracks(member)) is None
    assert speculation.predict([member], [1.0], "mixture", limit=16) == b""


def _demo_pair() -> list:
    """The demo ensemble's members (stories260K, pycode) in float64: calls of different
    shapes then agree far below 1e-6."""
    pairs = []
    for name in ("stories260K", "pycode"):
        path = REPO / "chared_hf" / "demo" / name
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        pairs.append((copy.deepcopy(model).double(), AutoTokenizer.from_pretrained(path)))
    return pairs


def _generate(pairs, prompts: list[str], new_bytes: int = 32, guess_bytes: int = 16):
    ens = CharEDModel.from_members(pairs, marginalization="exact", max_hypotheses=8,
                                   prune_below=1e-4, guess_bytes=guess_bytes)
    out, calls = [], np.zeros(len(pairs), dtype=int)
    for prompt in prompts:
        o = ens.generate(**ByteTokenizer()(prompt, return_tensors="pt"),
                         max_new_tokens=new_bytes, return_dict_in_generate=True,
                         output_scores=True)
        out.append((o.sequences, torch.stack(o.scores).double().softmax(-1)))
        calls += o.cache.forward_calls()[0]
    return out, calls


def test_generation_alone_runs_ahead_along_the_guess_with_the_same_numbers():
    """A row generating alone runs each member's call ahead along the ensemble's guessed
    bytes (``speculation.predict``) instead of the member's own likeliest token: the same
    texts and scores (to 1e-6 in float64), fewer calls."""
    pairs = _demo_pair()
    guessed, guessed_calls = _generate(pairs, PROMPTS)
    plain, plain_calls = _generate(pairs, PROMPTS, guess_bytes=0)
    for (seq_a, probs_a), (seq_b, probs_b) in zip(guessed, plain, strict=True):
        assert torch.equal(seq_a, seq_b)
        assert torch.allclose(probs_a, probs_b, atol=1e-6, rtol=0)
    # two tiny members with flat distributions keep many tokenizations, whose children the
    # guess does not run ahead: a tenth fewer calls (165 against 186)
    assert guessed_calls.sum() < 0.95 * plain_calls.sum(), (guessed_calls, plain_calls)


def test_the_real_pair_needs_fewer_calls_with_the_guess(stories, smollm2):
    """stories260K + SmolLM2 on the README's first prompt: each call runs ahead along the
    bytes both members' views agree on, so SmolLM2 (the expensive member) needs about a third
    fewer calls (16 against 23 for 48 bytes), for the same text and scores (float32: calls of
    different shapes differ by about 1e-6)."""
    guessed, guessed_calls = _generate([stories, smollm2], PROMPTS[:1], new_bytes=48)
    plain, plain_calls = _generate([stories, smollm2], PROMPTS[:1], new_bytes=48,
                                   guess_bytes=0)
    (seq_a, probs_a), (seq_b, probs_b) = guessed[0], plain[0]
    assert torch.equal(seq_a, seq_b)
    assert torch.allclose(probs_a, probs_b, atol=1e-5, rtol=0)
    assert guessed_calls[1] < 0.8 * plain_calls[1], (guessed_calls, plain_calls)
    assert guessed_calls[0] <= plain_calls[0], (guessed_calls, plain_calls)


@pytest.mark.parametrize("rule", ["mixture", "product"])
def test_the_guess_follows_the_rule_and_the_weights(rule):
    """Two members that favour different letters: the guess reads what the row's rule and
    weights make likeliest, as the row's own distribution does."""
    tok = piece_tokenizer(["a", "b", "aa", "bb"])
    members = []
    for seed, favoured in ((3, "aa"), (4, "bb")):
        model = TokenBiased(tiny_model(len(tok), seed=seed, layers=2, bos=1, eos=2).double(),
                            tok.convert_tokens_to_ids(favoured), 6.0)
        member = ExactMember(Member.build(model, tok), max_hypotheses=None)
        member.begin(b"", with_bos=False)
        member.tree.flush()
        member.distribution()
        members.append(member)
    guesses = []
    for weights in ([0.9, 0.1], [0.1, 0.9]):
        joint = combine(rule, [m.distribution() for m in members], weights)
        guesses.append(speculation.predict(members, weights, rule, limit=1))
        assert guesses[-1] == bytes((int(np.argmax(joint[:EPS])),))
    assert guesses == [b"a", b"b"]
