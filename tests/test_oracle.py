"""Brute-force oracles on tiny vocabularies: the paper's decoding equivalence, exactly.

The paper mode with ``heal_prompt=False`` (the prompt committed in the member's own
tokenization; ``tests/test_healing.py`` checks the healed prompt).

With one member at weight 1, the probability that the ensemble's *sampler* produces a string
(then end of text) must equal the member's own token-level probability of that string: the sum
over every token sequence that spells it. The sampler's random choices (ε draws and bytes) are
enumerated exhaustively by scripting them (``state.Draws``) and reading the distributions
the sampler returns.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from conftest import piece_tokenizer, text_logprob, tiny_model

from chared_hf.decoding.paper import Draws, SequenceState
from chared_hf.members.byte_view import EOT, EPS
from chared_hf.members.member import Member

PIECES = ["a", "b", "ab", "ba", "aa", "abb", "bab"]
PROMPT = b"ab"


class _Stop(Exception):
    """The scripted run needs more ε decisions than the script holds."""


def _duplicate_member() -> Member:
    """A byte-fallback BPE where ``a`` and ``<0x61>`` (and ``b``, ``<0x62>``) share bytes."""
    from tokenizers import Tokenizer, models

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<0x61>": 3, "<0x62>": 4, "a": 5, "b": 6,
             "ab": 7, "ba": 8}
    backend = Tokenizer(models.BPE(vocab, [("a", "b"), ("b", "a")], byte_fallback=True,
                                   unk_token="<unk>"))
    return _flat_member(backend, seed=5)


def _flat_member(backend, seed: int) -> Member:
    """A member over ``backend`` with a tiny model whose distributions are fairly flat."""
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>",
                                  eos_token="</s>")
    model = tiny_model(len(tok), seed=seed, layers=2, bos=1, eos=2)
    with torch.no_grad():
        model.lm_head.weight.mul_(0.15)
    return Member.build(model, tok)


@pytest.fixture(scope="module")
def member():
    tok = piece_tokenizer(PIECES)
    model = tiny_model(len(tok), seed=3, layers=2, bos=1, eos=2).double()  # kernel-exact
    with torch.no_grad():
        model.lm_head.weight.mul_(0.15)  # flatter: every short string gets visible mass
    return Member.build(model, tok)


def _member_probability(member: Member, prompt_ids: list[int], text: bytes) -> float:
    """The member's own probability of ``text`` then end of text, over all tokenizations."""
    tb = member.token_bytes
    pieces = {i: p for i, p in enumerate(tb.pieces) if p}
    return math.exp(text_logprob(member.model, pieces, prompt_ids, text, tb.eos_ids))


class _Scripted(Draws):
    """The sampler's random choices from a script: each entry is one ε draw, 0 = do not
    commit, k >= 1 = commit and, if several ids spell the pending bytes, take the k-th of them.
    ``factors`` collects the probability of each scripted choice."""

    def __init__(self, script: tuple[int, ...]):
        super().__init__()
        self.decisions, self.factors, self.picks = list(script), [], []
        self.row: SequenceState | None = None

    def uniform(self) -> float:
        if not self.decisions:
            raise _Stop
        eps = float(self.row.joint[EPS])
        choice = self.decisions.pop(0)
        commit = choice > 0
        self.picks.append(choice - 1)
        self.factors.append(eps if commit else 1.0 - eps)
        # A uniform draw just below J(ε) must commit, one at J(ε) must not.
        return eps * (1 - 1e-9) if commit else eps

    def pick(self, probs: torch.Tensor) -> int:
        k = self.picks[-1]
        if k >= len(probs):
            raise _Stop  # no such id: not a path
        self.factors.append(float(probs[k]) / float(probs.sum()))
        return k


def _scripted_run(member: Member, text: bytes, script: tuple[int, ...],
                  prompt: bytes = PROMPT):
    """Run the real sampler with scripted random choices; (path probability, draws used) or
    None."""
    draws = _Scripted(script)
    try:
        # The paper's literal handling of the prompt (heal_prompt=False): the member commits
        # its own tokenization of it, so the sampler must be the member itself.
        row = draws.row = SequenceState([member], [1.0], "mixture", "sample", draws=draws,
                                        heal_prompt=False)
        dist = row.start(prompt, with_bos=True)
        p = 1.0
        for byte in text:
            p *= dist[byte]
            dist = row.step(byte)
        p *= dist[EOT]
    except _Stop:
        return None
    return p * float(np.prod(draws.factors)), script[: len(script) - len(draws.decisions)]


def _sampler_probability(member: Member, text: bytes, choices: int = 1,
                         prompt: bytes = PROMPT) -> float:
    """Probability that the real sampling code path emits ``text`` then end of text."""
    total, seen = 0.0, set()
    for script in itertools.product(range(choices + 1), repeat=len(text) + 1):
        result = _scripted_run(member, text, script, prompt)
        if result is None or result[1] in seen:
            continue  # needs more draws, or the same path with unused trailing draws
        seen.add(result[1])
        total += result[0]
    return total


