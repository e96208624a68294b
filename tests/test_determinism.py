"""Determinism: the same seed gives the same text in fresh processes (whatever Python's hash
seed), and a batch gives each prompt the text it gets alone, in both modes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from chared_hf import ByteTokenizer
from chared_hf.demo import load_demo


def _generate_in_a_fresh_process(hash_seed: str, *flags: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "chared_hf.tools.cli", "generate", "--json",
                           "--max-new-bytes", "40", *flags, "Once upon a time"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])["text"]


def test_same_seed_same_text_across_processes():
    flags = ("--sample", "--seed", "5", "--temperature", "0.9")
    first = _generate_in_a_fresh_process("1", *flags)
    assert first == _generate_in_a_fresh_process("2", *flags)
    assert first != _generate_in_a_fresh_process("1", "--sample", "--seed", "6")


@pytest.mark.parametrize("mode", ["chared", "exact"])
def test_a_batch_gives_each_prompt_its_own_greedy_text(mode):
    model, tok = load_demo(marginalization=mode), ByteTokenizer()
    prompts = ["Once upon a time", "def parse(self, text):\n", "Tom"]
    batch = model.generate(**tok(prompts, return_tensors="pt", padding=True), max_new_tokens=24)
    for k, prompt in enumerate(prompts):
        alone = model.generate(**tok(prompt, return_tensors="pt"), max_new_tokens=24)
        assert tok.decode(batch[k], skip_special_tokens=True) == tok.decode(
            alone[0], skip_special_tokens=True)
    torch.manual_seed(0)  # nothing above may depend on the global generator


def test_from_pretrained_overrides_the_saved_config():
    exact = load_demo(marginalization="exact", max_hypotheses=3, weights=[1, 3])
    assert (exact.config.marginalization, exact.config.max_hypotheses) == ("exact", 3)
    assert exact.member_weights == [1.0, 3.0]
    with pytest.raises(ValueError, match="marginalization: expected one of"):
        load_demo(marginalization="approximate")
