"""The demo ensemble that ships inside the package: a story model and a code model.

What it does: ``DEMO_PATH`` is a saved ensemble folder (``config.json`` naming its two members
by relative path, the byte tokenizer, the generation config) holding

  * ``stories260K/``: Karpathy's llama2.c stories260K (TinyStories; SentencePiece BPE with byte
    fallback, 512 tokens; MIT, see its ``LICENSE``);
  * ``pycode/``: a small Llama this project trained on Python's standard-library source with its
    own byte-level BPE tokenizer (``python -m chared_hf.demo.train``; the training text is under
    the PSF License, see its ``LICENSE``).

``load_demo()`` is ``CharEDModel.from_pretrained(DEMO_PATH)``: no network, no ``../shared``.
A story prompt reads like a story and a ``def`` prompt like code, and each member takes over
its own kind of text (``chared_hf.attribution``).

What it does not do: anything useful beyond demonstrations: both members are tiny.
"""

from __future__ import annotations

from pathlib import Path

DEMO_PATH = Path(__file__).resolve().parent


def load_demo(**kwargs):
    """The demo ensemble as a ``CharEDModel`` (keyword arguments go to ``from_pretrained``)."""
    from ..modeling import CharEDModel

    return CharEDModel.from_pretrained(DEMO_PATH, **kwargs)
