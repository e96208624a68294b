"""What the members' calls may run ahead of the text, decided in one place.

A member call costs about the same for one token as for a few (most of all on an
accelerator), so a call may also run tokens that later bytes will likely need; a later commit
or child found among them costs no call. Speculation never changes a number: a wrong guess
costs tokens, not probabilities. Three settings (``CharEDConfig``), read into ``Speculation``:

  * ``run_ahead_bytes`` (32; 0: off): on *known text* (a prompt the exact mode reads, a scored
    text), a call runs the member's own tokenization of that many bytes ahead, with the
    shorter tokens inside each token a hypothesis could end at (``chain``), and each lighter
    hypothesis' next ``lineage_tokens`` tokens along it (``next_tokens``);
  * ``guess_bytes`` (16; 0: off): in *generation*, greedy steps run on the host from what the
    members' views know, to guess what the calls run ahead along: the paper mode's next
    commits, put in the padding of a batch's calls by rows with nothing queued
    (``predicted_commits``), and the exact mode's text ahead for a row alone (``predict``);
  * ``run_ahead_children`` (None: on accelerators): on known text, also run ahead from every
    child a call runs (far fewer calls, several times the tokens).

Where behaviour depends on the batch or the device, it is decided here: idle lanes guess only
in a batch (``in_padding``); a row alone in its tree guesses past its pending bytes
(``alone``); the greedy steps run only where the views are host memory (``on_host``: on a
device each step would wait for a copy); running ahead from children pays on accelerators.

What it does not do: run calls (``engine``, ``token_tree``), or compute a distribution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..members.byte_view import EOT, EPS, ending, gather
from ..members.token_bytes import split_utf8
from ..members.token_tree import Node
from .combine import combine
from .weighting import byte_probs

if TYPE_CHECKING:
    from .exact import ExactMember
    from .paper import MemberState, SequenceState
    from .weighting import RowWeights

TRACKS = 4  # token sequences ``predict`` follows per member
Query = tuple["Node | int | None", int]  # a parent (node, earlier query, none) and a token


@dataclass(frozen=True)
class Speculation:
    """The three settings (module docstring), and how many of a lighter hypothesis' next
    tokens a call runs ahead (``lineage_tokens``, 0: none; not a config setting)."""

    run_ahead_bytes: int = 32
    guess_bytes: int = 16
    run_ahead_children: bool | None = None
    lineage_tokens: int = 2

    @classmethod
    def from_config(cls, config) -> Speculation:
        return cls(config.run_ahead_bytes, config.guess_bytes, config.run_ahead_children)

    def from_children(self, model) -> bool:
        """Whether known text runs ahead from every child a call runs: the setting, or where
        it is None, for a member on an accelerator (a call's cost barely depends on its
        tokens there; on a CPU each token costs a share of a call)."""
        if self.run_ahead_children is not None:
            return self.run_ahead_children
        return next(model.parameters()).device.type != "cpu"

    def in_padding(self, rows: Sequence) -> bool:
        """Whether idle rows put guesses in the padding of a batch's calls (a row alone has
        no padding)."""
        return len(rows) > 1 and self.guess_bytes > 0 and any(row.guesses for row in rows)


def alone(tree) -> bool:
    """Whether a row is alone in its member's tree: then, with no known text ahead, its call
    runs the member's likeliest token past the heaviest hypothesis' pending bytes (a batch's
    rows share their calls already, so a guess would only add tokens)."""
    return tree.lanes == 1


def on_host(nodes) -> bool:
    """Whether the nodes' views are host memory (on a device, each greedy step ahead would
    wait for a copy)."""
    return all(n.view.bank.host is not None for n in nodes)


def own_tokens(member, text: bytes) -> list[int]:
    """``member``'s own tokenization of ``text``'s whole characters."""
    text = split_utf8(text)[0].encode("utf-8")
    return member.token_bytes.encode(text) if text else []


def queue(parent: Node | int, token: int, queries: list[Query], seen: dict) -> Node | int:
    """The child ``token`` of ``parent``: the node where it was run before, else its query in
    ``queries`` (queued once; ``seen`` maps ``(key(parent), token)`` to its index)."""
    if isinstance(parent, Node) and token in parent.children:
        return parent.children[token]  # run before: go on from it
    k = (key(parent), token)
    if k not in seen:
        seen[k] = len(queries)
        queries.append((parent, token))
    return seen[k]


def key(parent: Node | int) -> tuple:
    """A query's parent as a dictionary key (a node by identity, an earlier query by index)."""
    return ("query", parent) if isinstance(parent, int) else ("node", id(parent))


