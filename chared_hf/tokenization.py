"""``ByteTokenizer``: the ensemble's pseudo-vocabulary, one id per byte plus three specials.

Ids 0-255 are the bytes themselves; ``<s>`` (256) marks the start of a text (each member then
starts from its own start of text), ``</s>`` (257) is end of text, ``<pad>`` (258) is padding.
Built on ``tokenizers`` (a byte-level BPE with no merges), so it round-trips any UTF-8, saves as
``tokenizer.json`` and loads with ``AutoTokenizer``. Text that looks like a special token
(``"</s>"``) stays text: ``split_special_tokens=True``.

It does not know about the members' tokenizers (``token_bytes``).
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from .token_bytes import byte_level_alphabet

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
BOS_ID, EOS_ID, PAD_ID = 256, 257, 258
VOCAB_SIZE = 259


def _backend() -> Tokenizer:
    """A byte-level BPE with no merges: every byte is one token, id = byte value."""
    vocab = {char: byte for char, byte in byte_level_alphabet().items()}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([BOS, EOS, PAD])
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

    def byte_ids(self, data: bytes) -> list[int]:
        """The ids of raw bytes (any bytes, valid UTF-8 or not)."""
        return list(data)
