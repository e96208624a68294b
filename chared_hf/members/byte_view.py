"""One member's distribution over the next byte, from its distribution over the next token.

What it does: given a member's token probabilities ``p`` and the bytes ``r`` it has not yet
committed (its *pending* bytes), gives the member's distribution over the outcomes

    ``[byte 0, ..., byte 255, END_OF_TEXT, TOKEN_ENDS]``

where ``TOKEN_ENDS`` (the paper's null outcome ε) is the mass of tokens whose bytes are exactly
``r`` and ``END_OF_TEXT`` the mass of the member's end-of-text ids (only when nothing is pending).
Everything is conditioned on the tokens consistent with ``r`` (their total mass is ``Z``).

How: token byte strings are sorted once (``ByteTable``), so the tokens that start with any prefix
form a contiguous range; the 258 boundaries of a prefix's children (ε, then each next byte) are
computed once per prefix with numpy and cached. Per forward call, one softmax and one cumulative
sum over the vocabulary for all the distributions it keeps (``ViewBank``), on the member's
device; per byte, a gather of 258 entries, batched over every view a phase needs (``gather``),
with one copy of those to the host. No Python loop and no copy proportional to the vocabulary
on the per-byte path.

What it does not do: run models, choose bytes, or combine members (``state``, ``combine``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch

from .token_bytes import TokenBytes

N_BYTES = 256
EOT = 256  # outcome index: end of text
EPS = 257  # outcome index: the current token ends here (ε)
N_OUTCOMES = 258
_PRECISE_BELOW = 1e-6  # prefix mass under which masses are re-summed over the prefix's range


class ByteTable:
    """Static, per-tokenizer index: sorted token bytes and cached prefix boundaries."""

    def __init__(self, token_bytes: TokenBytes):
        self.token_bytes = token_bytes
        pieces = token_bytes.sorted_pieces
        self.sorted_ids = torch.tensor(token_bytes.sorted_ids, dtype=torch.long)
        self.lengths = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=len(pieces))
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        flat = np.frombuffer(b"".join(pieces), dtype=np.uint8).astype(np.int16)
        self.flat = np.concatenate([flat, np.zeros(1, dtype=np.int16)])
        self.eos_ids = torch.tensor(token_bytes.eos_ids, dtype=torch.long)
        # Text ids as a mask over the model's outputs: everything else is not text.
        self.n_text = len(pieces)
        self._bounds: dict[bytes, np.ndarray] = {}
        self._index: dict[bytes, np.ndarray] = {}
        self.root = self.bounds(b"")
        self._devices: dict[torch.device, DeviceIndex] = {}

    def on(self, device: torch.device) -> DeviceIndex:
        """The index tensors on ``device`` (copied there once)."""
        index = self._devices.get(device)
        if index is None:
            index = self._devices[device] = DeviceIndex(self, device)
        return index

    def gather_index(self, prefix: bytes) -> np.ndarray:
        """``bounds(prefix)`` shifted into a ``ViewBank``'s sums, then its end-of-text column
        (259 entries)."""
        cached = self._index.get(prefix)
        if cached is None:
            cached = self._index[prefix] = np.append(self.bounds(prefix), self.n_text + 1)
        return cached

    def bounds(self, prefix: bytes) -> np.ndarray:
        """Boundaries ``B`` (258 entries) of the tokens that start with ``prefix``.

        ``[B[0], B[1])`` are the tokens equal to ``prefix`` (ε); ``[B[b+1], B[b+2])`` those whose
        next byte is ``b``; ``B[257]`` is the end of the range.
        """
        cached = self._bounds.get(prefix)
        if cached is not None:
            return cached
        if prefix:
            parent = self.bounds(prefix[:-1])
            lo, hi = int(parent[prefix[-1] + 1]), int(parent[prefix[-1] + 2])
        else:
            lo, hi = 0, self.n_text
        depth = len(prefix)
        # Byte at `depth` of every token in range, -1 where the token ends exactly at `depth`.
        lengths = self.lengths[lo:hi]
        index = np.minimum(self.offsets[lo:hi] + depth, len(self.flat) - 1)
        column = np.where(lengths > depth, self.flat[index], -1)
        starts = np.searchsorted(column, np.arange(-1, N_BYTES), side="left") + lo
        out = np.concatenate([starts, [hi]]).astype(np.int64)
        self._bounds[prefix] = out
        return out


class DeviceIndex:
    """A ``ByteTable``'s index tensors on one device (made once per device)."""

    def __init__(self, table: ByteTable, device: torch.device):
        self.sorted_ids = table.sorted_ids.to(device)
        self.eos_ids = table.eos_ids.to(device)