# -- the paper mode: teacher forcing --------------------------------------------------------
def speculate(m: MemberState, node: Node | None, ids: list[int]) -> Node:
    """Teacher forcing: run ``ids`` together with the member's own tokenization of the
    text ahead (``run_ahead_bytes``) and, inside each of its tokens, the tokens the schedule
    may commit early (those equal to a prefix of it), in one forward call. They become
    children, so later commits along them need no forward call. Returns the node after
    ``ids``."""
    tb = m.member.token_bytes
    ahead, _ = split_utf8(m.pending + m.cursor.ahead(m.speculation.run_ahead_bytes))
    text = ahead.encode("utf-8")
    if m.lead_pending:  # the text starts with the member's dummy prefix
        guess = tb.encode(text[len(tb.lead):], at_start=True)
    else:
        guess = tb.encode(text, at_start=False) if text else []
    queries: list[Query] = [(node if j == 0 else j - 1, t) for j, t in enumerate(ids + guess)]
    for j, t in enumerate(guess, start=len(ids)):
        for early in m.member.prefix_ids(t):  # siblings: commits inside the guessed token
            queries.append((j - 1, early))
    nodes = m.tree.run(queries, lane=m.lane)
    if node is not None:
        node.children[ids[0]] = nodes[0]
    for q, (parent, t) in enumerate(queries[1:], start=1):
        nodes[parent].children.setdefault(t, nodes[q])
    return nodes[len(ids) - 1]


# -- the paper mode: idle lanes' guesses in generation --------------------------------------
def idle(row: SequenceState, tree, busy: set[int]) -> list:
    """Generation: the row's members in ``tree`` with nothing queued (lane not in ``busy``)
    guess a token to run in the call's padding: ``(member, node, token)``, the next commit no
    call has run yet where the greedy steps ahead show it (``predicted_commits``: it may
    follow commits run by earlier guesses), else ``(member, member.node, None)`` (its
    likeliest token after the pending bytes)."""
    members = [i for i, m in enumerate(row.members) if m.tree is tree and
               m.lane not in busy and m.node is not None and m.node.ran]
    if not members:
        return []
    known = predicted_commits(row)
    return [(row.members[i], *known[i]) if i in known else
            (row.members[i], row.members[i].node, None) for i in members]


def predicted_commits(row: SequenceState) -> dict[int, tuple[Node, int]]:
    """Greedy decoding: each member's next commit that no call has run yet (by member
    index): the node it follows and the token (the likeliest id spelling its bytes).
    Found by running the greedy steps ahead on the host from the members' views, the weights
    moving as they will, through commits whose token an earlier call ran already (a guess),
    until a member commits a token not run yet: its view after it is unknown. Asked again
    while the row reads along those steps, the steps go on from where they stopped
    (``_Ahead``). Exact under greedy decoding without logits processors; otherwise a guess.
    Empty where it cannot tell (sampling, a member whose call has not run or whose views are
    on a device, end of text, ``guess_bytes`` bytes without such a commit)."""
    nodes = [m.node for m in row.members]
    if row.decide != "greedy" or any(n is None or not n.ran for n in nodes):
        return {}  # a member's call has not run: its next view is not known yet
    if not on_host(nodes):
        return {}
    pending = [m.pending for m in row.members]
    ahead = row.ahead
    if ahead is None or not ahead.follows(nodes, pending):
        ahead = row.ahead = _Ahead(nodes, pending, row.row_weights.fork())
    elif ahead.ended or ahead.found and all(
            token not in node.children for node, token in ahead.found.values()):
        return ahead.found  # nothing new since it stopped
    return _steps_ahead(row, ahead, row.speculation.guess_bytes)


