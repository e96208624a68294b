"""The README's demo outputs: greedy generations of the demo ensemble as shipped (switching
weights), of the same ensemble with fixed weights (the paper's rule) and of each member alone
on a story prompt and a code prompt, and the attribution picture (notebooks/attribution.png)
with each member's weight along a text that turns from a story into code.

    python benchmarks/demo_outputs.py
"""

from __future__ import annotations

import torch
from common import REPO

from chared_hf import ByteTokenizer, CharEDModel
from chared_hf.attribution import attribute
from chared_hf.demo import load_demo
from chared_hf.plotting import plot_attribution

PROMPTS = ["Once upon a time", "def parse(self, text):\n"]


def main() -> None:
    torch.set_num_threads(1)
    demo, tok = load_demo(), ByteTokenizer()
    pairs = [(m.model, m.tokenizer) for m in demo.members]
    fixed = CharEDModel.from_members(pairs, weights=demo.member_weights, weighting="fixed")
    systems = [(f"ensemble ({demo.config.weighting})", demo), ("ensemble (fixed)", fixed)] + [
        (m.name, CharEDModel.from_members([pair])) for m, pair in zip(demo.members, pairs,
                                                                      strict=True)]
    for prompt in PROMPTS:
        for name, model in systems:
            out = model.generate(**tok(prompt, return_tensors="pt"), max_new_tokens=100)
            print(f"{name}: {tok.decode(out[0], skip_special_tokens=True)!r}")
        print()
    # The picture: a story that turns into code, each character coloured by its members' shares.
    prompt = "Once upon a time, Lily wrote a program.\n\ndef "
    out = demo.generate(**tok(prompt, return_tensors="pt"), max_new_tokens=160)
    text = tok.decode(out[0], skip_special_tokens=True)
    path = REPO / "notebooks" / "attribution.png"
    plot_attribution(attribute(demo, text), path, width=64,
                     title="demo ensemble (switching weights): each character's share by "
                     "member; below, their weights")
    print(repr(text))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
