"""Bits per byte of a text: members' own figures, the ensemble's, and fitted mixture weights.

What it does:
  * ``split_text(text, size)`` cuts a long text into pieces of about ``size`` bytes (after a
    newline where there is one); every figure here scores each piece from its start, so that
    members and ensemble see the same contexts and no piece outgrows a context window.
  * ``own_logprob(model, tokenizer, text)``: the member's own token-level log-probability of
    its canonical tokenization of ``text`` after its start of text (what ``bits per byte`` of a
    model usually means: divide by the bytes).
  * ``byte_logprobs(ensemble, text)``: the log-probability of every byte of ``text`` under a
    ``CharEDModel`` (teacher forcing after ``<s>``; ``-inf`` where the paper mode cannot spell
    the text).
  * ``exact_score(ensemble, text)``: the same in the exact mode, with certified bounds on
    the log-probability the unbounded exact mode gives the text (what pruning dropped).
  * ``fit_mixture_weights(logp)``: EM for linear-interpolation weights, given each member's
    probability of every byte. EM needs those probabilities to be independent of the weights,
    which holds for members scored as exact byte-level LMs (``marginalization="exact"``): a
    mixture of exact members then gives every byte exactly ``Σ w_i P_i(b)``.
  * ``mixture_logprobs(logp, weights, weighting, switch_rate)``: what an exact ensemble gives
    every byte, with fixed weights or weights that follow the text; ``fit_switch_rate`` the
    rate of ``"switching"`` by likelihood.

What it does not do: load models, read files, or run generation benchmarks (``tasks``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..decoding.cache import EnsembleCache
from ..decoding.weighting import DEFAULT_SWITCH_RATE, Weighting
from ..modeling import CharEDModel
from ..tokenization import ByteTokenizer

LN2 = math.log(2)


def split_text(text: str, size: int = 2000) -> list[str]:
    """Consecutive pieces of about ``size`` UTF-8 bytes whose concatenation is ``text``; a
    piece ends after a newline where one falls in its second half, else after ``size``
    characters (never inside a character)."""
    if size < 1:
        raise ValueError(f"size: expected a positive number of bytes, got {size}")
    out = []
    while text:
        if len(text.encode()) <= size:
            out.append(text)
            break
        cut = _char_cut(text, size)
        newline = text.rfind("\n", 0, cut) + 1
        cut = newline if newline > cut // 2 else cut
        out.append(text[:cut])
        text = text[cut:]
    return out


def _char_cut(text: str, size: int) -> int:
    """The number of leading characters of ``text`` that fit in ``size`` bytes (at least 1)."""
    return max(1, len(text.encode()[:size].decode("utf-8", "ignore")))


def own_logprob(model, tokenizer, text: str) -> float:
    """The member's log-probability (nats) of its own tokenization of ``text``, after its start
    of text (BOS, or its end-of-text id when it has no BOS). Texts longer than the model's
    window are scored in windows, each restarted from the start id."""
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else (
        tokenizer.eos_token_id)
    if start is None:
        raise ValueError("tokenizer: a member needs a BOS or an end-of-text token to score "
                         "a text from its start")
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    window = int(getattr(model.config, "max_position_embeddings", 0) or 2048) - 1
    total = 0.0
    device = next(model.parameters()).device
    for begin in range(0, len(ids), window):
        piece = torch.tensor([[start, *ids[begin:begin + window]]], device=device)
        with torch.no_grad():
            logits = model(input_ids=piece).logits[0, :-1].double()
        total += float(torch.log_softmax(logits, -1).gather(-1, piece[0, 1:, None]).sum())
    return total


def byte_logprobs(ensemble: CharEDModel, text: str) -> np.ndarray:
    """Natural log-probability of each byte of ``text`` under ``ensemble``, read from ``<s>``
    (shape ``[bytes]``; ``-inf`` where the ensemble gives a byte probability zero)."""
    return _teacher_forced(ensemble, text)[0]


def _teacher_forced(ensemble: CharEDModel, text: str) -> tuple[np.ndarray, EnsembleCache]:
    """Each byte's log-probability, read from ``<s>``, and the cache the reading left."""
    _check_inputs(ensemble, text)
    ids = ByteTokenizer()(text, return_tensors="pt")["input_ids"]
    if ids.shape[1] < 2:
        raise ValueError("text: expected at least one byte to score")
    with torch.no_grad():
        out = ensemble(input_ids=ids)
    logits = out.logits[0, :-1].double()
    logp = logits.gather(-1, ids[0, 1:, None].to(logits.device))[:, 0].cpu().numpy()
    return logp, out.cache


