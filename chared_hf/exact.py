"""Exact byte-level marginals: each member as a true byte-level language model.

What it does: for one member and the bytes so far ``x`` (its dummy prefix included), keeps
*hypotheses*: token sequences ``τ`` whose bytes are a prefix of ``x``, with their probability
``P(τ)`` and pending bytes ``r = x[len(bytes(τ)):]``. Every token sequence that spells a
continuation of ``x`` is counted exactly once, at the first token that reaches past the end of
``x`` (Vieira et al. 2025; DESIGN-NOTES §2b), so

    P(x·b)   = Σ_h P(τ_h)·M_h(r_h·b)  +  Σ_{t: bytes(t) = r_h} P(τ_h·t)·M_{τ_h·t}(b)
    P(x·EOS) = Σ_{t: bytes(t) = r_h} P(τ_h·t)·p(EOS | τ_h·t)   (+ hypotheses with r_h empty)

where ``M(r)`` is the member's probability of the tokens that start with ``r``. The second sum
needs the member's distribution after ``τ_h·t``: those *children* are the forward passes. The
sum runs over **all** tokenizations (not only canonical ones): a byte-level LM must give every
spelling of a text its mass, and the set needs no knowledge of the tokenizer's merge rules.
Special tokens other than end of text are removed from the member's distribution (renormalised).

Pruning (``max_hypotheses=K``): the children expanded at a byte are the K heaviest by
``P(τ_h)·p(t | τ_h)`` (known before their forward), and after each byte the K heaviest
hypotheses by ``P(τ)·M(r)`` are kept. ``None`` keeps everything (exact). One lineage is never
pruned: from the last point where the heaviest hypothesis had just left a token boundary, it
spells the text one byte per token (byte-level and byte-fallback vocabularies have a token for
every byte); its child sits at a token boundary, so every byte the member can represent keeps
some mass and observed text never gets probability zero through pruning.

Forward passes (``TokenTree``): all token sequences of one member on one sequence live in one
KV cache, each token once, so hypotheses share every prefix they have in common (memory grows
with distinct prefixes, not hypotheses × context). The children needed at one byte run as one
forward call: their tokens are the queries, each attending only to its own prefix (a tree
attention mask) at its own position. Slots no hypothesis uses any more are dropped now and then.

What it does not do: cut a context longer than the member's window (the paper mode does), or
run members with attention kernels that take no custom mask (flash attention). A member none
of whose hypotheses can spell an observed byte (a lossy tokenizer) is left out, like a member
that cannot follow.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np
import torch
from transformers import DynamicCache

from .byte_view import EPS, ByteTable, ByteView
from .combine import combine
from .state import CACHE_KW, Member, SequenceState


@dataclass(eq=False)
class Node:
    """A token sequence in a ``TokenTree``: where its tokens' keys and values sit, and the
    member's next-token distribution after it."""

    path: torch.Tensor  # the tree's cache slots of the sequence's tokens, in order (long, CPU)
    view: ByteView


@dataclass
class Hypothesis:
    """A token sequence whose bytes are a prefix of the text, and what is still pending."""

    node: Node
    logp: float  # log P(tokens) under the member (specials removed)
    pending: bytes

    @property
    def view(self) -> ByteView:
        return self.node.view


