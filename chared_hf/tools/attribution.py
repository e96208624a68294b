"""Which member shaped each character of a text: per-member byte probabilities and shares.

What it does: ``attribute(model, text, prompt)`` scores ``prompt + text`` with each member of
a ``CharEDModel`` as an exact byte-level LM (``marginalization="exact"``, so a member's
probability of each byte does not depend on the other members or the weights) and returns an
``Attribution`` holding every member's log-probability of every byte of ``text``. From those:

  * ``weights``: each member's weight at each byte, from the bytes before it (the prompt
    included): constant for ``weighting="fixed"``, moving with the text for ``"bayes"`` and
    ``"switching"`` (``chared_hf.weighting``; exactly what the exact-mode ensemble uses);
  * ``shares()`` under the mixture rule: member i's share of byte b is
    ``w_i P_i(b) / Σ_j w_j P_j(b)``, its part of the ensemble's probability of that byte;
  * ``gaps()`` under the product rule: ``log P_i(b) − Σ_j w_j log P_j(b)``, how far the member
    pulled that byte's log-probability above (positive) or below the weighted mean; ``shares()``
    then is ``softmax_i(w_i log P_i(b))``, each member's part of the weighted log-linear score;
  * ``characters()`` groups bytes into UTF-8 characters (a character's probability is the
    product of its bytes'), which is what ``plotting.plot_attribution`` draws.

What it does not do: explain the paper mode's joint commits (its member distributions depend
on the ensemble's choices; the exact members give each member's own view of the same text), or
draw anything (``plotting``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..modeling import CharEDModel
from .scoring import byte_logprobs, exact_members


@dataclass
class Attribution:
    """Members' natural log-probabilities ``logp[i, j]`` of each byte ``j`` of ``text``."""

    text: bytes
    names: list[str]
    weights: np.ndarray  # [members, bytes]: each byte's weights (normalised), from the bytes before
    rule: str  # "mixture" or "product"
    logp: np.ndarray  # [members, bytes]

    def shares(self) -> np.ndarray:
        """``[members, bytes]``, each column summing to one (see the module docstring)."""
        return _shares(self.logp, self.weights, self.rule)

    def gaps(self) -> np.ndarray:
        """``log P_i(b) − Σ_j w_j log P_j(b)`` for each member and byte."""
        return self.logp - (self.weights * self.logp).sum(0, keepdims=True)

    def characters(self) -> tuple[list[str], np.ndarray]:
        """The text's characters and ``[members, characters]`` shares of each character."""
        spans = _char_spans(self.text)
        chars = list(self.text.decode("utf-8", "replace"))
        logp = np.stack([self.logp[:, a:b].sum(1) for a, b in spans], 1) if spans else (
            np.zeros((len(self.names), 0)))
        return chars, _shares(logp, self.char_weights(), self.rule)

    def char_weights(self) -> np.ndarray:
        """``[members, characters]``: the weights at each character's first byte."""
        return self.weights[:, [a for a, _ in _char_spans(self.text)]]


def attribute(model: CharEDModel, text: str, prompt: str = "",
              max_hypotheses: int | None = 8) -> Attribution:
    """Score ``text`` after ``prompt`` with each member of ``model`` as an exact byte-level LM.

    Args:
        model: the ensemble; its members, weights and combination rule are used.
        text: the text to attribute (e.g. what ``generate`` produced).
        prompt: the text before it (conditioning only; not attributed).
        max_hypotheses: the exact mode's bound per member (``None``: unbounded).
    """
    if not text:
        raise ValueError("text: expected at least one character to attribute")
    skip = len(prompt.encode("utf-8"))
    pairs = [(m.model, m.tokenizer) for m in model.members]
    logp = np.stack([byte_logprobs(member, prompt + text)
                     for member in exact_members(pairs, max_hypotheses)])
    # The weights each byte gets from the bytes before it (prompt included).
    _, weights = model.weighting.sequence(logp)
    return Attribution(text=text.encode("utf-8"), names=[m.name for m in model.members],
                       weights=weights[:, skip:], rule=model.config.combine,
                       logp=logp[:, skip:])


def _char_spans(text: bytes) -> list[tuple[int, int]]:
    """Byte ranges of the UTF-8 characters of ``text`` (an invalid byte is one character)."""
    spans, pos = [], 0
    for ch in text.decode("utf-8", "replace"):
        width = len(ch.encode("utf-8")) if ch != "\ufffd" else 1
        spans.append((pos, min(pos + width, len(text))))
        pos += width
    return spans


def _shares(logp: np.ndarray, weights: np.ndarray, rule: str) -> np.ndarray:
    """Mixture: ``w_i P_i / Σ w_j P_j``; product: ``softmax_i(w_i log P_i)`` (``weights``
    ``[members, positions]``)."""
    with np.errstate(divide="ignore"):
        scores = np.log(weights) + logp if rule == "mixture" else weights * logp
    scores = np.where(np.isnan(scores), -np.inf, scores)
    top = scores.max(0, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    out = np.exp(scores - top)
    total = out.sum(0, keepdims=True)
    return np.divide(out, total, out=np.full_like(out, 1.0 / len(out)), where=total > 0)