class ViewBank:
    """The next-token distributions kept from one forward call, on the member's device.

    Args:
        table: the member's ``ByteTable``.
        logits: ``[n, vocab]`` next-token logits (any float dtype, any device).
        segments: how the masses of a prefix's buckets are summed; None (default) by device.

    On a CPU (``segments`` False): one softmax and one cumulative sum over the sorted text
    tokens for all ``n`` rows, in float64 (a difference of cumulative sums must resolve small
    masses), read in place. On an accelerator (``segments`` True): a float32 softmax, and each
    prefix's 258 masses summed bucket by bucket in float64 when ``gather`` asks for them
    (segment sums: each mass as precise as float32 probabilities allow, whatever its size;
    ``benchmarks/view_precision.py``). Nothing proportional to the vocabulary leaves the
    device.
    """

    def __init__(self, table: ByteTable, logits: torch.Tensor, segments: bool | None = None):
        index = table.on(logits.device)
        self.table = table
        self.segments = logits.device.type != "cpu" if segments is None else segments
        dtype = torch.float32 if self.segments else torch.float64
        self.probs = torch.softmax(logits.detach().to(dtype), dim=-1)  # [n, vocab]
        n = len(self.probs)
        eot = (self.probs.index_select(1, index.eos_ids).double().sum(1) if len(table.eos_ids)
               else self.probs.new_zeros(n, dtype=torch.float64))
        self.sums: torch.Tensor | None = None
        if self.segments:
            self.eot = eot  # [n] end-of-text masses; the buckets are summed when asked for
        else:
            # [n, T + 2]: 0, the cumulative sums over the text tokens in sorted order, then the
            # end-of-text mass: one gather reads a prefix's 258 boundaries and end of text.
            self.sums = self.probs.new_zeros(n, table.n_text + 2)
            if self.probs.device.type != "cpu":
                ordered = self.probs.index_select(1, index.sorted_ids)
            else:  # on a CPU, index_select along the last dimension of a matrix (even of one
                # row) is several times slower than along a vector
                ordered = torch.stack([r.index_select(0, index.sorted_ids) for r in self.probs])
            torch.cumsum(ordered, dim=1, out=self.sums[:, 1:-1])
            self.sums[:, -1] = eot
        # A CPU member's sums and probabilities are host memory already: read in place.
        on_cpu = logits.device.type == "cpu" and not self.segments
        self.host = self.sums.numpy() if on_cpu else None
        self.host_probs = self.probs.numpy() if on_cpu else None
        # On a device, each row's likeliest text id (what ``likeliest`` gives after a token
        # boundary, for an idle row's guess) comes to the host with a copy ``gather`` makes
        # anyway, not with one of its own.
        self.top: np.ndarray | None = None
        self._top: torch.Tensor | None = None
        if not on_cpu:
            self.read_top_later()

    def read_top_later(self) -> None:
        """Each row's likeliest text id (the first in sorted order among equals, as
        ``likeliest``), computed on the device and kept in ``top`` when a ``gather`` on this
        device copies it along: one that reads this bank, or one given the bank in ``along``
        (``engine`` gives the banks its trees' last calls made, ``TokenTree.unread``)."""
        ids = self.table.on(self.probs.device).sorted_ids
        self._top = ids[self.probs.index_select(1, ids).argmax(1)]

    def views(self) -> list[ByteView]:
        return [ByteView.at(self, r) for r in range(len(self.probs))]