def _check_inputs(ensemble: CharEDModel, text: str) -> None:
    if not isinstance(ensemble, CharEDModel):
        raise ValueError(f"ensemble: expected a CharEDModel, got {type(ensemble).__name__}")
    if not isinstance(text, str):
        raise ValueError(f"text: expected a str, got {type(text).__name__}")


@dataclass
class ExactScore:
    """A text scored by an exact-mode ensemble, with certified bounds on what pruning drops.

    ``byte_logprobs``: what the ensemble (with its ``max_hypotheses`` bound) gives each byte.
    ``member_bounds``: per member, ``(lower, upper)`` on the log-probability (nats) the
    unbounded exact mode gives the text. ``bounds``: the same for the ensemble where it follows
    from its members' (one member; the ``"bayes"`` weighting, whose text probability is the
    prior-weighted sum of the members'), else ``None``."""

    byte_logprobs: np.ndarray
    member_bounds: list[tuple[float, float]]
    bounds: tuple[float, float] | None

    def bits_per_byte_interval(self) -> tuple[float, float] | None:
        """The ensemble's bounds as bits per byte, ``(lower, upper)``."""
        if self.bounds is None:
            return None
        n = len(self.byte_logprobs)
        return bits_per_byte(self.bounds[1], n), bits_per_byte(self.bounds[0], n)


def exact_score(ensemble: CharEDModel, text: str) -> ExactScore:
    """Score ``text`` (read from ``<s>``) with an exact-mode ensemble: each byte's
    log-probability and certified bounds on the unbounded exact mode's figure."""
    _check_inputs(ensemble, text)
    if ensemble.config.marginalization != "exact":
        raise ValueError("ensemble: exact_score needs marginalization='exact' (the paper mode "
                         "prunes nothing it could bound)")
    logp, cache = _teacher_forced(ensemble, text)
    members = cache.rows[0].logprob_bounds()
    return ExactScore(logp, members, ensemble_bounds(ensemble, members))


def ensemble_bounds(ensemble: CharEDModel, members: list[tuple[float, float]]
                    ) -> tuple[float, float] | None:
    """The ensemble's text log-probability bounds from its members' where they determine it:
    one member, or a ``"bayes"`` mixture (``log Σ π_i P_i``, lower and upper alike)."""
    if len(members) == 1:
        return members[0]
    if ensemble.config.weighting != "bayes" or ensemble.config.combine != "mixture":
        return None
    prior = np.asarray(ensemble.member_weights, dtype=np.float64)
    return mixture_bounds(prior / prior.sum(), members)


def mixture_bounds(prior: np.ndarray, members) -> tuple[float, float]:
    """``log Σ π_i exp(b_i)`` for the lower and the upper bounds ``b_i`` of each member
    (``members``: ``(lower, upper)`` pairs, or an array ``[members, 2]``)."""
    with np.errstate(divide="ignore"):
        logs = np.log(np.asarray(prior, dtype=np.float64))
    sides = np.asarray(members, dtype=np.float64).reshape(-1, 2) + logs[:, None]
    return float(np.logaddexp.reduce(sides[:, 0])), float(np.logaddexp.reduce(sides[:, 1]))


def exact_members(members: list, max_hypotheses: int | None,
                  prune_below: float | None = None) -> list[CharEDModel]:
    """Each ``(model, tokenizer)`` as a one-member exact byte-level LM (weights do not enter)."""
    return [CharEDModel.from_members([pair], marginalization="exact",
                                     max_hypotheses=max_hypotheses, prune_below=prune_below)
            for pair in members]


