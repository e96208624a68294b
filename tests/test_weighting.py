"""Weights that follow the text: the update against brute force (Bayes = the sequence mixture,
switching = a sum over every sequence of speaking members), the exact-mode ensemble against
its members, properties in every mode, and the places the weighting reaches (generation,
batches, save/load)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from chared_hf import ByteTokenizer, CharEDConfig, CharEDModel, EnsembleCache
from chared_hf.decoding.paper import MemberState
from chared_hf.decoding.weighting import WEIGHTINGS, Weighting
from chared_hf.members.token_tree import CACHE_KW
from chared_hf.tools.scoring import byte_logprobs, exact_members


def brute_force_switching(probs: np.ndarray, prior: np.ndarray, rate: float) -> float:
    """log P(text) for the hidden "which member speaks" chain, summed over every sequence of
    members: start ``prior``, stay with ``1 − α + α·π_j``, move to ``j`` with ``α·π_j``."""
    n, t = probs.shape
    total = 0.0
    for seq in itertools.product(range(n), repeat=t):
        p = prior[seq[0]] * probs[seq[0], 0]
        for k in range(1, t):
            move = rate * prior[seq[k]] + (1 - rate) * (seq[k] == seq[k - 1])
            p *= move * probs[seq[k], k]
        total += p
    return math.log(total)


members_probs = st.integers(1, 3).flatmap(lambda n: st.integers(1, 5).flatmap(
    lambda t: st.tuples(
        st.lists(st.floats(0.01, 1.0), min_size=n * t, max_size=n * t).map(
            lambda v: np.array(v).reshape(n, t)),
        st.lists(st.floats(0.05, 1.0), min_size=n, max_size=n).map(np.array))))


@settings(max_examples=60, deadline=None)
@given(members_probs, st.floats(0.0, 1.0))
def test_switching_is_the_sum_over_speaking_members(case, rate):
    probs, prior = case
    prior = prior / prior.sum()
    logp, _ = Weighting("switching", tuple(prior), rate).sequence(np.log(probs))
    assert logp.sum() == pytest.approx(brute_force_switching(probs, prior, rate), abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(members_probs)
def test_bayes_is_the_sequence_mixture(case):
    probs, prior = case
    prior = prior / prior.sum()
    logp, used = Weighting("bayes", tuple(prior)).sequence(np.log(probs))
    want = math.log(float(prior @ np.prod(probs, axis=1)))
    assert logp.sum() == pytest.approx(want, abs=1e-9)
    assert np.allclose(used.sum(0), 1.0) and np.allclose(used[:, 0], prior)
    # In total never worse than any member i by more than -log π_i (log N for equal priors).
    assert (-logp.sum() <= -np.log(probs).sum(1) - np.log(prior) + 1e-9).all()


@settings(max_examples=40, deadline=None)
@given(members_probs, st.sampled_from(WEIGHTINGS), st.floats(0.0, 1.0))
def test_special_cases(case, rule, rate):
    probs, prior = case
    logp = np.log(probs)
    fixed, _ = Weighting("fixed", tuple(prior)).sequence(logp)
    # One member: every weighting gives that member's numbers.
    one, _ = Weighting(rule, (1.0,), rate).sequence(logp[:1])
    assert np.allclose(one, logp[0])
    # Rate 1 returns all weight to the prior after every byte: fixed weights; rate 0 is Bayes.
    assert np.allclose(Weighting("switching", tuple(prior), 1.0).sequence(logp)[0], fixed)
    assert np.allclose(Weighting("switching", tuple(prior), 0.0).sequence(logp)[0],
                       Weighting("bayes", tuple(prior)).sequence(logp)[0])


def test_members_that_cannot_follow_keep_their_relative_weight():
    w = Weighting("bayes", (0.2, 0.3, 0.5))
    log_w = w.start()
    # Member 0 gives no distribution, member 1 gives the byte zero: both keep their weight
    # relative to the others' total; member 2 alone moves nothing (it is the whole evidence).
    after = w.weights(w.update(log_w, np.array([np.nan, 0.0, 0.4])))
    assert np.allclose(after, [0.2, 0.3, 0.5])
    after = w.weights(w.update(log_w, np.array([np.nan, 0.1, 0.4])))
    # Members 1 and 2 share their 0.8 by Bayes (0.03 : 0.2); member 0 keeps 0.2.
    assert np.allclose(after, [0.2, 0.8 * 0.03 / 0.23, 0.8 * 0.2 / 0.23])
    # No member gives the byte any probability: nothing moves, nothing is NaN.
    assert np.allclose(w.weights(w.update(log_w, np.array([0.0, np.nan, 0.0]))),
                       [0.2, 0.3, 0.5])
    # Zero prior weight stays zero under Bayes and switching (switching mixes to the prior).
    z = Weighting("switching", (0.0, 1.0), 0.5)
    assert w.weights(z.update(z.start(), np.array([0.9, 0.1])))[0] == 0.0


def test_batched_update_equals_row_by_row():
    w = Weighting("switching", (0.3, 0.7), 0.05)
    rng = np.random.default_rng(0)
    log_w = np.log(rng.dirichlet([1, 1], size=4))
    probs = rng.uniform(0, 1, size=(4, 2))
    probs[1, 0] = np.nan
    probs[2] = 0.0
    batched = w.update(log_w, probs)
    assert np.allclose(batched, np.stack([w.update(a, b) for a, b in zip(log_w, probs,
                                                                          strict=True)]))


@pytest.mark.parametrize("bad, match", [
    (dict(weighting="posterior"), r"weighting: expected one of \('fixed', 'bayes', "),
    (dict(switch_rate=1.5), r"switch_rate: expected a number in \[0, 1\], got 1.5"),
    (dict(switch_rate="0.1"), r"switch_rate: expected a number in \[0, 1\]"),
    (dict(combine="product", weighting="switching"), r"weighting: 'switching' needs "
     r"combine='mixture'"),
])
def test_bad_weighting_is_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        CharEDConfig(**bad)


# -- the ensemble ------------------------------------------------------------------------------
TEXTS = ["".join(p) for n in range(1, 4) for p in itertools.product("ab c", repeat=n)]


@pytest.fixture(scope="module")
def exact_single(abc_pair):
    """Each abc member alone, unbounded exact: its probability of every test string."""
    singles = exact_members(abc_pair, None)
    return {text: np.stack([byte_logprobs(m, text) for m in singles]) for text in TEXTS}


@pytest.mark.parametrize("rule, rate", [("bayes", 0.0), ("switching", 0.2)])
def test_exact_ensemble_is_the_mixture_of_its_members(abc_pair, exact_single, rule, rate):
    """Exact mode: ``bayes`` gives every string ``Σ_i π_i P_i(string)``; ``switching`` gives
    every byte what the fixed-share forward computation over the members' byte probabilities
    gives (itself checked against the sum over member sequences above)."""
    prior = (0.3, 0.7)
    model = CharEDModel.from_members(abc_pair, weights=list(prior), marginalization="exact",
                                     max_hypotheses=None, weighting=rule, switch_rate=rate)
    for text in TEXTS:
        got = byte_logprobs(model, text)
        member = exact_single[text]
        if rule == "bayes":
            want = np.log(np.dot(prior, np.exp(member.sum(1))))
            assert got.sum() == pytest.approx(want, abs=1e-6), text
        want_bytes, _ = Weighting(rule, prior, rate).sequence(member)
        assert np.allclose(got, want_bytes, atol=1e-6), text


@settings(max_examples=25, deadline=None)
@given(text=st.text(alphabet="ab c\n", min_size=1, max_size=8),
       rule=st.sampled_from(WEIGHTINGS), rate=st.floats(0.0, 1.0),
       mode=st.sampled_from(["chared", "exact"]))
def test_every_distribution_sums_to_one(abc_pair, text, rule, rate, mode):
    model = CharEDModel.from_members(abc_pair, weights=[0.4, 0.6], marginalization=mode,
                                     weighting=rule, switch_rate=rate, max_hypotheses=4)
    ids = ByteTokenizer()(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    assert not torch.isnan(logits).any()
    assert torch.allclose(logits.exp().sum(-1), torch.ones(len(logits), dtype=torch.float64),
                          atol=1e-6)


@pytest.mark.parametrize("mode", ["chared", "exact"])
def test_one_member_moves_nothing(abc_pair, mode):
    text = "ab cab\nca"
    figures = [byte_logprobs(CharEDModel.from_members(
        abc_pair[:1], marginalization=mode, weighting=rule, max_hypotheses=4), text)
        for rule in WEIGHTINGS]
    for other in figures[1:]:
        assert np.allclose(other, figures[0], atol=1e-12)


def _weights_after_prompt(model, prompt: str) -> np.ndarray:
    """The row's weights behind its first generated byte."""
    state = EnsembleCache(decide="greedy")
    model.generate(**ByteTokenizer()(prompt, return_tensors="pt"), max_new_tokens=1,
                   **{CACHE_KW: state})
    return state.rows[0].weights