class ByteView:
    """A member's next-byte distribution after one forward pass, for any pending bytes.

    Args:
        table: the member's ``ByteTable``.
        logits: the member's next-token logits, shape ``[vocab]`` (any float dtype, any device).

    A view is one row of a ``ViewBank``. The outcome masses of each pending prefix asked for
    are computed on the device and kept on the host (258 numbers); ``gather`` computes those of
    many views at once, with one copy to the host.
    """

    def __init__(self, table: ByteTable, logits: torch.Tensor):
        self._attach(ViewBank(table, logits[None]), 0)

    @classmethod
    def at(cls, bank: ViewBank, row: int) -> ByteView:
        view = cls.__new__(cls)
        view._attach(bank, row)
        return view

    @classmethod
    def batch(cls, table: ByteTable, logits: torch.Tensor) -> list[ByteView]:
        """One view per row of ``logits`` (``[n, vocab]``), with batched softmax and sums."""
        return ViewBank(table, logits).views()

    def _attach(self, bank: ViewBank, row: int) -> None:
        self.bank, self.row, self.table = bank, row, bank.table
        self._masses: dict[bytes, np.ndarray] = {}  # pending prefix -> outcome masses (host)
        self._ending: dict[bytes, tuple] = {}  # pending prefix -> (ids, probs) ending there
        # (prefix, longer) -> the likeliest id starting with it (``likeliest``), copied by
        # ``gather`` with the masses
        self._likeliest: dict[tuple[bytes, bool], int | None] = {}
        self._text_total: float | None = None

    @property
    def probs(self) -> torch.Tensor:
        """The member's next-token distribution (on its device; float32 on an accelerator)."""
        return self.bank.probs[self.row]

    @property
    def text_total(self) -> float:
        """Mass of the text tokens and end of text: the member's renormalisation constant
        (special tokens that are not text are left out)."""
        if self._text_total is None:  # read per hypothesis and byte in the exact mode
            self._text_total = float(self.masses(b"").sum())
        return self._text_total

    def masses(self, prefix: bytes) -> np.ndarray:
        """Unnormalised masses of the 258 outcomes given pending bytes ``prefix``."""
        out = self._masses.get(prefix)
        if out is None:
            gather([(self, prefix)])
            out = self._masses[prefix]
        return out

    def distribution(self, prefix: bytes) -> np.ndarray | None:
        """Normalised outcome distribution; ``None`` if no token is consistent with ``prefix``."""
        m = self.masses(prefix)
        total = m.sum()
        return m / total if total > 0 else None

    def follows(self, prefix: bytes, byte: int) -> bool:
        """Whether some token with mass starts with ``prefix`` followed by ``byte`` (from the
        masses of ``prefix``; where those say no, the longer prefix's own range is summed
        again, as a tiny mass may round away in a difference of sums)."""
        return bool(self.masses(prefix)[byte] > 0 or
                    self.masses(prefix + bytes((byte,))).sum() > 0)

    def ending_ids(self, prefix: bytes) -> tuple[torch.Tensor, torch.Tensor]:
        """Ids whose bytes are exactly ``prefix`` and their probabilities (on the host)."""
        return ending([(self, prefix)])[0]

    def likeliest_extension(self, prefix: bytes) -> int | None:
        """The likeliest id whose bytes start with ``prefix`` and are longer (None if none)."""
        return likeliest([(self, prefix)], longer=True)[0]

    def _local_sums(self, bounds: np.ndarray) -> torch.Tensor:
        """The cumulative sums at ``bounds`` (a prefix's boundaries) re-summed over the
        prefix's own range only, on the member's device: a difference of the global sum has
        ~1e-16 absolute error, too much for a prefix of little mass."""
        lo, hi = int(bounds[0]), int(bounds[-1])
        index = self.table.on(self.probs.device)
        local = torch.nn.functional.pad(torch.cumsum(
            self.probs.index_select(0, index.sorted_ids[lo:hi]), 0), (1, 0))
        return local[torch.from_numpy(bounds - lo).to(local.device, non_blocking=True)]


