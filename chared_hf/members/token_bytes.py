"""Token id -> the exact bytes it contributes to text, for any Hugging Face tokenizer.

What it does:
  * reads a tokenizer's ``tokenizer.json`` model and decoder to learn how token strings map to
    bytes: byte-level BPE (the GPT-2 ``Ġ`` byte map), SentencePiece (``▁`` is a space and
    ``<0xNN>`` byte-fallback pieces are single bytes) and plain vocabularies;
  * marks special tokens (BOS, PAD, chat markers, ``<unk>``) as *not text* (``None``) and collects
    the member's end-of-text ids;
  * learns the tokenizer's "dummy prefix" (the leading space SentencePiece adds at the start of a
    text) and encodes bytes into token ids whose bytes spell them exactly (``encode``).

What it does not do: compute probabilities (``byte_view``), or run a model.

Rules (documented in docs/method.md):
  * At the start of a text a member sees ``lead + text`` where ``lead`` is its tokenizer's dummy
    prefix (``b" "`` for Llama-2 style tokenizers, ``b""`` otherwise); the ensemble's text is
    never changed by it.
  * ``encode`` first asks the tokenizer (so prompts get the member's own, canonical tokenization)
    and checks that the ids spell the requested bytes; where they do not (lossy normalisers,
    tokenizers that drop a leading space, invalid UTF-8), it falls back to greedy longest match
    over the member's token bytes, and to the unknown token for bytes the member cannot
    represent at all (the member is then "off track" until its next commit).
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from tokenizers import Tokenizer

_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_SPACE_MARK = "\u2581"  # SentencePiece's "▁"


@lru_cache(maxsize=1)
def byte_level_alphabet() -> dict[str, int]:
    """The GPT-2 byte-level map, inverted: printable stand-in character -> byte value.

    >>> byte_level_alphabet()["Ġ"]
    32
    """
    visible = list(range(ord("!"), ord("~") + 1))
    visible += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, shift = {}, 0
    for b in range(256):
        if b in visible:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + shift)
            shift += 1
    return {c: b for b, c in chars.items()}


def _components(node: dict | None) -> list[dict]:
    """Flatten a tokenizer.json normalizer / pre-tokenizer / decoder into its parts."""
    if not node:
        return []
    for key in ("normalizers", "pretokenizers", "decoders"):
        if key in node:
            return [part for child in node[key] for part in _components(child)]
    return [node]


def _is_byte_level(spec: dict) -> bool:
    parts = _components(spec.get("pre_tokenizer")) + _components(spec.get("decoder"))
    return any(p.get("type") == "ByteLevel" for p in parts)


def _piece_bytes(piece: str, byte_level: bool, byte_fallback: bool) -> bytes | None:
    """Bytes of one vocabulary piece, or None if they cannot be determined."""
    if byte_level:
        alphabet = byte_level_alphabet()
        try:
            return bytes(alphabet[c] for c in piece)
        except KeyError:
            return None
    if byte_fallback and (m := _BYTE_FALLBACK.match(piece)):
        return bytes([int(m.group(1), 16)])
    return piece.replace(_SPACE_MARK, " ").encode("utf-8")


def _without_dummy_prefix(spec: dict) -> Tokenizer:
    """A copy of the backend tokenizer that does not prepend ``▁`` (for text mid-stream)."""
    spec = json.loads(json.dumps(spec))
    norm = spec.get("normalizer")
    if norm and norm.get("type") == "Prepend":
        spec["normalizer"] = None
    elif norm and norm.get("type") == "Sequence":
        norm["normalizers"] = [n for n in norm["normalizers"] if n.get("type") != "Prepend"]
    for part in _components(spec.get("pre_tokenizer")):
        if part.get("type") == "Metaspace":
            part["prepend_scheme"] = "never"
    spec["post_processor"] = None
    return Tokenizer.from_str(json.dumps(spec))


@dataclass
class TokenBytes:
    """The byte strings of one tokenizer's ids, with the ids that end a text.

    Attributes:
        pieces: ``pieces[i]`` is the bytes token ``i`` adds to text, or ``None`` if ``i`` is not
            text (special tokens, ``<unk>``, ids past the tokenizer's vocabulary, empty pieces).
        eos_ids: ids whose meaning is "end of text" for this member.
        start_ids: ids a member's text starts with (its BOS, or its end-of-text id as a
            document separator when it has no BOS).
        lead: bytes the tokenizer adds in front of a text (``b" "`` for SentencePiece).
        unk_id: the unknown token, used for bytes the member cannot represent, or ``None``.
    """

    pieces: list[bytes | None]
    eos_ids: list[int]
    start_ids: list[int]
    lead: bytes = b""
    unk_id: int | None = None
    _tokenizer: object = field(default=None, repr=False)
    _mid_text: Tokenizer | None = field(default=None, repr=False)
    # Text pieces in byte order and their ids (ByteTable's index; encode's lookups).
    sorted_pieces: list[bytes] = field(default_factory=list, repr=False)
    sorted_ids: list[int] = field(default_factory=list, repr=False)

    @classmethod
    def from_tokenizer(
        cls,
        tokenizer,
        vocab_size: int | None = None,
        eos_ids: Iterable[int] | None = None,
    ) -> TokenBytes:
        """Read the byte strings of a Hugging Face (fast) tokenizer's ids.

        Args:
            tokenizer: a ``PreTrainedTokenizerFast``/``TokenizersBackend`` (anything with a
                ``backend_tokenizer``).
            vocab_size: the member model's output size; ids past the tokenizer are not text.
            eos_ids: the member's end-of-text ids (default: the tokenizer's ``eos_token_id``).
        """
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise ValueError(
                "tokenizer: a fast tokenizer with a `backend_tokenizer` is required, got "
                f"{type(tokenizer).__name__}"
            )
        spec = json.loads(backend.to_str())
        byte_level = _is_byte_level(spec)
        byte_fallback = bool(spec["model"].get("byte_fallback", False))
        size = max(vocab_size or 0, len(tokenizer), backend.get_vocab_size(with_added_tokens=True))
        pieces: list[bytes | None] = [None] * size
        # Step 1: ordinary vocabulary pieces, through the byte map of this tokenizer family.
        for piece, idx in backend.get_vocab(with_added_tokens=False).items():
            if idx < size:
                pieces[idx] = _piece_bytes(piece, byte_level, byte_fallback) or None
        # Step 2: added tokens: specials are never text; the others are matched literally.
        for idx, added in backend.get_added_tokens_decoder().items():
            if idx < size:
                pieces[idx] = None if added.special else (added.content.encode("utf-8") or None)
        unk_id = tokenizer.unk_token_id
        if unk_id is not None and unk_id < size:
            pieces[unk_id] = None
        for idx in tokenizer.all_special_ids:
            if idx is not None and idx < size:
                pieces[idx] = None
        # Step 3: end of text is an outcome, never text.
        eos = sorted({int(i) for i in (eos_ids if eos_ids is not None else [])})
        if not eos and tokenizer.eos_token_id is not None:
            eos = [int(tokenizer.eos_token_id)]
        for idx in eos:
            if idx < size:
                pieces[idx] = None
        out = cls(pieces=pieces, eos_ids=eos, start_ids=[], unk_id=unk_id, _tokenizer=tokenizer)
        out._index()
        out.start_ids = out._find_start_ids()
        out.lead = out._find_lead()
        out._mid_text = _without_dummy_prefix(spec) if out.lead else backend
        return out

    # -- lookups ---------------------------------------------------------------------------
    def _index(self) -> None:
        """Sort the text pieces once; every byte prefix is then a contiguous range."""
        order = sorted((p, i) for i, p in enumerate(self.pieces) if p)
        self.sorted_pieces = [p for p, _ in order]
        self.sorted_ids = [i for _, i in order]

    def spell(self, ids: Sequence[int]) -> bytes | None:
        """The bytes a sequence of ids spells, or None if one of them is not text."""
        out = []
        for i in ids:
            p = self.pieces[i] if 0 <= i < len(self.pieces) else None
            if p is None:
                return None
            out.append(p)
        return b"".join(out)

    def _find_start_ids(self) -> list[int]:
        tok = self._tokenizer
        with_specials = tok("a", add_special_tokens=True)["input_ids"]
        plain = tok("a", add_special_tokens=False)["input_ids"]
        n = len(plain)
        start = next(
            (with_specials[:k] for k in range(len(with_specials) - n + 1)
             if with_specials[k:k + n] == plain),
            [],
        )
        if start:
            return list(start)
        fallback = tok.bos_token_id if tok.bos_token_id is not None else (
            self.eos_ids[0] if self.eos_ids else None)
        return [fallback] if fallback is not None else []

    def _find_lead(self) -> bytes:
        spelled = self.spell(self._tokenizer("a", add_special_tokens=False)["input_ids"])
        return spelled[:-1] if spelled and spelled.endswith(b"a") else b""

    # -- encoding --------------------------------------------------------------------------
    def encode(self, data: bytes, at_start: bool = False) -> list[int]:
        """Token ids that spell ``data`` (``lead + data`` when ``at_start``) exactly if possible.

        The tokenizer's own tokenization is used when it spells the bytes exactly; otherwise
        greedy longest match over the pieces; bytes no piece covers become ``unk_id``.
        """
        target = self.lead + data if at_start else data
        if not target:
            return []
        text, rest = split_utf8(target)
        ids: list[int] = []
        if text:
            ids = self._tokenizer_ids(text, at_start)
            if self.spell(ids) != text.encode("utf-8"):
                ids = self._longest_match(text.encode("utf-8"))
        return ids + self._longest_match(rest)

    def _tokenizer_ids(self, text: str, at_start: bool) -> list[int]:
        if at_start and self.lead and text.encode("utf-8").startswith(self.lead):
            ids = self._tokenizer(text[len(self.lead.decode("utf-8")):],
                                  add_special_tokens=False)["input_ids"]
            if self.spell(ids) == text.encode("utf-8"):
                return list(ids)
        return list(self._mid_text.encode(text, add_special_tokens=False).ids)

    def _longest_match(self, data: bytes) -> list[int]:
        ids, pos = [], 0
        while pos < len(data):
            best = None
            # Longest piece that is a prefix of data[pos:]: walk lengths downwards.
            for end in range(min(len(data), pos + 64), pos, -1):
                k = bisect.bisect_left(self.sorted_pieces, data[pos:end])
                if k < len(self.sorted_pieces) and self.sorted_pieces[k] == data[pos:end]:
                    best = (self.sorted_ids[k], end)
                    break
            if best is None:
                if self.unk_id is None:
                    raise ValueError(
                        f"text: byte {data[pos]:#04x} cannot be represented by this tokenizer, "
                        "which has neither a byte fallback nor an unknown token"
                    )
                ids.append(self.unk_id)
                pos = _next_char(data, pos)
            else:
                ids.append(best[0])
                pos = best[1]
        return ids


def split_utf8(data: bytes) -> tuple[str, bytes]:
    """Split bytes into the longest valid UTF-8 prefix (as text) and the remaining bytes."""
    try:
        return data.decode("utf-8"), b""
    except UnicodeDecodeError as err:
        return data[: err.start].decode("utf-8"), data[err.start:]


def _next_char(data: bytes, pos: int) -> int:
    """Index after the UTF-8 character (or lone invalid byte) that starts at ``pos``.

    >>> _next_char("é!".encode(), 0), _next_char(b"ab", 0), _next_char(b"\\xffab", 0)
    (2, 1, 1)
    """
    lead = data[pos]
    width = 1 if lead < 0xC0 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
    try:
        data[pos:pos + width].decode("utf-8")
        return pos + width
    except UnicodeDecodeError:
        return pos + 1
