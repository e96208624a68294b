"""Scoring helpers: text pieces, members' own figures, EM mixture weights, and the premise EM
rests on (a mixture of exact members gives each byte Σ w_i P_i(b))."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from chared_hf import CharEDModel
from chared_hf.tools.scoring import (
    bits_per_byte,
    byte_logprobs,
    exact_members,
    fit_mixture_weights,
    mixture_logprobs,
    own_logprob,
    split_text,
)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300), st.integers(1, 64))
def test_split_text_pieces_rebuild_the_text_within_the_size(text, size):
    pieces = split_text(text, size)
    assert "".join(pieces) == text
    assert all(piece for piece in pieces)
    assert all(len(p.encode()) <= max(size, 4) for p in pieces)


def test_split_text_cuts_after_newlines():
    assert split_text("aaaa\nbbbb\ncc", 6) == ["aaaa\n", "bbbb\n", "cc"]
    with pytest.raises(ValueError, match="size: expected a positive"):
        split_text("x", 0)


def test_own_logprob_is_the_models_token_level_score(abc_pair):
    model, tok = abc_pair[0]
    text = "ab ca cab\nab"
    ids = [tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
    assert own_logprob(model, tok, text) == pytest.approx(_stepwise(model, ids), rel=1e-6)


def _stepwise(model, ids: list[int]) -> float:
    """log P(ids[1:] | ids[0]), one token at a time without a cache: the plain definition."""
    total = 0.0
    for i in range(1, len(ids)):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids[:i]])).logits[0, -1].double()
        total += float(torch.log_softmax(logits, -1)[ids[i]])
    return total


def test_own_logprob_restarts_windows_longer_than_the_model(abc_pair):
    model, tok = abc_pair[0]
    text = "ab ca " * 10
    ids = tok(text, add_special_tokens=False)["input_ids"]
    model.config.max_position_embeddings = 9  # windows of 8 tokens after the start id
    try:
        windowed = own_logprob(model, tok, text)
    finally:
        model.config.max_position_embeddings = 4096
    expected = sum(_stepwise(model, [tok.bos_token_id, *ids[i:i + 8]])
                   for i in range(0, len(ids), 8))
    assert windowed == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("k", [None, 2])
def test_exact_mixture_is_the_weighted_sum_of_member_byte_probabilities(abc_pair, k):
    """EM's premise: members scored exactly do not depend on the weights, and the exact
    mixture gives each byte Σ w_i P_i(b)."""
    text = "ab cab"
    logp = np.stack([byte_logprobs(m, text) for m in exact_members(abc_pair, k)])
    for weights in ([0.5, 0.5], [0.9, 0.1], [0.2, 0.8]):
        ens = CharEDModel.from_members(abc_pair, weights=weights, marginalization="exact",
                                       max_hypotheses=k)
        np.testing.assert_allclose(byte_logprobs(ens, text), mixture_logprobs(logp, weights),
                                   atol=1e-5)


def _loglik(logp, w):
    return float(mixture_logprobs(logp, w).sum())


def test_em_recovers_the_weights_of_a_known_mixture():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(6), size=2)  # two members' distributions over 6 symbols
    truth = np.array([0.3, 0.7])
    member = rng.choice(2, size=20000, p=truth)
    symbols = np.array([rng.choice(6, p=p[m]) for m in member])
    logp = np.log(p[:, symbols])
    weights, _ = fit_mixture_weights(logp)
    assert weights.sum() == pytest.approx(1.0)
    assert np.abs(weights - truth).max() < 0.05
    grid = max(_loglik(logp, [a, 1 - a]) for a in np.linspace(0.001, 0.999, 999))
    assert _loglik(logp, weights) >= grid - 1e-6  # the maximum, not just near it


def test_em_never_lowers_the_likelihood():
    rng = np.random.default_rng(1)
    logp = np.log(rng.dirichlet(np.ones(3), size=200).T)  # 3 members, 200 bytes
    previous = -math.inf
    for steps in range(1, 15):
        w, _ = fit_mixture_weights(logp, init=[0.8, 0.1, 0.1], max_iter=steps, tol=0)
        assert _loglik(logp, w) >= previous - 1e-9
        previous = _loglik(logp, w)


def test_em_rejects_bytes_no_member_can_give():
    logp = np.array([[math.log(0.5), -math.inf], [math.log(0.5), -math.inf]])
    with pytest.raises(ValueError, match="probability zero under every member"):
        fit_mixture_weights(logp)
    with pytest.raises(ValueError, match=r"logp: expected a \[members, bytes\]"):
        fit_mixture_weights(np.zeros((2, 0)))


def test_bits_per_byte():
    assert bits_per_byte(-math.log(2) * 10, 5) == pytest.approx(2.0)
