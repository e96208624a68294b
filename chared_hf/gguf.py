"""Load a causal LM from one ``.gguf`` file, through a plain Hugging Face folder kept in a cache.

What it does:
  * ``load_gguf(path)`` loads the model and tokenizer the normal Transformers way
    (``AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)`` and the same for
    ``AutoTokenizer``) the first time, converts them into a plain Hugging Face folder
    (``config.json``, float32 safetensors, tokenizer files, ``generation_config.json``) and loads
    from that folder, every time. Dequantizing a GGUF file takes tens of seconds; the folder
    loads in about a second.
  * A model loaded from a quantized GGUF file carries a ``quantization_config`` and refuses
    ``save_pretrained``; the conversion builds a plain model with
    ``AutoModelForCausalLM.from_config`` (without ``quantization_config``), loads the dequantized
    state dict into it and saves that.
  * The cache folder is written atomically: everything goes into a temporary folder next to it,
    which is renamed into place only when complete, so an interrupted conversion never leaves a
    half-written cache (at worst a stray ``.tmp-*`` folder that is never read).
  * Cache location: ``<cache_dir>/<file stem>-<key>``, where ``cache_dir`` defaults to
    ``$CHARED_CACHE`` or ``~/.cache/chared_hf/gguf`` and ``key`` is a short hash of the file's
    size and its first and last MiB (a renamed or copied file reuses its cache; a different file
    with the same name does not).

What it does not do: keep the weights quantized (the cached folder holds the dequantized float32
weights, so it uses several times the GGUF file's space and memory), download files (``path`` is
a local file), evict old cache entries, or support GGUF architectures Transformers cannot load.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

CACHE_ENV = "CHARED_CACHE"
DEFAULT_CACHE = Path("~/.cache/chared_hf/gguf")
_LAYOUT = "chared-gguf-v1"  # bump when the cached folder's layout changes
_SAMPLE = 1 << 20  # bytes hashed from each end of the file
_SOURCE_FILE = "chared_gguf_source.json"


def load_gguf(
    path: str | Path,
    cache_dir: str | Path | None = None,
    dtype: torch.dtype | str | None = None,
    device_map=None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``(model, tokenizer)`` from a ``.gguf`` file, converting it once into a cache folder.

    Args:
        path: a local ``.gguf`` file.
        cache_dir: folder that holds converted models (one sub-folder per file); default
            ``$CHARED_CACHE`` or ``~/.cache/chared_hf/gguf``.
        dtype: dtype to load the model in (e.g. ``torch.bfloat16``); default: float32, the
            dtype of the cached weights.
        device_map: where the model goes, as ``from_pretrained`` takes it (default: the CPU).

    Returns:
        The model (in eval mode) and its tokenizer, both loaded from the cached folder.

    Raises:
        ValueError: ``path`` does not exist, is not a file, or does not end in ``.gguf``.
    """
    folder = converted_folder(path, cache_dir)
    kwargs = {k: v for k, v in (("dtype", dtype), ("device_map", device_map)) if v is not None}
    model = AutoModelForCausalLM.from_pretrained(folder, **kwargs).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return model, tokenizer


def converted_folder(path: str | Path, cache_dir: str | Path | None = None) -> Path:
    """The plain Hugging Face folder for ``path``, converting the GGUF file if it is not cached."""
    source = _check_path(path)
    base = _cache_base(cache_dir)
    key = _file_key(source)
    folder = base / f"{source.stem}-{key}"
    if _is_complete(folder):
        return folder
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=base))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder
        _convert(source, tmp)
        (tmp / _SOURCE_FILE).write_text(json.dumps(
            {"layout": _LAYOUT, "file": source.name, "size": source.stat().st_size, "key": key},
            indent=2,
        ))
        try:
            os.replace(tmp, folder)  # atomic; fails if another process finished first
        except OSError:
            if not _is_complete(folder):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _check_path(path: str | Path) -> Path:
    if not isinstance(path, str | os.PathLike):
        raise ValueError(f"path: expected a path to a .gguf file, got {type(path).__name__}")
    source = Path(path).expanduser()
    if not source.exists():
        raise ValueError(f"path: {str(path)!r} does not exist")
    if not source.is_file():
        raise ValueError(f"path: {str(path)!r} is not a file")
    if source.suffix.lower() != ".gguf":
        raise ValueError(f"path: expected a .gguf file, got {source.name!r}")
    return source.resolve()


def _cache_base(cache_dir: str | Path | None) -> Path:
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_ENV) or DEFAULT_CACHE
    return Path(cache_dir).expanduser()


def _file_key(source: Path) -> str:
    """Short hash of the layout version, the file size and its first and last MiB."""
    size = source.stat().st_size
    digest = hashlib.sha256(f"{_LAYOUT}:{size}:".encode())
    with source.open("rb") as f:
        digest.update(f.read(_SAMPLE))
        if size > _SAMPLE:
            f.seek(max(_SAMPLE, size - _SAMPLE))
            digest.update(f.read(_SAMPLE))
    return digest.hexdigest()[:12]


def _is_complete(folder: Path) -> bool:
    return (folder / _SOURCE_FILE).is_file() and (folder / "config.json").is_file()


def _convert(source: Path, out: Path) -> None:
    """Dequantize ``source`` and save it as a plain (float32) Hugging Face folder in ``out``."""
    folder, name = source.parent, source.name
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    if getattr(config, "quantization_config", None) is not None:
        try:
            del config.quantization_config
        except AttributeError:
            config.quantization_config = None
    config.name_or_path = source.stem
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if k not in _tied_keys(plain)]
    if missing or unexpected:
        raise RuntimeError(
            f"path: converting {name!r} lost weights (missing {missing[:5]}, "
            f"unexpected {unexpected[:5]})"
        )
    plain.generation_config = GenerationConfig.from_dict(loaded.generation_config.to_dict())
    del loaded
    plain.save_pretrained(out)
    AutoTokenizer.from_pretrained(folder, gguf_file=name).save_pretrained(out)


def _tied_keys(model: PreTrainedModel) -> set[str]:
    """State-dict keys that share storage with another parameter (tied embeddings)."""
    seen: dict[int, str] = {}
    tied = set()
    for key, value in model.state_dict().items():
        ptr = value.data_ptr()
        if ptr in seen:
            tied.add(key)
        seen[ptr] = key
    return tied
