"""The exact mode's guess of the text ahead, for a row generating alone.

What it does: ``predict`` runs the ensemble's greedy steps ahead on the host from what the
exact members know now, and returns the bytes they read. Each member is followed along a few
*tracks* (its heaviest token sequences, from its kept hypotheses): at each step a track whose
pending bytes a token ends at branches into that token's node where a call has run it; each
member's byte distribution is the sum over its tracks of their masses (the exact mode's
formula, restricted to the tracks); the members' distributions are combined by the row's
rule and weights; the likeliest byte is read. A member whose mass sits mostly after tokens no
call has run yet (the children a call is about to run, say) leaves the steps there, since
its next distribution is unknown; the steps stop when no member is left, at end of text, or
after ``limit`` bytes.

The guess decides only which tokens a member's call runs ahead (``ExactMember._run_ahead``):
every probability is computed as without it, and a wrong guess costs tokens, not numbers.
With it, SmolLM2 in the pair needs about half the calls in generation
(``benchmarks/README.md`` › Generation).

What it does not do: run any member; move the weights ahead (they move slowly); follow
sampling or logits processors (the guess is the likeliest text); read views on a device (each
step would wait for a copy to the host; ``predict`` then returns nothing).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..members.byte_view import EOT, EPS, ending, gather
from ..members.token_tree import Node
from .combine import combine

if TYPE_CHECKING:
    from .exact import ExactMember

LOOKAHEAD_BYTES = 16  # how far ``predict`` runs the greedy steps ahead
TRACKS = 4  # token sequences followed per member

Track = tuple[Node, bytes, float]  # a node, its pending bytes, log P(its tokens)


def predict(members: Sequence[ExactMember], weights: Sequence[float], rule: str,
            limit: int = LOOKAHEAD_BYTES) -> bytes:
    """The bytes the ensemble's greedy steps would read next, as far as the members' known
    distributions tell (at most ``limit``; empty where nothing is known)."""
    tracks: list[list[Track] | None] = [
        [(h.node, h.pending, h.logp) for h in m.hyps] or None for m in members]
    if any(n.view.bank.host is None for ts in tracks if ts for n, _, _ in ts):
        return b""  # on a device: each step would wait for a copy
    text = b""
    while len(text) < limit:
        # Step 1: tokens ending at each track's pending bytes, where their call has run.
        tracks = [_branch(ts) if ts else None for ts in tracks]
        # Step 2: every member's byte distribution over its tracks (None: unknown).
        gather([(n.view, p) for ts in tracks if ts for n, p, _ in ts])
        dists = [_distribution(ts) if ts else None for ts in tracks]
        tracks = [ts if d is not None else None for ts, d in zip(tracks, dists, strict=True)]
        # Step 3: the rule's combination; the likeliest byte, unless it is end of text.
        joint = combine(rule, dists, weights)
        if joint is None:
            break
        byte = int(np.argmax(joint[:EPS]))
        if byte == EOT:
            break
        text += bytes((byte,))
        # Step 4: each member's tracks that spell the byte, heaviest first.
        tracks = [_read(ts, byte) if ts else None for ts in tracks]
    return text


def _branch(tracks: list[Track]) -> list[Track] | None:
    """The tracks, with each token that ends at a track's pending bytes as a track of its own
    where its call has run; None where the tokens not run yet weigh more than all the rest
    (the member's next distribution is unknown)."""
    out, unknown = list(tracks), []
    for node, pending, logp in tracks:
        if not pending:
            continue
        total = node.view.text_total
        ids, probs = ending([(node.view, pending)])[0]
        for t, p in zip(ids.tolist(), probs.tolist(), strict=True):
            if p <= 0:
                continue
            child = node.children.get(t)
            w = logp + math.log(p / total)
            if child is not None and child.ran:
                out.append((child, b"", w))
            else:
                unknown.append(w)
    if unknown:
        known = [w + math.log(max(_continuing(n, p), 1e-300)) for n, p, w in out]
        if np.logaddexp.reduce(unknown) > np.logaddexp.reduce(known or [-math.inf]):
            return None
    return out


def _continuing(node: Node, pending: bytes) -> float:
    """The share of ``node``'s next-token mass (specials removed) in tokens that go on past
    ``pending``, or end of text at a boundary."""
    masses = node.view.masses(pending)
    return float(masses[:EPS].sum()) / node.view.text_total


def _distribution(tracks: list[Track]) -> np.ndarray | None:
    """The tracks' summed masses over the next byte and end of text, normalised."""
    top = max(w for _, _, w in tracks)
    total = sum(n.view.masses(p)[:EPS] / n.view.text_total * math.exp(w - top)
                for n, p, w in tracks)
    z = float(total.sum())
    return total / z if z > 0 else None


def _read(tracks: list[Track], byte: int) -> list[Track] | None:
    """The tracks that go on with ``byte``, the ``TRACKS`` heaviest (None: none does)."""
    ranked = []
    for node, pending, logp in tracks:
        mass = float(node.view.masses(pending)[byte]) / node.view.text_total
        if mass > 0:
            ranked.append((logp + math.log(mass), (node, pending + bytes((byte,)), logp)))
    ranked.sort(key=lambda c: c[0], reverse=True)
    return [t for _, t in ranked[:TRACKS]] or None