def _healed_logprob(member, tokenizer, committed: list[int], pending: bytes) -> float:
    """A healed member's probability of the prompt, by brute force: its ``committed`` ids
    (after the first), then any next token whose text starts with the ``pending`` bytes."""
    with torch.no_grad():
        logp = torch.log_softmax(member(input_ids=torch.tensor([committed])).logits[0].double(),
                                 -1)
    head = float(logp[:-1].gather(-1, torch.tensor(committed[1:])[:, None]).sum())
    if not pending:
        return head
    pieces = {i: tokenizer.decode([i]).encode() for i in range(len(tokenizer))
              if i not in tokenizer.all_special_ids}
    tail = [i for i, p in pieces.items() if p.startswith(pending)]
    return head + float(torch.logsumexp(logp[-1, tail], 0))


@pytest.mark.parametrize("mode", ["chared", "chared-unhealed", "exact"])
def test_prompt_moves_the_weights_before_the_first_new_byte(abc_pair, mode, monkeypatch):
    """The prompt is read by the weights: the member that gives it more probability gains
    weight before any byte is generated, by the ratio of the members' probabilities (a healed
    member's: its committed tokens, then a next token that starts with the bytes it left
    pending)."""
    prompt = "cab ab ca"
    heal = mode != "chared-unhealed"
    mode = mode.split("-")[0]
    model = CharEDModel.from_members(abc_pair, marginalization=mode, weighting="bayes",
                                     max_hypotheses=None, heal_prompt=heal)
    read = []  # what each paper-mode member had committed and left pending when read

    def recording(self, n_bytes, inner=MemberState.prompt_probs):
        read.append((self.ids, self.pending))
        return inner(self, n_bytes)

    monkeypatch.setattr(MemberState, "prompt_probs", recording)
    state = EnsembleCache(decide="greedy")
    model.generate(**ByteTokenizer()(prompt, return_tensors="pt"), max_new_tokens=1,
                   **{CACHE_KW: state})
    w = state.rows[0].weights
    if mode == "exact":  # the exact members' probabilities of the prompt bytes
        logp = np.stack([byte_logprobs(m, prompt)
                         for m in exact_members(abc_pair, None)]).sum(1)
    elif heal:
        # No token extends the first member's last "ca"; the second's "c", "a" heal ("cab")
        assert [pending for _, pending in read] == [b"", b"ca"]
        logp = np.array([_healed_logprob(m, t, ids, pending)
                         for (m, t), (ids, pending) in zip(abc_pair, read, strict=True)])
    else:  # each member's own tokenization, after its start of text
        from chared_hf.tools.scoring import own_logprob

        logp = np.array([own_logprob(m, t, prompt) for m, t in abc_pair])
    assert np.log(w[0] / w[1]) == pytest.approx(logp[0] - logp[1], abs=1e-6)
    fixed = CharEDModel.from_members(abc_pair, marginalization=mode)
    assert np.allclose(_weights_after_prompt(fixed, prompt), [0.5, 0.5])