def _steps_ahead(row: SequenceState, ahead: _Ahead, limit: int) -> dict[int, tuple[Node, int]]:
    """Run the greedy steps ahead from where ``ahead`` stopped (``predicted_commits``)."""
    ahead.found = {}
    while len(ahead.path) - ahead.row_at < limit:
        if ahead.todo is None:
            # One greedy step as ``resolve`` and ``generate`` take it: combine, then commit
            # when ε is the argmax, else read the likeliest byte; members that cannot read it
            # after their pending bytes commit alone first.
            views = [n.view for n in ahead.at]
            gather(list(zip(views, ahead.pending, strict=True)))  # every member's at once
            dists = [v.distribution(p) for v, p in zip(views, ahead.pending, strict=True)]
            joint = combine(row.rule, dists, ahead.weights.weights)
            if joint is None:
                return ahead.end()
            byte = int(np.argmax(joint[:EPS]))
            if joint[EPS] > 0 and joint[EPS] >= joint[byte]:  # the joint commit
                ahead.byte, ahead.todo = None, [i for i, p in enumerate(ahead.pending) if p]
            elif byte == EOT:
                return ahead.end()
            else:
                ahead.byte, ahead.todo = byte, [
                    i for i, (n, p) in enumerate(zip(ahead.at, ahead.pending, strict=True))
                    if p and not n.view.follows(p, byte)]
            ahead.dists, ahead.committed = dists, bool(ahead.todo)
        # The step's commits: through a token run before (a guess) to its node; one not run
        # yet is the prediction.
        for i in list(ahead.todo):
            ids, probs = ending([(ahead.at[i].view, ahead.pending[i])])[0]
            if not len(ids) or float(probs.sum()) <= 0:  # the member's tokenization:
                ahead.ended = True  # several tokens, the steps after them unknown
                return ahead.found
            token = int(ids[int(probs.argmax())])
            child = ahead.at[i].children.get(token)
            if child is None:
                ahead.found[i] = (ahead.at[i], token)
            elif not child.ran:
                return {}  # queued already: asked again once it has run, it goes on
            else:
                ahead.at[i], ahead.pending[i] = child, b""
                ahead.todo.remove(i)
        if ahead.found:
            return ahead.found
        if ahead.committed:
            ahead.passed()
        ahead.todo = None
        if ahead.byte is not None:  # read the byte (the weights too)
            ahead.read(ahead.byte)
    return ahead.end()


class _Ahead:
    """The greedy steps ahead of ``predicted_commits``, kept where they stopped: the bytes read
    ahead (``path``), each member's node and pending bytes there, the weights, the stopped
    step's commits still to make (``todo``, then the ``byte`` to read; None: a joint commit),
    and the points along the way where the row may stand when asked again (``bases``: the
    members' nodes and pending bytes at an offset into ``path``; a later one after each step
    whose commits went through tokens run before)."""

    def __init__(self, nodes: list[Node], pending: list[bytes], weights: RowWeights):
        self.bases = [(list(nodes), list(pending), 0)]
        self.path, self.row_at = b"", 0  # the bytes read ahead; where the row stands in them
        self.at, self.pending, self.weights = list(nodes), list(pending), weights
        self.todo: list[int] | None = None
        self.byte: int | None = None
        self.dists: list = []
        self.committed = False  # the stopped step has commits
        self.found: dict[int, tuple[Node, int]] = {}
        self.ended = False

    def follows(self, nodes: list[Node], pending: list[bytes]) -> bool:
        """Whether a row at ``nodes`` with ``pending`` bytes stands along these steps (then
        ``row_at`` says where, and the points behind it are forgotten)."""
        for k in range(len(self.bases) - 1, -1, -1):
            base_nodes, start, offset = self.bases[k]
            read = len(pending[0]) - len(start[0])
            if (all(a is b for a, b in zip(base_nodes, nodes, strict=True)) and
                    0 <= read <= len(self.path) - offset and
                    all(p == q + self.path[offset:offset + read]
                        for p, q in zip(pending, start, strict=True))):
                self.bases, self.row_at = self.bases[k:], offset + read
                return True
        return False

    def passed(self) -> None:
        """The step's commits went through tokens run before: the row may stand here later."""
        self.bases.append((list(self.at), list(self.pending), len(self.path)))

    def read(self, byte: int) -> None:
        """Every member reads ``byte``; the weights move by it as ``advance`` moves them."""
        self.pending = [p + bytes((byte,)) for p in self.pending]
        self.path += bytes((byte,))
        if self.weights.moves:
            self.weights.byte_probs = byte_probs(self.dists)
            self.weights.read(byte)

    def end(self) -> dict:
        """Nothing to predict along these steps (kept, so that asking again costs nothing)."""
        self.found, self.ended = {}, True
        return self.found


