"""The ensemble's decoding loop over the rows of a batch: the paper's step, in phases.

What it does: drives rows that implement one small protocol (``state.SequenceState``, the
paper's decoding; ``exact.ExactSequenceState``, exact byte-level members):

  * ``begin(prompt, with_bos)`` / ``begin_from_ids(member_ids)``: the members take the prompt;
    a row that reads it byte by byte (the exact mode) is ``reading`` until ``prepare`` (calls
    queued) and ``read_prompt_byte`` have taken every byte;
  * ``advance(byte)``: every member (and the row's weights) reads the chosen byte;
  * ``resolve()``: the paper's ε, whether the members' current tokens end here;
  * ``distribution()``: the next byte's distribution (256 bytes + end of text);
  * ``trees``: the members' token trees, whose queued forward calls run between phases;
  * ``read_ahead(text)`` (teacher forcing, shared by both modes): the text the members will
    read next, shared with them through a ``TextCursor`` so that their calls run ahead;
  * ``wanted(byte)``, ``commits()``, ``idle(tree, busy)`` (optional): the masses a phase reads,
    the commits whose ids are still to choose, and the members that can put a guess in a call's
    padding, so that ``engine`` serves all rows at once (one copy to the host per device).

A phase only *queues* member calls; ``run_queued`` then runs each member's queued calls for
every row in one forward call. So a batch of rows costs each member one call per phase, and a
row that queued nothing costs it nothing.

What it does not do: choose bytes, sample or stop (Transformers' ``generate`` does, through
``modeling``), or know what a member is (``state``, ``exact``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..members.byte_view import ending, gather, likeliest


class TextCursor:
    """Teacher forcing: the text the members will read, and how much of it they have read."""

    def __init__(self, text: bytes = b""):
        self.text, self.pos = text, 0

    def ahead(self, n: int) -> bytes:
        return self.text[self.pos:self.pos + n]


class Row:
    """The protocol a row implements (``begin``, ``begin_from_ids``, ``advance``, ``resolve``,
    ``distribution``, ``trees``, ``members``), with the loop run for one row alone: ``start``
    and ``step`` (tests, and a row used on its own)."""

    trees: list = []  # token trees whose queued calls run between phases
    cursor: TextCursor | None = None  # teacher forcing: the text ahead (``read_ahead``)
    reading = False  # prompt bytes left to read one by one (the exact mode's ``begin``)
    guesses = False  # ``idle`` may guess members' likeliest tokens after their pending bytes
    extends = False  # the next call may guess a member's likeliest token past its pending bytes

    def read_ahead(self, text: bytes) -> None:
        """Teacher forcing: the members will read ``text`` next (after what they were told
        before), so their forward calls run ahead along it; ``advance`` moves the cursor."""
        if self.cursor is None:
            self.cursor = TextCursor()
            for m in self.members:
                m.cursor = self.cursor
        self.cursor.text += text

    def prepare(self) -> None:
        """Queue the calls the next prompt byte needs (while ``reading``)."""

    def read_prompt_byte(self) -> None:
        """Read the next prompt byte (while ``reading``)."""

    def commits(self) -> list:
        """Members whose commit waits for the id it takes (``committing``: the committed
        bytes first; ``view``; ``finish_commit``), chosen for all rows at once; none by
        default."""
        return []

    def idle(self, tree, busy: set[int]) -> list:
        """The members whose ``tree`` runs a call in which they queued nothing (their lanes
        are not in ``busy``) and that take a guess: ``(member, node, token)``, the member
        (``pending``, ``queue_guess``) guessing ``token`` after ``node``, or with ``token``
        None its likeliest token after its pending bytes (``node`` its current node); none
        by default."""
        return []

    def wanted(self, byte: int | None = None) -> list:
        """The ``(ByteView, pending bytes)`` pairs the next phase reads (with ``byte``: those
        that reading it needs), so that ``engine`` computes those of all rows at once
        (``byte_view.gather``); none by default."""
        return []

    def start(self, prompt: bytes, with_bos: bool) -> np.ndarray:
        """The members take the prompt; the distribution of the first new byte."""
        return start([self], [lambda row: row.begin(prompt, with_bos)])[0]

    def step(self, byte: int) -> np.ndarray:
        """Advance by ``byte``; the distribution (bytes + end of text) of the next byte."""
        return step([self], [byte])[0]


def start(rows: Sequence, begins: Sequence[Callable]) -> list[np.ndarray]:
    """The rows take their prompts (``begins[i](rows[i])``); the first new byte's
    distribution of each."""
    for row, begin in zip(rows, begins, strict=True):
        begin(row)  # 1. each member commits its prompt, tokenized its own way (queued)
    run_queued(rows)  # 2. one forward call per member, all rows' prompts together
    while reading := [row for row in rows if row.reading]:  # exact mode: byte by byte
        for row in reading:
            row.prepare()  # the children the next prompt byte needs (queued)
        run_queued(reading)  # one call per member for all rows still reading
        for row in reading:
            row.read_prompt_byte()
    return _decide(rows)


def step(rows: Sequence, chosen: Sequence[int]) -> list[np.ndarray]:
    """The rows read the chosen bytes; the next byte's distribution of each."""
    # 0. what reading the bytes needs, all rows at once (with the likeliest ids idle rows may
    # guess in step 2 or 5)
    gather([pair for row, byte in zip(rows, chosen, strict=True) for pair in row.wanted(byte)],
           _guessing(rows), any(row.extends for row in rows))
    for row, byte in zip(rows, chosen, strict=True):
        row.advance(byte)  # 1. every member reads the byte; one that cannot commits alone
    run_queued(rows)  # 2. those lone commits: one call per member, all rows together
    return _decide(rows)