@pytest.mark.parametrize("mode", ["chared", "exact"])
def test_batch_gives_each_prompt_its_own_text(abc_pair, mode):
    """Each row of a left-padded batch has its own weights: the same greedy text as alone."""
    model = CharEDModel.from_members(abc_pair, weights=[0.5, 0.5], marginalization=mode,
                                     weighting="switching", switch_rate=0.05, max_hypotheses=4)
    tok = ByteTokenizer(padding_side="left")
    prompts = ["ab", "cab ca c", "c"]
    flags = dict(max_new_tokens=10, do_sample=False)
    alone = []
    for p in prompts:
        out = model.generate(**tok(p, return_tensors="pt"), **flags)
        alone.append(tok.decode(out[0], skip_special_tokens=True))
    batch = model.generate(**tok(prompts, return_tensors="pt", padding=True), **flags)
    assert tok.batch_decode(batch, skip_special_tokens=True) == alone


def test_weighting_is_saved_and_can_be_overridden(abc_pair, tmp_path):
    model = CharEDModel.from_members(abc_pair, weights=[1, 3], weighting="switching",
                                     switch_rate=0.02)
    model.save_pretrained(tmp_path)
    again = CharEDModel.from_pretrained(tmp_path)
    assert (again.config.weighting, again.config.switch_rate) == ("switching", 0.02)
    text = "ab cab"
    assert np.allclose(byte_logprobs(model, text), byte_logprobs(again, text))
    bayes = CharEDModel.from_pretrained(tmp_path, weighting="bayes")
    assert bayes.config.weighting == "bayes"
    with pytest.raises(ValueError, match="switch_rate: expected a number in"):
        CharEDModel.from_pretrained(tmp_path, switch_rate=-1)


