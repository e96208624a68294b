"""The paper's decoding (CharED): one row of text over every member, with the null outcome ε.

What it does:
  * ``MemberState``: one member on one row: the node of its committed tokens in its
    ``TokenTree`` (the KV cache, shared with branches), the ``ByteView`` after them and its
    pending (not yet committed) bytes. A commit appends the token that ended (among ids sharing
    the bytes: argmax, or drawn by probability when sampling), or the member's tokenization of
    the pending bytes when no single token ended, in one forward call (which may also run
    tokens ahead: ``speculation``).
  * ``SequenceState``: the row (``row.Row``): every member advances by the chosen byte, the
    members' outcome distributions are combined with the row's weights, and ε ("the token ends
    here") is resolved before the next byte's distribution is returned. Commits are joint,
    except that a member none of whose tokens continues its pending bytes with the chosen byte
    commits them alone first (so it keeps following instead of dropping out).
  * ``Draws``: the sampler's random choices (torch's global generator unless given one).

How ε is resolved (``decide``):
  * ``"greedy"``: commit when ε is the argmax of the combined distribution (ties go to ε);
  * ``"sample"``: commit with probability J(ε), drawn by ``Draws``;
  * ``"marginal"`` (teacher-forced scoring): the returned distribution sums both branches,
    ``P(b) = J(b) + J(ε)·J'(b)`` with ``J'`` the distribution after committing; once the next byte
    is known the state follows the branch that gave it more mass (ties: no commit).

What it does not do: talk to ``generate`` (``modeling``) or pick bytes.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..members.byte_view import EPS, ByteView, gather
from ..members.member import Member, heal_tokens
from ..members.token_bytes import split_utf8
from ..members.token_tree import Node, TokenTree
from . import engine
from .row import Row, TextCursor
from .speculation import Speculation, idle, on_host, speculate
from .weighting import Weighting, byte_probs

DECIDE_RULES = ("greedy", "sample", "marginal")


class Draws:
    """The sampler's random choices: whether ε commits (``uniform() < J(ε)``) and which of
    several ids sharing the pending bytes a commit takes (``pick(probs)``). By default from
    torch's global generator (``set_seed`` reproduces runs), or from ``generator``; tests give
    scripted choices by overriding the two methods."""

    def __init__(self, generator: torch.Generator | None = None):
        self.generator = generator

    def uniform(self) -> float:
        return float(torch.rand((), generator=self.generator))

    def pick(self, probs: torch.Tensor) -> int:
        return int(torch.multinomial(probs.float(), 1, generator=self.generator))


class MemberState:
    """One member on one sequence: the node of its committed tokens in its ``TokenTree``, and
    its pending bytes."""

    def __init__(self, member: Member, tree: TokenTree | None = None,
                 speculation: Speculation | None = None):
        self.member = member
        self.speculation = speculation or Speculation()
        self.tree = tree if tree is not None else TokenTree(member.model, member.table)
        self.lane = self.tree.new_lane()  # this sequence's batch row of the member's cache
        self.tree.register(lambda: (self.node, self.saved))
        self.node: Node | None = None
        self.pending = b""
        self.lead_pending = False  # the member's dummy prefix is still in `pending`
        self.healed = False  # the prompt's last tokens were left pending (``heal_tokens``)
        self.start: list[int] = []  # the ids the member's context starts with (kept when cut)
        self.saved: Node | None = None  # the node of an open branch (see snapshot)
        # A commit whose id is chosen when the queued calls run: (bytes, lead, draws).
        self.committing: tuple | None = None
        self.cursor: TextCursor | None = None  # teacher forcing: speculate along the text

    @property
    def view(self) -> ByteView:
        return self.node.view

    @property
    def ids(self) -> list[int]:
        return self.tree.ids(self.node)

    # -- set-up and forward ----------------------------------------------------------------
    def begin(self, prompt: bytes, with_bos: bool, score: bool = False,
              heal: bool = False) -> None:
        """Commit the prompt (the member's own tokenization of it) and run it once; ``score``
        keeps each prompt token's log-probability (``prompt_probs``). ``heal``: the prompt's
        last tokens stay pending instead (``heal_tokens``), so that the member can continue
        them with a longer token."""
        tb = self.member.token_bytes
        if with_bos and not tb.start_ids:
            raise ValueError(
                f"input_ids: member {self.member.name!r} has no BOS or end-of-text token to start "
                "a text from; give the prompt without <s> (add_special_tokens=False)")
        text, rest = split_utf8(prompt)  # a trailing partial character stays pending
        ids = list(tb.start_ids) if with_bos else []
        if text:
            body = tb.encode(text.encode("utf-8"), at_start=with_bos)
            # The first token carries the dummy prefix (not prompt text), and without start
            # ids one token must stay to condition on: neither is healed.
            fixed = int(bool(with_bos and tb.lead) or not ids)
            cut = heal_tokens(self.member, body[fixed:], rest) if heal else 0
            self.healed = cut > 0
            ids += body[:len(body) - cut]
            rest = (tb.spell(body[len(body) - cut:]) or b"") + rest
        elif with_bos and tb.lead:
            rest, self.lead_pending = tb.lead + rest, True
        if not ids:
            ids = list(tb.start_ids)  # no text to condition on: the member's own start of text
        if not ids:
            raise ValueError(f"input_ids: member {self.member.name!r} has nothing to start from: "
                             "no text and no BOS or end-of-text token")
        self.pending = rest
        self.start = ids[: len(tb.start_ids)] if with_bos else []
        self._forward(ids, score=score)

    def prompt_probs(self, n_bytes: int) -> np.ndarray:
        """The member's evidence about each of the prompt's ``n_bytes`` bytes, for the weights:
        each prompt token's probability (its own tokenization, after the tokens before it) at
        the token's last byte, 1 at the other bytes, and where healing left the last tokens
        pending, the probability that its next token starts with them at the last byte;
        ``nan`` everywhere where the prompt was not scored. Tokens are aligned from the end of
        the committed text (a dummy prefix or a cut context shifts nothing)."""
        out = np.ones(n_bytes)
        scores = self.node.scores if self.node is not None else None
        if scores is None:
            return np.full(n_bytes, np.nan)
        ids, pieces = self.ids, self.member.token_bytes.pieces
        end = n_bytes - len(self.pending) - 1  # the last byte of the committed text
        for k in range(len(ids) - 1, len(ids) - 1 - len(scores), -1):  # the scored ids
            size = len(pieces[ids[k]] or b"")
            if size and end >= 0:
                out[end] *= math.exp(float(scores[k - len(ids)]))
            end -= size
        if self.healed and n_bytes:  # the healed bytes: its next token starts with them
            out[n_bytes - 1] *= float(self.view.masses(self.pending).sum())
        return out

    def begin_from_ids(self, ids: list[int]) -> None:
        """Start from prompt ids rendered elsewhere (a chat template); nothing pending."""
        start = list(self.member.token_bytes.start_ids)
        self.start = start if ids[: len(start)] == start else []
        self._forward(list(ids) or start)

    def _fit_window(self, ids: list[int]) -> list[int]:
        """Context policy: when the member's context would exceed its window, it keeps its
        start ids and the most recent tokens filling 3/4 of the window, and runs them again
        from a new root (warned once per member)."""
        window = self.member.window
        length = len(self.node) if self.node is not None else 0
        if window is None or length + len(ids) <= window:
            return ids
        keep = self.member.tokens_to_keep(len(self.start), stacklevel=4)
        full = (self.ids if self.node is not None else []) + ids
        self.node = None
        return self.start + full[-keep:]

    def _forward(self, ids: list[int], score: bool = False) -> None:
        """Append ``ids`` to the committed tokens: along speculated children where they were
        run already, else with one forward call (``score``: see ``TokenTree.request``)."""
        ids = self._fit_window(ids)
        node, i = self.node, 0
        while node is not None and i < len(ids) and ids[i] in node.children:
            node, i = node.children[ids[i]], i + 1
        if i < len(ids):
            # Scoring runs ahead along the text now; generation queues the call, so that the
            # rows of a batch run theirs together (``engine.run_queued``, between phases).
            node = (speculate(self, node, ids[i:]) if self.cursor is not None
                    else self.tree.request(node, ids[i:], score=score and i == 0,
                                           lane=self.lane))
        self.node = node

    def queue_guess(self, node: Node, token: int | None) -> None:
        """Queue ``token`` as a child of ``node`` (the current node, or a guess run before),
        run with the call other rows queued: if the member commits it there later, that
        commit costs no call (``_forward`` finds it). On a device its view is made in the
        call (batched), so that its likeliest id, which a guess after it reads, comes to the
        host with the next copy (``ViewBank.read_top_later``); on a CPU when first read."""
        if token is not None and token not in node.children:
            views = int(not on_host([node]))
            node.children[token] = self.tree.request_many([(node, token)], lane=self.lane,
                                                          views=views)[0]

    # -- per byte --------------------------------------------------------------------------
    def distribution(self) -> np.ndarray | None:
        """Outcome distribution given the pending bytes, or None if the member cannot follow."""
        return self.view.distribution(self.pending)

    def advance(self, byte: int) -> None:
        self.pending += bytes((byte,))

    def can_follow(self, byte: int, pending: bytes | None = None) -> bool:
        """Whether some token with mass starts with the pending bytes (or ``pending``)
        followed by ``byte`` (from the masses the last distribution computed; where those say
        no, the prefix's own range is summed again, as a tiny mass may round away in a
        difference of sums)."""
        return self.view.follows(self.pending if pending is None else pending, byte)

    def commit(self, draws: Draws | None = None) -> None:
        """Commit the pending bytes (the member reads on from a token boundary at once): the
        token that ended (among ids sharing the bytes, the likeliest, or one drawn by
        probability with ``draws``), else the member's tokenization. Which id is chosen when
        the rows' queued calls run (``engine.run_queued`` reads the ids of every row's commits
        at once, ``finish_commit``)."""
        if not self.pending:
            return
        self.committing = (self.pending, self.lead_pending, draws)
        self.pending, self.lead_pending = b"", False

    def finish_commit(self, ending: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Queue the commit's tokens, given the ids whose bytes are the committed bytes and
        their probabilities (``byte_view.ending``)."""
        (pending, lead_pending, draws), self.committing = self.committing, None
        ids, probs = ending
        if len(ids) and float(probs.sum()) > 0:
            pick = draws.pick(probs) if draws is not None else int(probs.argmax())
            new = [int(ids[pick])]
        elif lead_pending:
            lead = len(self.member.token_bytes.lead)
            new = self.member.token_bytes.encode(pending[lead:], at_start=True)
        else:
            new = self.member.token_bytes.encode(pending, at_start=False)
        self._forward(new or list(self.member.token_bytes.start_ids))

    # -- branches (teacher-forced scoring) -------------------------------------------------
    def snapshot(self) -> tuple:
        self.saved = self.node
        return (self.node, self.pending, self.lead_pending)

    def restore(self, snap: tuple | None) -> None:
        """Go back to ``snap`` (or, with None, keep the current state and forget the
        snapshot)."""
        if snap is not None:
            self.node, self.pending, self.lead_pending = snap
        self.saved = None


