"""A member model as the ensemble sees it: the model, its tokenizer and the byte tables derived
from them (static, shared by every row and mode).

What it does: ``Member.build`` reads the tokenizer's token bytes (``TokenBytes``) and sorts them
(``ByteTable``), and records the model's context window and end-of-text ids; the member answers
the questions both decoding modes ask of its vocabulary (its id for one byte, the ids a token's
bytes could also end at, how many tokens to keep when the context outgrows the window).
``heal_tokens`` says how many of a prompt's last tokens a longer token could extend.

What it does not do: run the model (``token_tree``), or hold any sequence's state (the decoding
modes' rows do).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch

from .byte_view import ByteTable
from .token_bytes import TokenBytes


@dataclass
class Member:
    """A member model, its tokenizer and the byte tables derived from it."""

    model: torch.nn.Module
    tokenizer: object
    token_bytes: TokenBytes
    table: ByteTable
    name: str = "member"
    window: int | None = None  # the model's context length (max_position_embeddings)
    warned: bool = field(default=False, compare=False)  # the context-window warning was given
    _prefixes: dict = field(default_factory=dict, compare=False, repr=False)  # prefix_ids'
    _bytes: dict = field(default_factory=dict, compare=False, repr=False)  # byte_id's

    @classmethod
    def build(cls, model, tokenizer, name: str = "member") -> Member:
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        if tokenizer.eos_token_id is not None:
            eos.append(tokenizer.eos_token_id)
        vocab = model.get_output_embeddings().weight.shape[0] if hasattr(
            model, "get_output_embeddings") and model.get_output_embeddings() is not None else None
        tb = TokenBytes.from_tokenizer(tokenizer, vocab_size=vocab, eos_ids=eos)
        config = getattr(model, "config", None)
        window = getattr(config, "max_position_embeddings", None) if config is not None else None
        return cls(model=model, tokenizer=tokenizer, token_bytes=tb, table=ByteTable(tb),
                   name=name, window=window if isinstance(window, int) and window > 8 else None)

    def tokens_to_keep(self, n_start: int, stacklevel: int) -> int:
        """The context policy of both modes, for a context that outgrew the window: how many
        of the most recent tokens to keep after ``n_start`` start ids (together 3/4 of the
        window); warns once per member."""
        if not self.warned:
            self.warned = True
            warnings.warn(f"member {self.name!r}: context longer than its window of "
                          f"{self.window} tokens; keeping the most recent tokens",
                          stacklevel=stacklevel + 1)
        return max(1, self.window * 3 // 4 - n_start)

    def byte_id(self, byte: int) -> int | None:
        """The member's own id for the single byte ``byte`` (None where no one id spells it)."""
        ids = self._bytes.get(byte)
        if ids is None:
            try:
                ids = self._bytes[byte] = self.token_bytes.encode(bytes((byte,)))
            except ValueError:
                ids = self._bytes[byte] = []
        return ids[0] if len(ids) == 1 and self.token_bytes.pieces[ids[0]] == bytes(
            (byte,)) else None

    def prefix_ids(self, token: int) -> list[int]:
        """Ids other than ``token`` whose bytes are a non-empty prefix of ``token``'s (or
        equal to them): the tokens a text spelled by ``token`` could also end at."""
        out = self._prefixes.get(token)
        if out is None:
            piece, out = self.token_bytes.pieces[token] or b"", []
            for k in range(1, len(piece) + 1):
                b = self.table.bounds(piece[:k])
                out += [i for i in self.table.sorted_ids[int(b[0]):int(b[1])].tolist()
                        if i != token]
            self._prefixes[token] = out
        return out


def heal_tokens(member: Member, ids: list[int], rest: bytes = b"") -> int:
    """Token healing: how many of the prompt's last ``ids`` to leave pending rather than
    commit, so that the member can continue them with a longer token (the paper mode's
    healing; the exact mode reads at least these over every tokenization).

    The longest run of trailing tokens whose bytes (with ``rest``, a partial UTF-8 character)
    some single token of the vocabulary starts with and goes beyond; 0 where none does.
    Example: a prompt ending ``"):", "\\n"`` in a vocabulary with ``"\\n    "`` leaves ``"\\n"``
    pending, so the member can still write the newline and the indent as one token.
    """
    pieces, table, best, tail = member.token_bytes.pieces, member.table, 0, rest
    for k in range(1, len(ids) + 1):
        piece = pieces[ids[-k]] if 0 <= ids[-k] < len(pieces) else None
        if piece is None:  # a special token: not text to continue
            break
        tail = piece + tail
        bounds = table.bounds(tail)
        if bounds[-1] <= bounds[0]:  # no token starts with these bytes: no longer run does
            break
        if bounds[-1] > bounds[1]:  # a token extends them
            best = k
    return best
