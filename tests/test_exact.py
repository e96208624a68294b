"""Exact byte-level marginals (``marginalization="exact"``) against brute force.

With ``max_hypotheses=None`` the teacher-forced probability of every short string followed by
end of text equals the member's probability summed over **every** token sequence that spells
it (specials other than end of text removed), to 1e-6.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch
from conftest import (
    REPO,
    TokenBiased,
    asset_path,
    load_tokenizer,
    next_byte_distribution,
    piece_tokenizer,
    text_logprob,
    tiny_model,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chared_hf import ByteTokenizer, CharEDConfig, CharEDModel, EnsembleCache
from chared_hf.decoding.speculation import Speculation
from chared_hf.members.token_tree import CACHE_KW
from chared_hf.tokenization import EOS_ID, VOCAB_SIZE
from chared_hf.tools.scoring import byte_logprobs


def _brute_force(model, tok, text: bytes, start: list[int], eos: int) -> float:
    """log Σ_τ P(τ)·p(EOS | τ) over token sequences τ spelling ``text`` (conftest's oracle)."""
    return text_logprob(model, _pieces(tok), start, text, [eos])


def _pieces(tok) -> dict[int, bytes]:
    """Each text token's bytes (a piece tokenizer's ``▁`` is a space)."""
    return {i: p.replace("▁", " ").encode() for p, i in tok.get_vocab().items()
            if p not in tok.all_special_tokens}


def _teacher_forced(ens: CharEDModel, text: bytes) -> float:
    ids = torch.tensor([[256, *text, EOS_ID]])
    logits = ens(input_ids=ids).logits[0].double()  # float32 rows: ~1e-7 each
    return float(logits[:-1].gather(-1, ids[0, 1:, None]).sum())


def _flat_model(n: int, seed: int):
    """float64, so that cached and uncached forwards agree far below the tolerance."""
    model = tiny_model(n, seed=seed, layers=2, bos=1, eos=2).double()
    with torch.no_grad():
        model.lm_head.weight.mul_(0.15)
    return model


def test_exact_matches_brute_force_on_every_string_up_to_five_bytes():
    tok = piece_tokenizer(["a", "b", "ab", "ba", "aa", "abb", "bab"])
    model = _flat_model(len(tok), seed=3)
    ens = CharEDModel.from_members([(model, tok)], marginalization="exact", max_hypotheses=None)
    for n in range(1, 6):
        for letters in itertools.product(b"ab", repeat=n):
            text = bytes(letters)
            want = _brute_force(model, tok, text, [1], 2)
            assert _teacher_forced(ens, text) == pytest.approx(want, abs=1e-6), text


@st.composite
def vocabularies(draw):
    alphabet = draw(st.sampled_from(["ab", "abc"]))
    words = st.text(alphabet=alphabet, min_size=2, max_size=4)
    extra = draw(st.lists(words, max_size=12 - len(alphabet), unique=True))
    return alphabet, list(alphabet) + [w for w in extra if w not in alphabet]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(vocab=vocabularies(), seed=st.integers(0, 50), data=st.data())
def test_exact_matches_brute_force_on_generated_vocabularies(vocab, seed, data):
    alphabet, pieces = vocab
    tok = piece_tokenizer(pieces)
    model = _flat_model(len(tok), seed=seed)
    ens = CharEDModel.from_members([(model, tok)], marginalization="exact", max_hypotheses=None)
    for _ in range(3):
        text = data.draw(st.text(alphabet=alphabet, min_size=1, max_size=5)).encode()
        want = _brute_force(model, tok, text, [1], 2)
        assert _teacher_forced(ens, text) == pytest.approx(want, abs=1e-6), text


def _exact(pairs, k, **kwargs):
    return CharEDModel.from_members(pairs, marginalization="exact", max_hypotheses=k, **kwargs)


@settings(max_examples=16, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(vocab=vocabularies(), seed=st.integers(0, 50), k=st.sampled_from([1, 2, 3, None]),
       theta=st.sampled_from([0.0, 0.01, 0.2]), data=st.data())
def test_pruning_bounds_contain_the_unbounded_figure(vocab, seed, k, theta, data):
    """Certified pruning: with K hypotheses and a relative floor θ, the interval (kept mass,
    kept + dropped mass) contains the log-probability the unbounded exact mode gives the text,
    which it pins down (lower == upper == the sum of its byte log-probabilities)."""
    from chared_hf.tools.scoring import exact_score

    alphabet, pieces = vocab
    tok = piece_tokenizer(pieces)
    model = _flat_model(len(tok), seed=seed)
    text = data.draw(st.text(alphabet=alphabet, min_size=1, max_size=6))
    truth = exact_score(_exact([(model, tok)], None), text)
    assert truth.bounds[1] == pytest.approx(truth.bounds[0], abs=1e-9)
    assert float(truth.byte_logprobs.sum()) == pytest.approx(truth.bounds[0], abs=1e-6)
    lower, upper = exact_score(_exact([(model, tok)], k, prune_below=theta), text).bounds
    assert lower - 1e-9 <= truth.bounds[0] <= upper + 1e-9


def test_prune_below_drops_light_hypotheses_and_is_checked():
    """A relative floor runs fewer tokens than the count bound alone, its interval still holds
    the unbounded figure, and bad values are refused naming the argument."""
    from chared_hf.tools.scoring import exact_score

    tok = piece_tokenizer(["a", "b", "aa", "ab", "ba", "aab", "aba", "bb"])
    model = _flat_model(len(tok), seed=3)
    text = "aabab" * 3
    truth = exact_score(_exact([(model, tok)], None), text).bounds[0]
    tokens = {}
    for theta in (0.0, 0.05):
        ens = _exact([(model, tok)], 8, prune_below=theta)
        ids = ByteTokenizer()(text, return_tensors="pt")["input_ids"]
        out = ens(input_ids=ids)
        tokens[theta] = out.cache.forward_tokens()[0][0]
        lower, upper = out.cache.rows[0].logprob_bounds()[0]
        assert lower - 1e-9 <= truth <= upper + 1e-9
    assert tokens[0.05] < tokens[0.0]
    for bad in (1.0, -0.1, "0.1", True):
        with pytest.raises(ValueError, match="prune_below: expected a number in"):
            CharEDConfig(prune_below=bad)


def test_prune_below_defaults_to_a_floor_with_a_count_bound_and_to_none_without():
    """Unset, the floor is 1e-4 under a count bound and 0 with ``max_hypotheses=None`` (the
    unbounded mode stays exact); an explicit value always wins, and it round-trips."""
    from chared_hf.configuration import DEFAULT_PRUNE_BELOW

    assert DEFAULT_PRUNE_BELOW == 1e-4
    assert CharEDConfig().pruning_floor == DEFAULT_PRUNE_BELOW
    assert CharEDConfig(max_hypotheses=None).pruning_floor == 0.0
    assert CharEDConfig(max_hypotheses=None, prune_below=0.01).pruning_floor == 0.01
    assert CharEDConfig(prune_below=0).pruning_floor == 0.0
    again = CharEDConfig.from_dict(CharEDConfig(prune_below=0.002).to_dict())
    assert again.pruning_floor == 0.002
    tok = piece_tokenizer(["a", "b", "aa", "ab", "ba", "aab", "aba", "bb"])
    ens = _exact([(_flat_model(len(tok), seed=3), tok)], 8)
    out = ens(input_ids=ByteTokenizer()("aabab", return_tensors="pt")["input_ids"])
    assert math.exp(out.cache.rows[0].members[0].floor) == pytest.approx(DEFAULT_PRUNE_BELOW)


def test_pruning_bounds_when_pruning_drops_mass_and_for_a_bayes_ensemble():
    """A text many tokenizations spell, K=1: the interval is wide but holds the unbounded
    figure, for each member and for the "bayes" mixture (Σ π_i P_i); the bits-per-byte
    interval is the same bounds per byte."""
    from chared_hf.tools.scoring import exact_score

    tok_a = piece_tokenizer(["a", "b", "aa", "ab", "ba", "aab", "aba", "bb"])
    tok_b = piece_tokenizer(["a", "b", "aaa", "bab", "abb"])
    pairs = [(_flat_model(len(tok_a), seed=3), tok_a), (_flat_model(len(tok_b), seed=4), tok_b)]
    text = "aabab" * 3
    kwargs = {"weighting": "bayes", "weights": [0.3, 0.7]}
    truth, pruned = (exact_score(_exact(pairs, k, **kwargs), text) for k in (None, 1))
    for (lo, hi), (t, t_hi) in zip(pruned.member_bounds, truth.member_bounds, strict=True):
        assert t == pytest.approx(t_hi, abs=1e-9)
        assert lo - 1e-9 <= t <= hi + 1e-9 and hi - lo > 1e-3  # pruning dropped mass
    assert truth.bounds[0] == pytest.approx(float(truth.byte_logprobs.sum()), abs=1e-6)
    assert pruned.bounds[0] - 1e-9 <= truth.bounds[0] <= pruned.bounds[1] + 1e-9
    low, high = pruned.bits_per_byte_interval()
    n = len(text.encode())
    assert (low, high) == pytest.approx((-pruned.bounds[1] / math.log(2) / n,
                                         -pruned.bounds[0] / math.log(2) / n))
    fixed = exact_score(_exact(pairs, 1), text)  # a fixed mixture: no bound follows
    assert fixed.bounds is None and fixed.bits_per_byte_interval() is None
    with pytest.raises(ValueError, match="ensemble: exact_score needs"):
        exact_score(CharEDModel.from_members(pairs, marginalization="chared"), text)


def test_exact_mode_scores_a_text_longer_than_the_window():
    """Context policy of the exact mode, on a 5,000-byte text and a member whose window is 32
    tokens: one warning, every byte a finite log-probability, no hypothesis longer than the
    window, the cache bounded; below the window nothing changes (the first bytes' figures
    equal those of a member with a window that never fills)."""
    from chared_hf.tools.scoring import exact_score

    pieces = ["a", "b", "c", " ", "ab", "bc", "ca", " a", "abc"]
    tok = piece_tokenizer(pieces)
    model = _flat_model(len(tok), seed=11)
    rng = np.random.default_rng(0)
    text = "".join(rng.choice(list("abc "), size=5000))
    short = CharEDModel.from_members([(model, tok)], marginalization="exact", max_hypotheses=4)
    model.config.max_position_embeddings = 32
    ens = CharEDModel.from_members([(model, tok)], marginalization="exact", max_hypotheses=4)
    with pytest.warns(UserWarning, match="context longer than its window of 32 tokens"):
        ids = ByteTokenizer()(text, return_tensors="pt")["input_ids"]
        out = ens(input_ids=ids)
    logp = out.logits[0, :-1].double().gather(-1, ids[0, 1:, None])[:, 0]
    assert len(logp) == 5000 and bool(torch.isfinite(logp).all())
    member = out.cache.rows[0].members[0]
    assert max(len(h.node) for h in member.hyps) <= 32
    assert member.tree.size <= 2 * 32 * 4 + member.tree.slack
    head = text[:20]  # well inside the window: the same figures as without one
    assert exact_score(ens, head).byte_logprobs == pytest.approx(
        exact_score(short, head).byte_logprobs, abs=1e-9)


def _plain_probs(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(model(input_ids=torch.tensor([ids])).logits[0, -1].double(), -1)


def test_token_tree_forwards_match_plain_forwards_before_and_after_collecting():
    """Tree attention: each node's distribution is the model's on its own token sequence,
    whichever other sequences share the cache, and after unused slots are dropped."""
    from chared_hf.members.member import Member
    from chared_hf.members.token_tree import TokenTree

    tok = piece_tokenizer(["a", "b", "ab", "ba", "aa"])
    model = _flat_model(len(tok), seed=5)
    tree = TokenTree(model, Member.build(model, tok).table)
    root = tree.chain(None, [1, 3])
    a, b = tree.run([(root, 4), (root, 5)])
    c, d, e = tree.run([(a, 3), (b, 3), (a, 6)])
    assert tree.forwards == 3 and tree.size == 2 + 2 + 3
    assert tree.ids(d) == [1, 3, 5, 3] and tree.ids(e) == [1, 3, 4, 6]
    for node in (root, a, b, c, d, e):
        assert torch.allclose(node.view.probs, _plain_probs(model, tree.ids(node)), atol=1e-12)
    tree.collect([d, e])  # only c's slot is no longer needed
    assert tree.size == 6 and tree.ids(d) == [1, 3, 5, 3] and tree.ids(e) == [1, 3, 4, 6]
    f, g = tree.run([(d, 4), (e, 4)])
    for node in (f, g):
        assert torch.allclose(node.view.probs, _plain_probs(model, tree.ids(node)), atol=1e-12)


def test_token_tree_lanes_keep_rows_apart():
    """Each sequence of text in its own lane (batch row of the cache): uneven calls (padding
    where a lane runs fewer tokens, or none), queued requests of several lanes in one call,
    and collection that keeps a different number of slots per lane all give each node the
    model's own distribution."""
    from chared_hf.members.member import Member
    from chared_hf.members.token_tree import TokenTree

    tok = piece_tokenizer(["a", "b", "ab", "ba", "aa"])
    model = _flat_model(len(tok), seed=7)
    tree = TokenTree(model, Member.build(model, tok).table)
    lanes = [tree.new_lane() for _ in range(3)]
    assert lanes == [0, 1, 2]
    a = tree.chain(None, [1, 3, 4, 5], lane=0)  # lanes 1 and 2 get padding
    b = tree.chain(None, [1, 5], lane=1)
    assert tree.forwards == 2 and tree.queries == 6 and tree.size == 4 + 2
    c, d = tree.request(a, [3]), tree.request(b, [4, 6, 3])
    e = tree.request(None, [1], lane=2)
    tree.flush()
    assert tree.forwards == 3 and (c.lane, d.lane, e.lane) == (0, 1, 2)
    assert tree.ids(c) == [1, 3, 4, 5, 3] and tree.ids(d) == [1, 5, 4, 6, 3]
    tree.register(lambda: [c, d, e])
    tree.collect()  # lanes keep 5, 5 and 1 slots: the cache holds 5 per lane
    assert tree.size == 5 and tree.ids(d) == [1, 5, 4, 6, 3] and tree.ids(e) == [1]
    f, = tree.run([(e, 4)])
    assert tree.ids(f) == [1, 4]
    for node in (c, d, e, f):  # a and b were dropped (nobody registered them)
        assert torch.allclose(node.view.probs, _plain_probs(model, tree.ids(node)), atol=1e-12)


def test_exact_scoring_shares_prefixes_and_runs_one_call_per_byte(stories):
    """Hypotheses share their common prefixes (cache slots grow with distinct prefixes, not
    hypotheses x context), and each byte costs each member at most one forward call."""
    text = ("Once upon a time, there was a little girl named Lily. She loved to play outside "
            "in the park with her friends. One day, she saw a big red ball under a tree.")
    enc = ByteTokenizer()(text, return_tensors="pt")["input_ids"]
    ens = CharEDModel.from_members([stories], marginalization="exact", max_hypotheses=8,
                                   prune_below=0)  # K hypotheses, to share prefixes
    out = ens(input_ids=enc)
    (member,) = out.cache.rows[0].members
    assert member.forwards <= 1 + len(b" " + text.encode())  # start, then dummy prefix + text
    tree = member.tree
    paths = [h.node.path for h in member.hyps]
    used = len(set(torch.cat(paths).tolist()))
    sequences = [tree.ids(h.node) for h in member.hyps]
    prefixes = {tuple(ids[:i]) for ids in sequences for i in range(1, len(ids) + 1)}
    assert used == len(prefixes)  # every distinct prefix cached once, none twice
    assert used < sum(len(p) for p in paths)  # ... and hypotheses do share prefixes
    # unused slots are dropped before they pile up: the cache holds a fraction of the
    # tokens run (without collections it would hold every one)
    assert tree.size < tree.queries / 2, (tree.size, tree.queries)


def test_exact_with_a_dummy_prefix_conditions_on_it():
    """SentencePiece style: the member's stream is " " + text, conditioned on starting with
    the space."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "▁": 3, "a": 4, "b": 5, "▁a": 6, "▁b": 7,
             "ab": 8, "▁ab": 9}
    backend = Tokenizer(models.BPE(vocab, [("▁", "a"), ("▁", "b"), ("a", "b"), ("▁a", "b")],
                                   unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>",
                                  eos_token="</s>")
    model = _flat_model(len(tok), seed=6)
    ens = CharEDModel.from_members([(model, tok)], marginalization="exact", max_hypotheses=None)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[1]])).logits[0, -1].double()
    probs = torch.softmax(logits[[3, 4, 5, 6, 7, 8, 9, 2]], -1)  # text tokens + EOS
    lead = float(probs[[0, 3, 4, 6]].sum())  # tokens that start with a space
    for text in (b"a", b"ab", b"ba", b"abab"):
        want = _brute_force(model, tok, b" " + text, [1], 2) - math.log(lead)
        assert _teacher_forced(ens, text) == pytest.approx(want, abs=1e-6), text


def test_generation_after_a_prompt_counts_tokens_that_reach_past_its_end():
    """The prompt's end is no token boundary in the exact mode: the first generated byte's
    distribution is the brute-force one over every tokenization, tokens that span the prompt's
    end included (HumanEval's prompts end in a newline that a tokenizer joins with the indent
    after it). The paper mode with ``heal_prompt=False`` commits the prompt's own
    tokenization and differs (``tests/test_healing.py`` checks the healed paper mode)."""
    tok = piece_tokenizer(["a", "b", "ab", "ba", "aa", "abb", "bab"])
    model = _flat_model(len(tok), seed=11)
    exact = CharEDModel.from_members([(model, tok)], marginalization="exact",
                                     max_hypotheses=None)
    paper = CharEDModel.from_members([(model, tok)], marginalization="chared",
                                     heal_prompt=False)
    for prompt in ("ab", "aba", "ba"):
        want = next_byte_distribution(model, _pieces(tok), [1], prompt.encode(), [2],
                                      VOCAB_SIZE, EOS_ID)
        enc = ByteTokenizer()(prompt, return_tensors="pt")
        got = {}
        for name, ens in (("exact", exact), ("paper", paper)):
            out = ens.generate(**enc, max_new_tokens=1, do_sample=False,
                               return_dict_in_generate=True, output_scores=True)
            got[name] = torch.softmax(out.scores[0][0].double(), -1)
        assert torch.allclose(got["exact"], want, atol=1e-6, rtol=0), prompt
        assert float((got["paper"] - want).abs().max()) > 1e-3, prompt


@pytest.mark.parametrize("tail", [1, 2])
def test_a_long_prompt_is_read_over_every_tokenization_of_its_last_tokens(tail):
    """With a bound, the prompt's head is conditioned on as the member tokenizes it (one call)
    and its last ``exact_prompt_tokens`` tokens' bytes over every tokenization: the first new
    byte is the brute-force one after the head's ids. With ``None``, the whole prompt is
    read over every tokenization (the oracle after the start id alone)."""
    tok = piece_tokenizer(["a", "b", "ab", "ba", "aa", "abb", "bab"])
    model = _flat_model(len(tok), seed=11)
    prompt = "aabbaabab"
    ids = tok(prompt, add_special_tokens=False)["input_ids"]  # greedy longest match
    assert len(ids) > tail + 1
    head = ids[:-tail]
    rest = prompt.encode()[len(tok.decode(head).replace(" ", "").encode()):]
    for tokens, start, text in ((tail, [1, *head], rest), (None, [1], prompt.encode())):
        ens = CharEDModel.from_members([(model, tok)], max_hypotheses=10_000, prune_below=0,
                                       exact_prompt_tokens=tokens)
        out = ens.generate(**ByteTokenizer()(prompt, return_tensors="pt"), max_new_tokens=1,
                           do_sample=False, return_dict_in_generate=True, output_scores=True)
        got = torch.softmax(out.scores[0][0].double(), -1)
        want = next_byte_distribution(model, _pieces(tok), start, text, [2], VOCAB_SIZE,
                                      EOS_ID)
        assert torch.allclose(got, want, atol=1e-6, rtol=0), tokens


def test_a_prompt_head_moves_the_weights_by_its_tokens_and_its_tail_by_every_tokenization():
    """Bayes weights after a prompt read with a head: each member's evidence is its head
    tokens' probabilities, then each tail byte's probability over every tokenization (the
    brute-force next byte after the head, byte by byte)."""
    toks = [piece_tokenizer(["a", "b", "ab", "ba", "aa", "abb", "bab"]),
            piece_tokenizer(["a", "b", "ab", "bb", "aab", "ba"])]
    models = [_flat_model(len(t), seed=s) for t, s in zip(toks, (11, 12), strict=True)]
    prompt = "aabbaabab"
    ens = CharEDModel.from_members(list(zip(models, toks, strict=True)), weighting="bayes",
                                   max_hypotheses=10_000, prune_below=0, exact_prompt_tokens=2)
    state = EnsembleCache(decide="greedy")
    ens.generate(**ByteTokenizer()(prompt, return_tensors="pt"), max_new_tokens=1,
                 **{CACHE_KW: state})
    logp = []
    for model, tok in zip(models, toks, strict=True):
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        head, tail = ids[:-2], prompt.encode()[len(tok.decode(ids[:-2]).replace(" ", "")):]
        with torch.no_grad():
            scores = torch.log_softmax(model(input_ids=torch.tensor([[1, *head]])).logits[0],
                                       -1)
        total = sum(float(scores[k, t]) for k, t in enumerate(head))
        for j, byte in enumerate(tail):
            total += math.log(float(next_byte_distribution(
                model, _pieces(tok), [1, *head], tail[:j], [2], VOCAB_SIZE, EOS_ID)[byte]))
        logp.append(total)
    w = state.rows[0].weights
    assert math.log(w[0] / w[1]) == pytest.approx(logp[0] - logp[1], abs=1e-6)


def test_exact_is_never_below_the_canonical_tokenization(stories):
    """Summing over more tokenizations only adds: exact >= the member's own canonical score."""
    model, mtok = stories
    text = "Once upon a time, there was a little girl named Lily."
    ids = mtok(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits[0].double()
    special = [mtok.unk_token_id, mtok.bos_token_id]
    logits[:, special] = -torch.inf
    logp = torch.log_softmax(logits, -1)
    canonical = sum(float(logp[i, ids[0, i + 1]]) for i in range(ids.shape[1] - 1))
    enc = ByteTokenizer()(text, return_tensors="pt")["input_ids"]
    for k in (None, 8) if len(text) < 20 else (8, 2):
        ens = CharEDModel.from_members([stories], marginalization="exact", max_hypotheses=k)
        scored = float(ens(input_ids=enc).logits[0, :-1].gather(-1, enc[0, 1:, None]).sum())
        assert scored >= canonical - 1e-6 * abs(canonical), (k, scored, canonical)


def test_exact_unbounded_on_a_short_real_text(stories):
    model, mtok = stories
    ens = CharEDModel.from_members([stories], marginalization="exact", max_hypotheses=None)
    bounded = CharEDModel.from_members([stories], marginalization="exact", max_hypotheses=8,
                                       prune_below=0)
    enc = ByteTokenizer()("Once", return_tensors="pt")["input_ids"]

    def score(m):
        return float(m(input_ids=enc).logits[0, :-1].gather(-1, enc[0, 1:, None]).sum())

    assert score(ens) >= score(bounded) - 1e-6


def test_exact_generation_with_two_members(stories):
    tok = piece_tokenizer(list("abcdefghijklmnopqrstuvwxyz ,.") + ["the", " a", "ing"])
    ens = CharEDModel.from_members([stories, (tiny_model(len(tok), bos=1, eos=2), tok)],
                                   weights=[0.8, 0.2], marginalization="exact")
    enc = ByteTokenizer()("Once upon a time", return_tensors="pt")
    out = ens.generate(**enc, max_new_tokens=24, return_dict_in_generate=True)
    assert out.sequences.shape[1] == enc["input_ids"].shape[1] + 24
    calls = out.cache.forward_calls()[0]
    assert all(c > 0 for c in calls)
    logits = ens(**enc).logits
    sums = logits.exp().sum(-1)
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)


def test_unbounded_mode_gives_up_clearly_when_a_byte_needs_too_many_tokens(monkeypatch):
    import chared_hf.decoding.exact as exact

    tok = piece_tokenizer(["a", "b", "ab", "ba", "aa", "abb", "bab"])
    ens = CharEDModel.from_members([(_flat_model(len(tok), seed=3), tok)],
                                   marginalization="exact", max_hypotheses=None)
    monkeypatch.setattr(exact, "UNBOUNDED_LIMIT", 3)
    ids = ByteTokenizer()("abababab", return_tensors="pt")["input_ids"]
    with pytest.raises(ValueError, match=r"max_hypotheses: None \(no bound\) would run \d+ "
                                         r"tokens at once .* give a bound such as 8"):
        ens(input_ids=ids)


@pytest.mark.parametrize("bad", [0, -3, 2.5, "many", True])
def test_max_hypotheses_is_validated(bad):
    with pytest.raises(ValueError, match="max_hypotheses: expected a positive integer or None"):
        CharEDConfig(marginalization="exact", max_hypotheses=bad)


def test_exact_mode_round_trips_through_save(stories, tmp_path):
    path = str(asset_path("models/stories260K"))
    model = CharEDModel(CharEDConfig(members=[path], marginalization="exact", max_hypotheses=3))
    model.save_pretrained(tmp_path)
    again = CharEDModel.from_pretrained(tmp_path, local_members=True)
    assert again.config.marginalization == "exact" and again.config.max_hypotheses == 3


ADVERSARIAL = ["   leading spaces and  runs   ", "emoji 😀👍🏽🇫🇷 end", "mixed Ελληνικά 中文 text",
               "<0x0A> looks like </s> and <s>", "\t\t\n\n  \n", "x"]


def _corpus(limit: int, cut: int | None) -> list[str]:
    """GSM8K records (question, then answer) spread over the file, each cut to ``cut``
    characters."""
    import json

    lines = asset_path("corpora/gsm8k-test.jsonl").read_text().splitlines()
    step = max(1, len(lines) // limit)
    records = [json.loads(line) for line in lines[::step][:limit]]
    return [(r["question"] + "\n" + r["answer"])[:cut] for r in records]


def _represents(tok, text: str) -> bool:
    """Whether the tokenizer's pieces spell ``text`` exactly, without an unknown token."""
    from chared_hf.members.token_bytes import TokenBytes

    tb = TokenBytes.from_tokenizer(tok)
    ids = tb.encode(text.encode())
    return tb.unk_id not in ids and tb.spell(ids) == text.encode()


def _assert_finite_under_every_bound(family: str, texts: list[str], bounds) -> None:
    from conftest import load_tokenizer

    tok = load_tokenizer(family)
    model = tiny_model(len(tok), seed=4, bos=tok.bos_token_id, eos=tok.eos_token_id)
    # A lossy tokenizer (spm-unigram folds newlines) gets the texts on one line.
    texts = [t for text in texts for t in dict.fromkeys([text, " ".join(text.split())])
             if _represents(tok, t)]
    assert texts, family
    ens = CharEDModel.from_members([(model, tok)], marginalization="exact")
    for k in bounds:
        ens.config.max_hypotheses = k  # the byte tables are built once
        for text in texts:
            ids = ByteTokenizer()(text, return_tensors="pt")["input_ids"]
            logits = ens(input_ids=ids).logits[0, :-1]
            score = float(logits.gather(-1, ids[0, 1:, None]).sum())
            assert math.isfinite(score), (family, k, text)


FAMILIES = ["gpt2", "llama2", "phi3", "qwen2", "spm-unigram"]


@pytest.mark.parametrize("family", FAMILIES)
def test_observed_text_is_never_impossible_under_any_bound(family):
    """Pruning never gives observed text probability zero: the byte-per-token lineage is
    kept (real tokenizers, tiny random models; texts each tokenizer can spell)."""
    _assert_finite_under_every_bound(family, [*_corpus(2, 160), *ADVERSARIAL], (1, 8))


@pytest.mark.slow
@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "spm-unigram"])
def test_whole_corpus_records_are_never_impossible(family):
    """Whole GSM8K records under the byte-complete families (spm-unigram has no piece for
    several digits and symbols, so no record is text it can spell; its zeros are checked
    byte by byte in ``test_a_lossy_member_gives_zero_only_to_what_it_cannot_spell``)."""
    _assert_finite_under_every_bound(family, _corpus(12, None), (1, 8))


def test_the_product_rule_widens_members_that_share_no_byte():
    """K=1, the product rule, prompt "xy": one member keeps only the start of its favoured
    token "xyw", the other only that of "xyz", so their distributions share no byte. Each
    then adds its lineage ("x", "y" one token each, at a token boundary), and generation
    goes on with a byte both spell."""
    members = []
    for favoured in ("xyw", "xyz"):
        tok = piece_tokenizer([*"wxyz", favoured])
        model = tiny_model(len(tok), seed=5, bos=1, eos=2).double()
        members.append((TokenBiased(model, tok.convert_tokens_to_ids(favoured), 12.0), tok))
    ens = CharEDModel.from_members(members, marginalization="exact", max_hypotheses=1,
                                   combine="product")
    out = ens.generate(**ByteTokenizer()("xy", return_tensors="pt"), max_new_tokens=1,
                       do_sample=False, return_dict_in_generate=True)
    assert out.sequences[0, -1] < 256  # a byte
    assert [m.lineages for m in out.cache.rows[0].members] == [1, 1]


def test_real_model_scores_corpus_text_finitely_at_the_smallest_bound(stories):
    """K=1 keeps one hypothesis: bytes it cannot spell take the lineage (``widen``), which
    these texts need."""
    ens = CharEDModel.from_members([stories], marginalization="exact", max_hypotheses=1)
    lineages = 0
    for text in [*_corpus(2, 160), *ADVERSARIAL]:
        ids = ByteTokenizer()(text, return_tensors="pt")["input_ids"]
        out = ens(input_ids=ids)
        score = float(out.logits[0, :-1].gather(-1, ids[0, 1:, None]).sum())
        assert math.isfinite(score), text
        lineages += out.cache.rows[0].members[0].lineages
    assert lineages > 0


def test_a_lossy_member_gives_zero_only_to_what_it_cannot_spell_and_follows_again():
    """spm-unigram has no byte fallback: alone, the exact mode gives exactly the bytes it
    cannot represent probability zero and scores the rest; next to a byte-level member, every
    byte keeps a finite log-probability. Before re-rooting, its first unknown byte raised."""
    spm, gpt2 = load_tokenizer("spm-unigram"), load_tokenizer("gpt2")
    lossy = (tiny_model(len(spm), seed=1, bos=spm.bos_token_id, eos=spm.eos_token_id), spm)
    full = (tiny_model(len(gpt2), seed=2, eos=gpt2.eos_token_id), gpt2)
    text = "I saw 🙂 a\tcat — ok"
    alone = byte_logprobs(CharEDModel.from_members([lossy], marginalization="exact"), text)
    unknown = {i for i, ch in enumerate(text.encode()) if i in range(6, 10) or ch == 9} | {
        17, 18, 19}
    assert {i for i, v in enumerate(alone) if not np.isfinite(v)} == unknown
    assert not np.isnan(alone).any()
    both = byte_logprobs(CharEDModel.from_members([lossy, full], marginalization="exact"), text)
    assert np.isfinite(both).all()


def _float64(pair):
    """A float64 copy of a (model, tokenizer) pair: calls of different shapes then agree far
    below 1e-6 (in float32 they differ by about 1e-6)."""
    import copy

    return copy.deepcopy(pair[0]).double(), pair[1]


def test_exact_scoring_runs_ahead_along_the_text(stories, monkeypatch):
    """Run-ahead on known text: each call also runs the member's own tokenization of the text
    ahead (with the shorter tokens inside it), from the heaviest
    hypothesis and (``run_ahead_children``, the default on accelerators) from every child
    the call runs, so later bytes whose children it ran need no call; every byte's
    distribution stays the same to 1e-6."""

    stories = _float64(stories)
    text = ("Once upon a time, there was a little girl named Lily. She loved to play outside "
            "in the park with her friends. One day, she saw a big red ball under a tree.")
    ids = torch.tensor([[256, *text.encode(), EOS_ID]])

    def run(ahead: int, children: bool = False):
        ens = CharEDModel.from_members([stories], marginalization="exact", max_hypotheses=8,
                                       prune_below=1e-4, run_ahead_bytes=ahead,
                                       run_ahead_children=children)
        out = ens(input_ids=ids)
        return out.logits[0].double(), out.cache.rows[0].members[0].forwards

    ahead = Speculation().run_ahead_bytes
    logits, calls = run(ahead)
    plain, plain_calls = run(0)
    wide, wide_calls = run(ahead, children=True)  # from every child too
    assert calls < 0.7 * plain_calls and wide_calls <= calls, (plain_calls, calls, wide_calls)
    assert torch.allclose(logits.exp(), plain.exp(), atol=1e-6, rtol=0)
    assert torch.allclose(wide.exp(), plain.exp(), atol=1e-6, rtol=0)


def test_lighter_tokenizations_run_their_next_tokens_ahead(stories, monkeypatch):
    """Along a story, tokenizations that split a word differently follow the same tokens
    afterwards, with a steady share of the mass (the floor keeps them). Each call also runs
    every lighter hypothesis' next tokens (``Speculation.lineage_tokens``), along the text in
    scoring and along the guessed token in generation: fewer calls, the same distributions
    to 1e-6 and the same generated text."""

    stories = _float64(stories)
    text = (REPO / "benchmarks" / "data" / "story.txt").read_text()[:600]
    ids = torch.tensor([[256, *text.encode(), EOS_ID]])

    def run(tokens: int):
        ens = CharEDModel.from_members([stories], marginalization="exact", max_hypotheses=8,
                                       prune_below=1e-4)
        ens.speculation = dataclasses.replace(ens.speculation, lineage_tokens=tokens)
        out = ens(input_ids=ids)
        return out.logits[0].double(), out.cache.rows[0].members[0].forwards

    logits, calls = run(2)
    plain, plain_calls = run(0)
    assert calls < 0.8 * plain_calls, (calls, plain_calls)
    assert torch.allclose(logits.exp(), plain.exp(), atol=1e-6, rtol=0)

    prompts = ["The little dog ran to the", "def fibonacci(n):\n"]

    def generate(tokens: int):
        ens = CharEDModel.from_members([stories], marginalization="exact", max_hypotheses=8,
                                       prune_below=1e-4)
        ens.speculation = dataclasses.replace(ens.speculation, lineage_tokens=tokens)
        out, calls = [], 0
        for prompt in prompts:  # one row at a time: a batch's rows guess nothing
            o = ens.generate(**ByteTokenizer()(prompt, return_tensors="pt"), max_new_tokens=32,
                             return_dict_in_generate=True, output_scores=True)
            out.append((o.sequences, torch.stack(o.scores)))
            calls += o.cache.rows[0].members[0].forwards
        return out, calls

    (seqs, calls), (plain_seqs, plain_calls) = generate(2), generate(0)
    assert calls < plain_calls, (calls, plain_calls)
    for (a, sa), (b, sb) in zip(seqs, plain_seqs, strict=True):
        assert torch.equal(a, b)
        assert torch.allclose(sa.double().softmax(-1), sb.double().softmax(-1), atol=1e-6)


def _generate_alone(pair, prompts: list[str], new_bytes: int = 32):
    """Greedy exact-mode generation of each prompt by one member (K=8, θ=1e-4): the texts,
    the scores, and the member's calls and tokens over all prompts."""
    ens = CharEDModel.from_members([pair], marginalization="exact", max_hypotheses=8,
                                   prune_below=1e-4)
    out, calls, tokens = [], 0, 0
    for prompt in prompts:
        o = ens.generate(**ByteTokenizer()(prompt, return_tensors="pt"),
                         max_new_tokens=new_bytes, return_dict_in_generate=True,
                         output_scores=True)
        out.append((o.sequences, torch.stack(o.scores).double().softmax(-1)))
        calls += o.cache.forward_calls()[0][0]
        tokens += o.cache.forward_tokens()[0][0]
    return out, calls, tokens


def _same_generations(a: list, b: list) -> None:
    for (seq_a, probs_a), (seq_b, probs_b) in zip(a, b, strict=True):
        assert torch.equal(seq_a, seq_b)
        assert torch.allclose(probs_a, probs_b, atol=1e-6, rtol=0)


PROMPTS = ["Once upon a time", "The little dog ran to the", "def fibonacci(n):\n"]


def test_a_byte_no_kept_hypothesis_spells_gets_the_heaviest_ones_lineage():
    """One hypothesis kept (K=1): after "xy" it is the start of the favoured token "xyw".
    The text goes on with "z", which it cannot spell, and no hypothesis sits at a token
    boundary. The heaviest one then spells its pending bytes one token each ("x", "y"), run
    then, and "z" starts a token after them: the byte keeps a finite probability, and the
    kept mass (the lower bound) is that lineage's, as a plain forward pass gives it."""
    tok = piece_tokenizer([*"wxyz", "xyw"])
    x, y, z, xyw = tok.convert_tokens_to_ids(["x", "y", "z", "xyw"])
    model = TokenBiased(tiny_model(len(tok), seed=5, bos=1, eos=2).double(), xyw, 12.0)
    ens = CharEDModel.from_members([(model, tok)], marginalization="exact", max_hypotheses=1)
    ids = torch.tensor([[256, *b"xyz"]])
    out = ens(input_ids=ids)
    assert torch.isfinite(out.logits[0, :-1].gather(-1, ids[0, 1:, None])).all()
    (member,) = out.cache.rows[0].members
    (h,) = member.hyps
    assert member.lineages == 1 and member.tree.ids(h.node) == [1, x, y] and h.pending == b"z"
    # The oracle: log p(x | <s>) + log p(y | <s> x) + log p(z | <s> x y), specials removed
    # (z is the only token that starts with "z").
    allowed = torch.zeros(len(tok), dtype=torch.float64)
    allowed[[0, 1]] = -torch.inf
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([[1, x, y]])).logits[0] +
                                 allowed, -1)
    expected = float(logp[0, x] + logp[1, y] + logp[2, z])
    assert member.kept == pytest.approx(expected, abs=1e-9)
    # Without the favoured token the heaviest hypothesis spells "z" itself: no lineage.
    plain = CharEDModel.from_members([(model.inner, tok)], marginalization="exact",
                                     max_hypotheses=1)
    assert plain(input_ids=ids).cache.rows[0].members[0].lineages == 0

