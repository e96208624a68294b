"""Rules that combine the members' outcome distributions into the ensemble's: pure functions.

What it does: ``mixture`` (the paper's weighted linear average) and ``product`` (a weighted
geometric mean, renormalised). Members whose distribution is ``None`` (they cannot follow the
text so far) are left out and the remaining weights are renormalised.

What it does not do: decide anything about commits or sampling.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

COMBINE_RULES = ("mixture", "product")


def _active(dists: Sequence[np.ndarray | None], weights: Sequence[float]):
    """Members that can follow and have a weight, with weights renormalised over them."""
    keep = [(d, w) for d, w in zip(dists, weights, strict=True) if d is not None and w > 0]
    total = sum(w for _, w in keep)
    keep = [(d, w / total) for d, w in keep if total > 0 and w / total > 0]
    return [d for d, _ in keep], [w for _, w in keep]


def mixture(dists: Sequence[np.ndarray | None], weights: Sequence[float]) -> np.ndarray | None:
    """Weighted average ``Σ w_i P_i`` over the members that can follow (weights renormalised).

    >>> mixture([np.array([1.0, 0.0]), np.array([0.0, 1.0])], [0.75, 0.25]).tolist()
    [0.75, 0.25]
    """
    ds, ws = _active(dists, weights)
    if not ds:
        return None
    return sum(w * d for d, w in zip(ds, ws, strict=True))


def product(dists: Sequence[np.ndarray | None], weights: Sequence[float]) -> np.ndarray | None:
    """Weighted geometric mean ``Π P_i^{w_i}``, renormalised; ``None`` if the members share no
    outcome.

    >>> product([np.array([0.5, 0.5]), np.array([0.9, 0.1])], [1.0, 0.0]).tolist()
    [0.5, 0.5]
    """
    ds, ws = _active(dists, weights)
    if not ds:
        return None
    with np.errstate(divide="ignore"):
        logs = sum(w * np.log(d) for d, w in zip(ds, ws, strict=True))
    top = logs.max()
    if not np.isfinite(top):
        return None
    out = np.exp(logs - top)
    return out / out.sum()


def combine(rule: str, dists, weights) -> np.ndarray | None:
    """Apply the rule named ``rule`` (one of ``COMBINE_RULES``)."""
    if rule == "mixture":
        return mixture(dists, weights)
    if rule == "product":
        return product(dists, weights)
    raise ValueError(f"combine: expected one of {COMBINE_RULES}, got {rule!r}")
