"""Property tests (hypothesis) across tokenizer families, real and generated.

1. Walking random bytes through ``SequenceState``/``MemberState``: every member marginal (258
   outcomes) and every ensemble distribution (257) is a probability vector at every step, a member
   is off track (``distribution() is None``) exactly when none of its tokens starts with its
   pending bytes, and greedy/sample outputs are the combination of the members' marginals.
2. ``ByteView`` masses against a brute-force sum over the vocabulary.
3. ``TokenBytes.encode`` spells the requested bytes exactly on lossless tokenizers.
4. ``combine.mixture``/``product``: normalised, idempotent, order-free, ``None`` left out.

Real tokenizers come from the assets (skipped with a reason naming the asset); generated
vocabularies are built with the ``tokenizers`` library. Regression tests for
bugs found this way stand at the end.
"""

from __future__ import annotations

import bisect
import functools
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from conftest import asset_path, load_tokenizer, tiny_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from chared_hf import ByteTokenizer, CharEDModel
from chared_hf.decoding.combine import combine, mixture, product
from chared_hf.decoding.paper import SequenceState
from chared_hf.members.byte_view import EOT, EPS, N_OUTCOMES, ByteTable, ByteView
from chared_hf.members.member import Member
from chared_hf.members.token_bytes import TokenBytes, byte_level_alphabet

SLOW_OK = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow],
                   report_multiple_bugs=False)
DECIDES = ("greedy", "sample", "marginal")
LOSSLESS_REAL = ("gpt2", "llama2", "phi3", "qwen2", "stories260K")
LOSSY_REAL = ("spm-unigram",)
TOL = 1e-5


# -- random text ---------------------------------------------------------------------------
WHITESPACE = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", "\u00a0", "\u3000"]
EMOJI = ["😀", "👍🏽", "🇫🇷", "👩‍💻", "🦀", "❤️"]
INVALID_TAILS = [b"", b"", b"", b"\xff", b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98", b"\x80\x80"]
chars = st.one_of(
    st.characters(min_codepoint=32, max_codepoint=126),
    st.characters(exclude_categories=("Cs",)),  # any code point, multi-byte UTF-8 included
    st.sampled_from(WHITESPACE),
    st.sampled_from(EMOJI),
    st.sampled_from(list("éüßñ中文ё")),
)


@st.composite
def random_bytes(draw, max_chars: int = 8) -> bytes:
    """Random text as UTF-8, sometimes cut mid-character, with invalid bytes inside or at the
    end."""
    data = "".join(draw(st.lists(chars, max_size=max_chars))).encode("utf-8")
    cut = draw(st.integers(0, 2))
    data = data[: len(data) - cut] if cut and draw(st.booleans()) else data
    at = draw(st.integers(0, len(data)))
    data = data[:at] + draw(st.sampled_from(INVALID_TAILS)) + data[at:]
    return data + draw(st.sampled_from(INVALID_TAILS))


def check_probability_vector(dist: np.ndarray, size: int, what: str) -> None:
    assert dist.shape == (size,), what
    assert np.all(np.isfinite(dist)), f"{what}: not finite: {dist}"
    assert np.all(dist >= 0), f"{what}: negative entries {dist[dist < 0]}"
    assert abs(dist.sum() - 1.0) < TOL, f"{what}: sums to {dist.sum()!r}"


# -- generated vocabularies ----------------------------------------------------------------
SPECIALS = ["<unk>", "<s>", "</s>"]  # ids 0, 1, 2 in every generated vocabulary
KINDS = ("wordlevel", "bpe", "unigram", "bytelevel", "spm")
LOSSLESS_KINDS = ("bytelevel", "spm")  # every byte is a token (byte map / byte fallback)
ALPHABETS = ("ab", "abc", "ab ", "aé", "a😀 ", "ab\n")
_TO_BYTE_LEVEL = {b: c for c, b in byte_level_alphabet().items()}


@dataclass(frozen=True)
class VocabSpec:
    """A generated vocabulary: a family, an alphabet and merges (index pairs) on top of it."""

    kind: str
    alphabet: str
    pairs: tuple[tuple[int, int], ...]

    @property
    def lossless(self) -> bool:
        return self.kind in LOSSLESS_KINDS


@st.composite
def vocab_specs(draw, kinds=KINDS) -> VocabSpec:
    pairs = draw(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), max_size=14))
    return VocabSpec(draw(st.sampled_from(kinds)), draw(st.sampled_from(ALPHABETS)), tuple(pairs))