def bits_per_byte(nats: float, n_bytes: int) -> float:
    """Natural-log total over a number of bytes -> bits per byte (``inf`` when the total is
    ``-inf``: some byte had probability zero; no byte is ever left out)."""
    return -nats / LN2 / n_bytes


def mixture_logprobs(logp: np.ndarray, weights, weighting: str = "fixed",
                     switch_rate: float = DEFAULT_SWITCH_RATE,
                     segments: list[int] | None = None) -> np.ndarray:
    """Per-byte log-probabilities of the mixture ``Σ w_i P_i`` from members' ``logp[i, j]``,
    with weights that follow the text (``weighting``, ``weights`` the prior; see
    ``chared_hf.weighting``). ``segments``: lengths of pieces each read from its start (the
    weights start again from the prior at each), as ``split_text`` cuts a text."""
    w = np.asarray(weights, dtype=np.float64)
    logp = np.asarray(logp, dtype=np.float64)
    if weighting == "fixed":
        with np.errstate(divide="ignore"):
            return _logsumexp(np.log(w / w.sum())[:, None] + logp, axis=0)
    rule = Weighting(weighting, tuple(w), switch_rate)
    bounds = np.cumsum([0, *(segments or [logp.shape[1]])])
    if bounds[-1] != logp.shape[1]:
        raise ValueError(f"segments: expected lengths summing to {logp.shape[1]}, got "
                         f"{bounds[-1]}")
    return np.concatenate([rule.sequence(logp[:, a:b])[0]
                           for a, b in zip(bounds[:-1], bounds[1:], strict=True)])


def fit_switch_rate(logp: np.ndarray, weights, segments: list[int] | None = None,
                    low: float = 1e-5, high: float = 0.5, steps: int = 40) -> float:
    """The switch rate in ``[low, high]`` that maximises the likelihood of the bytes under
    ``"switching"`` with prior ``weights`` (golden-section search over ``log α``; the
    likelihood of fixed share is unimodal in practice, and a coarse grid seeds the search)."""
    def loss(log_rate: float) -> float:
        return -float(mixture_logprobs(logp, weights, "switching", math.exp(log_rate),
                                       segments).sum())

    grid = np.linspace(math.log(low), math.log(high), 9)
    best = int(np.argmin([loss(x) for x in grid]))
    a, b = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = loss(c), loss(d)
    for _ in range(steps):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = loss(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = loss(d)
    return float(math.exp((a + b) / 2))


def fit_mixture_weights(logp: np.ndarray, init=None, tol: float = 1e-7,
                        max_iter: int = 1000) -> tuple[np.ndarray, int]:
    """EM for the weights of ``Σ w_i P_i`` that maximise the likelihood of the bytes.

    Args:
        logp: ``[members, bytes]`` natural log-probabilities of each observed byte under each
            member (independent of the weights, e.g. exact byte-level members).
        init: starting weights (default equal).
        tol: stop when no weight moves by more than this.
    Returns:
        the weights (summing to one) and the number of EM iterations run.
    """
    logp = np.asarray(logp, dtype=np.float64)
    if logp.ndim != 2 or logp.shape[1] == 0:
        raise ValueError("logp: expected a [members, bytes] array with at least one byte")
    if not np.isfinite(mixture_logprobs(logp, np.ones(len(logp)))).all():
        raise ValueError("logp: some byte has probability zero under every member")
    w = np.full(len(logp), 1.0 / len(logp)) if init is None else np.asarray(init, float)
    w = w / w.sum()
    for it in range(1, max_iter + 1):
        # E step: each member's responsibility for each byte; M step: their mean.
        with np.errstate(divide="ignore"):
            joint = np.log(w)[:, None] + logp
        resp = np.exp(joint - _logsumexp(joint, axis=0)[None, :])
        new = resp.mean(axis=1)
        if np.abs(new - w).max() < tol:
            return new, it
        w = new
    return w, max_iter


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    top = np.max(x, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return np.squeeze(top, axis) + np.log(np.exp(x - top).sum(axis=axis))
