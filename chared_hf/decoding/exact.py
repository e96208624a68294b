"""Exact byte-level marginals: each member as a true byte-level language model
(docs/method.md › Exact mode has the derivation, the pruning bounds and the measurements).

What it does: for one member and the bytes so far ``x``, keeps *hypotheses*: token sequences
``τ`` whose bytes are a prefix of ``x``, with ``P(τ)`` and pending bytes ``r``. Every token
sequence that spells a continuation of ``x`` is counted once, at its first token that reaches
past ``x`` (Vieira et al. 2025), so

    P(x·b)   = Σ_h P(τ_h)·M_h(r_h·b)  +  Σ_{t: bytes(t) = r_h} P(τ_h·t)·M_{τ_h·t}(b)
    P(x·EOS) = Σ_{t: bytes(t) = r_h} P(τ_h·t)·p(EOS | τ_h·t)   (+ hypotheses with r_h empty)

with ``M(r)`` the member's probability of the tokens that start with ``r``, over **all**
tokenizations (special tokens other than end of text removed). The *children* ``τ_h·t`` are
the forward passes: a byte's children run in one call of the member's ``TokenTree`` (every
row of a batch in its own lane; ``prepare`` queues them).

Pruning: ``max_hypotheses=K`` keeps the K heaviest children and hypotheses, ``prune_below=θ``
drops those lighter than θ of the text's kept probability; ``logprob_bounds`` certifies what
was dropped. Where a byte would get no mass from the kept hypotheses, the heaviest one spells
its pending bytes one per token (its *lineage*, ``widen``). A generation prompt is read over
every tokenization only in its last ``prompt_tokens`` tokens (``begin``; None: all of it). A
context that outgrows the member's window is cut at a point all hypotheses share
(``_fit_window``).

What it does not do: decide what calls run ahead (``speculation``), or attention kernels
without a custom mask. A member none of whose hypotheses can spell an observed byte gives it
probability zero and restarts after it (``_reroot``).
"""

from __future__ import annotations

import heapq
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..members.byte_view import EPS, ByteView, ending, gather
from ..members.member import Member, heal_tokens
from ..members.token_bytes import split_utf8
from ..members.token_tree import Node, TokenTree
from .row import Row, TextCursor
from .speculation import (
    Speculation,
    alone,
    predict,
    queue,
    root_queries,
    run_ahead,
    upcoming,
)
from .weighting import Weighting

UNBOUNDED_LIMIT = 4096  # children one byte may need before the unbounded mode gives up


@dataclass
class Hypothesis:
    """A token sequence whose bytes are a prefix of the text, and what is still pending."""

    node: Node
    logp: float  # log P(tokens) under the member (specials removed)
    pending: bytes

    @property
    def view(self) -> ByteView:
        return self.node.view