# -- the exact mode: known text and a row alone's guess -------------------------------------
def upcoming(m: ExactMember) -> bytes:
    """The known bytes after the text ``m`` has read (at most ``run_ahead_bytes``): the rest
    of the prompt it is reading, then the scored text."""
    limit = m.speculation.run_ahead_bytes
    text = m.script[m.script_pos:]
    if m.cursor is not None and len(text) < limit:
        text += m.cursor.ahead(limit - len(text))
    return text[:limit]


def root_queries(m: ExactMember, ids: list[int], ahead: bytes) -> list[Query]:
    """The start's call: ``ids`` and, with known text ``ahead``, the member's own
    tokenization of its start (``chain``), so that reading it needs no call of its own."""
    queries: list[Query] = [(None if i == 0 else i - 1, t) for i, t in enumerate(ids)]
    if ahead and m.speculation.run_ahead_bytes > 0:
        chain(m, len(ids) - 1, len(ids), own_tokens(m.member, ahead), queries, {})
    return queries


def run_ahead(m: ExactMember, queries: list[Query]) -> None:
    """Append to ``queries`` (the children a byte needs) those that later bytes will likely
    need, along a guess of the tokens ahead: on known text, the member's own tokenization of
    the pending bytes and the text ahead, from the heaviest hypothesis (``lineage_tokens`` of
    it from each lighter one) and, where ``from_children``, from each child this call runs;
    in generation of a row alone, the same along the bytes the row guesses the ensemble reads
    next (``predict``), or where it guesses none, the member's likeliest token that continues
    the heaviest hypothesis' pending bytes and the lighter hypotheses' next tokens along the
    text it spells. Inside each guessed token, every shorter token a hypothesis can end at.
    Nothing where the guess was run ahead already."""
    spec = m.speculation
    if spec.run_ahead_bytes <= 0:
        return
    best, needed = m.best, len(queries)
    seen = {(key(parent), t): q for q, (parent, t) in enumerate(queries)}
    ahead = known = upcoming(m)
    text = split_utf8(best.pending + ahead)[0].encode("utf-8")  # whole characters
    lonely = alone(m.tree)
    if len(text) <= len(best.pending) and lonely:
        # nothing known ahead: the ensemble's greedy steps ahead, run on the host
        ahead = m.predict()
        text = split_utf8(best.pending + ahead)[0].encode("utf-8")
    if len(text) > len(best.pending):
        guess = m.member.token_bytes.encode(text)
    elif lonely:  # nothing guessed either: the likeliest continuation
        likeliest = best.view.likeliest_extension(best.pending)
        guess = [likeliest] if likeliest is not None else []
        ahead = (m.member.token_bytes.pieces[likeliest] or b"")[len(best.pending):] if (
            likeliest is not None) else b""  # the text that guess spells
    else:  # a batch's rows share their calls already; a guess would only add tokens
        return
    chain(m, best.node, len(best.node), guess, queries, seen)
    if ahead and spec.lineage_tokens > 0:
        for h in m.hyps:  # the lighter tokenizations: their next tokens along it
            if h is not best:
                next_tokens(m, h.node, h.pending + ahead, queries, seen)
    if known and spec.from_children(m.member.model):
        guess = own_tokens(m.member, known)
        for q in range(needed):  # each child this byte needs: the text ahead from it
            chain(m, q, len(queries[q][0]) + 1, guess, queries, seen)


