"""Members named by reference: loading them, and what a saved ensemble folder holds.

What it does:
  * ``load_member(spec, base, overrides, trust_remote_code)`` loads one member from its config
    entry: a Hub id or folder (``name_or_path``), ``revision``, ``gguf_file``, ``dtype``,
    ``trust_remote_code``. A ``name_or_path`` starting with ``./`` is relative to the ensemble's
    own folder (a local folder, or a subfolder of the ensemble's Hub repository): that is how
    members built in memory are saved. ``overrides`` (``dtype``, ``device_map``,
    ``use_safetensors``, Hub options given to ``CharEDModel.from_pretrained``) apply to every
    member.
  * Consent comes from the caller, never from the config (as in Transformers): a member's own
    code (an ``auto_map`` in its folder) runs only when the *caller* passes
    ``trust_remote_code`` (``True``, or a list of member references). A config entry's
    ``trust_remote_code: true`` only records that the member needs it; without the caller's
    consent loading stops before anything of the member is read, with an error that names the
    member and the flag. Weights load from safetensors only, unless the caller passes
    ``use_safetensors=False``.
  * A config read from a folder or Hub repository (``base`` given) may name members only by
    Hub id or by a ``./`` path inside that folder (no ``..``, no symbolic link out of it, no
    absolute or home path), and a ``gguf_file`` only by a plain ``.gguf`` file name.
  * ``write_remote_code(folder)`` writes the small module that ``auto_map`` points to, so that
    ``AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)`` works in a fresh
    interpreter where ``chared_hf`` is installed but not imported.

What it does not do: download anything itself (Transformers does), decide weights, or make a
member's own code safe: consenting runs it with the caller's rights.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

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


def load_member(spec: dict, base: str | None = None, overrides: dict | None = None,
                trust_remote_code: bool | Sequence[str] = False, index: int = 0,
                local_members: bool = False):
    """Load ``(model, tokenizer, reference)``; ``reference`` is None for members stored inside
    the ensemble's folder (they are saved again with the ensemble).

    ``base`` is the ensemble's folder or Hub repository when the config was read from one
    (its member references are then checked, see the module docstring); ``trust_remote_code``
    is the caller's consent to run member code: a bool, or the ``name_or_path`` of each member
    allowed; ``local_members`` the caller's consent for absolute or home paths in that config
    (folders on this machine outside the ensemble's); ``index`` numbers the member in error
    messages.
    """
    name, kwargs, reference, label, consent = _where(spec, base, overrides, trust_remote_code,
                                                     index, local_members)
    tok_kwargs = {k: v for k, v in kwargs.items()
                  if k not in ("dtype", "device_map", "use_safetensors")}
    gguf = spec.get("gguf_file")
    if gguf:
        local = Path(name) / gguf
        if local.is_file():
            from .gguf import load_gguf

            _inside(Path(name), gguf, label)
            model, tokenizer = load_gguf(local, dtype=kwargs.get("dtype"),
                                         device_map=kwargs.get("device_map"))
            return model, tokenizer, reference
        kwargs["gguf_file"] = tok_kwargs["gguf_file"] = gguf
    else:
        kwargs.setdefault("use_safetensors", True)  # pickled weights only if the caller says
    # Step 3: Transformers loads it; its own refusal of custom code is reworded for members.
    try:
        model = AutoModelForCausalLM.from_pretrained(name, **kwargs).eval()
        tokenizer = AutoTokenizer.from_pretrained(name, **tok_kwargs)
    except ValueError as err:
        if "trust_remote_code" in str(err) and not consent:
            raise ValueError(
                f"{label}: this member's folder contains its own code (auto_map), which runs "
                "only with trust_remote_code=True (on the command line --trust-remote-code); "
                "review it before allowing it") from None
        raise
    except OSError as err:
        missing = ("no file named", "does not appear to have a file named")
        if kwargs.get("use_safetensors") and any(m in str(err) for m in missing):
            raise OSError(
                f"{label}: no safetensors weights; loading pickled weights (pytorch_model.bin) "
                "needs the caller's use_safetensors=False") from None
        raise
    return model, tokenizer, reference


PLANS = ("auto", "balanced", "balanced_low_0", "sequential")  # Transformers' own planners


def check_devices(device_map, label: str) -> None:
    """A ``device_map`` that names only devices this machine has (a device, one of
    Transformers' planners, or a dict of them), else an error starting with ``label``."""
    places = device_map.values() if isinstance(device_map, dict) else [device_map]
    for place in places:
        if isinstance(place, str) and place in (*PLANS, "disk", "meta"):
            continue
        try:  # an integer is a CUDA device's index, as in Transformers' device maps
            device = torch.device("cuda", place) if isinstance(place, int) else torch.device(place)
        except (RuntimeError, TypeError):
            raise ValueError(f"{label}: {place!r} is not a device") from None
        count = {"cuda": torch.cuda.device_count() if torch.cuda.is_available() else 0,
                 "mps": int(torch.backends.mps.is_available()), "cpu": 1}.get(device.type)
        if count is None:
            continue  # another accelerator: Transformers checks it
        if count == 0 or (device.index or 0) >= count:
            raise ValueError(f"{label}: {place!r} names a device this machine does not have "
                             f"({count} {device.type} device{'s' if count != 1 else ''})")


def member_config(spec: dict, base: str | None = None, overrides: dict | None = None,
                  trust_remote_code: bool | Sequence[str] = False, index: int = 0,
                  local_members: bool = False):
    """The member's Transformers config and the dtype it will load in, read the way
    ``load_member`` reads the member (for planning where members go, ``placement``)."""
    from transformers import AutoConfig

    name, kwargs, _, label, _ = _where(spec, base, overrides, trust_remote_code, index,
                                       local_members)
    gguf = spec.get("gguf_file")
    if gguf and (Path(name) / gguf).is_file():  # a local GGUF file: its converted folder
        from .gguf import converted_folder

        name, gguf = str(converted_folder(_inside(Path(name), gguf, label))), None
    options = {k: v for k, v in kwargs.items()
               if k in ("revision", "subfolder", "trust_remote_code", "cache_dir", "token",
                        "local_files_only", "force_download")}
    config = AutoConfig.from_pretrained(name, **options, **({"gguf_file": gguf} if gguf else {}))
    dtype = kwargs.get("dtype")
    if dtype == "auto" or dtype is None:
        dtype = getattr(config, "dtype", None)
    return config, _dtype(dtype) if isinstance(dtype, str) else dtype


def _where(spec: dict, base: str | None, overrides: dict | None,
           trust_remote_code: bool | Sequence[str], index: int, local_members: bool):
    """Where a member's files are and how to load them: ``(name, from_pretrained kwargs,
    reference, label, consent)``, after the caller's consent and the references are checked
    (``load_member``'s steps 1 and 2)."""
    name = spec["name_or_path"]
    label = f"members[{index}] ({name!r})"
    consent = allows_code(trust_remote_code, name)
    # Step 1: the config's word is a record, never consent; stop before touching the member.
    if spec.get("trust_remote_code") and not consent:
        raise ValueError(
            f"{label}: the config says this member needs its own code to run; pass "
            "trust_remote_code=True (on the command line --trust-remote-code) to allow it, "
            "after reviewing that code")
    if base is not None:
        _check_reference(name, label, local_members)
    gguf = spec.get("gguf_file")
    if gguf is not None:
        _check_gguf_name(gguf, label)
    kwargs: dict = {"trust_remote_code": consent}
    if spec.get("revision") is not None:
        kwargs["revision"] = spec["revision"]
    if spec.get("dtype") is not None:
        kwargs["dtype"] = _dtype(spec["dtype"])
    if spec.get("device_map") is not None:
        kwargs["device_map"] = spec["device_map"]
    # The caller's arguments win over the config's.
    kwargs.update({k: (_dtype(v) if k == "dtype" else v) for k, v in (overrides or {}).items()})
    if kwargs.get("device_map") is not None:
        check_devices(kwargs["device_map"], f"{label}: device_map")
    # Step 2: a member inside the ensemble's folder ("./x"): never outside that folder.
    reference: dict | None = dict(spec)
    if name.startswith("./"):
        if base is None:
            raise ValueError(f"members: {name!r} is relative to an ensemble folder, but none "
                             "was given (load it with CharEDModel.from_pretrained(folder))")
        reference = None
        kwargs.pop("revision", None)
        if Path(base).is_dir():
            name = str(_inside(Path(base), name[2:], label))
        else:  # a Hub repository: the member is in a subfolder
            kwargs["subfolder"] = name[2:]
            name = base
    return name, kwargs, reference, label, consent


def allows_code(trust_remote_code: bool | Sequence[str] | None, name: str) -> bool:
    """The caller's consent for the member ``name``: ``True`` allows every member, a list
    allows the members whose ``name_or_path`` it holds.

    >>> allows_code(["org/a"], "org/a"), allows_code(["org/a"], "org/b"), allows_code(True, "x")
    (True, False, True)
    """
    if trust_remote_code is None or isinstance(trust_remote_code, bool):
        return bool(trust_remote_code)
    if isinstance(trust_remote_code, str) or not isinstance(trust_remote_code, Iterable):
        raise ValueError("trust_remote_code: expected True, False or a list of member "
                         f"references (name_or_path), got {trust_remote_code!r}")
    return name in set(trust_remote_code)


def _check_reference(name: str, label: str, local_members: bool) -> None:
    """A config read from a folder or the Hub names members by Hub id or ``./`` inside it
    (or, with the caller's ``local_members=True``, by absolute or home path)."""
    rel = name[2:] if name.startswith("./") else None
    absolute = name.startswith(("/", "~", "\\")) or (len(name) > 1 and name[1] == ":")
    parts = PurePosixPath((rel if rel is not None else name).replace("\\", "/")).parts
    if (absolute and not local_members) or name in (".", "..") or ".." in parts or (
            rel is not None and (not rel or rel.startswith("/"))):
        raise ValueError(
            f"{label}: a config read from a folder or the Hub may name members only by Hub id "
            "or by a './' path inside its own folder; pass local_members=True to allow "
            "absolute paths to folders on this machine")


def _check_gguf_name(gguf, label: str) -> None:
    if (not isinstance(gguf, str) or not gguf.lower().endswith(".gguf")
            or PurePosixPath(gguf.replace("\\", "/")).name != gguf or gguf.startswith(".")):
        raise ValueError(f"{label}: gguf_file must be a plain '.gguf' file name in the "
                         f"member's folder, got {gguf!r}")


def _inside(folder: Path, rel: str, label: str) -> Path:
    """``folder / rel``, refused where it resolves (symbolic links followed) outside
    ``folder``."""
    root = folder.resolve()
    target = (folder / rel).resolve()
    if target != root and root not in target.parents:
        raise ValueError(f"{label}: {rel!r} leads outside the ensemble's folder {str(folder)!r}")
    return target


def write_remote_code(folder: str | os.PathLike) -> None:
    """The module ``auto_map`` names: it imports the installed package's classes."""
    Path(folder, f"{REMOTE_MODULE}.py").write_text(_REMOTE_SOURCE)
