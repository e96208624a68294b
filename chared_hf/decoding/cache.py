"""``EnsembleCache``: what Transformers' ``generate`` carries between calls of
``CharEDModel.forward`` as its cache: the rows of the batch and the members' token trees.

It is not a KV cache: ``get_seq_length`` is the number of byte ids consumed, so that
Transformers slices new inputs correctly. It does not decode (the rows do, driven by
``engine``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..members.token_tree import TokenTree

if TYPE_CHECKING:
    from .paper import SequenceState

DECIDE_RULES = ("greedy", "sample", "marginal")


class EnsembleCache:
    """What ``generate`` carries between forward calls: one ``SequenceState`` per row.

    It is not a KV cache: ``get_seq_length`` is the number of byte ids consumed so that
    Transformers slices new inputs correctly, and ``is_compileable`` is False.
    """

    is_compileable = False

    def __init__(self, decide: str = "marginal"):
        if decide not in DECIDE_RULES:
            raise ValueError(f"decide: expected one of {DECIDE_RULES}, got {decide!r}")
        self.decide = decide
        self.rows: list[SequenceState] | None = None
        self.trees: list[TokenTree] | None = None  # per member, shared by the rows
        self.seen = 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen

    def forward_calls(self) -> list[list[int]]:
        """Forward calls so far, per row and member (the rows of a batch share trees, so a
        batch's rows report the calls they made together)."""
        return [[m.tree.forwards for m in row.members] for row in self.rows or []]

    def forward_tokens(self) -> list[list[int]]:
        """Tokens the members ran so far (over all calls), per row and member."""
        return [[m.tree.queries for m in row.members] for row in self.rows or []]