def gather(requests: Sequence[tuple[ByteView, bytes]], guesses: bool = False,
           extensions: bool = False, along: Sequence[ViewBank] = ()) -> None:
    """Compute the outcome masses of many ``(view, pending prefix)`` pairs at once, and for
    views on a device the ids ending at each prefix with their probabilities too (what a
    commit or a hypothesis' children read, ``ending``): one gather per ``ViewBank`` on its
    device and one copy to the host per device (``[n, 258]`` cumulative sums, ``n``
    end-of-text masses, the ending ids' probabilities). Pairs already known are skipped; the
    results are kept in the views (``ByteView.masses`` and ``ending`` return them). With
    ``guesses``, the same copy brings each pair's likeliest id starting with its prefix
    (``likeliest`` returns it; the idle rows' guesses, ``engine.run_queued``), with
    ``extensions`` its likeliest id longer than the prefix (``likeliest(..., longer=True)``;
    the exact mode's guess of a row alone), and the likeliest ids after a token boundary
    (``ViewBank.top``) of the banks it reads and of those in ``along``. CPU members' views are
    read in place, when asked."""
    todo, seen = [], set()
    for view, prefix in requests:
        key = (id(view), prefix)
        known = prefix in view._masses and (view.bank.host is not None or
                                            prefix in view._ending)
        if not known and key not in seen:
            seen.add(key)
            todo.append((view, prefix))
    if not todo:
        return
    # Step 1: each pair's 258 cumulative sums at its prefix's boundaries, and end of text:
    # read in place for CPU members; on a device, one gather per bank and one copy to the
    # host per device.
    sums = np.zeros((len(todo), N_OUTCOMES + 1))
    direct: dict[int, np.ndarray] = {}  # segment sums: the masses themselves
    on_device: dict[int, list[int]] = {}
    for i, (view, prefix) in enumerate(todo):
        if view.bank.host is not None:
            sums[i] = view.bank.host[view.row, view.table.gather_index(prefix)]
        else:
            on_device.setdefault(id(view.bank), []).append(i)
    # A prefix one byte longer than one whose masses are known is faint (step 3) when that
    # byte's mass is: its sums over its own range go in the same copy.
    faint_known = {i for i in itertools.chain.from_iterable(on_device.values())
                   if not todo[i][0].bank.segments and _known_faint(*todo[i])}
    local_sums: dict[int, np.ndarray] = {}
    if on_device:
        _gather_on_devices(todo, on_device, sums, direct, faint_known, local_sums,
                           [longer for longer, wanted in ((False, guesses), (True, extensions))
                            if wanted], along)
    # Step 2: the outcomes, as differences of the sums (ε first, then each byte).
    c = sums[:, :-1]
    out = np.empty((len(todo), N_OUTCOMES))
    out[:, :N_BYTES] = c[:, 2:] - c[:, 1:-1]
    out[:, EPS] = c[:, 1] - c[:, 0]
    out[:, EOT] = sums[:, -1]
    for i, masses in direct.items():  # segment sums: ε, the bytes, end of text
        out[i, EPS], out[i, :N_BYTES], out[i, EOT] = masses[0], masses[1:EOT + 1], masses[-1]
    # Step 3: a prefix of little mass is summed again over its own range (all of them at
    # once: one copy to the host per device); segment sums need not.
    faint = [i for i in np.flatnonzero(c[:, -1] - c[:, 0] < _PRECISE_BELOW).tolist()
             if i not in direct]
    local: dict[torch.device, list[tuple[int, torch.Tensor]]] = {}
    for i in faint:
        if i in local_sums:  # copied with the sums (``faint_known``)
            p = local_sums[i]
            out[i, :N_BYTES], out[i, EPS] = p[2:] - p[1:-1], p[1] - p[0]
            continue
        view, prefix = todo[i]
        sums_i = view._local_sums(view.table.bounds(prefix))
        local.setdefault(sums_i.device, []).append((i, sums_i))
    for found in local.values():
        for (i, _), p in zip(found, torch.stack([t for _, t in found]).cpu().numpy(),
                             strict=True):
            out[i, :N_BYTES], out[i, EPS] = p[2:] - p[1:-1], p[1] - p[0]
    np.maximum(out, 0.0, out=out)  # cumulative-sum differences can round below zero
    for (view, prefix), masses in zip(todo, out, strict=True):
        if prefix:
            masses[EOT] = 0.0  # end of text only at a token boundary
        view._masses[prefix] = masses