def _decide(rows: Sequence) -> list[np.ndarray]:
    # 3. the members' byte views for all rows, one gather per member (with the likeliest ids
    # idle rows may guess in step 5, in the same copy)
    _gather(rows, _guessing(rows))
    for row in rows:
        row.resolve()  # 4. ε: where the ensemble ends the tokens, a joint commit (queued)
    run_queued(rows)  # 5. those commits: one call per member, all rows together
    _gather(rows)  # 6. the views after them
    return [row.distribution() for row in rows]  # 7. combine: the next byte's distribution


def _gather(rows: Sequence, guesses: bool = False) -> None:
    gather([pair for row in rows for pair in row.wanted()], guesses)


def _guessing(rows: Sequence) -> bool:
    """Whether idle rows may guess in the calls of this step (a row alone has no idle lane)."""
    return len(rows) > 1 and any(row.guesses for row in rows)


def run_queued(rows: Sequence) -> None:
    """Run every member call the rows queued: one forward call per token tree, after the
    rows' commits have taken their ids (``Row.commits``, read at once). Where a tree
    runs a call, the rows with nothing queued in it add a guess (``Row.idle``): their lane of
    the call would be padding anyway, and a later commit of the guessed token costs no call."""
    # The rows' commits: the ids of every committed text at once (one copy per device).
    commits = [m for row in rows for m in row.commits()]
    for member, found in zip(commits, ending([(m.view, m.committing[0]) for m in commits]),
                             strict=True):
        member.finish_commit(found)
    # The idle rows' guesses for every tree that runs a call, chosen at once (one copy to the
    # host per device), then one call per tree.
    trees = {id(tree): tree for row in rows for tree in row.trees}.values()
    busy = [(tree, lanes) for tree in trees if (lanes := tree.queued_lanes())]
    _guess([guess for tree, lanes in busy for row in rows for guess in row.idle(tree, lanes)])
    for tree in trees:
        tree.flush()


def _guess(idle: list) -> None:
    """Queue the idle members' guesses (``(member, node, token)``): the token where the row
    knows it, else the member's likeliest token after its pending bytes."""
    rest = [(m, node) for m, node, token in idle if token is None]
    for (member, node), token in zip(rest, likeliest([(n.view, m.pending) for m, n in rest]),
                                     strict=True):
        member.queue_guess(node, token)
    for member, node, token in idle:
        if token is not None:
            member.queue_guess(node, token)
