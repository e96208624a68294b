"""Many token sequences of one member in one KV cache, run with tree attention.

What it does: a ``TokenTree`` keeps one member's keys and values for every token sequence its
states hold (hypotheses, branches, speculated continuations), each distinct prefix once. Each
sequence of text (a row of a batch) has its own *lane*: its own batch row of the cache, so a
call attends over that row's slots only and the work grows with rows, not rows². A cached
token is a *slot* of its lane; a ``Node`` lists the slots of its sequence. ``run`` adds any
number of tokens in one forward call, each after its own parent (an existing node, an earlier
token of the same call, or the start of its lane's text): the attention mask lets each query
see its parent's slots and itself, and its position is its parent's length. A call runs as
many tokens in every lane as the busiest lane needs (lanes with fewer get padding tokens that
see only themselves), right-aligned so that each lane's last token is the call's last. Keys
are cached after position encoding, so the slots' order in the cache does not matter.
``request`` queues a sequence instead; ``flush`` runs every queued one in one call (``engine``
calls it between the phases of a step, so the rows of a batch share their members' calls).
Slots that no live node uses are dropped once they outnumber the used ones (the copy is
amortised); holders of nodes ``register`` them.

Why lanes: ``benchmarks/tree_layout.py`` measured one call with all rows' tokens in one batch
row (a dense mask over every row's slots) against one lane per row, and lanes were faster in
every case measured, padding included (its figures: ``git show 2cbce67:benchmarks/README.md``,
› Cache layout).

What it does not do: decide which tokens to run (``state``, ``exact``), or work with attention
kernels that take no custom mask (flash attention) or caches that are not plain key/value
layers (sliding windows, recurrent state).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable

import numpy as np
import torch
from transformers import DynamicCache

from .byte_view import ByteTable, ByteView


def _cache_kw() -> str:
    """The keyword Transformers uses for a model's cache (``cache`` from 5.24 on)."""
    from transformers import GenerationMixin

    params = inspect.signature(GenerationMixin.prepare_inputs_for_generation).parameters
    return "cache" if "cache" in params else "past_key_values"


CACHE_KW = _cache_kw()
Parent = "Node | int | None"  # an existing node, an earlier query of the same call, or none
PAD_TOKEN = -1  # the token of a padding slot


class Node:
    """A token sequence in a ``TokenTree``: its lane, where its tokens' keys and values sit in
    that lane, and the member's next-token distribution after it (built from its logits when
    first asked for).

    A node made by ``TokenTree.request`` is run later, with every request queued on its tree,
    in one forward call (``TokenTree.flush``); until then it has no slots or distribution."""

    __slots__ = ("_path", "lane", "logits", "children", "table", "_view", "scores")

    def __init__(self, path: torch.Tensor | None, logits: torch.Tensor | None = None,
                 table: ByteTable | None = None, lane: int = 0):
        self._path = path  # the lane's slots of the sequence's tokens, in order (long, CPU)
        self.lane = lane  # the batch row of the cache the sequence lives in
        self.logits = logits
        self.children: dict[int, Node] = {}  # speculated continuations
        self.table = table
        self._view: ByteView | None = None
        # For a scored request: natural log-probability of each of its ids after the first,
        # given the ids before it (``TokenTree.request(..., score=True)``).
        self.scores: torch.Tensor | None = None

    @property
    def ran(self) -> bool:
        """Whether the node's call has run (it has slots and a distribution)."""
        return self._path is not None

    @property
    def path(self) -> torch.Tensor:
        if self._path is None:
            raise RuntimeError("token tree: this node's call is still queued; run the tree's "
                               "queued calls first (TokenTree.flush, engine.run_queued)")
        return self._path

    @path.setter
    def path(self, value: torch.Tensor) -> None:
        self._path = value

    @property
    def view(self) -> ByteView:
        """The member's next-byte view after this node (built on first use from the logits
        its call kept)."""
        if self._view is None:
            self.path  # noqa: B018 (refuses a node whose call has not run)
            self._view, self.logits = ByteView(self.table, self.logits), None
        return self._view

    def __len__(self) -> int:
        return len(self.path)