def test_pipeline_streaming_sampling_and_chat_with_switching(abc_pair):
    """The stock surfaces with weights that follow the text: the pipeline gives generate's text,
    a streamer prints it, seeded sampling repeats, and a chat starts from the prior (the
    members' renderings differ, so the prompt does not move the weights)."""
    from transformers import TextIteratorStreamer, pipeline, set_seed

    model = CharEDModel.from_members(abc_pair, weights=[0.3, 0.7], weighting="switching",
                                     switch_rate=0.05)
    tok = ByteTokenizer()
    enc = tok("cab ab", return_tensors="pt")
    text = tok.decode(model.generate(**enc, max_new_tokens=12)[0], skip_special_tokens=True)
    gen = pipeline("text-generation", model=model, tokenizer=tok)
    assert gen("cab ab", max_new_tokens=12, do_sample=False)[0]["generated_text"] == text
    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
    model.generate(**enc, max_new_tokens=12, streamer=streamer)
    assert "cab ab" + "".join(streamer) == text
    samples = []
    for _ in range(2):
        set_seed(11)
        samples.append(model.generate(**enc, max_new_tokens=12, do_sample=True, top_k=0))
    assert torch.equal(*samples)
    chat = tok.apply_chat_template([{"role": "user", "content": "ab ca"}],
                                   add_generation_prompt=True, return_tensors="pt")
    ids = chat["input_ids"] if hasattr(chat, "keys") else chat
    state = EnsembleCache(decide="greedy")
    model.generate(input_ids=ids, max_new_tokens=1, **{CACHE_KW: state})
    assert np.allclose(state.rows[0].weights, [0.3, 0.7])


@pytest.mark.parametrize("mode", ["chared", "exact"])
@pytest.mark.parametrize("rule", ["bayes", "switching"])
def test_a_member_that_cannot_spell_a_byte_keeps_its_weight(mode, rule):
    """A lossy member (no piece for "c", no byte fallback) next to one that spells everything:
    at the bytes it cannot spell it is credited with the other's probability, so its weight
    never becomes NaN or zero and it weighs in again after them."""
    from conftest import piece_tokenizer, tiny_model

    lossy = piece_tokenizer(["a", "b", " ", "ab", "ba"])
    full = piece_tokenizer(["a", "b", "c", " ", "ab", "ca"])
    pairs = [(tiny_model(len(lossy), seed=5, bos=1, eos=2), lossy),
             (tiny_model(len(full), seed=6, bos=1, eos=2), full)]
    model = CharEDModel.from_members(pairs, marginalization=mode, weighting=rule,
                                     switch_rate=0.05, max_hypotheses=4)
    text = "ab c ab ba c ab"
    ids = ByteTokenizer()(text, return_tensors="pt")["input_ids"]
    state = EnsembleCache(decide="marginal")
    with torch.no_grad():
        logits = model(input_ids=ids, **{CACHE_KW: state}).logits[0].double()
    assert torch.isfinite(logits.exp().sum(-1)).all()
    assert torch.allclose(logits.exp().sum(-1), torch.ones(len(logits), dtype=torch.float64))
    got = byte_logprobs(model, text)
    assert np.isfinite(got).all()  # the full member spells every byte
    w = state.rows[0].weights
    assert np.isfinite(w).all() and w[0] > 1e-12 and w.sum() == pytest.approx(1.0)
