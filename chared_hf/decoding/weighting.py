"""Member weights that follow the text: fixed, Bayes, and switching (fixed share).

What it does: a ``Weighting`` holds the rule, the prior weights ``π`` and the switch rate ``α``,
and updates a row's log-weights ``ℓ`` (float64, one per member, normalised) after every byte
the row reads. With ``p_i`` each member's probability of that byte:

  * ``"fixed"``: ``ℓ = log π`` always (the paper's rule);
  * ``"bayes"``: ``ℓ_i += log p_i``, renormalised: the weights are the members' posterior given
    the text so far, and the ensemble's probability of a text is ``Σ_i π_i P_i(text)`` (for
    members whose byte probabilities do not depend on the weights, e.g. exact members): never
    more than ``log2(N)`` bits in total worse than the best member;
  * ``"switching"``: the Bayes update, then a fraction ``α`` of the weight returns to the prior,
    ``w ← (1 − α)·w + α·π`` (Herbster and Warmuth's fixed share, mixing to the prior): the
    forward algorithm of a hidden "which member speaks now" chain that stays with probability
    ``1 − α + α·π_i`` and moves to member ``j`` with ``α·π_j``. ``α = 0`` is Bayes; ``α = 1`` is
    fixed weights ``π``.

A member that gives no distribution at a byte (it cannot follow the text) or gives the byte
probability zero (a lossy tokenizer that cannot spell it) keeps its weight relative to the
others: it is credited with the other members' weighted probability of the byte. If no member
gives the byte any probability, the weights do not move. So weights are never NaN and never all
zero, and a member that cannot spell one character is not lost for the rest of the text.

Every function works on arrays whose last axis is the members (``[..., N]``), so the update can
run for one row or for all rows of a batch at once.

What it does not do: compute members' probabilities (``state``, ``exact``) or combine
distributions (``combine``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from ..members.byte_view import EPS

WEIGHTINGS = ("fixed", "bayes", "switching")
# Chosen on development texts only (benchmarks/weighting.py): the rates fitted there by
# likelihood, equal prior, were 0.038 (stories260K + pycode) and 0.00049 (stories260K +
# SmolLM2-135M); their geometric mean, to one significant figure. Held-out figures:
# benchmarks/README.md.
DEFAULT_SWITCH_RATE = 0.004


@dataclass(frozen=True)
class Weighting:
    """How a row's member weights move with the text (see the module docstring).

    Args:
        rule: one of ``WEIGHTINGS``.
        prior: the members' weights before any text (normalised here; zeros allowed).
        rate: the switch rate ``α`` in ``[0, 1]`` (used by ``"switching"`` only).
    """

    rule: str
    prior: tuple[float, ...]
    rate: float = DEFAULT_SWITCH_RATE

    def __post_init__(self):
        check_weighting(self.rule, self.rate)
        total = float(sum(self.prior))
        object.__setattr__(self, "prior", tuple(float(p) / total for p in self.prior))
        with np.errstate(divide="ignore"):  # constants of the update, computed once
            log_prior = np.log(np.asarray(self.prior, dtype=np.float64))
            keep = np.log1p(-self.rate) if self.rate < 1 else -np.inf
            back = np.log(self.rate) + log_prior if self.rate > 0 else None
        object.__setattr__(self, "_log_prior", log_prior)
        object.__setattr__(self, "_switch", (keep, back) if self.rule == "switching" and
                           self.rate > 0 else None)

    @property
    def moves(self) -> bool:
        """Whether the weights depend on the text (anything but ``"fixed"``)."""
        return self.rule != "fixed" and len(self.prior) > 1

    def start(self) -> np.ndarray:
        """The log-weights before any text: ``log π``."""
        return self._log_prior.copy()

    def update(self, log_w: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """The log-weights after reading a byte that member ``i`` gave probability
        ``probs[..., i]`` (``nan`` where it gave no distribution).

        >>> w = Weighting("bayes", (0.5, 0.5))
        >>> np.exp(w.update(w.start(), np.array([0.9, 0.1]))).round(3).tolist()
        [0.9, 0.1]
        >>> s = Weighting("switching", (0.5, 0.5), rate=0.2)
        >>> np.exp(s.update(s.start(), np.array([0.9, 0.1]))).round(3).tolist()
        [0.82, 0.18]
        """
        if not self.moves:
            return log_w
        probs = np.asarray(probs, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            ok = probs > 0  # nan compares False
            if ok.all():  # the common case: every member gave the byte some probability
                new = log_w + np.log(probs)
                moved = None
            else:
                # Step 1: members with no distribution, or zero for this byte, are credited
                # with the others' weighted probability of it (their weight stays put relative
                # to the others).
                w = np.exp(log_w)
                held = np.where(ok, w, 0.0).sum(-1, keepdims=True)
                stand_in = np.where(ok, w * np.where(ok, probs, 0.0), 0.0).sum(-1,
                                                                                keepdims=True)
                moved = held[..., 0] > 0
                p = np.where(ok, probs, stand_in / held)
                # Step 2: Bayes: multiply by each member's probability.
                new = log_w + np.log(p)
            new = new - _logsumexp(new)[..., None]  # renormalise
            # Step 3: switching: a fraction α of the weight goes back to the prior.
            if self._switch is not None:
                keep, back = self._switch
                new = np.logaddexp(keep + new, back)
        # Rows where no member gave the byte any probability keep their weights.
        return new if moved is None else np.where(moved[..., None], new, log_w)

    def weights(self, log_w: np.ndarray) -> np.ndarray:
        """Normalised weights from log-weights."""
        return np.exp(log_w - _logsumexp(log_w)[..., None])

    def sequence(self, logp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For members' natural log-probabilities ``logp[i, t]`` of the bytes of one text
        (members whose probabilities do not depend on the weights, e.g. exact members):
        the ensemble's log-probability of each byte (``[T]``) and the weights used at each
        byte (``[N, T]``, from the bytes before it)."""
        logp = np.asarray(logp, dtype=np.float64)
        log_w, out, used = self.start(), np.empty(logp.shape[1]), np.empty(logp.shape)
        for t in range(logp.shape[1]):
            used[:, t] = w = self.weights(log_w)
            with np.errstate(divide="ignore"):
                out[t] = np.log(np.dot(w, np.exp(logp[:, t])))
            log_w = self.update(log_w, np.exp(logp[:, t]))
        return out, used