class ExactMember:
    """One member on one sequence, as a byte-level LM over all its tokenizations."""

    def __init__(self, member: Member, max_hypotheses: int | None, prune_below: float = 0.0,
                 tree: TokenTree | None = None, prompt_tokens: int | None = None,
                 speculation: Speculation | None = None):
        self.member = member
        self.speculation = speculation or Speculation()  # what its calls may run ahead
        self.k = max_hypotheses
        # With a bound: the prompt's last tokens read over every tokenization (``begin``).
        self.prompt_tokens = prompt_tokens if max_hypotheses is not None else None
        # Drop what weighs less than this fraction of the text's kept probability (log).
        self.floor = math.log(prune_below) if prune_below > 0 else -math.inf
        self.hyps: list[Hypothesis] = []
        self.children: list[Hypothesis] | None = None  # expanded children of `hyps`
        self.lineages = 0  # lineages built (``widen``): bytes pruning would have made impossible
        self.best: Hypothesis | None = None  # the heaviest hypothesis (where runs ahead start)
        # Generation of a row alone: the row's guess of the bytes ahead (``speculation``; the
        # row sets it, none by default).
        self.predict: Callable[[], bytes] = bytes
        # The member's token tree (shared with the other rows of a batch), this row's lane.
        self.tree = tree if tree is not None else TokenTree(member.model, member.table)
        self.lane = self.tree.new_lane()
        self.tree.register(lambda: [h.node for h in self.hyps])
        self._prompt_probs = np.ones(0)
        # Known text ahead (``speculation.upcoming``): the bytes ``begin`` is reading, then the
        # scored text (teacher forcing: a cursor shared with the row).
        self.cursor: TextCursor | None = None
        self.script, self.script_pos = b"", 0  # the prompt, and the next byte to read
        self._scored: int | None = None  # where the scored prompt starts (after the lead)
        # A scored head whose probabilities are due: its node and its ids (``prompt_probs``).
        self._scored_head: tuple[Node, list[int]] | None = None
        # Certified pruning (``logprob_bounds``), natural logs of absolute probabilities: the
        # mass the hypotheses kept spell (a lower bound on the text's prefix probability), the
        # mass pruning dropped (each dropped hypothesis' mass when dropped bounds all it could
        # have added later), and both after ``begin`` (what the scored text is conditioned on).
        self.kept, self.dropped = 0.0, -math.inf
        self._base = (0.0, -math.inf)
        self._lost = False  # a byte no kept hypothesis could spell was read (``_reroot``)

    @property
    def forwards(self) -> int:
        """Forward calls so far (one per byte at most, however many children it runs)."""
        return self.tree.forwards

    def begin(self, prompt: bytes, with_bos: bool, score: bool = False) -> None:
        """Start from the member's start of text, with the prompt to read byte by byte (its
        own tokenization is marginalised too): ``read_prompt_byte`` reads each, so that the
        rows of a batch read theirs side by side (``engine.start``). With ``prompt_tokens``,
        the prompt's *head* is the member's own tokenization, run in one call, and only its
        last ``prompt_tokens`` tokens' bytes (more where a longer token extends them,
        ``state.heal_tokens``) are read byte by byte (``_head``). ``score`` keeps the
        member's probability of each prompt byte (``prompt_probs``; its dummy prefix is
        conditioned on, not scored; a head token's probability at its last byte)."""
        tb = self.member.token_bytes
        if not tb.start_ids:
            raise ValueError(f"input_ids: member {self.member.name!r} has no BOS or end-of-text "
                             "token to start a text from, which the exact mode needs")
        self._prompt_probs = np.ones(len(prompt))
        self.script = (tb.lead if with_bos else b"") + prompt
        self._scored = len(self.script) - len(prompt) if score else None
        head = self._head(self.script, with_bos) if self.prompt_tokens else []
        self.script_pos = len(tb.spell(head)) if head else 0
        if head:  # one call, like the paper mode's prompt; the tail is read byte by byte
            root = self.tree.request(None, list(tb.start_ids) + head, score=score,
                                     lane=self.lane)
            self._set_root(root)
            self._scored_head = (root, head) if score else None
        else:
            self._root(list(tb.start_ids), upcoming(self))
        self._finish_prompt()

    def _head(self, script: bytes, with_bos: bool) -> list[int]:
        """The member's own tokenization of ``script`` (lead and prompt) but for its last
        tokens: at least ``prompt_tokens``, and every token a longer token extends
        (``heal_tokens``); empty where that leaves nothing or the tokenizer cannot spell the
        text exactly."""
        tb = self.member.token_bytes
        text, rest = split_utf8(script[len(tb.lead):] if with_bos else script)
        ids = tb.encode(text.encode("utf-8"), at_start=with_bos) if text else []
        if not ids or tb.spell(ids) != script[:len(script) - len(rest)]:
            return []  # a lossy tokenizer (unknown pieces): read it all byte by byte
        cut = max(self.prompt_tokens, heal_tokens(self.member, ids, rest))
        return ids[:-cut] if len(ids) > cut else []

    @property
    def reading(self) -> bool:
        """Whether prompt bytes are left to read (``read_prompt_byte``)."""
        return self.script_pos < len(self.script)

    def read_prompt_byte(self) -> None:
        """Read the next prompt byte (its children's call queued by ``prepare`` and run by
        the batch, or run here)."""
        i = self.script_pos
        prob = self.advance(self.script[i])
        if self._scored is not None and i >= self._scored:
            self._prompt_probs[i - self._scored] = prob
        self.script_pos += 1
        self._finish_prompt()

    def _finish_prompt(self) -> None:
        """After the prompt's last byte: what the text is conditioned on (the bounds' base)."""
        if not self.reading:
            self.script, self.script_pos = b"", 0
            self._base = (self.kept, self.dropped)

    def prompt_probs(self, n_bytes: int) -> np.ndarray:
        """The member's probability of each prompt byte, given the bytes before it (in the
        head, each head token's probability at its last byte, 1 at its other bytes)."""
        if self._scored_head is not None:  # the head's call has run: its tokens' scores
            (root, ids), self._scored_head = self._scored_head, None
            pieces, end = self.member.token_bytes.pieces, -(self._scored or 0) - 1
            for t, logp in zip(ids, root.scores[-len(ids):].tolist(), strict=True):
                end += len(pieces[t] or b"")
                if end >= 0:
                    self._prompt_probs[end] *= math.exp(logp)
        return self._prompt_probs[:n_bytes]

    def begin_from_ids(self, ids: list[int]) -> None:
        """Start after fixed prompt ids (a chat template's rendering): one hypothesis."""
        self._root(list(ids) or list(self.member.token_bytes.start_ids))
        self._base = (self.kept, self.dropped)

    def logprob_bounds(self) -> tuple[float, float]:
        """Certified bounds on the log-probability (nats) the unbounded exact mode gives the
        bytes read since ``begin`` (given those before): ``(lower, upper)``, equal when nothing
        was pruned. Lower: the mass the kept hypotheses spell; upper: that plus every mass
        pruning dropped; each divided by the other bound of what ``begin`` read."""
        base_kept, base_dropped = self._base
        return (float(self.kept - np.logaddexp(base_kept, base_dropped)),
                float(np.logaddexp(self.kept, self.dropped)) - base_kept)

    def _drop(self, log_masses) -> None:
        """Pruning dropped hypotheses of these (log) masses (after a loss, the hypotheses are
        no longer real mass: nothing to add)."""
        if len(log_masses) and not self._lost:
            self.dropped = float(np.logaddexp.reduce([self.dropped, *log_masses]))

    def _root(self, ids: list[int], ahead: bytes = b"") -> None:
        """One hypothesis after ``ids``, whose call is queued (``engine.start`` runs every
        row's in one call per member). With ``ahead``, the known text that follows (prompt or
        scored text), that call also runs the member's own tokenization of its start
        (``speculation.root_queries``), so that reading it needs no call of its own."""
        queries = root_queries(self, ids, ahead)
        root = self._request(queries, views=len(ids))[len(ids) - 1]
        self._set_root(root)

    def _set_root(self, root: Node) -> None:
        """One hypothesis: ``root``, with nothing pending."""
        self.hyps = [Hypothesis(root, 0.0, b"")]
        self.best = self.hyps[0]
        self.children = None
        self.kept, self.dropped, self._lost = 0.0, -math.inf, False

    # -- per byte --------------------------------------------------------------------------
    def _expand(self) -> list[Hypothesis]:
        """Children ``τ_h·t`` for tokens ``t`` equal to a hypothesis' pending bytes, all run
        in one forward call."""
        if self.children is not None:
            return self.children
        self._fit_window()
        candidates = []
        ending_at = [h for h in self.hyps if h.pending]
        for h, (ids, probs) in zip(ending_at, ending([(h.view, h.pending) for h in ending_at]),
                                   strict=True):  # every hypothesis' ending ids at once
            total = h.view.text_total
            for t, p in zip(ids.tolist(), probs.tolist(), strict=True):
                if p > 0:
                    candidates.append((h.logp + math.log(p / total), t, h))
        every = candidates
        if self.floor > -math.inf:  # light children, relative to the text's probability
            candidates = [c for c in candidates if c[0] >= self.kept + self.floor]
        if self.k is not None:
            candidates = heapq.nlargest(self.k, candidates, key=lambda c: c[0])
        if len(candidates) < len(every):
            run = {id(c) for c in candidates}
            self._drop([c[0] for c in every if id(c) not in run])  # children never run
        elif len(candidates) > UNBOUNDED_LIMIT:
            raise ValueError(
                f"max_hypotheses: None (no bound) would run {len(candidates)} tokens at once for "
                f"one byte of this text (member {self.member.name!r}; the number of "
                "tokenizations grows exponentially with the length); give a bound such as 8")
        self._run(candidates)
        self.children = [Hypothesis(h.node.children[t], logp, b"") for logp, t, h in candidates]
        return self.children

    def _run(self, candidates: list[tuple[float, int, Hypothesis]]) -> None:
        """Run, in one call, the candidate children that no earlier call ran (on known text,
        together with what ``speculation.run_ahead`` adds). Every node run
        becomes a child of its parent (``Node.children``), where later bytes find it."""
        queries: list[tuple[Node | int, int]] = [
            (h.node, t) for _, t, h in candidates if t not in h.node.children]
        if not queries:
            return
        n_new = len(queries)
        run_ahead(self, queries)
        # Run with the other rows' (``prepare``); the nodes run ahead get their views when
        # a later byte needs them (most are never needed).
        self._request(queries, views=n_new)

    def _request(self, queries: list, views: int) -> list[Node]:
        """Queue ``queries`` (``TokenTree.request_many``; the first ``views`` get their views
        in the call) and make every node a child of its parent, where later bytes find it."""
        nodes = self.tree.request_many(queries, lane=self.lane, views=views)
        for (parent, t), node in zip(queries, nodes, strict=True):
            if parent is not None:
                (parent if isinstance(parent, Node) else nodes[parent]).children.setdefault(
                    t, node)
        return nodes

    def _fit_window(self) -> None:
        """Context policy: when a hypothesis and its child would exceed the member's window,
        every hypothesis keeps the member's start ids and its most recent tokens, cut at one
        point of the tokens all of them share so that the cut sequences still share their
        prefix; the longest then fills 3/4 of the window. They run again from a new root in the
        row's lane, in one call (warned once per member). Their probabilities are kept: later
        bytes are conditioned on the shorter context, as in the paper mode."""
        window = self.member.window
        if window is None or max(len(h.node) for h in self.hyps) + 1 <= window:
            return
        start = list(self.member.token_bytes.start_ids)
        keep = self.member.tokens_to_keep(len(start), stacklevel=5)
        seqs = [self.tree.ids(h.node) for h in self.hyps]
        common = len(os.path.commonprefix(seqs))
        tail = max(len(ids) for ids in seqs) - common
        cut = max(common - max(keep - tail, 0), 0)  # inside the shared tokens when it can be
        cut_seqs = [start + (ids[cut:] if tail < keep else ids[-keep:]) for ids in seqs]
        # One call: the cut sequences as a trie (shared prefixes run once), each hypothesis'
        # last token's distribution kept.
        queries, index, ends = [], {}, []
        for ids in cut_seqs:
            parent = None
            for depth in range(len(ids)):
                key = tuple(ids[:depth + 1])
                if key not in index:
                    index[key] = len(queries)
                    queries.append((parent, ids[depth]))
                parent = index[key]
            ends.append(parent)
        nodes = self.tree.run(queries, keep_logits=sorted(set(ends)), views=True, lane=self.lane)
        for h, end in zip(self.hyps, ends, strict=True):
            h.node = nodes[end]

    def widen(self) -> bool:
        """Give every byte the member can represent some mass: where no hypothesis or child
        sits at a token boundary, add the *lineage*, the heaviest hypothesis with its pending
        bytes one per token (the member's own id for each byte), run now in one call. Its
        tokenizations are none of the other hypotheses' (their next token reaches past the
        text), so the kept mass stays a lower bound. Returns whether it was added (not where a
        boundary exists already, a pending byte has no token of its own, or the lineage has
        probability zero)."""
        best = self.best
        if best is None or not all(h.pending for h in self.hyps + (self.children or [])):
            return False
        ids = [self.member.byte_id(b) for b in best.pending]
        if None in ids:
            return False
        queries: list[tuple[Node | int, int]] = []
        seen: dict = {}
        parent: Node | int = best.node
        for t in ids:  # follow what ran before, queue the rest
            parent = queue(parent, t, queries, seen)
        if queries:
            self._request(queries, views=len(queries))
            self.tree.flush()
        node, logp = best.node, best.logp
        for t in ids:  # the lineage's probability, token by token (specials removed)
            p = float(node.view.probs[t])
            if p <= 0:
                return False
            logp += math.log(p / node.view.text_total)
            node = node.children[t]
        self.hyps.append(Hypothesis(node, logp, b""))
        self.lineages += 1
        return True

    def _next_known(self) -> int | None:
        """The next byte of known text (the prompt being read, a scored text), if any."""
        if self.script_pos < len(self.script):
            return self.script[self.script_pos]
        ahead = self.cursor.ahead(1) if self.cursor is not None else b""
        return ahead[0] if ahead else None

    def _weighted_masses(self) -> tuple[list[Hypothesis], list[np.ndarray]]:
        """Every hypothesis and child with its outcome masses (bytes, end of text), each
        scaled by its probability relative to the heaviest one."""
        everyone = self.hyps + self._expand()
        self.tree.flush()  # the children's call, unless the batch ran it (``prepare``)
        gather([(h.view, h.pending) for h in everyone])  # all their masses at once
        top = max(h.logp for h in everyone)
        rows = []
        for h in everyone:
            m = h.view.masses(h.pending)[:EPS] / h.view.text_total
            rows.append(m * math.exp(h.logp - top))
        return everyone, rows

    def prepare(self) -> None:
        """Queue the call of the children the next byte needs (a batch's rows then run theirs
        together, ``engine.run_queued``)."""
        if self.hyps:
            self._expand()

    def wanted(self, byte: int | None = None) -> list:
        """The ``(view, pending)`` pairs of the hypotheses and of the children that have run
        (with ``byte``: each followed by it, which ``advance`` reads)."""
        ready = [c for c in self.children or [] if c.node.ran]
        more = b"" if byte is None else bytes((byte,))
        return [(h.view, h.pending + more) for h in self.hyps + ready]

    def _masses(self, byte: int | None) -> tuple[list[Hypothesis], np.ndarray]:
        """Every hypothesis and child, and the outcome masses they sum to (relative to the
        heaviest); the lineage joins first where ``byte`` (the next byte, when known) would
        get no mass (``widen``)."""
        everyone, rows = self._weighted_masses()
        total = np.sum(rows, axis=0)
        if byte is not None and total[byte] <= 0 and self.widen():
            everyone, rows = self._weighted_masses()
            total = np.sum(rows, axis=0)
        return everyone, total

    def distribution(self) -> np.ndarray | None:
        """The member's distribution over the next byte and end of text (257 entries): over
        the bytes its kept hypotheses spell, with the lineage (``widen``) where known text's
        next byte needs it."""
        if not self.hyps:
            return None
        _, total = self._masses(self._next_known())
        z = total.sum()
        return total / z if z > 0 else None

    def advance(self, byte: int) -> float:
        """Condition on the next byte: keep the hypotheses and children that can spell it.
        Returns the member's probability of ``byte`` given the text before it (``nan`` with
        no hypotheses), from the masses this step computes anyway."""
        if not self.hyps:
            return math.nan
        everyone, total = self._masses(byte)
        z = float(total.sum())
        prob = float(total[byte]) / z if z > 0 else math.nan
        kept = []
        gather([(h.view, h.pending + bytes((byte,))) for h in everyone])
        for h in everyone:
            pending = h.pending + bytes((byte,))
            mass = float(h.view.masses(pending).sum()) / h.view.text_total
            if mass > 0:
                kept.append((h.logp + math.log(mass), Hypothesis(h.node, h.logp, pending)))
        if not kept:  # no tokenization spells `byte` (a lossy tokenizer)
            self._reroot(everyone, byte)
            return prob
        if self.k is not None or self.floor > -math.inf:
            ranked = sorted(kept, key=lambda c: c[0], reverse=True)
            floor = np.logaddexp.reduce([c[0] for c in ranked]) + self.floor
            kept = [c for c in ranked[: self.k] if c[0] >= floor]
            chosen = {id(c) for c in kept}
            self._drop([c[0] for c in ranked if id(c) not in chosen])
        if not self._lost:
            self.kept = float(np.logaddexp.reduce([c[0] for c in kept]))
        self.hyps = [h for _, h in kept]
        self.best = max(kept, key=lambda c: c[0])[1]
        self.children = None
        return prob

    def _reroot(self, everyone: list[Hypothesis], byte: int) -> None:
        """Restart after a byte no hypothesis can spell: the heaviest hypothesis commits its
        pending bytes and ``byte`` as the member's own encoding of them (``<unk>`` where it
        has no piece). The member gave ``byte`` probability zero; it follows again from the
        next byte, at a token boundary."""
        anchor = max(everyone, key=lambda h: h.logp)
        try:
            ids = self.member.token_bytes.encode(anchor.pending + bytes((byte,)))
        except ValueError:  # neither a byte fallback nor an unknown token: skip the byte
            ids = []
        node = self.tree.chain(anchor.node, ids) if ids else anchor.node
        self.hyps = [Hypothesis(node, anchor.logp, b"")]
        self.best = self.hyps[0]
        self.children = None
        # The text now has probability zero unless a dropped hypothesis spells it: the lower
        # bound is 0 from here on, the upper bound what was dropped (nothing kept is real).
        self.kept, self._lost = -math.inf, True