class SequenceState(Row):
    """The paper's decoding (CharED) for one sequence over all members.

    It implements the row protocol that ``engine`` drives (``row.Row``), in phases between
    which the members' queued forward calls run (one call per member for all rows of a
    batch): ``begin``/``begin_from_ids`` (the prompt), ``advance(byte)``, ``resolve()`` (ε),
    ``distribution()``; ``start`` and ``step`` run those phases for this row alone.
    """

    def __init__(self, members: list[Member], weighting: Weighting | list[float], rule: str,
                 decide: str, trees: list[TokenTree] | None = None,
                 draws: Draws | None = None, heal_prompt: bool = False,
                 speculation: Speculation | None = None):
        super().__init__(weighting, rule, speculation)
        trees = trees or [None] * len(members)  # shared trees: a batch's rows, one per member
        self.members = [MemberState(m, t, self.speculation)
                        for m, t in zip(members, trees, strict=True)]
        self.decide = decide
        self.draws = draws or Draws()  # the sampler's random choices
        self.heal_prompt = heal_prompt  # generation: the prompt's last tokens stay pending
        self.joint: np.ndarray | None = None  # the last combined outcome distribution (ε too)
        self._entered: list[np.ndarray | None] = []  # the members' distributions behind it
        self._next: np.ndarray | None = None  # the next byte's distribution, once resolved
        self._branch = None  # (snapshots, continue-masses, commit-masses) while undecided
        self.ahead = None  # the greedy steps ahead (``speculation.predicted_commits``)

    def commits(self) -> list[MemberState]:
        """The members whose commit waits for its id (``MemberState.finish_commit``)."""
        return [m for m in self.members if m.committing is not None]

    @property
    def guesses(self) -> bool:
        """Whether ``idle`` may guess (generation; teacher forcing runs ahead instead)."""
        return self.cursor is None

    def idle(self, tree: TokenTree, busy: set[int]) -> list:
        """Generation: guesses for the call's padding (``speculation.idle``); teacher
        forcing runs ahead along the text instead."""
        return [] if self.cursor is not None else idle(self, tree, busy)

    def wanted(self, byte: int | None = None) -> list[tuple[ByteView, bytes]]:
        """The members' views and pending bytes, whose masses the next phase reads; with
        ``byte``, each followed by it: what ``can_follow`` may read, and the next phase's
        views of the members that do not commit alone (known then without a copy)."""
        more = b"" if byte is None else bytes((byte,))
        return [(m.view, m.pending + more) for m in self.members]

    # -- the phases --------------------------------------------------------------------------
    def begin(self, prompt: bytes, with_bos: bool) -> None:
        """Every member commits the prompt with its own tokenization (calls queued), but for
        its last tokens, which stay pending with ``heal_prompt`` (``heal_tokens``)."""
        for m in self.members:
            m.begin(prompt, with_bos, score=self.row_weights.moves, heal=self.heal_prompt)
        self._prompt_bytes = len(prompt)

    def begin_from_ids(self, member_ids: list[list[int]]) -> None:
        """Every member starts from its own prompt ids (calls queued); the weights do not read
        a chat prompt (each member renders it differently)."""
        for m, ids in zip(self.members, member_ids, strict=True):
            m.begin_from_ids(ids)

    def advance(self, byte: int) -> None:
        """Every member reads ``byte`` (lone commits queued), and so do the weights."""
        self.row_weights.read(byte)
        self._resolve_branch(byte)
        for m in self.members:
            if m.pending and not m.can_follow(byte):
                # No token of this member continues its pending bytes with `byte`: it commits
                # them alone and reads `byte` from its own token boundary, instead of dropping
                # out of the ensemble until the next joint commit.
                m.commit(self._draws)
            m.advance(byte)
        if self.cursor is not None:
            self.cursor.pos += 1

    def resolve(self) -> None:
        """The paper's ε: combine the members and decide whether the current tokens end here
        (greedy: ε is the argmax; sampling: drawn with probability J(ε)); a joint commit is
        queued. Teacher forcing keeps both branches and sums them (``_branch``)."""
        self._read_prompt()  # the prompt's calls have run: the weights read it
        joint = self._mixed()
        eps = float(joint[EPS])
        if eps > 0 and (self.decide == "greedy" and eps >= joint[:EPS].max() or
                        self.decide == "sample" and self.draws.uniform() < eps):
            for m in self.members:
                m.commit(self._draws)  # queued: the distribution after it comes next phase
            self._next = None
        elif eps > 0 and self.decide == "marginal":
            snaps = [m.snapshot() for m in self.members]
            keep, before = joint[:EPS].copy(), byte_probs(self._entered)
            after = eps * self._commit_all()[:EPS]
            self._branch = (snaps, keep, after)
            if self.row_weights.moves:  # each member's probability over both branches
                self.row_weights.byte_probs = (1 - eps) * before + eps * byte_probs(
                    self._entered)
            self._next = _normalise(keep + after)
        else:
            self._next = self._emitted()

    def distribution(self) -> np.ndarray:
        """The next byte's distribution (256 bytes + end of text), after ``resolve``."""
        if self._next is None:  # a joint commit ran: combine the members after it
            self._mixed()
            self._next = self._emitted()
        out, self._next = self._next, None
        return out

    def recommit(self) -> np.ndarray | None:
        """Commit every member's pending bytes now and return the distribution after it, or
        None if nothing is pending (used when logits processors ban every byte that the
        "token goes on" decision allowed)."""
        if self.finished or not any(m.pending for m in self.members):
            return None
        self._commit_all()
        return self._emitted()

    # -- internals -------------------------------------------------------------------------
    def _emitted(self) -> np.ndarray:
        """The last combination without ε, renormalised; weights that move keep what each
        member gave each byte in it."""
        if self.row_weights.moves:
            self.row_weights.byte_probs = byte_probs(self._entered)
        return _normalise(self.joint[:EPS])

    def _mixed(self) -> np.ndarray:
        """Combined outcome distribution; members that cannot follow are left out, and if none
        can, every member commits its pending bytes (its own tokenization) and is asked again."""
        gather(self.wanted())  # every member's masses at once (done already inside a batch)

        def commit_all() -> bool:
            for m in self.members:
                m.commit()
            engine.run_queued([self])
            return True

        self._entered, self.joint = self._combined(
            lambda: [m.distribution() for m in self.members], commit_all)
        return self.joint

    @property
    def _draws(self) -> Draws | None:
        """Random choices when sampling; None (argmax) otherwise."""
        return self.draws if self.decide == "sample" else None

    def _commit_all(self) -> np.ndarray:
        """Every member commits now (its calls run at once); the combination after it."""
        for m in self.members:
            m.commit(self._draws)
        engine.run_queued([self])
        return self._mixed()

    def _resolve_branch(self, byte: int) -> None:
        """Teacher forcing: follow the branch (commit or not) that gave ``byte`` more mass."""
        if self._branch is None:
            return
        snaps, keep, after = self._branch
        self._branch = None
        back = after[byte] <= keep[byte]
        for m, snap in zip(self.members, snaps, strict=True):
            m.restore(snap if back else None)


def _normalise(dist: np.ndarray) -> np.ndarray:
    total = dist.sum()
    return dist / total if total > 0 else dist
