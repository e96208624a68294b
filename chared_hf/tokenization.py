"""``ByteTokenizer``: the ensemble's pseudo-vocabulary, one id per byte plus specials.

Ids 0-255 are the bytes themselves; ``<s>`` (256) marks the start of a text (each member then
starts from its own start of text), ``</s>`` (257) is end of text, ``<pad>`` (258) is padding,
and ``<|role|>`` (259), ``<|content|>`` (260), ``<|end|>`` (261) mark chat messages. Built on
``tokenizers`` (a byte-level BPE with no merges), so it round-trips any UTF-8, saves as
``tokenizer.json`` and loads with ``AutoTokenizer``. Text that looks like a special token
(``"</s>"``, ``"<|role|>"``) stays text: ``split_special_tokens=True``; the chat markers come only
from ``apply_chat_template``, so message boundaries cannot be forged by message text.

It does not know about the members' tokenizers or chat templates (``token_bytes``, ``chat``).
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from .members.token_bytes import byte_level_alphabet

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
ROLE, CONTENT, END = "<|role|>", "<|content|>", "<|end|>"
BOS_ID, EOS_ID, PAD_ID = 256, 257, 258
ROLE_ID, CONTENT_ID, END_ID = 259, 260, 261
CHAT_IDS = (ROLE_ID, CONTENT_ID, END_ID)
VOCAB_SIZE = 262


def _backend() -> Tokenizer:
    """A byte-level BPE with no merges: every byte is one token, id = byte value."""
    vocab = {char: byte for char, byte in byte_level_alphabet().items()}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([BOS, EOS, PAD, ROLE, CONTENT, END])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, BOS_ID)]
    )
    return tok


class ByteTokenizer(PreTrainedTokenizerFast):
    """Bytes in, byte ids out: the tokenizer of ``CharEDModel``.

    >>> tok = ByteTokenizer()
    >>> tok("hé")["input_ids"]
    [256, 104, 195, 169]
    >>> tok.decode(tok("hé", add_special_tokens=False)["input_ids"])
    'hé'
    """

    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, tokenizer_object: Tokenizer | None = None, **kwargs):
        kwargs.pop("tokenizer_file", None)
        for name, value in (("bos_token", BOS), ("eos_token", EOS), ("pad_token", PAD)):
            kwargs.setdefault(name, value)
        kwargs.setdefault("split_special_tokens", True)
        kwargs.setdefault("padding_side", "left")
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        super().__init__(tokenizer_object=tokenizer_object or _backend(), **kwargs)

    def apply_chat_template(self, conversation, tools=None, documents=None, chat_template=None,
                            add_generation_prompt: bool = False,
                            continue_final_message: bool = False, tokenize: bool = True,
                            return_tensors=None, return_dict: bool = True, **kwargs):
        """Chat messages -> ids: ``<s>`` then, per message, ``<|role|>`` role ``<|content|>``
        content ``<|end|>``. The ensemble re-renders them with each member's own template.

        ``add_generation_prompt`` opens an assistant message; ``continue_final_message``
        leaves the last message open. ``tools`` and ``documents`` are not supported.
        """
        if tools or documents:
            raise ValueError("tools: tools and documents are not supported by ByteTokenizer")
        batched = bool(conversation) and not isinstance(conversation[0], dict)
        chats = conversation if batched else [conversation]
        ids = [chat_ids(_messages(c), add_generation_prompt, bool(continue_final_message))
               for c in chats]
        if not tokenize:
            texts = [self.decode(i) for i in ids]
            return texts if batched else texts[0]
        enc = self.pad({"input_ids": ids}, return_tensors=return_tensors)
        if not batched and return_tensors is None:
            enc = {k: v[0] for k, v in enc.items()}
        return enc if return_dict else enc["input_ids"]


def _messages(chat) -> list[dict]:
    return list(getattr(chat, "messages", chat))


def message_text(message: dict) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    content = message.get("content", "")
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if part.get("type") == "text")


def chat_ids(messages: list[dict], add_generation_prompt: bool, continue_final: bool) -> list[int]:
    """The byte-vocabulary ids of a chat (see ``ByteTokenizer.apply_chat_template``)."""
    if not messages:
        raise ValueError("conversation: expected at least one message")
    ids = [BOS_ID]
    for k, message in enumerate(messages):
        if "role" not in message:
            raise ValueError(f"conversation[{k}]: a message needs a 'role'")
        ids += [ROLE_ID, *message["role"].encode(), CONTENT_ID, *message_text(message).encode()]
        if not (continue_final and k == len(messages) - 1):
            ids.append(END_ID)
    if add_generation_prompt and not continue_final:
        ids += [ROLE_ID, *b"assistant", CONTENT_ID]
    return ids


def parse_chat(ids: list[int]) -> tuple[list[dict], bool]:
    """Inverse of ``chat_ids`` for ids after ``<s>``: (messages, last message left open).

    An open final assistant message with no content is a generation prompt."""
    messages, open_last, k = [], False, 0
    while k < len(ids):
        if ids[k] != ROLE_ID:
            raise ValueError("input_ids: chat ids must be <|role|> role <|content|> text <|end|>")
        try:
            mid = ids.index(CONTENT_ID, k)
        except ValueError:
            raise ValueError("input_ids: a <|role|> without <|content|>") from None
        end = ids.index(END_ID, mid) if END_ID in ids[mid:] else len(ids)
        role, text = bytes(ids[k + 1:mid]), bytes(ids[mid + 1:end])
        if any(i > 255 for i in (*role, *text)):
            raise ValueError("input_ids: unexpected special id inside a chat message")
        messages.append({"role": role.decode("utf-8", "replace"),
                         "content": text.decode("utf-8", "replace")})
        open_last = end == len(ids)
        k = end + 1
    return messages, open_last