def _units(spec: VocabSpec) -> list[str]:
    """The vocabulary's base pieces (in the tokenizer's own spelling)."""
    if spec.kind == "bytelevel":
        units = [_TO_BYTE_LEVEL[b] for b in spec.alphabet.encode("utf-8")]
    elif spec.kind == "spm":  # a SentencePiece vocabulary always has "▁"
        units = ["\u2581"] + ["\u2581" if c == " " else c for c in spec.alphabet]
    else:
        units = list(spec.alphabet)
    return list(dict.fromkeys(units))


def _merged(spec: VocabSpec) -> tuple[list[str], list[tuple[str, str]]]:
    """Base units plus multi-unit tokens (sharing prefixes), and BPE merges that make them."""
    tokens, merges = _units(spec), []
    for i, j in spec.pairs:
        a, b = tokens[i % len(tokens)], tokens[j % len(tokens)]
        if a + b not in tokens and len(a + b) <= 8:
            tokens.append(a + b)
            merges.append((a, b))
    return tokens, merges


@functools.lru_cache(maxsize=256)
def generated_tokenizer(spec: VocabSpec) -> PreTrainedTokenizerFast:
    tokens, merges = _merged(spec)
    base: list[str] = []
    if spec.kind == "bytelevel":
        base = [_TO_BYTE_LEVEL[b] for b in range(256)]
    elif spec.kind == "spm":
        base = [f"<0x{b:02X}>" for b in range(256)]
    pieces = list(dict.fromkeys(SPECIALS + base + tokens))
    vocab = {p: i for i, p in enumerate(pieces)}
    if spec.kind == "wordlevel":
        tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    elif spec.kind == "unigram":
        scored = [(p, 0.0 if p in SPECIALS else -1.0 - (i % 5)) for i, p in enumerate(pieces)]
        tok = Tokenizer(models.Unigram(scored, unk_id=0, byte_fallback=False))
    elif spec.kind == "bytelevel":
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
    elif spec.kind == "spm":
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>",
                                   byte_fallback=True, fuse_unk=True))
        tok.normalizer = normalizers.Sequence(
            [normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
        tok.decoder = decoders.Sequence([
            decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ])
    else:
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    tok.add_special_tokens(SPECIALS)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>")


def expected_piece(spec: VocabSpec, piece: str) -> bytes | None:
    """What a generated vocabulary's piece spells, by construction."""
    if piece in SPECIALS:
        return None
    if spec.kind == "bytelevel":
        return bytes(byte_level_alphabet()[c] for c in piece)
    if spec.kind == "spm" and piece.startswith("<0x"):
        return bytes([int(piece[3:5], 16)])
    return piece.replace("\u2581", " ").encode("utf-8")


@functools.lru_cache(maxsize=64)
def generated_member(spec: VocabSpec, seed: int = 0) -> Member:
    tok = generated_tokenizer(spec)
    return Member.build(tiny_model(len(tok), seed=seed), tok)


def text_for(spec: VocabSpec):
    """Text mostly over the vocabulary's alphabet, with a few characters it may lack."""
    alphabet = list(spec.alphabet) * 4 + ["c", "ü", "\n", "😀", "  "]
    return st.lists(st.sampled_from(alphabet), max_size=14).map(
        lambda cs: "".join(cs).encode("utf-8"))


# -- real members --------------------------------------------------------------------------
@functools.cache
def _real_member(name: str) -> Member:
    if name == "stories260K":
        path = asset_path("models/stories260K")
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        return Member.build(model, AutoTokenizer.from_pretrained(path))
    tok = load_tokenizer(name)
    return Member.build(tiny_model(len(tok), seed=len(name)), tok)


def real_member(name: str) -> Member:
    asset_path("models/stories260K" if name == "stories260K" else f"tokenizers/{name}")
    return _real_member(name)


_SORTED: dict[int, tuple[Member, list[bytes]]] = {}


def _sorted_pieces(member: Member) -> list[bytes]:
    if id(member) not in _SORTED:  # keeps the member alive, so its id stays unique
        _SORTED[id(member)] = (member, sorted({p for p in member.token_bytes.pieces if p}))
    return _SORTED[id(member)][1]


def can_follow(member: Member, pending: bytes) -> bool:
    """Brute force: some text token of the member starts with ``pending``."""
    pieces = _sorted_pieces(member)
    k = bisect.bisect_left(pieces, pending)
    return not pending or (k < len(pieces) and pieces[k].startswith(pending))


# -- walking bytes through the ensemble ----------------------------------------------------
def walk(members: list[Member], weights: list[float], decide: str, prompt: bytes,
         with_bos: bool, data: bytes, seed: int, rule: str = "mixture",
         fresh: bool = False) -> SequenceState:
    """Start on ``prompt`` and step through ``data``, checking every distribution on the way
    (and with ``fresh`` that each member's last view is a full forward pass of its ids)."""
    torch.manual_seed(seed)
    weights = list(weights[: len(members)])
    if not any(weights):
        weights[0] = 1.0
    state = SequenceState(members=members, weighting=weights, rule=rule, decide=decide)
    check_state(state, state.start(prompt, with_bos), decide, "start", fresh)
    for i, byte in enumerate(data):
        check_state(state, state.step(byte), decide, f"step {i} ({bytes([byte])!r})", fresh)
    return state


def check_state(state: SequenceState, joint: np.ndarray, decide: str, where: str,
                fresh: bool = False) -> None:
    check_probability_vector(joint, EPS, f"{where}: ensemble")
    dists = []
    for k, m in enumerate(state.members):
        assert len(m.node) == len(m.ids), f"{where}: member {k}: node length"
        if fresh:  # the tree's cache (shared with branches) gives the committed ids' view
            with torch.no_grad():
                logits = m.member.model(input_ids=torch.tensor([m.ids])).logits[0, -1]
            probs = torch.softmax(logits.double(), -1)
            assert torch.allclose(m.view.probs, probs, atol=1e-4), f"{where}: member {k}: view"
        d = m.distribution()
        if d is None:
            # Off track only where no token starts with the pending bytes (a member that cannot
            # continue a token commits alone and reads the byte from its own token boundary).
            assert not can_follow(m.member, m.pending), (
                f"{where}: member {k} is off track with pending {m.pending!r} that it can follow")
        else:
            assert can_follow(m.member, m.pending), f"{where}: member {k}: {m.pending!r}"
            check_probability_vector(d, N_OUTCOMES, f"{where}: member {k}")
            if m.pending:
                assert d[EOT] == 0.0, f"{where}: end of text inside a token"
        dists.append(d)
    if len(state.members) == 1:
        assert dists[0] is not None, f"{where}: a lone member is left off track"
    if decide != "marginal":  # the returned distribution is the members' combination
        combined = combine(state.rule, dists, state.weights)
        assert combined is not None, f"{where}: no member can follow"
        np.testing.assert_allclose(joint, combined[:EPS] / combined[:EPS].sum(), atol=1e-9)
        if decide == "greedy":  # ε was resolved: it is no longer the argmax
            assert combined[EPS] == 0 or combined[EPS] < combined[:EPS].max(), where


weight_lists = st.lists(st.sampled_from([0.0, 0.05, 0.3, 1.0, 2.5]), min_size=3, max_size=3)

REAL_ENSEMBLES = [
    ("gpt2",), ("llama2",), ("phi3",), ("qwen2",), ("spm-unigram",), ("stories260K",),
    ("gpt2", "llama2"), ("qwen2", "spm-unigram"), ("phi3", "stories260K"),
    ("gpt2", "llama2", "spm-unigram"), ("qwen2", "phi3", "stories260K"),
]


@pytest.mark.parametrize("names", REAL_ENSEMBLES, ids="+".join)
@settings(SLOW_OK, max_examples=8)
@given(data=random_bytes(max_chars=6), prompt=st.sampled_from([b"", b"Hi", b"Once upon", b"x\xc3"]),
       with_bos=st.booleans(), decide=st.sampled_from(DECIDES), weights=weight_lists,
       seed=st.integers(0, 2**16), rule=st.sampled_from(["mixture", "product"]))
def test_walk_real_tokenizers(names, data, prompt, with_bos, decide, weights, seed, rule):
    walk([real_member(n) for n in names], weights, decide, prompt, with_bos, data, seed, rule)


@pytest.mark.parametrize("partner", [None, "spm-unigram", "stories260K"])
@settings(SLOW_OK, max_examples=25)
@given(specs=st.lists(vocab_specs(), min_size=1, max_size=2), data=st.data(),
       with_bos=st.booleans(), decide=st.sampled_from(DECIDES), weights=weight_lists,
       seed=st.integers(0, 2**16))
def test_walk_generated_vocabularies(partner, specs, data, with_bos, decide, weights, seed):
    members = [generated_member(s, seed=k) for k, s in enumerate(specs)]
    if partner is not None:
        members.append(real_member(partner))
    text = data.draw(text_for(specs[0]), label="text")
    cut = data.draw(st.integers(0, min(3, len(text))), label="prompt length")
    walk(members, weights, decide, text[:cut], with_bos, text[cut:], seed, fresh=True)


# -- TokenBytes on generated vocabularies --------------------------------------------------
@settings(SLOW_OK, max_examples=60)
@given(spec=vocab_specs(), data=st.data())
def test_token_bytes_from_generated_tokenizer(spec, data):
    tok = generated_tokenizer(spec)
    extra = data.draw(st.integers(0, 3), label="ids past the tokenizer")
    tb = TokenBytes.from_tokenizer(tok, vocab_size=len(tok) + extra)
    assert len(tb.pieces) == len(tok) + extra
    for piece, idx in tok.get_vocab().items():
        assert tb.pieces[idx] == expected_piece(spec, piece), (piece, idx)
    assert tb.pieces[len(tok):] == [None] * extra
    assert (tb.eos_ids, tb.start_ids, tb.unk_id) == ([2], [1], 0)
    assert tb.lead == (b" " if spec.kind == "spm" else b"")
    text = data.draw(text_for(spec), label="text")
    at_start = data.draw(st.booleans(), label="at_start")
    ids = tb.encode(text, at_start)
    if spec.lossless:
        assert tb.spell(ids) == (tb.lead if at_start else b"") + text


def _spelled_with_unknowns(tb: TokenBytes, ids: list[int], target: bytes) -> bool:
    """``ids`` spell ``target`` where each unknown id stands for exactly one character (or one
    invalid byte) that no piece starts."""
    pos = 0
    for i in ids:
        piece = tb.pieces[i]
        if piece is not None:
            if not target.startswith(piece, pos):
                return False
            pos += len(piece)
            continue
        if i != tb.unk_id or pos >= len(target):
            return False
        width = next((w for w in (1, 2, 3, 4) if _decodes(target[pos:pos + w])), 1)
        pos += width
    return pos == len(target)


def _decodes(chunk: bytes) -> bool:
    try:
        return len(chunk.decode("utf-8")) == 1
    except UnicodeDecodeError:
        return False


def test_unknown_character_covers_one_character():
    tok = generated_tokenizer(VocabSpec("bpe", "ab", ((0, 1),)))  # pieces: a, b, ab, <unk>
    tb = TokenBytes.from_tokenizer(tok)
    ab = tok.convert_tokens_to_ids("ab")
    assert tb.encode(b"cab") == [tb.unk_id, ab]


def test_unknown_character_covers_one_character_spm_unigram():
    tb = real_member("spm-unigram").token_bytes
    ids = tb.encode("é ab".encode(), at_start=True)
    assert _spelled_with_unknowns(tb, ids, b" " + "é ab".encode())


# -- ByteView against brute force ----------------------------------------------------------
def brute_force_masses(tb: TokenBytes, logits: np.ndarray, prefix: bytes) -> np.ndarray:
    z = logits - logits.max()
    p = np.exp(z) / np.exp(z).sum()
    out = np.zeros(N_OUTCOMES)
    for i, piece in enumerate(tb.pieces):
        if piece is None or not piece.startswith(prefix):
            continue
        if piece == prefix:
            out[EPS] += p[i]
        else:
            out[piece[len(prefix)]] += p[i]
    if not prefix:
        out[EOT] = sum(p[i] for i in tb.eos_ids)
    return out


@settings(SLOW_OK, max_examples=100)
@given(spec=vocab_specs(), data=st.data())
def test_byte_view_matches_brute_force(spec, data):
    tok = generated_tokenizer(spec)
    extra = data.draw(st.integers(0, 3), label="ids past the tokenizer")
    tb = TokenBytes.from_tokenizer(tok, vocab_size=len(tok) + extra)
    table = ByteTable(tb)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    scale = data.draw(st.sampled_from([0.0, 1.0, 10.0, 60.0]), label="scale")
    logits = rng.normal(size=len(tb.pieces)) * scale
    if data.draw(st.booleans(), label="mask"):
        logits[rng.random(len(logits)) < 0.3] = -np.inf
        logits[int(rng.integers(len(logits)))] = 0.0  # at least one finite logit
    view = ByteView(table, torch.tensor(logits, dtype=torch.float32))
    text_pieces = [p for p in tb.pieces if p]
    for _ in range(4):
        piece = data.draw(st.sampled_from(text_pieces), label="piece")
        prefix = piece[: data.draw(st.integers(0, len(piece)), label="cut")]
        prefix += data.draw(st.sampled_from([b"", b"", b"a", b"\xc3", b"zz"]), label="tail")
        # brute force from the logits ByteView actually used (float32 -> float64)
        want = brute_force_masses(tb, logits.astype(np.float32).astype(np.float64), prefix)
        got = view.masses(prefix)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9, err_msg=repr(prefix))
        dist = view.distribution(prefix)
        if want.sum() == 0:
            assert dist is None
        elif dist is not None:  # see test_byte_view_low_mass_prefix for want.sum() < ~1e-13
            check_probability_vector(dist, N_OUTCOMES, repr(prefix))
        if want.sum() > 1e-6:
            np.testing.assert_allclose(dist, want / want.sum(), rtol=0, atol=1e-9)
        ids, probs = view.ending_ids(prefix)
        assert sorted(ids.tolist()) == [i for i, p in enumerate(tb.pieces) if p == prefix]


# -- TokenBytes.encode on real tokenizers --------------------------------------------------
@pytest.mark.parametrize("name", LOSSLESS_REAL + LOSSY_REAL)
@settings(SLOW_OK, max_examples=60)
@given(data=random_bytes(max_chars=12), at_start=st.booleans())
def test_encode_spells_bytes(name, data, at_start):
    tb = real_member(name).token_bytes
    ids = tb.encode(data, at_start)
    assert all(isinstance(i, int) and 0 <= i < len(tb.pieces) for i in ids)
    if name in LOSSLESS_REAL:
        assert tb.spell(ids) == (tb.lead if at_start else b"") + data


# -- combine --------------------------------------------------------------------------------
N = 6
prob_vectors = st.lists(
    st.one_of(st.just(0.0), st.floats(1e-12, 1.0)), min_size=N, max_size=N
).filter(lambda v: sum(v) > 0).map(lambda v: np.array(v) / np.sum(v))
weights_st = st.one_of(st.just(0.0), st.floats(1e-3, 100.0))


@settings(deadline=None, max_examples=200)
@given(members=st.lists(st.tuples(st.one_of(st.none(), prob_vectors), weights_st), min_size=1,
                        max_size=4),
       rule=st.sampled_from([mixture, product]), data=st.data())
def test_combine_rules(members, rule, data):
    dists = [d for d, _ in members]
    weights = [w for _, w in members]
    out = rule(dists, weights)
    active = [(d, w) for d, w in members if d is not None and w > 0]
    if not active:
        assert out is None
        return
    # Members with None (or zero weight) are left out.
    assert _same(out, rule([d for d, _ in active], [w for _, w in active]))
    if out is None:  # only the product, when the members share no outcome
        assert rule is product
        assert not np.any(np.all([d > 0 for d, _ in active], axis=0))
        return
    check_probability_vector(out, N, rule.__name__)
    if rule is product:  # support is the intersection of the members' supports
        np.testing.assert_array_equal(out > 0, np.all([d > 0 for d, _ in active], axis=0))
    # Member order is irrelevant.
    order = data.draw(st.permutations(range(len(members))), label="order")
    assert _same(out, rule([dists[i] for i in order], [weights[i] for i in order]))
    # Identical members give back the member (whatever the weights).
    d0 = active[0][0]
    assert _same(d0, rule([d0] * len(weights), [w or 1.0 for w in weights]))


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return bool(np.allclose(a, b, rtol=1e-9, atol=1e-12))


def test_byte_views_gathered_on_a_device_equal_those_read_in_place():
    """``gather`` reads CPU members' sums in place and gathers a device's with torch (one
    gather per bank, one copy per device): the same masses either way, here with the device
    path forced on CPU tensors, over two banks and several prefixes at once."""
    from chared_hf.members.byte_view import ViewBank, gather

    tok = generated_tokenizer(VocabSpec("bytelevel", "abc", ((0, 1), (1, 2), (3, 2))))
    table = ByteTable(TokenBytes.from_tokenizer(tok))
    rng = np.random.default_rng(1)
    banks = [ViewBank(table, torch.tensor(rng.normal(size=(n, len(tok))) * 3.0))
             for n in (2, 3)]
    prefixes = [b"", b"a", b"ab", b"c", b"zz"]
    in_place = [(v, p) for bank in banks for v in bank.views() for p in prefixes]
    gather(in_place)
    forced = []
    for bank in banks:
        copy = ViewBank(table, torch.zeros(1, len(tok)))
        copy.probs, copy.sums, copy.host, copy.host_probs = bank.probs, bank.sums, None, None
        forced += [(v, p) for v in [ByteView.at(copy, r) for r in range(len(bank.probs))]
                   for p in prefixes]
    gather(forced)
    for (a, p), (b, _) in zip(in_place, forced, strict=True):
        np.testing.assert_array_equal(a.masses(p), b.masses(p), err_msg=repr(p))


def test_byte_view_low_mass_prefix():
    tok = generated_tokenizer(VocabSpec("wordlevel", "ab", ()))  # text tokens: a, b
    table = ByteTable(TokenBytes.from_tokenizer(tok))
    logits = torch.full((len(tok),), -float("inf"))
    logits[tok.convert_tokens_to_ids("a")] = 0.0
    logits[tok.convert_tokens_to_ids("b")] = -50.0  # p(b) = 2e-22 > 0
    dist = ByteView(table, logits).distribution(b"b")
    assert dist is not None and dist[EPS] == 1.0


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_product_with_negligible_weight():
    d = np.array([0.2, 0.3, 0.5])
    out = product([d, np.array([0.5, 0.5, 0.0])], [1e6, 1e-320])
    assert out is not None and abs(out.sum() - 1) < TOL


# -- known problems in the decoding state ---------------------------------------------------
def _uniform_member(spec: VocabSpec) -> Member:
    """A member whose model gives every token the same probability (zero output weights)."""
    tok = generated_tokenizer(spec)
    model = tiny_model(len(tok))
    with torch.no_grad():
        model.lm_head.weight.zero_()
    return Member.build(model, tok)


# byte-level vocabulary with "ab" and four longer tokens that start with it
MANY_AB = VocabSpec("bytelevel", "ab", ((0, 1), (2, 0), (2, 1), (2, 2), (3, 4)))


def test_marginal_teacher_forcing_restores_cache():
    """Teacher forcing takes the commit branch after "a", then undoes it (state and KV cache)
    because "b" continues the token; the same through ``CharEDModel.forward``."""
    member = _uniform_member(MANY_AB)
    state = walk([member], [1.0], "marginal", b"", True, b"abab", seed=0, fresh=True)
    # <s>, then the open branch that commits "abab": the branches after "a", "ab", "aba" undone
    assert state.members[0].ids == [1, member.tokenizer.convert_tokens_to_ids("abab")]
    model = CharEDModel.from_members([(member.model, member.tokenizer)])
    ids = ByteTokenizer()("abab", return_tensors="pt")["input_ids"]  # <s> a b a b
    probs = model(input_ids=ids).logits[0].double().exp()
    assert torch.allclose(probs.sum(-1), torch.ones(5, dtype=torch.float64), atol=1e-5)
    # uniform member: 6 of the 261 text tokens start with "a" (+ end of text: 262 outcomes)
    assert abs(float(probs[0, ord("a")]) - 6 / 262) < 1e-5
    # after "a": continue with "b" (5 of 6 tokens) or end "a" (1/6) and start "b" (1/262)
    assert abs(float(probs[1, ord("b")]) - (5 / 6 + 1 / 6 / 262)) < 1e-5


def test_byte_complete_member_stays_on_track():
    single = _uniform_member(VocabSpec("bytelevel", "ab", ()))  # 256 single-byte tokens
    many = _uniform_member(MANY_AB)
    state = SequenceState([single, many], [0.1, 0.9], rule="mixture", decide="greedy")
    state.start(b"", with_bos=True)
    state.step(ord("a"))  # ε: 0.1*1 + 0.9*(1/6) < "b": 0.9*(5/6), so no commit
    state.step(ord("b"))
    assert state.members[0].distribution() is not None