class TokenTree:
    """Every token sequence of one member, for any number of sequences of text (one lane
    each), in one KV cache. Whoever holds nodes registers a function returning them
    (``register``), so that collection keeps their slots."""

    def __init__(self, model: torch.nn.Module, table: ByteTable, slack: int = 64):
        self.model, self.table, self.slack = model, table, slack
        # Where the model's inputs go and the dtype its attention mask needs: read once (a
        # tree lives for one ``generate`` or scoring pass, while the model stays put).
        self.device, self.dtype = model.device, _float_dtype(model)
        self.cache = DynamicCache()
        self.tokens = torch.zeros(1, 0, dtype=torch.long)  # [lanes, slots]: each slot's token
        self.lanes = 0  # lanes handed out (``new_lane``); lane 0 exists regardless
        self.forwards = 0  # forward calls
        self.queries = 0  # tokens run (padding left out), over all calls
        self._kept = 0  # slots per lane in use after the last collection
        self._logits_to_keep = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._owners: list[Callable[[], Iterable[Node | None]]] = []
        self._queue: list[_Request] = []
        # Banks made on a device whose likeliest ids no copy has brought yet (``engine`` hands
        # them to its next ``gather``, ``ViewBank.read_top_later``).
        self.unread: list = []

    def new_lane(self) -> int:
        """A lane for one more sequence of text (its own batch row of the cache)."""
        lane, self.lanes = self.lanes, self.lanes + 1
        if lane >= len(self.tokens):  # a new batch row, empty (padding) where others have slots
            self.tokens = torch.cat([self.tokens, torch.full_like(self.tokens[:1], PAD_TOKEN)])
            for layer in self.cache.layers:
                if getattr(layer, "keys", None) is not None and layer.keys.numel():
                    layer.keys = torch.cat([layer.keys, torch.zeros_like(layer.keys[:1])])
                    layer.values = torch.cat([layer.values, torch.zeros_like(layer.values[:1])])
        return lane

    def register(self, live: Callable[[], Iterable[Node | None]]) -> None:
        """``live()`` returns nodes whose slots must be kept (with their children)."""
        self._owners.append(live)

    @property
    def size(self) -> int:
        """Slots per lane in the cache."""
        return self.tokens.shape[1]

    def ids(self, node: Node) -> list[int]:
        """The token ids of ``node``'s sequence."""
        return self.tokens[node.lane, node.path].tolist()

    # -- forward calls ---------------------------------------------------------------------
    def chain(self, parent: Node | None, ids: list[int], lane: int = 0) -> Node:
        """The node ``parent·ids`` (``ids`` non-empty), from one forward call (in ``parent``'s
        lane, or ``lane`` for a new text)."""
        queries = [(parent if i == 0 else i - 1, t) for i, t in enumerate(ids)]
        return self.run(queries, keep_logits=[len(ids) - 1], lane=lane)[-1]

    def request(self, parent: Node | None, ids: list[int], score: bool = False,
                lane: int = 0) -> Node:
        """The node ``parent·ids``, run later together with every other queued request
        (``flush``), in ``parent``'s lane (or ``lane`` for a new text). ``score``: also keep
        the log-probability of each id after the first (``Node.scores``)."""
        lane = parent.lane if parent is not None else lane
        queries = [(parent if i == 0 else i - 1, t) for i, t in enumerate(ids)]
        node = Node(None, table=self.table, lane=lane)
        self._queue.append(_Request(queries, [None] * (len(ids) - 1) + [node], lane, score, 1))
        return node

    def request_many(self, queries: list[tuple[Parent, int]], lane: int = 0,
                     views: int | None = None) -> list[Node]:
        """One node per ``(parent, token)`` query, as ``run`` makes them (an integer parent
        names an earlier query of this list; ``None`` starts a text in ``lane``), run later
        together with every other queued request (``flush``). The first ``views`` of them
        (default all) get their byte views in the call's batch, the others when first asked
        for (from the logits they keep)."""
        lane = next((p.lane for p, _ in queries if isinstance(p, Node)), lane)
        nodes = [Node(None, table=self.table, lane=lane) for _ in queries]
        self._queue.append(_Request(list(queries), nodes, lane, False,
                                    len(queries) if views is None else views))
        return nodes

    def queued_lanes(self) -> set[int]:
        """The lanes with requests waiting for the next call (empty: no call is queued)."""
        return {request.lane for request in self._queue}

    def flush(self) -> None:
        """Run every queued request in one forward call."""
        launched = self.launch()
        if launched is not None:
            self.finish(launched)

    def launch(self) -> tuple | None:
        """Start the forward call of every queued request without reading anything back
        (``finish`` does): the engine launches every member's call before it waits on any,
        so members on different devices run at the same time. None: nothing was queued."""
        if not self._queue:
            return None
        queue, self._queue = self._queue, []
        queries: list[tuple[Parent, int]] = []
        lanes: list[int] = []
        views, keep = [], []
        for request in queue:
            request.base = base = len(queries)
            for parent, t in request.queries:
                queries.append((base + parent if isinstance(parent, int) else parent, t))
                lanes.append(request.lane)
            wanted = [base + i for i, node in enumerate(request.nodes) if node is not None]
            views += wanted[:request.views]
            keep += wanted[request.views:]
            keep += list(range(base, len(queries) - 1)) if request.score else []
        return queue, self._launch(queries, lanes, views + keep), views

    def finish(self, launched: tuple) -> None:
        """Read a launched call's results into the queued requests' nodes."""
        queue, call, views = launched
        nodes = self._finish(call, views)
        for request in queue:
            for i, node in enumerate(request.nodes):
                if node is not None:
                    done = nodes[request.base + i]
                    node.path, node.logits, node._view = done.path, done.logits, done._view
            if request.score:  # each id's log-probability after the ids before it
                node, ids = request.nodes[-1], [t for _, t in request.queries]
                rows = [nodes[q].logits for q in range(request.base, request.base + len(ids) - 1)]
                node.scores = (torch.log_softmax(torch.stack(rows).double(), -1).gather(
                    -1, torch.tensor(ids[1:], device=rows[0].device)[:, None])[:, 0].cpu()
                    if rows else torch.zeros(0, dtype=torch.float64))

    def run(self, queries: list[tuple[Parent, int]],
            keep_logits: Iterable[int] | None = None,
            views: bool | Iterable[int] = False, lane: int = 0) -> list[Node]:
        """One node per ``(parent, token)`` query, all from one forward call; a query whose
        parent is None starts a text in ``lane``. ``keep_logits``: the queries whose
        distribution is wanted (default all); ``views``: build the byte views of those
        (``True``) or of the queries listed now, in one batch on the device (else each when
        first asked for)."""
        lanes: list[int] = []
        for parent, _ in queries:
            lanes.append(parent.lane if isinstance(parent, Node) else
                         lanes[parent] if isinstance(parent, int) and 0 <= parent < len(lanes)
                         else lane)
        return self._call(queries, lanes, keep_logits, views)

    def _call(self, queries: list[tuple[Parent, int]], lanes: list[int],
              keep_logits: Iterable[int] | None, views: bool | Iterable[int]) -> list[Node]:
        """One forward call: each query in its lane (see ``run``)."""
        self.flush()  # earlier requests first: their nodes may be parents here
        return self._finish(self._launch(queries, lanes, keep_logits), views)

    def _launch(self, queries: list[tuple[Parent, int]], lanes: list[int],
                keep_logits: Iterable[int] | None) -> tuple:
        """Start one forward call (inputs built on the host, copied without waiting)."""
        self._maybe_collect([p for p, _ in queries if isinstance(p, Node)])
        b = len(queries)
        visible, positions, where = self._mask(queries, lanes)
        width = visible.shape[1]
        device, dtype = self.device, self.dtype
        mask = torch.zeros(visible.shape, dtype=dtype).masked_fill_(
            torch.from_numpy(~visible), torch.finfo(dtype).min)
        tokens = np.full((len(self.tokens), width), PAD_TOKEN, dtype=np.int64)
        tokens[where[:, 0], where[:, 1]] = [t for _, t in queries]
        wanted = list(range(b)) if keep_logits is None else sorted(set(keep_logits))
        kwargs = {}
        if wanted and all(where[q, 1] == width - 1 for q in wanted) and width > 1 and (
                self._logits_to_keep):
            kwargs["logits_to_keep"] = 1  # prompts: only their last distributions are needed
        with torch.no_grad():  # copies that do not wait for the device (nothing reads back)
            out = self.model(
                input_ids=torch.from_numpy(np.maximum(tokens, 0)).to(device, non_blocking=True),
                attention_mask=mask[:, None].to(device, non_blocking=True),
                position_ids=torch.from_numpy(positions).to(device, non_blocking=True),
                **{CACHE_KW: self.cache}, use_cache=True, **kwargs)
        self.cache = out[CACHE_KW] if CACHE_KW in out else out.past_key_values
        self.tokens = torch.cat([self.tokens, torch.from_numpy(tokens)], dim=1)
        self.forwards += 1
        self.queries += b
        return out.logits, visible, where, wanted

    def _finish(self, call: tuple, views: bool | Iterable[int]) -> list[Node]:
        """The nodes of a launched call, with their distributions (``views``: build the byte
        views of all wanted queries, or of the ones listed, in one batch)."""
        out_logits, visible, where, wanted = call
        width = visible.shape[1]
        at = where[wanted]
        logits = out_logits[at[:, 0], at[:, 1] - width + out_logits.shape[1]].detach()
        rows = dict(zip(wanted, logits, strict=True))
        nodes = [Node(torch.from_numpy(np.flatnonzero(visible[r, c])), rows.get(q),
                      table=self.table, lane=int(r)) for q, (r, c) in enumerate(where)]
        now = wanted if views is True else sorted(set(views or ()))
        if now:
            index = {q: i for i, q in enumerate(wanted)}
            picked = torch.tensor([index[q] for q in now]).to(logits.device, non_blocking=True)
            batch = ByteView.batch(self.table, logits.index_select(0, picked))
            if batch[0].bank.top is None and batch[0].bank._top is not None:
                self.unread.append(batch[0].bank)
            for q, view in zip(now, batch, strict=True):
                nodes[q]._view, nodes[q].logits = view, None
        return nodes

    def _mask(self, queries: list[tuple[Parent, int]], lanes: list[int]):
        """Where each query sits (lane, column; right-aligned per lane), which slots of its
        lane each column sees (the old slots, then the call's), and its position; built with
        numpy on the host. Padding columns see only themselves."""
        n, b = self.size, len(queries)
        counts = np.bincount(lanes, minlength=len(self.tokens)) if b else np.zeros(1, int)
        if len(counts) > len(self.tokens):
            raise ValueError(f"token tree: lane {len(counts) - 1} was not made (new_lane)")
        width = int(counts.max())
        where = np.zeros((b, 2), dtype=np.int64)
        filled = width - counts  # the next free column of each lane
        visible = np.zeros((len(self.tokens), width, n + width), dtype=bool)
        positions = np.zeros((len(self.tokens), width), dtype=np.int64)
        cols = np.arange(width)
        visible[:, cols, n + cols] = True  # every column sees itself
        for q, ((parent, _), lane) in enumerate(zip(queries, lanes, strict=True)):
            col = filled[lane]
            filled[lane] += 1
            where[q] = lane, col
            if isinstance(parent, int):
                if not 0 <= parent < q or lanes[parent] != lane:
                    raise ValueError(f"queries[{q}]: a parent index must name an earlier query")
                r, c = where[parent]
                positions[lane, col] = positions[r, c] + 1
                visible[lane, col] |= visible[r, c]  # all the parent sees (it comes first)
            elif parent is not None:
                if parent.lane != lane:
                    raise ValueError(f"queries[{q}]: the parent lives in another lane")
                positions[lane, col] = len(parent)
                visible[lane, col, parent.path.numpy()] = True
        return visible, positions, where

    # -- memory ----------------------------------------------------------------------------
    def _maybe_collect(self, extra: list[Node]) -> None:
        """Drop unused slots once the cache has grown to twice its size after the last
        collection plus ``slack`` (the copy it costs is amortised)."""
        if self.size > 2 * self._kept + self.slack:
            self.collect(extra)

    def collect(self, extra: Iterable[Node] = ()) -> None:
        """Drop the slots that no registered owner's node, no node in ``extra``, and none of
        their speculated children use (each lane keeps its own; shorter lanes are padded)."""
        live = [node for owner in self._owners for node in owner()]
        nodes = [node for node in _with_children([*live, *extra]) if node._path is not None]
        used = np.zeros(tuple(self.tokens.shape), dtype=bool)
        for node in nodes:
            used[node.lane, node.path.numpy()] = True
        counts = used.sum(1)
        self._kept = int(counts.max()) if len(counts) else 0
        if self._kept == self.size:
            return
        # Step 1: per lane, the kept slots first (in order), then padding up to the longest.
        order = np.argsort(~used, axis=1, kind="stable")[:, :self._kept]
        keep = torch.from_numpy(order)
        remap = np.full(used.shape, -1, dtype=np.int64)
        rows = np.repeat(np.arange(len(used)), self._kept)
        remap[rows, order.reshape(-1)] = np.tile(np.arange(self._kept), len(used))
        # Step 2: gather each layer's keys and values, the index on that layer's device
        # (device_map may spread the layers).
        self.cache = DynamicCache(ddp_cache_data=[
            (_take(layer.keys, keep), _take(layer.values, keep)) for layer in self.cache.layers])
        tokens = self.tokens.gather(1, keep)
        tokens[torch.from_numpy(~np.take_along_axis(used, order, 1))] = PAD_TOKEN
        self.tokens = tokens
        for node in nodes:
            node.path = torch.from_numpy(remap[node.lane, node.path.numpy()])


