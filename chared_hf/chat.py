"""Chat messages -> one member's prompt ids, with the member's own chat template.

What it does: given the messages the ensemble received (parsed from ``ByteTokenizer`` chat ids),
renders them with the member's chat template so that instruct models see the format they were
trained on. Message text never passes through the member's special-token matching: the template
is rendered with placeholders, the markup between placeholders is tokenized by the member's
tokenizer (its special tokens allowed), and each message's text is encoded as plain text by
``TokenBytes.encode`` (bytes that look like ``<|im_end|>`` stay text).

A member without a chat template gets the plain format

    <its start of text>System: ...\\nUser: ...\\nAssistant: ...\\nAssistant:

(one line per message, role capitalised, then the open message).

It does not generate anything, and it does not support tools or documents.
"""

from __future__ import annotations

import re

from .members.member import Member
from .tokenization import message_text

_SLOT = "\ue000chared{}\ue001"  # private-use characters: absent from templates and text
_SLOT_RE = re.compile("\ue000chared(\\d+)\ue001")


def member_chat_ids(member: Member, messages: list[dict], open_last: bool) -> list[int]:
    """Prompt ids for one member: the conversation, ending where the reply starts."""
    generation_prompt = open_last and messages[-1]["role"] == "assistant" and not message_text(
        messages[-1])
    if generation_prompt:
        messages = messages[:-1]
    continue_final = open_last and not generation_prompt
    tokenizer, tb = member.tokenizer, member.token_bytes
    if not getattr(tokenizer, "chat_template", None):
        return tb.start_ids + tb.encode(_plain(messages, generation_prompt).encode(),
                                        at_start=True)
    slotted = [{**m, "content": _SLOT.format(k)} for k, m in enumerate(messages)]
    rendered = tokenizer.apply_chat_template(
        slotted, tokenize=False, add_generation_prompt=generation_prompt)
    if continue_final:  # cut right after the final message's text
        last = _SLOT.format(len(messages) - 1)
        rendered = rendered[: rendered.rindex(last) + len(last)]
    ids: list[int] = []
    pos = 0
    added = tokenizer.get_added_vocab()
    pattern = _added_tokens_pattern(added)
    for match in _SLOT_RE.finditer(rendered):
        ids += _markup_ids(tokenizer, tb, added, pattern, rendered[pos:match.start()],
                           at_start=not ids)
        ids += tb.encode(message_text(messages[int(match.group(1))]).encode())
        pos = match.end()
    return ids + _markup_ids(tokenizer, tb, added, pattern, rendered[pos:], at_start=not ids)


def _markup_ids(tokenizer, tb, added: dict[str, int], pattern: re.Pattern | None, markup: str,
                at_start: bool) -> list[int]:
    """The template's own text: its added tokens (``<|im_start|>``, ``<s>``) by id. Text at the
    prompt's start or right after an added token is tokenized by the member's tokenizer, as it
    would be inside the whole rendered string (SentencePiece tokenizers add their dummy prefix
    there); text right after a message continues that message's text (no dummy prefix)."""
    ids: list[int] = []
    pieces = pattern.split(markup) if pattern is not None else [markup]
    for k, piece in enumerate(pieces):
        if k % 2:  # an added token
            ids.append(added[piece])
        elif piece and (k > 0 or at_start):
            ids += tokenizer(piece, add_special_tokens=False)["input_ids"]
        elif piece:
            ids += tb.encode(piece.encode())
    return ids


def _added_tokens_pattern(added: dict[str, int]) -> re.Pattern | None:
    """A regex that splits text around the tokenizer's added tokens (longest first)."""
    contents = sorted(added, key=len, reverse=True)
    if not contents:
        return None
    return re.compile("(" + "|".join(re.escape(c) for c in contents) + ")")


def _plain(messages: list[dict], generation_prompt: bool) -> str:
    lines = [f"{m['role'].capitalize()}: {message_text(m)}" for m in messages]
    text = "\n".join(lines)
    return text + "\nAssistant:" if generation_prompt else text