def next_tokens(m: ExactMember, node: Node, text: bytes, queries: list[Query],
                seen: dict) -> None:
    """Queue, after ``node``, the member's own tokenization of ``text`` (whole characters),
    following the nodes run before and adding at most ``lineage_tokens`` new ones, each with
    the shorter tokens inside it that the floor keeps (``prefixes_kept``): each call extends a
    lighter hypothesis' run ahead by a few tokens, which keeps it ahead of the text at little
    cost (without the shorter tokens, a lighter hypothesis almost as heavy as the heaviest
    cost a call at each byte of a word its children end in)."""
    parent: Node | int = node
    added = 0
    for t in own_tokens(m.member, text):
        if not (isinstance(parent, Node) and t in parent.children):  # not run before
            if added == m.speculation.lineage_tokens:
                return
            added += 1
            for early in prefixes_kept(m, parent, t):  # hypotheses that end inside it
                queue(parent, early, queries, seen)
        parent = queue(parent, t, queries, seen)


def chain(m: ExactMember, parent: Node | int, length: int, guess: list[int],
          queries: list[Query], seen: dict) -> None:
    """Queue ``guess`` after ``parent`` (a node or an earlier query, ``length`` tokens long),
    with the shorter tokens inside each guessed token; nodes run before are followed instead
    of queued; nothing that would pass the member's window."""
    if not guess or isinstance(parent, Node) and guess[0] in parent.children:
        return  # run ahead already
    pieces, window = m.member.token_bytes.pieces, m.member.window
    depth = sum(len(pieces[t] or b"") for t in guess)
    if window is not None and length + 2 + depth > window:
        return
    for t in guess:
        for early in prefixes_kept(m, parent, t):  # hypotheses that end inside `t`
            queue(parent, early, queries, seen)
        parent = queue(parent, t, queries, seen)


def prefixes_kept(m: ExactMember, parent: Node | int, token: int) -> list[int]:
    """The shorter tokens inside ``token`` worth running after ``parent``. Where the floor
    prunes and ``parent``'s probabilities are host memory, a prefix ``e`` less likely than
    the floor times ``token`` is left out: when the text reaches ``e``'s end, its child weighs
    at most ``p(e) / p(token)`` of the hypothesis at ``parent`` (whose pending bytes ``e`` can
    go on as ``token``), so the floor drops it and running it would be wasted."""
    early = m.member.prefix_ids(token)
    if m.floor == -math.inf or not (isinstance(parent, Node) and parent.ran):
        return early
    if not on_host([parent]):  # on a device: reading them would wait for it
        return early
    view = parent.view
    probs = view.bank.host_probs[view.row]
    bar = float(probs[token]) * math.exp(m.floor)
    return [e for e in early if probs[e] >= bar]


Track = tuple[Node, bytes, float]  # a node, its pending bytes, log P(its tokens)


def predict(members: Sequence[ExactMember], weights: Sequence[float], rule: str,
            limit: int) -> bytes:
    """The bytes the exact ensemble's greedy steps would read next, as far as the members'
    known distributions tell (at most ``limit``; empty where nothing is known).

    Each member is followed along a few *tracks* (its heaviest token sequences, from its
    kept hypotheses): at each step a track whose pending bytes a token ends at branches into
    that token's node where a call has run it; each member's byte distribution is the sum
    over its tracks of their masses; the members' distributions are combined by the row's
    rule and weights; the likeliest byte is read. A member whose mass sits mostly after
    tokens no call has run yet leaves the steps there (its next distribution is unknown);
    the steps stop when no member is left, at end of text, or after ``limit`` bytes. The
    weights do not move ahead (they move slowly), and sampling and processors are not
    followed (the guess is the likeliest text)."""
    tracks: list[list[Track] | None] = [
        [(h.node, h.pending, h.logp) for h in m.hyps] or None for m in members]
    if not on_host([n for ts in tracks if ts for n, _, _ in ts]):
        return b""
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
    return float(node.view.masses(pending)[:EPS].sum()) / node.view.text_total


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