class _Request:
    """Queued queries of one lane (``TokenTree.request``, ``request_many``): the nodes to
    fill when they have run (None where no node was asked for), and whether to score them."""

    __slots__ = ("queries", "nodes", "lane", "score", "views", "base")

    def __init__(self, queries: list, nodes: list, lane: int, score: bool, views: int):
        self.queries, self.nodes, self.lane, self.score = queries, nodes, lane, score
        self.views, self.base = views, 0  # the first `views` wanted nodes get views at once


def _take(states: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``states[lane, :, keep[lane], :]`` for each lane (``[lanes, heads, slots, dim]``)."""
    index = keep.to(states.device)[:, None, :, None].expand(
        -1, states.shape[1], -1, states.shape[3])
    return states.gather(2, index)


def _float_dtype(model: torch.nn.Module) -> torch.dtype:
    """The model's compute dtype (an additive attention mask must have it)."""
    dtype = getattr(model, "dtype", None)
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return dtype
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def _with_children(roots: Iterable[Node]) -> list[Node]:
    """The distinct nodes in ``roots`` and, recursively, their speculated children."""
    seen: dict[int, Node] = {}
    stack = [r for r in roots if r is not None]
    while stack:
        node = stack.pop()
        if id(node) not in seen:
            seen[id(node)] = node
            stack.extend(node.children.values())
    return list(seen.values())
