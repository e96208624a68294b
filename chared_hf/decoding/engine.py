"""The ensemble's decoding step over the rows of a batch, in phases.

What it does: drives rows of the row protocol (``row.Row``: ``paper.SequenceState``, the
paper's decoding; ``exact.ExactSequenceState``, exact byte-level members): ``start`` has the
rows take their prompts (a row still ``reading`` its prompt byte by byte is served until it
is done); ``step`` has them read the chosen bytes, resolve, and give the next byte's
distribution. The masses each phase reads are gathered for all rows at once (``wanted``), the
ids of all rows' commits are chosen at once (``commits``), and idle lanes of a call may carry
guesses (``idle``, decided by ``speculation``): one copy to the host per device and phase.

A phase only *queues* member calls; ``run_queued`` then runs each member's queued calls for
every row in one forward call. So a batch of rows costs each member one call per phase, and a
row that queued nothing costs it nothing.

What it does not do: choose bytes, sample or stop (``generation``, Transformers), or know
what a mode does inside a phase (``paper``, ``exact``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..members.byte_view import ending, gather, likeliest


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
           _guessing(rows), any(row.extends for row in rows), _unread(rows))
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
    gather([pair for row in rows for pair in row.wanted()], guesses, along=_unread(rows))


def _unread(rows: Sequence) -> list:
    """The banks the rows' trees made on a device whose likeliest ids no copy has brought
    yet (``ViewBank.read_top_later``), taken from the trees: the next gather brings them."""
    banks = []
    for tree in {id(tree): tree for row in rows for tree in row.trees}.values():
        banks += tree.unread
        tree.unread = []
    return banks


def _guessing(rows: Sequence) -> bool:
    """Whether idle rows may guess in the calls of this step (a row alone has no idle lane)."""
    return bool(rows) and rows[0].speculation.in_padding(rows)


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
    # Every member's call is launched before any is read: members on different devices run
    # at the same time.
    launched = [(tree, tree.launch()) for tree in trees]
    for tree, call in launched:
        if call is not None:
            tree.finish(call)


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
