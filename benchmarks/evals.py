"""HumanEval and GSM8K (the first N problems) for the pair stories260K + SmolLM2 in each mode and
for each member alone, greedy, side by side on the same problems: what an ensemble writes after
a prompt that ends where a member's tokenizer would join its bytes with what follows.

Systems (``--systems``, default all): ``ensemble`` (the default, exact mode),
``ensemble-whole-prompt`` (``exact_prompt_tokens=None``: the whole prompt read over every
tokenization; GSM8K's prompts are chat renderings, read as fixed ids either way), ``paper``
(the paper mode, prompt healed), ``paper-unhealed`` (``heal_prompt=False``), ``<member>`` (the
member alone with its own ``generate``) and ``<member>-healed`` (with
``token_healing=True``).
Each system's completions go to ``benchmarks/results/evals/<benchmark>-<system>.jsonl`` as they
come (a rerun skips the problems already there) and the summary to ``evals.json``.

    python benchmarks/evals.py [--limit 40] [--benchmarks humaneval gsm8k]
        [--systems ensemble paper smollm2 smollm2-healed] [--weights 0.0014 0.9986]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from common import ASSETS, REPO, load_members

from chared_hf import CharEDModel
from chared_hf.tools import tasks

OUT = REPO / "benchmarks" / "results" / "evals"
MODES = {"ensemble": {}, "ensemble-whole-prompt": {"exact_prompt_tokens": None},
         "paper": {"marginalization": "chared"},
         "paper-unhealed": {"marginalization": "chared", "heal_prompt": False}}


def completer(system: str, members: dict, weights: list[float]):
    """The ``tasks`` completer of one system."""
    if system in MODES:
        model = CharEDModel.from_members(list(members.values()), weights=weights,
                                         **MODES[system])
        return tasks.EnsembleCompleter(model, system)
    name, _, healed = system.partition("-")
    model, tokenizer = members[name]
    return tasks.MemberCompleter(model, tokenizer, system, heal=healed == "healed")


def problems(benchmark: str, limit: int) -> list[dict]:
    if benchmark == "humaneval":
        return tasks.load_humaneval()[:limit]
    return tasks.load_gsm8k(ASSETS / "corpora" / "gsm8k-test.jsonl")[:limit]


def run(benchmark: str, system_name: str, members: dict, weights, limit: int) -> dict:
    """Every problem not yet in the system's JSON lines; the system's totals."""
    path = OUT / f"{benchmark}-{system_name}.jsonl"
    done = [json.loads(line) for line in path.open()] if path.exists() else []
    todo = problems(benchmark, limit)[len(done):]
    system = completer(system_name, members, weights) if todo else None
    with path.open("a") as f:
        for i, problem in enumerate(todo, start=len(done)):
            start = time.perf_counter()
            with torch.no_grad():
                ok, _, completion = tasks.solve(benchmark, system, problem)
            row = {"problem": i, "correct": bool(ok), "completion": completion}
            row["seconds"] = round(time.perf_counter() - start, 2)
            f.write(json.dumps(row) + "\n")
            f.flush()
            done.append(row)
    done = done[:limit]
    return {"benchmark": benchmark, "system": system_name,
            "correct": sum(r["correct"] for r in done), "problems": len(done),
            "empty": sum(not r["completion"].strip() for r in done),
            "indented": sum(r["completion"].startswith("    ") for r in done),
            "seconds": round(sum(r["seconds"] for r in done))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--benchmarks", nargs="+", default=["humaneval", "gsm8k"])
    parser.add_argument("--systems", nargs="+", default=[
        "ensemble", "paper", "paper-unhealed", "stories", "stories-healed", "smollm2",
        "smollm2-healed"])
    # The weights chared fit-weights found on the development text (benchmarks/README.md).
    parser.add_argument("--weights", type=float, nargs=2, default=[0.0014, 0.9986])
    args = parser.parse_args()
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    members = load_members(["stories", "smollm2"])
    rows = []
    for benchmark in args.benchmarks:
        for system in args.systems:
            rows.append(run(benchmark, system, members, args.weights, args.limit))
            print(json.dumps(rows[-1]), flush=True)
    summary = OUT / "evals.json"
    old = json.loads(summary.read_text()) if summary.exists() else []
    keep = {(r["benchmark"], r["system"]) for r in rows}
    summary.write_text(json.dumps([r for r in old if (r["benchmark"], r["system"]) not in keep]
                                  + rows, indent=2))


if __name__ == "__main__":
    main()
