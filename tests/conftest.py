"""Shared fixtures: the real assets (skipped with a reason naming them) and tiny models."""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

REPO = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("CHARED_ASSETS", REPO.parent / "shared" / "assets"))
TOKENIZER_FAMILIES = ["gpt2", "llama2", "phi3", "qwen2", "spm-unigram"]


def asset_path(relative: str) -> Path:
    """Path of an asset under CHARED_ASSETS; skips the calling test if it is absent."""
    path = ASSETS / relative
    if not path.exists():
        pytest.skip(f"asset {relative} is absent from CHARED_ASSETS={ASSETS}")
    return path


@functools.cache
def _cached_tokenizer(path: Path):
    return AutoTokenizer.from_pretrained(path)


def load_tokenizer(family: str):
    """A real tokenizer from the assets (loaded once per session)."""
    return _cached_tokenizer(asset_path(f"tokenizers/{family}"))


def tiny_model(vocab_size: int, seed: int = 0, layers: int = 1, bos: int | None = None,
               eos: int | None = None) -> LlamaForCausalLM:
    """A random-weight Llama with the given output vocabulary (float32, eval mode)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=layers,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
        bos_token_id=bos, eos_token_id=eos, pad_token_id=None,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # spread the logits so that distributions are far from uniform
        model.lm_head.weight.mul_(40.0)
    return model


class TokenBiased(torch.nn.Module):
    """A member whose logit of ``token`` is raised by ``bias`` after every prefix."""

    def __init__(self, model, token: int, bias: float):
        super().__init__()
        self.inner, self.token, self.bias = model, token, bias

    @property
    def device(self):
        return self.inner.device

    def forward(self, **kwargs):
        out = self.inner(**kwargs)
        out.logits[..., self.token] += self.bias
        return out


class EosBiased(TokenBiased):
    """A member whose end-of-text logit is raised by ``bias`` (a model that wants to stop)."""

    def __init__(self, model, eos: int, bias: float):
        super().__init__(model, eos, bias)
        self.eos = eos


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Run the suite on one torch thread: the models decode one token at a time, where a second
    thread gains little, and on a shared two-core machine OpenMP's second thread waits for a
    busy core (single-token forwards up to 20x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SMOLLM2 = "models/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2(request):
    """SmolLM2-135M-Instruct from its Q4_1 GGUF file, converted once into pytest's cache (or,
    under ``-p no:cacheprovider``, into load_gguf's default cache: ``$CHARED_CACHE`` or
    ``~/.cache/chared_hf/gguf``)."""
    from chared_hf.gguf import load_gguf

    path = asset_path(SMOLLM2)
    pytest.importorskip("gguf", reason=f"the PyPI package gguf is needed to read {SMOLLM2}")
    pytest.importorskip("accelerate", reason=f"accelerate is needed to read {SMOLLM2}")
    cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider
    cache_dir = cache.mkdir("smollm2") if cache is not None else None
    return load_gguf(path, cache_dir=cache_dir)


@pytest.fixture(scope="session")
def stories():
    """stories260K: a real trained Llama with a SentencePiece (byte fallback) tokenizer."""
    path = asset_path("models/stories260K")
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def spellings(pieces: dict[int, bytes], text: bytes):
    """Every sequence of ids whose bytes (``pieces``) concatenate to ``text`` (brute force)."""
    if not text:
        yield []
        return
    for i, p in pieces.items():
        if text.startswith(p):
            for rest in spellings(pieces, text[len(p):]):
                yield [i, *rest]


def _spelled(model, pieces: dict[int, bytes], eos_ids: list[int], start: list[int],
             seq: list[int]) -> tuple[float, torch.Tensor]:
    """log P(seq | start) and the log-distribution after ``seq``, with every id that is neither
    a text piece nor end of text removed from the model's distribution (as the byte view does)."""
    allowed = torch.full((model.config.vocab_size,), -torch.inf, dtype=torch.float64)
    allowed[[*pieces, *eos_ids]] = 0.0
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([start + seq])).logits[0].double()
    logp = torch.log_softmax(logits + allowed, -1)
    return sum(float(logp[len(start) - 1 + k, t]) for k, t in enumerate(seq)), logp[-1]


def text_logprob(model, pieces: dict[int, bytes], start: list[int], text: bytes,
                 eos_ids: list[int]) -> float:
    """The brute-force oracle: log Σ_τ P(τ)·p(end of text | τ) over every token sequence τ
    whose ``pieces`` spell ``text``, after the ids ``start``."""
    total = 0.0
    for seq in spellings(pieces, text):
        before, after = _spelled(model, pieces, eos_ids, start, seq)
        total += math.exp(before + float(torch.logsumexp(after[list(eos_ids)], 0)))
    return math.log(total) if total > 0 else -math.inf


def next_byte_distribution(model, pieces: dict[int, bytes], start: list[int], prompt: bytes,
                           eos_ids: list[int], size: int, eos_out: int) -> torch.Tensor:
    """The brute-force next byte after ``prompt`` (a float64 vector of ``size``; end of text
    at ``eos_out``), summed over every token sequence: one spelling the whole prompt adds its
    next token's first byte or end of text; one spelling a proper prefix adds each next token
    that reaches past the prompt's end, at the byte after the end (each continuation counted
    once, where it first passes the end)."""
    mass = torch.zeros(size, dtype=torch.float64)
    for cut in range(len(prompt) + 1):
        tail = prompt[cut:]
        for seq in spellings(pieces, prompt[:cut]):
            before, after = _spelled(model, pieces, eos_ids, start, seq)
            for t, piece in pieces.items():
                if len(piece) > len(tail) and piece.startswith(tail):
                    mass[piece[len(tail)]] += math.exp(before + float(after[t]))
            if not tail:
                mass[eos_out] += math.exp(before + float(torch.logsumexp(after[eos_ids], 0)))
    return mass / mass.sum()


def piece_tokenizer(pieces: list[str], specials: tuple[str, ...] = ("<unk>", "<s>", "</s>")):
    """A fast tokenizer whose text tokens are exactly ``pieces`` (ids after the specials).

    Tokenization is greedy longest match (WordPiece with no continuation prefix), which is
    all the tests need: ``TokenBytes`` checks and repairs tokenizations anyway.
    """
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {s: i for i, s in enumerate(specials)}
    for p in pieces:
        vocab.setdefault(p, len(vocab))
    backend = Tokenizer(models.WordPiece(vocab, unk_token="<unk>", continuing_subword_prefix="",
                                         max_input_chars_per_word=1000))
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>")


def save_tiny_member(folder: Path, pieces: list[str], seed: int) -> Path:
    """A tiny random Llama and its piece tokenizer saved as a model folder (what ``--member``
    and ``from_pretrained`` load)."""
    tok = piece_tokenizer(pieces)
    model = tiny_model(len(tok), seed=seed, bos=tok.bos_token_id, eos=tok.eos_token_id)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def abc_pair():
    """Two tiny members over "abc \\n" whose vocabularies differ (greedy longest match)."""
    a = piece_tokenizer(["a", "b", "c", " ", "\n", "ab", "ca", " a"])
    b = piece_tokenizer(["a", "b", "c", " ", "\n", "bc", "a b", "cab"])
    return [(tiny_model(len(a), seed=3, bos=1, eos=2), a),
            (tiny_model(len(b), seed=4, bos=1, eos=2), b)]
