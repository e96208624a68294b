"""Shared helpers for the benchmark scripts: asset paths, members, timing, output."""

from __future__ import annotations

import json
import os
import resource
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("CHARED_ASSETS", REPO.parent / "shared" / "assets"))
PROMPTS = [
    "Once upon a time",
    "The little dog ran to the",
    "def fibonacci(n):\n",
    "Tom and his mom went to the park. They",
    "Question: What is 12 plus 7?\nAnswer:",
]


def load_members(names: list[str]):
    """(model, tokenizer) pairs for ``stories`` and ``smollm2`` from the assets."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from chared_hf.gguf import load_gguf

    out = {}
    for name in names:
        if name == "stories":
            path = ASSETS / "models" / "stories260K"
            out[name] = (AutoModelForCausalLM.from_pretrained(path).eval(),
                         AutoTokenizer.from_pretrained(path))
        elif name == "smollm2":
            out[name] = load_gguf(ASSETS / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")
        else:
            raise ValueError(f"members: unknown benchmark member {name!r}")
    return out


def timed(fn, repeats: int):
    """Median wall time of ``repeats`` calls and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_json(name: str, payload: dict) -> Path:
    out = REPO / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2))
    return path


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    print(" | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("-|-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(_fmt(r.get(c)).ljust(w) for c, w in zip(columns, widths, strict=True)))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return "" if value is None else str(value)