def test_byte_view_first_byte_matches_brute_force(member):
    """Member marginal after the prompt = brute-force sum of token probabilities."""
    row = SequenceState([member], [1.0], "mixture", "greedy")
    dist = row.start(PROMPT, with_bos=True)
    tb = member.token_bytes
    prompt_ids = tb.start_ids + tb.encode(PROMPT, at_start=True)
    with torch.no_grad():
        logits = member.model(input_ids=torch.tensor([prompt_ids])).logits[0, -1].double()
    probs = torch.softmax(logits, -1)
    text_ids = [i for i, p in enumerate(tb.pieces) if p]
    z = float(probs[text_ids].sum() + probs[tb.eos_ids].sum())
    for byte in b"ab":
        want = sum(float(probs[i]) for i in text_ids if tb.pieces[i][0] == byte) / z
        assert dist[byte] == pytest.approx(want, abs=1e-9)
    assert dist[EOT] == pytest.approx(float(probs[tb.eos_ids].sum()) / z, abs=1e-9)
    assert dist.sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("length", [1, 2, 3, 4])
def test_decoding_equivalence(member, length):
    """One member at weight 1: the sampler's probability of every string of up to 4 bytes
    (then end of text) equals the member's own, summed over all tokenizations."""
    tb = member.token_bytes
    prompt_ids = tb.start_ids + tb.encode(PROMPT, at_start=True)
    assert tb.spell(prompt_ids[len(tb.start_ids):]) == PROMPT
    mass = 0.0
    for letters in itertools.product(b"ab", repeat=length):
        text = bytes(letters)
        want = _member_probability(member, prompt_ids, text)
        got = _sampler_probability(member, text)
        assert got == pytest.approx(want, rel=1e-6, abs=1e-12), text
        mass += want
    assert mass > 1e-3  # the check is not vacuous


def test_ensemble_is_normalised_over_short_strings(member):
    """The sampler's total probability of every string of up to 2 bytes then end of text is
    the member's own total over the same strings (each summed over all tokenizations), and
    the rest of the mass (longer strings) is what the sampler gives to continuing past them."""
    texts = [bytes(t) for n in range(0, 3) for t in itertools.product(b"ab", repeat=n)]
    tb = member.token_bytes
    prompt_ids = tb.start_ids + tb.encode(PROMPT, at_start=True)
    total = sum(_sampler_probability(member, t) for t in texts)
    want = sum(_member_probability(member, prompt_ids, t) for t in texts)
    assert total == pytest.approx(want, rel=1e-6)
    assert 1e-3 < total < 1.0


@pytest.mark.parametrize("length", [1, 2, 3])
def test_decoding_equivalence_with_ids_that_share_bytes(length):
    """Several ids spelling the same bytes: the commit picks among them by probability, and
    the sampler still reproduces the member's own distribution over strings."""
    member = _duplicate_member()
    tb = member.token_bytes
    assert tb.pieces[3] == tb.pieces[5] == b"a"
    prompt_ids = tb.start_ids + tb.encode(PROMPT, at_start=True)
    for letters in itertools.product(b"ab", repeat=length):
        text = bytes(letters)
        want = _member_probability(member, prompt_ids, text)
        got = _sampler_probability(member, text, choices=2)
        assert got == pytest.approx(want, rel=1e-6, abs=1e-12), text


def _lead_member() -> Member:
    """A SentencePiece-style member (``▁`` marks a space, dummy prefix at the start)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "▁": 3, "a": 4, "b": 5, "▁a": 6, "▁b": 7,
             "ab": 8, "▁ab": 9}
    merges = [("▁", "a"), ("▁", "b"), ("a", "b"), ("▁a", "b")]
    backend = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    return _flat_member(backend, seed=6)


@pytest.mark.parametrize("length", [1, 2, 3])
def test_decoding_equivalence_from_the_start_of_text_with_a_dummy_prefix(length):
    """Empty prompt after <s>: a SentencePiece member sees ``" " + text`` (its dummy prefix);
    the sampler's probability of each text equals the member's sum over every tokenization
    of ``" " + text``, conditioned on the stream starting with the dummy prefix (the member's
    own tokenizer never produces a stream without it)."""
    member = _lead_member()
    tb = member.token_bytes
    assert tb.lead == b" "
    with torch.no_grad():
        logits = member.model(input_ids=torch.tensor([tb.start_ids])).logits[0, -1].double()
    text_or_eos = [i for i, p in enumerate(tb.pieces) if p] + tb.eos_ids
    probs = torch.softmax(logits[text_or_eos], -1)
    lead_mass = sum(float(q) for i, q in zip(text_or_eos, probs, strict=True)
                    if tb.pieces[i] and tb.pieces[i].startswith(b" "))
    for letters in itertools.product(b"ab", repeat=length):
        text = bytes(letters)
        want = _member_probability(member, list(tb.start_ids), b" " + text) / lead_mass
        got = _sampler_probability(member, text, prompt=b"")
        assert got == pytest.approx(want, rel=1e-6, abs=1e-12), text
