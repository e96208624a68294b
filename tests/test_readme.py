"""The README's Python blocks run as copied: each on its own (no names from an earlier block),
in a fresh folder, and a block followed by a ``text`` block prints exactly that text.

A block that names the real assets (``../shared/assets/...``) reads them from
``$CHARED_ASSETS`` and is skipped, naming the file, where they are absent; every other block
runs on the demo ensemble inside the package and needs no files.
"""

from __future__ import annotations

import re

import pytest
from conftest import ASSETS, REPO

FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)
ASSET_PATH = re.compile(r"\.\./shared/assets/([\w./-]+)")


def python_blocks() -> list[tuple[str, str | None]]:
    """``(code, expected output or None)`` for every Python block of the README, in order."""
    fences = [(m.group(1), m.group(2)) for m in FENCE.finditer(
        (REPO / "README.md").read_text(encoding="utf-8"))]
    return [(code, fences[i + 1][1] if i + 1 < len(fences) and fences[i + 1][0] == "text"
             else None) for i, (lang, code) in enumerate(fences) if lang == "python"]


BLOCKS = python_blocks()


def test_the_readme_has_python_blocks_with_their_output():
    """The README's examples are here to be run (and at least the quick start shows output)."""
    assert len(BLOCKS) >= 4 and sum(out is not None for _, out in BLOCKS) >= 2


@pytest.mark.parametrize("code, expected", BLOCKS,
                         ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_a_readme_python_block_runs_as_copied(code, expected, tmp_path, monkeypatch, capsys):
    for relative in ASSET_PATH.findall(code):
        if not (ASSETS / relative).exists():
            pytest.skip(f"the README block reads {relative}, absent from CHARED_ASSETS={ASSETS}")
        if relative.endswith(".gguf"):
            pytest.importorskip("gguf", reason=f"the PyPI package gguf is needed for {relative}")
    code = ASSET_PATH.sub(lambda m: str(ASSETS / m.group(1)), code)
    monkeypatch.chdir(tmp_path)  # what a block saves lands here
    exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    if expected is not None:
        assert capsys.readouterr().out == expected


GLANCE_PROMPT = 'def add(a, b):\n    """Return the sum of a and b."""\n'
GLANCE = {  # the README's "At a glance" table: what each system writes, greedy
    "exact": "    return a + b",
    "paper, literal prompt": "`denly the surprise 10 time to the super",
    "SmolLM2 alone": "```\n\nIn this implementation, we use the `add`",
}


def test_the_readme_at_a_glance_is_what_the_systems_write(stories, smollm2):
    """Each row of the README's first table, regenerated: the pair in the default mode and in
    the paper's decoding with its literal prompt handling, and SmolLM2 with its own
    ``generate``."""
    from chared_hf import ByteTokenizer, CharEDModel

    tok, written = ByteTokenizer(), {}
    inputs = tok(GLANCE_PROMPT, return_tensors="pt")
    for system, kwargs in (("exact", {}), ("paper, literal prompt", {
            "marginalization": "chared", "heal_prompt": False})):
        model = CharEDModel.from_members([stories, smollm2], weights=[0.5, 0.5], **kwargs)
        out = model.generate(**inputs, max_new_tokens=40)
        written[system] = tok.decode(out[0, inputs["input_ids"].shape[1]:])
    model, tokenizer = smollm2
    own = tokenizer(GLANCE_PROMPT, return_tensors="pt")
    out = model.generate(**own, max_new_tokens=16, do_sample=False)
    written["SmolLM2 alone"] = tokenizer.decode(out[0, own["input_ids"].shape[1]:])
    readme = (REPO / "README.md").read_text(encoding="utf-8").replace("\\n", "\n")
    for system, text in GLANCE.items():
        assert written[system].startswith(text), (system, written[system])
        assert text in readme, system
