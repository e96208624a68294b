"""``chared_hf.gguf`` without a model: argument checks, cache keys and atomic cache writes.

The real conversion (SmolLM2's GGUF file) runs in ``test_real_models.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chared_hf import gguf


def _fake_gguf(folder: Path, name: str = "tiny.gguf", content: bytes = b"GGUF" * 10) -> Path:
    path = folder / name
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("make", [
    lambda d: d / "missing.gguf",  # does not exist
    lambda d: _fake_gguf(d, "model.bin"),  # not .gguf
    lambda d: (d / "folder.gguf").mkdir() or d / "folder.gguf",  # not a file
])
def test_bad_paths_raise_value_error_naming_path(tmp_path, make):
    with pytest.raises(ValueError, match="^path: "):
        gguf.load_gguf(make(tmp_path), cache_dir=tmp_path / "cache")


def test_cache_key_follows_content_not_name(tmp_path):
    a = _fake_gguf(tmp_path, "a.gguf")
    b = _fake_gguf(tmp_path, "b.gguf")
    c = _fake_gguf(tmp_path, "c.gguf", b"GGUF" * 11)
    assert gguf._file_key(a) == gguf._file_key(b) != gguf._file_key(c)


def test_default_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(gguf.CACHE_ENV, str(tmp_path / "env"))
    assert gguf._cache_base(None) == tmp_path / "env"
    monkeypatch.delenv(gguf.CACHE_ENV)
    assert gguf._cache_base(None) == Path("~/.cache/chared_hf/gguf").expanduser()


def test_failed_conversion_leaves_no_cache(tmp_path, monkeypatch):
    def crash(source, out):
        (out / "config.json").write_text("{}")  # half written
        raise RuntimeError("killed")

    monkeypatch.setattr(gguf, "_convert", crash)
    with pytest.raises(RuntimeError, match="killed"):
        gguf.converted_folder(_fake_gguf(tmp_path), cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_conversion_runs_once(tmp_path, monkeypatch):
    calls = []

    def convert(source, out):
        calls.append(source)
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(gguf, "_convert", convert)
    path = _fake_gguf(tmp_path)
    first = gguf.converted_folder(path, cache_dir=tmp_path / "cache")
    second = gguf.converted_folder(path, cache_dir=tmp_path / "cache")
    assert first == second and first.name.startswith("tiny-") and len(calls) == 1
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [first.name]  # no temp folders
