"""One member model as the ensemble sees it: its tokenizer's token bytes, its next-byte views,
and its token sequences in one KV cache. Nothing here knows of other members or of rows of
text (``chared_hf.decoding``)."""
