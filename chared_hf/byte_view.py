"""One member's distribution over the next byte, from its distribution over the next token.

What it does: given a member's token probabilities ``p`` and the bytes ``r`` it has not yet
committed (its *pending* bytes), gives the member's distribution over the outcomes

    ``[byte 0, ..., byte 255, END_OF_TEXT, TOKEN_ENDS]``

where ``TOKEN_ENDS`` (the paper's null outcome ε) is the mass of tokens whose bytes are exactly
``r`` and ``END_OF_TEXT`` the mass of the member's end-of-text ids (only when nothing is pending).
Everything is conditioned on the tokens consistent with ``r`` (their total mass is ``Z``).

How: token byte strings are sorted once (``ByteTable``), so the tokens that start with any prefix
form a contiguous range; the 258 boundaries of a prefix's children (ε, then each next byte) are
computed once per prefix with numpy and cached. Per forward pass there is one cumulative sum over
the vocabulary (``ByteView``); per byte, a gather of 258 entries. No Python loop over the
vocabulary on the per-byte path.

What it does not do: run models, choose bytes, or combine members (``state``, ``combine``).
"""

from __future__ import annotations

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
        self.root = self.bounds(b"")

    def bounds(self, prefix: bytes) -> np.ndarray:
        """Boundaries ``B`` (258 + 1 entries) of the tokens that start with ``prefix``.

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


class ByteView:
    """A member's next-byte distribution after one forward pass, for any pending bytes.

    Args:
        table: the member's ``ByteTable``.
        logits: the member's next-token logits, shape ``[vocab]`` (any float dtype, any device).
    """

    def __init__(self, table: ByteTable, logits: torch.Tensor):
        probs = torch.softmax(logits.detach().to(torch.float64), dim=-1).cpu()
        self._fill(table, probs, probs.index_select(0, table.sorted_ids).numpy())

    @classmethod
    def batch(cls, table: ByteTable, logits: torch.Tensor) -> list[ByteView]:
        """One view per row of ``logits`` (``[n, vocab]``), with batched softmax and sums."""
        probs = torch.softmax(logits.detach().to(torch.float64), dim=-1).cpu()
        # Row by row: index_select along the last dimension of a matrix is much slower.
        ordered = torch.stack([row.index_select(0, table.sorted_ids) for row in probs])
        sums = torch.cumsum(ordered, dim=1).numpy()
        views = [cls.__new__(cls) for _ in range(len(probs))]
        for view, row, sorted_row, cumsum in zip(views, probs, ordered.numpy(), sums,
                                                 strict=True):
            view._fill(table, row, sorted_row, cumsum)
        return views

    def _fill(self, table: ByteTable, probs: torch.Tensor, sorted_probs: np.ndarray,
              cumsum: np.ndarray | None = None) -> None:
        self.table = table
        # One cumulative sum per forward pass, over the text tokens in sorted order.
        self.sorted_probs = sorted_probs
        cumsum = np.cumsum(sorted_probs) if cumsum is None else cumsum
        self.cumsum = np.concatenate([[0.0], cumsum])
        self.probs = probs
        self.eos = float(probs[table.eos_ids].sum()) if len(table.eos_ids) else 0.0
        self._text_total: float | None = None

    @property
    def text_total(self) -> float:
        """Mass of the text tokens and end of text: the member's renormalisation constant
        (special tokens that are not text are left out)."""
        if self._text_total is None:
            self._text_total = float(self.masses(b"").sum())
        return self._text_total

    def masses(self, prefix: bytes, bounds: np.ndarray | None = None) -> np.ndarray:
        """Unnormalised masses of the 258 outcomes given pending bytes ``prefix``."""
        b = self.table.bounds(prefix) if bounds is None else bounds
        c = self.cumsum[b]
        if c[-1] - c[0] < _PRECISE_BELOW:
            # A difference of the global cumulative sum has ~1e-16 absolute error: for a
            # prefix of little mass, sum its own (short) range again so ratios stay exact.
            lo, hi = int(b[0]), int(b[-1])
            c = np.concatenate([[0.0], np.cumsum(self.sorted_probs[lo:hi])])[b - lo]
        out = np.empty(N_OUTCOMES, dtype=np.float64)
        out[:N_BYTES] = c[2:] - c[1:-1]
        out[EPS] = c[1] - c[0]
        out[EOT] = self.eos if not prefix else 0.0
        np.maximum(out, 0.0, out=out)  # cumulative-sum differences can round below zero
        return out

    def distribution(self, prefix: bytes) -> np.ndarray | None:
        """Normalised outcome distribution; ``None`` if no token is consistent with ``prefix``."""
        m = self.masses(prefix)
        total = m.sum()
        return m / total if total > 0 else None

    def ending_ids(self, prefix: bytes) -> tuple[torch.Tensor, torch.Tensor]:
        """Ids whose bytes are exactly ``prefix`` and their probabilities."""
        b = self.table.bounds(prefix)
        ids = self.table.sorted_ids[int(b[0]):int(b[1])]
        return ids, self.probs[ids]
