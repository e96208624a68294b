"""Many token sequences of one member in one KV cache, run with tree attention.

What it does: a ``TokenTree`` keeps one member's keys and values for every token sequence its
states hold (hypotheses, branches, speculated continuations), each distinct prefix once. A
cached token is a *slot*; a ``Node`` lists the slots of its sequence. ``run`` adds any number
of tokens in one forward call, each after its own parent (an existing node, an earlier token of
the same call, or the start of text): the attention mask lets each query see its parent's
slots and itself, and its position is its parent's length. Keys are cached after position
encoding, so the slots' order in the cache does not matter. ``request`` queues a sequence
instead; ``flush`` runs every queued one in one call (``engine`` calls it between the phases
of a step, so the rows of a batch share their members' calls). Slots that no live node uses
are dropped once they outnumber the used ones (the copy is amortised); holders of nodes
``register`` them.

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


class Node:
    """A token sequence in a ``TokenTree``: where its tokens' keys and values sit, and the
    member's next-token distribution after it (built from its logits when first asked for).

    A node made by ``TokenTree.request`` is run later, with every request queued on its tree,
    in one forward call (``TokenTree.flush``); until then it has no slots or distribution."""

    __slots__ = ("_path", "logits", "children", "table", "_view", "_tree", "scores")

    def __init__(self, path: torch.Tensor | None, logits: torch.Tensor | None = None,
                 table: ByteTable | None = None, tree: TokenTree | None = None):
        self._path = path  # the tree's slots of the sequence's tokens, in order (long, CPU)
        self.logits = logits
        self.children: dict[int, Node] = {}  # speculated continuations
        self.table = table
        self._view: ByteView | None = None
        self._tree = tree  # set while the node waits in its tree's queue
        # For a scored request: natural log-probability of each of its ids after the first,
        # given the ids before it (``TokenTree.request(..., score=True)``).
        self.scores: torch.Tensor | None = None

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
    """Every token sequence of one member, for any number of sequences of text, in one KV
    cache. Whoever holds nodes registers a function returning them (``register``), so that
    collection keeps their slots."""

    def __init__(self, model: torch.nn.Module, table: ByteTable, slack: int = 64):
        self.model, self.table, self.slack = model, table, slack
        self.cache = DynamicCache()
        self.tokens = torch.zeros(0, dtype=torch.long)  # the token id in each slot
        self.forwards = 0  # forward calls
        self.queries = 0  # tokens run, over all calls
        self._kept = 0  # slots in use after the last collection
        self._logits_to_keep = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._owners: list[Callable[[], Iterable[Node | None]]] = []
        self._queue: list[tuple[Node, Node | None, list[int]]] = []

    def register(self, live: Callable[[], Iterable[Node | None]]) -> None:
        """``live()`` returns nodes whose slots must be kept (with their children)."""
        self._owners.append(live)

    @property
    def size(self) -> int:
        """Slots in the cache."""
        return len(self.tokens)

    def ids(self, node: Node) -> list[int]:
        """The token ids of ``node``'s sequence."""
        return self.tokens[node.path].tolist()

    # -- forward calls ---------------------------------------------------------------------
    def chain(self, parent: Node | None, ids: list[int]) -> Node:
        """The node ``parent·ids`` (``ids`` non-empty), from one forward call."""
        queries = [(parent if i == 0 else i - 1, t) for i, t in enumerate(ids)]
        return self.run(queries, keep_logits=[len(ids) - 1])[-1]

    def request(self, parent: Node | None, ids: list[int], score: bool = False) -> Node:
        """The node ``parent·ids``, run later together with every other queued request
        (``flush``). ``score``: also keep the log-probability of each id after the first
        (``Node.scores``)."""
        node = Node(None, table=self.table, tree=self)
        self._queue.append((node, parent, list(ids), score))
        return node

    def flush(self) -> None:
        """Run every queued request in one forward call."""
        if not self._queue:
            return
        queue, self._queue = self._queue, []
        queries: list[tuple[Parent, int]] = []
        ends, keep = [], []
        for _, parent, ids, score in queue:
            first = len(queries)
            for i, t in enumerate(ids):
                queries.append((parent if i == 0 else len(queries) - 1, t))
            ends.append(len(queries) - 1)
            keep += list(range(first, len(queries) - 1)) if score else []
        nodes = self.run(queries, keep_logits=ends + keep, views=ends)
        for (node, _, ids, score), end in zip(queue, ends, strict=True):
            done = nodes[end]
            node.path, node.logits, node._view = done.path, done.logits, done._view
            node._tree = None
            if score:  # each id's log-probability after the ids before it
                before = range(end - len(ids) + 1, end)
                rows = [nodes[q].logits for q in before]
                node.scores = (torch.log_softmax(torch.stack(rows).double(), -1).gather(
                    -1, torch.tensor(ids[1:], device=rows[0].device)[:, None])[:, 0].cpu()
                    if rows else torch.zeros(0, dtype=torch.float64))

    def run(self, queries: list[tuple[Parent, int]],
            keep_logits: Iterable[int] | None = None,
            views: bool | Iterable[int] = False) -> list[Node]:
        """One node per ``(parent, token)`` query, all from one forward call. ``keep_logits``:
        the queries whose distribution is wanted (default all); ``views``: build the byte views
        of those (``True``) or of the queries listed now, in one batch on the device (else each
        when first asked for)."""
        self.flush()  # earlier requests first: their nodes may be parents here
        self._maybe_collect([p for p, _ in queries if isinstance(p, Node)])
        n, b = self.size, len(queries)
        visible, positions = self._mask(queries)
        device, dtype = self.model.device, _float_dtype(self.model)
        mask = torch.zeros(b, n + b, dtype=dtype).masked_fill_(
            torch.from_numpy(~visible), torch.finfo(dtype).min)
        wanted = list(range(b)) if keep_logits is None else sorted(set(keep_logits))
        kwargs = {}
        if wanted == [b - 1] and b > 1 and self._logits_to_keep:
            kwargs["logits_to_keep"] = 1  # a prompt: only its last distribution is needed
        with torch.no_grad():
            out = self.model(input_ids=torch.tensor([[t for _, t in queries]], device=device),
                             attention_mask=mask[None, None].to(device),
                             position_ids=torch.from_numpy(positions)[None].to(device),
                             **{CACHE_KW: self.cache}, use_cache=True, **kwargs)
        self.cache = out[CACHE_KW] if CACHE_KW in out else out.past_key_values
        self.tokens = torch.cat([self.tokens, torch.tensor([t for _, t in queries])])
        self.forwards += 1
        self.queries += b
        logits = out.logits[0, -len(wanted):] if kwargs else out.logits[0, wanted]
        rows = dict(zip(wanted, logits.detach(), strict=True))
        nodes = [Node(torch.from_numpy(np.flatnonzero(visible[q])), rows.get(q), table=self.table)
                 for q in range(b)]
        now = wanted if views is True else sorted(set(views or ()))
        if now:
            at = {q: i for i, q in enumerate(wanted)}
            index = torch.tensor([at[q] for q in now], device=logits.device)
            batch = ByteView.batch(self.table, logits.index_select(0, index))
            for q, view in zip(now, batch, strict=True):
                nodes[q]._view, nodes[q].logits = view, None
        return nodes

    def _mask(self, queries: list[tuple[Parent, int]]) -> tuple[np.ndarray, np.ndarray]:
        """Which slots each query sees (the old slots, then the new ones), and its position
        (built with numpy on the host: many small steps)."""
        n, b = self.size, len(queries)
        visible = np.zeros((b, n + b), dtype=bool)
        positions = np.zeros(b, dtype=np.int64)
        by_node: dict[int, tuple[Node, list[int]]] = {}
        chained = []
        for q, (parent, _) in enumerate(queries):
            if isinstance(parent, int):
                if not 0 <= parent < q:
                    raise ValueError(f"queries[{q}]: a parent index must name an earlier query")
                positions[q] = positions[parent] + 1
                chained.append((q, parent))
            elif parent is not None:
                by_node.setdefault(id(parent), (parent, []))[1].append(q)
                positions[q] = len(parent)
        visible[np.arange(b), n + np.arange(b)] = True
        # Step 1: queries after an existing node see that node's slots.
        for node, qs in by_node.values():
            visible[np.ix_(qs, node.path.numpy())] = True
        # Step 2: queries after an earlier query see all it sees (parents come first).
        for q, parent in chained:
            visible[q] |= visible[parent]
        return visible, positions

    # -- memory ----------------------------------------------------------------------------
    def _maybe_collect(self, extra: list[Node]) -> None:
        """Drop unused slots once the cache has grown to twice its size after the last
        collection plus ``slack`` (the copy it costs is amortised)."""
        if self.size > 2 * self._kept + self.slack:
            self.collect(extra)

    def collect(self, extra: Iterable[Node] = ()) -> None:
        """Drop the slots that no registered owner's node, no node in ``extra``, and none of
        their speculated children use."""
        live = [node for owner in self._owners for node in owner()]
        nodes = [node for node in _with_children([*live, *extra]) if node._path is not None]
        used = torch.zeros(self.size, dtype=torch.bool)
        for node in nodes:
            used[node.path] = True
        keep = used.nonzero().squeeze(1)
        self._kept = len(keep)
        if self._kept == self.size:
            return
        remap = torch.full((self.size,), -1, dtype=torch.long)
        remap[keep] = torch.arange(len(keep))
        # Each layer's index on that layer's device (device_map may spread the layers).
        self.cache = DynamicCache(ddp_cache_data=[
            (layer.keys.index_select(-2, keep.to(layer.keys.device)),
             layer.values.index_select(-2, keep.to(layer.values.device)))
            for layer in self.cache.layers])
        for node in nodes:
            node.path = remap[node.path]
        self.tokens = self.tokens[keep]


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
