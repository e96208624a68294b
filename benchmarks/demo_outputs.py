"""The README's demo outputs: greedy generations of the demo ensemble as shipped (the exact
mode, switching weights), of the same ensemble with fixed weights and in the paper mode (the
prompt's end healed, and not), and of each member alone with its own ``generate`` (with and
without ``token_healing=True``), on a story prompt and two code prompts; and the attribution
picture (notebooks/attribution.png) with each member's weight along a text that turns from a
story into code.

    python benchmarks/demo_outputs.py
"""

from __future__ import annotations

import torch
from common import REPO

from chared_hf import ByteTokenizer
from chared_hf.demo import load_demo
from chared_hf.tools import tasks
from chared_hf.tools.attribution import attribute
from chared_hf.tools.plotting import plot_attribution

PROMPTS = ["Once upon a time", "def parse(self, text):\n",
           'def add(a, b):\n    """Return the sum of a and b."""\n']
NEW_BYTES = 100


def own_generate(model, tokenizer, prompt: str, heal: bool) -> str:
    """The member alone: greedy with its own tokens (``heal``: Transformers' token healing of
    the prompt's last token), ``NEW_BYTES`` new bytes."""
    return tasks.MemberCompleter(model, tokenizer, "member", heal=heal).complete(
        prompt, (), NEW_BYTES)


def main() -> None:
    torch.set_num_threads(1)
    tok = ByteTokenizer()
    demo = load_demo()
    paper, literal = load_demo(marginalization="chared"), load_demo(
        marginalization="chared", heal_prompt=False)

    def ensemble(model, prompt: str) -> str:
        enc = tok(prompt, return_tensors="pt")
        out = model.generate(**enc, max_new_tokens=NEW_BYTES)
        return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)

    fixed = load_demo(weighting="fixed")
    systems = [("ensemble as shipped (exact mode, switching)", lambda p: ensemble(demo, p)),
               ("ensemble, fixed weights 0.4 / 0.6", lambda p: ensemble(fixed, p)),
               ("ensemble, paper mode (prompt healed)", lambda p: ensemble(paper, p)),
               ("ensemble, paper mode, `heal_prompt=False`", lambda p: ensemble(literal, p))]
    for m in demo.members:
        for heal in (False, True):
            name = f"{m.name} alone" + (", `token_healing=True`" if heal else "")
            systems.append((name, lambda p, m=m, h=heal: own_generate(m.model, m.tokenizer,
                                                                      p, h)))
    print("| system | " + " | ".join(_cell(p, 32) for p in PROMPTS) + " |")
    print("| --- " * (len(PROMPTS) + 1) + "|")
    for name, run in systems:
        print(f"| {name} | " + " | ".join(_cell(run(p)) for p in PROMPTS) + " |")
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


def _cell(text: str, limit: int = 44) -> str:
    """A table cell: the text's repr (newlines shown as \\n), cut at ``limit`` characters."""
    shown = repr(text)[1:-1].replace("|", "\\|")
    return f"`{shown[:limit]}…`" if len(shown) > limit else f"`{shown}`"


if __name__ == "__main__":
    main()
