"""Members on different devices and dtypes. The CUDA tests run when a GPU is present."""

from __future__ import annotations

import pytest
import torch
from conftest import asset_path, piece_tokenizer, tiny_model
from transformers import pipeline

from chared_hf import ByteTokenizer, CharEDConfig, CharEDModel

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA GPU on this machine")


@pytest.fixture(scope="module")
def tok():
    return ByteTokenizer()


def _pair(dtype=torch.float32, device="cpu"):
    ptok = piece_tokenizer(["a", "b", "c", " ", "ab", "bc", "ca", " a"])
    return tiny_model(len(ptok), seed=1, bos=1, eos=2).to(device=device, dtype=dtype), ptok


def test_members_in_different_dtypes(tok, stories):
    model = CharEDModel.from_members([_pair(torch.bfloat16), stories])
    enc = tok("Once upon a", return_tensors="pt")
    logits = model(**enc).logits
    sums = logits.exp().sum(-1)
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)
    out = model.generate(**enc, max_new_tokens=16)
    assert out.shape[1] == enc["input_ids"].shape[1] + 16


@needs_cuda
def test_members_on_cpu_and_cuda(tok, stories):
    enc = tok("Once upon a", return_tensors="pt")
    on_cpu = CharEDModel.from_members([_pair(), stories])
    mixed = CharEDModel.from_members([_pair(device="cuda"), stories])
    assert {m.model.device.type for m in mixed.members} == {"cuda", "cpu"}
    a, b = on_cpu(**enc).logits, mixed(**enc).logits
    assert torch.allclose(a.exp(), b.exp().cpu(), atol=1e-4)
    out = mixed.generate(**enc, max_new_tokens=24)
    assert bytes(i for i in out[0].tolist() if i < 256).startswith(b"Once upon a")


@needs_cuda
def test_device_map_reaches_the_members_and_the_pipeline_keeps_them(tok):
    stories = str(asset_path("models/stories260K"))
    config = CharEDConfig(members=[stories, {"name_or_path": stories, "dtype": "bfloat16"}])
    model = CharEDModel.from_pretrained(_saved(config), device_map="cuda")
    assert {m.model.device.type for m in model.members} == {"cuda"}
    assert model.hf_device_map
    gen = pipeline("text-generation", model=model, tokenizer=tok)
    text = gen("Once upon a time", max_new_tokens=20)[0]["generated_text"]
    assert text.startswith("Once upon a time") and len(text.encode()) <= 16 + 20


def _saved(config: CharEDConfig):
    import tempfile

    folder = tempfile.mkdtemp()
    config.save_pretrained(folder)
    return folder