class TokenTree:
    """Every token sequence of one member on one sequence, in one KV cache.

    Each cached token is a *slot*; a ``Node`` lists the slots of its tokens. ``extend`` runs
    new tokens, each after its own parent node, as one forward call: the queries' attention
    mask lets each see its parent's slots and itself, and its position is its parent's length.
    Keys are cached after position encoding, so the slots' order in the cache is irrelevant.
    """

    def __init__(self, model: torch.nn.Module, table: ByteTable):
        self.model, self.table = model, table
        self.cache = DynamicCache()
        self.tokens = torch.zeros(0, dtype=torch.long)  # the token id in each slot
        self.forwards = 0

    @property
    def size(self) -> int:
        """Slots in the cache."""
        return len(self.tokens)

    def ids(self, node: Node) -> list[int]:
        """The token ids of ``node``'s sequence."""
        return self.tokens[node.path].tolist()

    def root(self, ids: list[int]) -> Node:
        """Run ``ids`` as the start of the text (an ordinary causal forward)."""
        inputs = torch.tensor([ids], dtype=torch.long, device=self.model.device)
        with torch.no_grad():
            out = self.model(input_ids=inputs, **{CACHE_KW: self.cache}, use_cache=True)
        self._took(out, ids)
        return Node(torch.arange(len(ids)), ByteView(self.table, out.logits[0, -1]))

    def extend(self, parents: list[Node], tokens: list[int]) -> list[Node]:
        """Nodes ``parent·token`` for each pair, from one forward call."""
        n, b = self.size, len(tokens)
        device, dtype = self.model.device, self.model.dtype
        # Step 1: each query sees its parent's slots and its own new slot, nothing else.
        lengths = torch.tensor([len(p.path) for p in parents])
        rows = torch.repeat_interleave(torch.arange(b), lengths)
        cols = torch.cat([p.path for p in parents])
        visible = torch.zeros(b, n + b, dtype=torch.bool)
        visible[rows, cols] = True
        visible[torch.arange(b), n + torch.arange(b)] = True
        mask = torch.zeros(b, n + b, dtype=dtype).masked_fill_(~visible, torch.finfo(dtype).min)
        # Step 2: run the tokens at their own positions; the cache gains slots n .. n+b-1.
        with torch.no_grad():
            out = self.model(input_ids=torch.tensor([tokens], device=device),
                             attention_mask=mask[None, None].to(device),
                             position_ids=lengths[None].to(device),
                             **{CACHE_KW: self.cache}, use_cache=True)
        self._took(out, tokens)
        views = ByteView.rows(self.table, out.logits[0])
        return [Node(torch.cat([p.path, torch.tensor([n + i])]), v)
                for i, (p, v) in enumerate(zip(parents, views, strict=True))]

    def _took(self, out, tokens: list[int]) -> None:
        self.cache = out[CACHE_KW] if CACHE_KW in out else out.past_key_values
        self.tokens = torch.cat([self.tokens, torch.tensor(tokens, dtype=torch.long)])
        self.forwards += 1

    def collect(self, live: list[Node], slack: int | None = 64) -> None:
        """Drop the slots no live node uses, once there are more than ``slack`` of them and
        more than used ones (so the copy it costs is amortised); ``slack=None``: now."""
        nodes = list({id(node): node for node in live}.values())
        used = torch.zeros(self.size, dtype=torch.bool)
        for node in nodes:
            used[node.path] = True
        kept = int(used.sum())
        if slack is not None and self.size - kept <= max(slack, kept) or kept == self.size:
            return
        keep = used.nonzero().squeeze(1)
        remap = torch.full((self.size,), -1, dtype=torch.long)
        remap[keep] = torch.arange(kept)
        index = keep.to(self.model.device)
        self.cache = DynamicCache(ddp_cache_data=[
            (layer.keys.index_select(-2, index), layer.values.index_select(-2, index))
            for layer in self.cache.layers])
        for node in nodes:
            node.path = remap[node.path]
        self.tokens = self.tokens[keep]


def _root_total(view: ByteView) -> float:
    """Mass of text tokens and end of text: the member's renormalisation constant."""
    if not hasattr(view, "_root_total"):
        view._root_total = float(view.masses(b"").sum())
    return view._root_total