def ending(requests: Sequence[tuple[ByteView, bytes]]
           ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """For each ``(view, prefix)``: the ids whose bytes are exactly ``prefix`` and their
    probabilities, on the host. Read in place for CPU members; on a device, read by ``gather``
    with the masses (where it has not been yet: one copy to the host per device)."""
    gather([(view, prefix) for view, prefix in requests
            if view.bank.host_probs is None and prefix not in view._ending])
    return [_ending_on_host(view, prefix) if view.bank.host_probs is not None
            else view._ending[prefix] for view, prefix in requests]


def _ending_on_host(view: ByteView, prefix: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    """``ending`` for a view whose probabilities are host memory."""
    b = view.table.bounds(prefix)
    ids = view.table.sorted_ids[int(b[0]):int(b[1])]
    return ids, torch.from_numpy(view.bank.host_probs[view.row, ids.numpy()])


def likeliest(requests: Sequence[tuple[ByteView, bytes]], longer: bool = False
              ) -> list[int | None]:
    """For each ``(view, prefix)``: the likeliest id whose bytes start with ``prefix`` (with
    ``longer``, only ids longer than it), None where there is none. Read in place for CPU
    members; on a device, from what an earlier copy brought along (``gather``'s
    ``guesses`` and ``extensions``, ``ViewBank.read_top_later``), else one argmax per pair
    there and one copy to the host per device."""
    out: list[int | None] = [None] * len(requests)
    on_device: dict[torch.device, list[tuple[int, torch.Tensor]]] = {}
    for i, (view, prefix) in enumerate(requests):
        b = view.table.bounds(prefix)
        lo, hi = int(b[1] if longer else b[0]), int(b[-1])
        if lo >= hi:
            continue
        if view.bank.host_probs is not None:
            ids = view.table.sorted_ids[lo:hi]
            out[i] = int(ids[int(np.argmax(view.bank.host_probs[view.row, ids.numpy()]))])
        elif (prefix, longer) in view._likeliest:  # copied by ``gather`` along the masses
            out[i] = view._likeliest[prefix, longer]
        elif not longer and not prefix and view.bank.top is not None:  # copied along
            out[i] = int(view.bank.top[view.row])
        else:
            device = view.probs.device
            ids = view.table.on(device).sorted_ids[lo:hi]
            on_device.setdefault(device, []).append(
                (i, ids[view.probs.index_select(0, ids).argmax()]))
    for found in on_device.values():
        for (i, _), token in zip(found, torch.stack([t for _, t in found]).tolist(),
                                 strict=True):
            out[i] = token
    return out


def _known_faint(view: ByteView, prefix: bytes) -> bool:
    """Whether ``prefix``'s mass, known from the masses one byte shorter, is below
    ``_PRECISE_BELOW``."""
    shorter = view._masses.get(prefix[:-1]) if prefix else None
    return shorter is not None and shorter[prefix[-1]] < _PRECISE_BELOW


def _gather_on_devices(todo: list, groups: dict[int, list[int]], sums: np.ndarray,
                       direct: dict[int, np.ndarray], faint: set[int],
                       local_sums: dict[int, np.ndarray], likeliest: list[bool],
                       along: Sequence[ViewBank]) -> None:
    """For the pairs ``todo[i]`` whose banks are on a device: ``sums[i]`` (``direct[i]``,
    the masses, from a bank that sums segments), the ending ids' probabilities (kept in the
    views), ``local_sums[i]`` (``ByteView._local_sums``) for ``i`` in ``faint``, for each
    ``longer`` in ``likeliest`` the likeliest id starting with each prefix (longer than it,
    with ``longer``; kept in the views, read by ``likeliest``), and the unread ``top`` of
    every bank read or in ``along``. A few gathers per bank, one copy to the host per
    device."""
    # Each part: (what it is, whom it is for, a flat tensor on a device).
    parts: dict[torch.device, list[tuple[str, object, torch.Tensor]]] = {}
    banks: dict[int, ViewBank] = {id(b): b for b in along}
    for members in groups.values():
        view = todo[members[0]][0]
        bank, table = view.bank, view.table
        banks[id(bank)] = bank
        put = parts.setdefault(bank.probs.device, []).append
        rows = torch.tensor([todo[i][0].row for i in members])
        on = rows.to(bank.probs.device, non_blocking=True)
        bounds = [table.bounds(todo[i][1]) for i in members]
        if bank.segments:  # each prefix's buckets summed, and end of text
            put(("masses", members, _segment_masses(bank, rows, on, bounds)))
        else:  # the 258 cumulative sums at each prefix's boundaries, and end of text
            cols = torch.from_numpy(np.stack([table.gather_index(todo[i][1])
                                              for i in members]))
            put(("sums", members, bank.sums[on[:, None], cols.to(on.device,
                                                                   non_blocking=True)]))
        # The ids ending at each prefix (a range of the sorted ids), flattened over the pairs.
        ends = [table.sorted_ids[int(b[0]):int(b[1])] for b in bounds]
        end_rows = torch.repeat_interleave(rows, torch.tensor([len(e) for e in ends]))
        put(("ending", (members, ends), bank.probs[end_rows.to(on.device, non_blocking=True),
                                                   torch.cat(ends).to(on.device,
                                                                      non_blocking=True)]))
        for i in members:  # faint prefixes: summed again over their own range
            if i in faint:
                put(("local", i, todo[i][0]._local_sums(table.bounds(todo[i][1]))))
        for longer in likeliest:
            put(("likeliest", (members, longer), _likeliest_ids(bank, on, bounds, longer)))
    for bank in banks.values():  # the banks' likeliest ids after a boundary, along
        if bank.top is None and bank._top is not None and bank.probs.device in parts:
            parts[bank.probs.device].append(("top", bank, bank._top))
    for found in parts.values():
        flat = torch.cat([t.flatten().to(torch.float64) for *_, t in found]).cpu().numpy()
        at = 0
        for kind, whom, t in found:  # each part's slice of the one copy
            piece, at = flat[at:at + t.numel()], at + t.numel()
            if kind == "sums":
                sums[whom] = piece.reshape(len(whom), -1)
            elif kind == "masses":
                direct.update(zip(whom, piece.reshape(len(whom), -1), strict=True))
            elif kind == "ending":
                _keep_endings(todo, *whom, torch.from_numpy(piece))
            elif kind == "local":
                local_sums[whom] = piece
            elif kind == "likeliest":
                _keep_likeliest(todo, *whom, piece)
            else:
                whom.top = piece.astype(np.int64)


def _segment_masses(bank: ViewBank, rows: torch.Tensor, on: torch.Tensor,
                    bounds: list[np.ndarray]) -> torch.Tensor:
    """On the bank's device, for each ``rows[k]`` (``on``: the same on the device) and prefix
    boundaries ``bounds[k]``: the prefix's 257 buckets (ε, then each next byte) summed in
    float64 one by one, then end of text; ``[len(rows) * 258]``."""
    device = on.device
    sorted_ids = bank.table.on(device).sorted_ids
    ids = torch.cat([sorted_ids[int(b[0]):int(b[-1])] for b in bounds])
    sizes = torch.tensor([int(b[-1]) - int(b[0]) for b in bounds])
    values = bank.probs[torch.repeat_interleave(rows, sizes).to(device, non_blocking=True),
                        ids].double()
    lengths = torch.from_numpy(np.concatenate([np.diff(b) for b in bounds]))
    buckets = torch.segment_reduce(values, "sum", lengths=lengths.to(device, non_blocking=True),
                                   unsafe=True).view(len(bounds), N_OUTCOMES - 1)
    return torch.cat([buckets, bank.eot[on][:, None]], 1)


def _keep_endings(todo: list, members: list[int], ends: list[torch.Tensor],
                  probs: torch.Tensor) -> None:
    """Keep each pair's ending ids with their probabilities (``probs``, flattened)."""
    offset = 0
    for i, ids in zip(members, ends, strict=True):
        view, prefix = todo[i]
        view._ending.setdefault(prefix, (ids, probs[offset:offset + len(ids)]))
        offset += len(ids)


def _likeliest_ids(bank: ViewBank, rows: torch.Tensor, bounds: list[np.ndarray],
                   longer: bool) -> torch.Tensor:
    """On the bank's device, for each ``rows[k]`` and prefix boundaries ``bounds[k]``: the
    likeliest id starting with the prefix (with ``longer``, longer than it; the first in
    sorted order among equals, as ``likeliest``), -1 where none does. One padded gather for
    all pairs."""
    device = rows.device
    lo = torch.tensor([int(b[1] if longer else b[0]) for b in bounds])
    size = torch.tensor([int(b[-1]) for b in bounds]) - lo
    width = max(int(size.max()), 1)
    at = torch.arange(width)
    index = (lo[:, None] + at).clamp(max=bank.table.n_text - 1)
    ids = bank.table.on(device).sorted_ids[index.to(device, non_blocking=True)]
    probs = bank.probs[rows[:, None], ids]
    inside = (at[None, :] < size[:, None]).to(device, non_blocking=True)
    best = probs.masked_fill(~inside, -1.0).argmax(1, keepdim=True)
    found = size.to(device, non_blocking=True) > 0
    return torch.where(found, ids.gather(1, best)[:, 0], -1)


def _keep_likeliest(todo: list, members: list[int], longer: bool, tokens: np.ndarray) -> None:
    for i, token in zip(members, tokens.tolist(), strict=True):
        view, prefix = todo[i]
        view._likeliest[prefix, longer] = int(token) if token >= 0 else None