def test_run_ahead_leaves_out_prefixes_the_floor_would_drop(stories, monkeypatch):
    """A shorter token ``e`` inside the guessed token ``t`` is run ahead only if
    ``p(e) >= θ·p(t)``: below that, its child weighs less than θ of the text's mass when the
    text reaches it, so the floor drops it and running it is wasted. Fewer tokens, the same
    calls, text and scores."""
    from chared_hf.decoding import speculation

    stories = _float64(stories)
    out, calls, tokens = _generate_alone(stories, PROMPTS)
    monkeypatch.setattr(speculation, "prefixes_kept",
                        lambda m, parent, token: m.member.prefix_ids(token))
    every, every_calls, every_tokens = _generate_alone(stories, PROMPTS)
    assert calls == every_calls
    assert tokens < every_tokens, (tokens, every_tokens)
    _same_generations(out, every)


def test_exact_generation_reads_its_prompt_ahead_and_guesses_the_next_token(stories,
                                                                           monkeypatch):
    """A prompt is known text too: reading it byte by byte needs far fewer calls than bytes.
    After it, each call also runs the member's likeliest next token ahead, so the bytes that
    follow it need no call. Generation gives the same text and scores as without, and as
    running ahead from every child while reading the prompt (as on an accelerator)."""

    stories = _float64(stories)
    prompt = "Once upon a time, there was a little girl named Lily. She loved to play"
    enc = ByteTokenizer()(prompt, return_tensors="pt")

    def run(ahead: int, new: int, children: bool = False):
        ens = CharEDModel.from_members([stories], marginalization="exact", max_hypotheses=8,
                                       prune_below=1e-4, run_ahead_bytes=ahead,
                                       run_ahead_children=children)
        out = ens.generate(**enc, max_new_tokens=new, return_dict_in_generate=True,
                           output_scores=True)
        return out.sequences, torch.stack(out.scores), out.cache.rows[0].members[0].forwards

    ahead = Speculation().run_ahead_bytes
    prompt_calls = run(ahead, 1)[2]
    seqs, scores, calls = run(ahead, 32)
    wide_seqs, wide_scores, wide_calls = run(ahead, 32, children=True)
    plain_prompt_calls = run(0, 1)[2]
    plain_seqs, plain_scores, plain_calls = run(0, 32)
    assert prompt_calls < 0.7 * plain_prompt_calls, (prompt_calls, plain_prompt_calls)
    assert calls - prompt_calls < 0.7 * (plain_calls - plain_prompt_calls), (
        calls, prompt_calls, plain_calls, plain_prompt_calls)
    assert torch.equal(seqs, plain_seqs) and torch.equal(wide_seqs, plain_seqs)
    assert torch.allclose(scores.exp(), plain_scores.exp(), atol=1e-6, rtol=0)
    assert torch.allclose(wide_scores.exp(), plain_scores.exp(), atol=1e-6, rtol=0)
    assert wide_calls <= calls, (wide_calls, calls)