class ExactSequenceState(Row):
    """The ensemble of exact members for one sequence: members advance independently (each
    at its own token ends) and their byte distributions are combined; there is no ε to
    resolve, so ``resolve`` queues the children's calls, which the rows of a batch run
    together (one lane each in the members' shared ``trees``). The same row protocol
    (``row.Row``) as the paper mode's ``paper.SequenceState``.
    The rows read their prompts side by side too (``reading``, ``prepare``,
    ``read_prompt_byte``), running ahead along them."""

    def __init__(self, members: list[Member], weighting: Weighting | list[float], rule: str,
                 max_hypotheses: int | None, prune_below: float = 0.0,
                 trees: list[TokenTree] | None = None, prompt_tokens: int | None = None,
                 speculation: Speculation | None = None):
        super().__init__(weighting, rule, speculation)
        trees = trees if trees is not None else [None] * len(members)
        self.members = [ExactMember(m, max_hypotheses, prune_below, tree, prompt_tokens,
                                    self.speculation)
                        for m, tree in zip(members, trees, strict=True)]
        self._guess: bytes | None = None  # the bytes ahead guessed at this step (``predict``)
        for m in self.members:
            m.predict = self._predicted
        # The order in which a row alone runs its members' calls (``resolve``): fewest
        # parameters first.
        self._cheapest_first = sorted(self.members, key=lambda m: _size(m.member.model))

    def begin(self, prompt: bytes, with_bos: bool) -> None:
        for m in self.members:
            m.begin(prompt, with_bos, score=self.row_weights.moves)
        self._prompt_bytes = len(prompt)

    def begin_from_ids(self, member_ids: list[list[int]]) -> None:
        for m, ids in zip(self.members, member_ids, strict=True):
            m.begin_from_ids(ids)

    @property
    def reading(self) -> bool:
        """Whether a member has prompt bytes left to read."""
        return any(m.reading for m in self.members)

    @property
    def extends(self) -> bool:
        """Generation of a row alone: a call runs each member's likeliest token past its
        heaviest hypothesis' pending bytes ahead (``speculation.run_ahead``)."""
        return self.cursor is None and all(alone(m.tree) for m in self.members)

    def prepare(self) -> None:
        """Queue the children the members' next prompt bytes need."""
        for m in self.members:
            if m.reading:
                m.prepare()

    def read_prompt_byte(self) -> None:
        """Every member still reading the prompt reads its next byte (the members' scripts
        differ by their dummy prefixes)."""
        for m in self.members:
            if m.reading:
                m.read_prompt_byte()

    def advance(self, byte: int) -> None:
        # Each member's probability of `byte` moves the weights: what its distribution gave,
        # or its lineage's where it had none (``ExactMember.widen``; another member's mass
        # chose the byte).
        self.row_weights.read_probs([m.advance(byte) for m in self.members])
        self._guess = None
        if self.cursor is not None:
            self.cursor.pos += 1

    def _predicted(self) -> bytes:
        """Generation of a row alone: the bytes the ensemble's greedy steps would read next,
        as far as the members' known distributions tell (``speculation.predict``; once per
        step, for the members' calls to run ahead along)."""
        if self._guess is None:
            self._guess = predict(self.members, self.weights, self.rule,
                                  self.speculation.guess_bytes)
        return self._guess

    def resolve(self) -> None:
        """No token-end decision: a prompt just read moves the weights, and every member
        queues the children the next byte needs (a row alone runs each member's call at once,
        the cheapest member first, so that the next one's run ahead reads its views)."""
        self._read_prompt()
        for m in self._cheapest_first:
            m.prepare()
            if self.extends and m.tree.queued_lanes():
                # A row alone: this member's call runs now, so that the guess of the text
                # ahead that the costlier members' calls run along reads its new views.
                m.tree.flush()
                self._guess = None

    def wanted(self, byte: int | None = None) -> list:
        """Every member's hypotheses and run children with their pending bytes (and
        ``byte``)."""
        return [pair for m in self.members for pair in m.wanted(byte)]

    def distribution(self) -> np.ndarray:
        """The members' distributions combined; where the product rule finds no outcome
        every member can spell, each member adds its lineage (``ExactMember.widen``: every
        byte it can represent gets some mass) and they are combined again."""
        _, joint = self._combined(lambda: [m.distribution() for m in self.members],
                                  lambda: any([m.widen() for m in self.members]))
        return joint / joint.sum()

    def recommit(self) -> np.ndarray | None:
        """Where logits processors banned every byte the kept hypotheses spell: each member
        adds its lineage (``ExactMember.widen``), which gives every byte it can represent some
        mass; the distribution after it, or None where no member could add one."""
        if self.finished or not any([m.widen() for m in self.members]):
            return None
        return self.distribution()

    def logprob_bounds(self) -> list[tuple[float, float]]:
        """Each member's certified ``(lower, upper)`` log-probability of the bytes read since
        ``begin`` under the unbounded exact mode (``ExactMember.logprob_bounds``)."""
        return [m.logprob_bounds() for m in self.members]


def _size(model: torch.nn.Module) -> int:
    """A model's parameters (what one forward call costs, roughly)."""
    return sum(p.numel() for p in model.parameters())