class ExactMember:
    """One member on one sequence, as a byte-level LM over all its tokenizations."""

    def __init__(self, member: Member, max_hypotheses: int | None):
        self.member = member
        self.k = max_hypotheses
        self.hyps: list[Hypothesis] = []
        self.children: list[Hypothesis] | None = None  # expanded children of `hyps`
        # A lineage never pruned: it spells the text one byte per token, so its child is at a
        # token boundary and gives every byte the member can represent some mass (observed
        # text never gets probability zero because of pruning).
        self.protected: Hypothesis | None = None
        self.protected_child: Hypothesis | None = None
        self.tree: TokenTree | None = None

    @property
    def forwards(self) -> int:
        """Forward calls so far (one per byte at most, however many children it runs)."""
        return self.tree.forwards if self.tree is not None else 0

    def begin(self, prompt: bytes, with_bos: bool) -> None:
        """Start from the member's start of text and read the prompt byte by byte (its own
        tokenization is marginalised too)."""
        tb = self.member.token_bytes
        if not tb.start_ids:
            raise ValueError(f"input_ids: member {self.member.name!r} has no BOS or end-of-text "
                             "token to start a text from, which the exact mode needs")
        self._root(list(tb.start_ids))
        for byte in (tb.lead if with_bos else b"") + prompt:
            self.advance(byte)

    def begin_from_ids(self, ids: list[int]) -> None:
        """Start after fixed prompt ids (a chat template's rendering): one hypothesis."""
        self._root(list(ids) or list(self.member.token_bytes.start_ids))

    def _root(self, ids: list[int]) -> None:
        self.tree = TokenTree(self.member.model, self.member.table)
        self.hyps = [Hypothesis(self.tree.root(ids), 0.0, b"")]
        self.protected, self.children = self.hyps[0], None

    # -- per byte --------------------------------------------------------------------------
    def _expand(self) -> list[Hypothesis]:
        """Children ``τ_h·t`` for tokens ``t`` equal to a hypothesis' pending bytes, all run
        in one forward call."""
        if self.children is not None:
            return self.children
        candidates = []
        for h in self.hyps:
            if not h.pending:
                continue
            ids, probs = h.view.ending_ids(h.pending)
            total = _root_total(h.view)
            for t, p in zip(ids.tolist(), probs.tolist(), strict=True):
                if p > 0:
                    candidates.append((h.logp + math.log(p / total), t, h))
        guard = self._protected_candidate(candidates)
        if self.k is not None:
            candidates = heapq.nlargest(self.k, candidates, key=lambda c: c[0])
            if guard is not None and not any(c is guard for c in candidates):
                candidates.append(guard)
        self.children, self.protected_child = [], None
        if not candidates:
            return self.children
        nodes = self.tree.extend([h.node for _, _, h in candidates], [t for _, t, _ in candidates])
        for candidate, node in zip(candidates, nodes, strict=True):
            self.children.append(Hypothesis(node, candidate[0], b""))
            if candidate is guard:
                self.protected_child = self.children[-1]
        return self.children

    def _protected_candidate(self, candidates: list) -> tuple | None:
        """The protected lineage's child: its pending byte as one token (the likeliest id)."""
        mine = [c for c in candidates if c[2] is self.protected]
        return max(mine, key=lambda c: c[0]) if mine else None

    def _weighted_masses(self) -> tuple[list[Hypothesis], list[np.ndarray]]:
        """Every hypothesis and child with its outcome masses (bytes, end of text), each
        scaled by its probability relative to the heaviest one."""
        everyone = self.hyps + self._expand()
        top = max(h.logp for h in everyone)
        rows = []
        for h in everyone:
            m = h.view.masses(h.pending)[:EPS] / _root_total(h.view)
            rows.append(m * math.exp(h.logp - top))
        return everyone, rows

    def distribution(self) -> np.ndarray | None:
        """The member's distribution over the next byte and end of text (257 entries)."""
        if not self.hyps:
            return None
        _, rows = self._weighted_masses()
        total = np.sum(rows, axis=0)
        z = total.sum()
        return total / z if z > 0 else None

    def advance(self, byte: int) -> None:
        """Condition on the next byte: keep the hypotheses and children that can spell it."""
        if not self.hyps:
            return
        everyone, _ = self._weighted_masses()
        base = self.protected if self.protected and not self.protected.pending else (
            self.protected_child)
        kept, guard = [], None
        for h in everyone:
            pending = h.pending + bytes((byte,))
            mass = float(h.view.masses(pending).sum()) / _root_total(h.view)
            if mass > 0:
                kept.append((h.logp + math.log(mass), Hypothesis(h.node, h.logp, pending)))
                if h is base:
                    guard = kept[-1]
        if self.k is not None:
            kept = sorted(kept, key=lambda c: c[0], reverse=True)[: self.k]
            if guard is not None and not any(c is guard for c in kept):
                kept.append(guard)
        self.hyps = [h for _, h in kept]
        self.protected = guard[1] if guard is not None else (self.hyps[0] if self.hyps else None)
        # Re-anchor the protected lineage on the heaviest hypothesis whenever that one has just
        # left a token boundary (one pending byte that is itself a token): the fallback then
        # stays close to the likeliest path instead of drifting to negligible probability.
        best = max(kept, key=lambda c: c[0])[1] if kept else None
        if best is not None and len(best.pending) == 1 and float(
                best.view.ending_ids(best.pending)[1].sum()) > 0:
            self.protected = best
        self.children = None
        self.tree.collect([h.node for h in self.hyps])


class ExactSequenceState(SequenceState):
    """The ensemble of exact members for one sequence: members advance independently (each
    commits at its own token ends) and their byte distributions are combined. ``start`` and
    ``start_from_ids`` are the paper mode's; there is no ε to resolve."""

    decide = "exact"

    def __init__(self, members: list[Member], weights: list[float], rule: str,
                 max_hypotheses: int | None):  # members of another kind: no super().__init__
        self.members = [ExactMember(m, max_hypotheses) for m in members]
        self.weights = weights
        self.rule = rule
        self.finished = False

    def _emit(self) -> np.ndarray:
        joint = combine(self.rule, [m.distribution() for m in self.members], self.weights)
        if joint is None:
            raise RuntimeError("no member gives any probability to the text so far")
        return joint / joint.sum()

    def step(self, byte: int) -> np.ndarray:
        for m in self.members:
            m.advance(byte)
        return self._emit()

    def recommit(self) -> None:
        """Nothing to re-decide: exact members have no token-end decision."""
        return None
