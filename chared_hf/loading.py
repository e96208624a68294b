"""Members named by reference: loading them, and what a saved ensemble folder holds.

What it does:
  * ``load_member(spec, base, overrides)`` loads one member from its config entry: a Hub id or
    folder (``name_or_path``), ``revision``, ``gguf_file``, ``dtype``, ``trust_remote_code``.
    A ``name_or_path`` starting with ``./`` is relative to the ensemble's own folder (a local
    folder, or a subfolder of the ensemble's Hub repository): that is how members built in
    memory are saved. ``overrides`` (``dtype``, ``device_map``, Hub options given to
    ``CharEDModel.from_pretrained``) apply to every member.
  * ``write_remote_code(folder)`` writes the small module that ``auto_map`` points to, so that
    ``AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)`` works in a fresh
    interpreter where ``chared_hf`` is installed but not imported.

What it does not do: download anything itself (Transformers does), or decide weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

REMOTE_MODULE = "chared_remote"
AUTO_MAP = {
    "AutoConfig": f"{REMOTE_MODULE}.CharEDConfig",
    "AutoModelForCausalLM": f"{REMOTE_MODULE}.CharEDModel",
    "AutoTokenizer": [None, f"{REMOTE_MODULE}.ByteTokenizer"],
}
HUB_OPTIONS = ("cache_dir", "token", "local_files_only", "force_download")
_REMOTE_SOURCE = '''"""Written by chared_hf's save_pretrained: the classes come from the
installed package (pip install chared_hf)."""

from chared_hf.configuration import CharEDConfig
from chared_hf.modeling import CharEDModel
from chared_hf.tokenization import ByteTokenizer

__all__ = ["ByteTokenizer", "CharEDConfig", "CharEDModel"]
'''


def _dtype(value):
    """Config dtype names ("bfloat16") -> torch dtypes; "auto" and dtypes pass through."""
    if isinstance(value, str) and value != "auto":
        resolved = getattr(torch, value, None)
        if not isinstance(resolved, torch.dtype):
            raise ValueError(f"dtype: unknown torch dtype {value!r}")
        return resolved
    return value


def load_member(spec: dict, base: str | None = None, overrides: dict | None = None):
    """Load ``(model, tokenizer, reference)``; ``reference`` is None for members stored inside
    the ensemble's folder (they are saved again with the ensemble)."""
    name = spec["name_or_path"]
    kwargs = {k: spec[k] for k in ("revision", "trust_remote_code") if spec.get(k) is not None}
    if spec.get("dtype") is not None:
        kwargs["dtype"] = _dtype(spec["dtype"])
    kwargs.update({k: (_dtype(v) if k == "dtype" else v) for k, v in (overrides or {}).items()})
    reference: dict | None = dict(spec)
    if name.startswith("./"):
        if base is None:
            raise ValueError(f"members: {name!r} is relative to an ensemble folder, but none "
                             "was given (load it with CharEDModel.from_pretrained(folder))")
        reference = None
        kwargs.pop("revision", None)
        if Path(base).is_dir():
            name = str(Path(base) / name[2:])
        else:  # a Hub repository: the member is in a subfolder
            kwargs["subfolder"] = name[2:]
            name = base
    tok_kwargs = {k: v for k, v in kwargs.items() if k not in ("dtype", "device_map")}
    if spec.get("gguf_file"):
        local = Path(name) / spec["gguf_file"]
        if local.is_file():
            from .gguf import load_gguf

            model, tokenizer = load_gguf(local, dtype=kwargs.get("dtype"))
            return model, tokenizer, reference
        kwargs["gguf_file"] = tok_kwargs["gguf_file"] = spec["gguf_file"]
    model = AutoModelForCausalLM.from_pretrained(name, **kwargs).eval()
    tokenizer = AutoTokenizer.from_pretrained(name, **tok_kwargs)
    return model, tokenizer, reference


def write_remote_code(folder: str | os.PathLike) -> None:
    """The module ``auto_map`` names: it imports the installed package's classes."""
    Path(folder, f"{REMOTE_MODULE}.py").write_text(_REMOTE_SOURCE)