class RowWeights:
    """One row's log-weights and the reading of its text: both kinds of row hold one.

    ``byte_probs`` (``[members, outcomes]``, set by the row with every distribution it returns)
    is what each member gave each outcome; ``read(byte)`` then moves the weights by the byte
    the row reads next. A row whose members give their probability of the byte as they read
    it (the exact mode) passes those to ``read_probs`` instead."""

    def __init__(self, weighting: Weighting):
        self.weighting = weighting
        self.moves = weighting.moves
        self.log_w = weighting.start()  # float64, normalised
        self.weights = np.asarray(weighting.prior)  # exp(log_w), kept with it
        self.byte_probs: np.ndarray | None = None

    def read(self, byte: int) -> None:
        """Move the weights by ``byte``: each member's probability of it in the distribution
        the row last returned."""
        if self.moves and self.byte_probs is not None and byte < self.byte_probs.shape[1]:
            self._set(self.weighting.update(self.log_w, self.byte_probs[:, byte]))

    def read_probs(self, probs: list[float]) -> None:
        """Move the weights by the byte read: ``probs[i]``, member i's probability of it
        (``nan`` where it gave none)."""
        if self.moves:
            self._set(self.weighting.update(self.log_w, np.asarray(probs, dtype=np.float64)))

    def fork(self) -> RowWeights:
        """A copy to read bytes ahead with (the greedy steps ahead of ``predicted_commits``),
        leaving these weights as they are."""
        return copy.copy(self)  # ``read`` replaces the arrays, never writes into them

    def _set(self, log_w: np.ndarray) -> None:
        self.log_w, self.weights = log_w, np.exp(log_w)

    def read_prompt(self, member_probs: list[np.ndarray]) -> None:
        """Move the weights by a prompt: ``member_probs[i][t]`` is member i's evidence about
        byte t (its probability of it; 1 where it gives none; ``nan`` where it was not
        scored), read byte by byte as if the row had read them one at a time."""
        if not self.moves or not member_probs or not len(member_probs[0]):
            return
        log_w = self.log_w
        for column in np.stack(member_probs, axis=1):
            log_w = self.weighting.update(log_w, column)
        self._set(log_w)


def check_weighting(rule: str, rate) -> None:
    """Validate a weighting rule and switch rate (errors name the argument)."""
    if rule not in WEIGHTINGS:
        raise ValueError(f"weighting: expected one of {WEIGHTINGS}, got {rule!r}")
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
        raise ValueError(f"switch_rate: expected a number in [0, 1], got {rate!r}")


def _logsumexp(x: np.ndarray) -> np.ndarray:
    """``log Σ exp`` over the last axis (``-inf`` for an all ``-inf`` row)."""
    top = np.max(x, axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return top[..., 0] + np.log(np.exp(x - top).sum(-1))


def byte_probs(dists: list[np.ndarray | None]) -> np.ndarray:
    """``[members, 257]``: each member's probability of every byte and of end of text given
    that the current token does not end here (ε left out, renormalised); ``nan`` for a member
    that gave no distribution (the weights' update leaves it where it is)."""
    out = np.full((len(dists), EPS), np.nan)
    for i, d in enumerate(dists):
        total = d[:EPS].sum() if d is not None else 0.0
        if total > 0:
            out[i] = d[:EPS] / total
    return out