def test_exact_rows_share_their_members_calls(stories, monkeypatch):
    """A batch in the exact mode, scored and generated: each member runs all rows' children
    in one call per byte (each row in its own lane; prompts read side by side too), and
    every row gets the distributions and the text it gets alone (to 1e-6 in float64).
    Without running ahead, so that each row needs the same calls as alone: in the batch
    each row takes part in as many calls as it makes alone, and the rows share them."""
    from chared_hf.members.token_tree import TokenTree

    calls: list[set[int]] = []  # the lanes of each member call
    original = TokenTree._launch

    def recorded(self, queries, lanes, *args, **kwargs):
        calls.append(set(lanes))
        return original(self, queries, lanes, *args, **kwargs)

    monkeypatch.setattr(TokenTree, "_launch", recorded)
    stories = _float64(stories)
    ens = CharEDModel.from_members([stories], marginalization="exact", max_hypotheses=8,
                                   run_ahead_bytes=0)
    tok = ByteTokenizer(padding_side="left")
    texts = ["Once upon a time, there was a girl.", "The dog ran to the park.", "Tom"]
    batch = tok(texts, return_tensors="pt", padding=True)
    width = batch["input_ids"].shape[1]
    scored = ens(**batch)
    scored_calls, calls[:] = list(calls), []
    generated = ens.generate(**batch, max_new_tokens=12, return_dict_in_generate=True)
    generated_calls, calls[:] = list(calls), []
    for k, text in enumerate(texts):
        enc = tok(text, return_tensors="pt")
        alone = ens(**enc)
        n = alone.logits.shape[1]
        assert torch.allclose(scored.logits[k, -n:].exp(), alone.logits[0].exp(), atol=1e-6)
        alone_calls, calls[:] = len(calls), []
        single = ens.generate(**enc, max_new_tokens=12, return_dict_in_generate=True)
        assert torch.equal(generated.sequences[k, width:], single.sequences[0, n:])
        single_calls, calls[:] = len(calls), []
        # the batch's calls this row takes part in are the calls it makes alone
        assert sum(k in lanes for lanes in scored_calls) == alone_calls, k
        assert sum(k in lanes for lanes in generated_calls) == single_calls, k
    for together in (scored_calls, generated_calls):  # ... and the rows share them
        assert any(lanes == {0, 1, 2} for lanes in together)
        assert len(together) < sum(len(lanes) for lanes in together) - 10
