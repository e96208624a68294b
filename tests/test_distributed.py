"""Data parallelism for ``chared score`` and ``chared eval``: a ``torchrun`` job of two CPU
processes (gloo) gives rank 0 the result one process gives (figures to 1e-9, the same pass or
fail per problem), and ``--output`` resumes each process' finished items."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, asset_path

from chared_hf.tools.distributed import World

STORY = (REPO / "benchmarks" / "data" / "story.txt").read_text()[:1600]


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}


def _run(argv: list[str], processes: int = 1, cwd: Path | None = None) -> dict:
    """``chared ARGV --json`` in one process, or in a ``torchrun`` job; rank 0's JSON."""
    launch = [sys.executable, "-m", "chared_hf.tools.cli"]
    if processes > 1:  # the README's command: torchrun ... --no-python chared ...
        chared = shutil.which("chared", path=str(Path(sys.executable).parent))
        command = ["--no-python", chared] if chared else ["-m", "chared_hf.tools.cli"]
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                  f"--nproc_per_node={processes}", *command]
    done = subprocess.run([*launch, *argv, "--json"], env=_env(), cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, done.stdout  # rank 0 alone prints
    return json.loads(lines[0])


def test_each_process_takes_every_nth_item_and_its_own_output_file():
    world = World(rank=1, size=3)
    assert world.mine(list("abcdefg")) == [1, 4] and not world.main
    assert world.output("log.jsonl") == "log.jsonl.rank1" and World().output("x") == "x"
    assert World().gather({2: "b", 0: "a"}) == {0: "a", 2: "b"}


def test_two_processes_score_what_one_process_scores(tmp_path):
    text = tmp_path / "story.txt"
    text.write_text(STORY)
    argv = ["score", str(text), "--chunk-bytes", "200", "--max-hypotheses", "4"]
    one = _run(argv)
    two = _run([*argv, "--output", str(tmp_path / "log.jsonl")], processes=2)
    assert [r["system"] for r in two["results"]] == [r["system"] for r in one["results"]]
    for a, b in zip(one["results"], two["results"], strict=True):
        assert b["bits_per_byte"] == pytest.approx(a["bits_per_byte"], abs=1e-9, rel=0)
        assert (a["bits_per_byte_interval"] is None) == (b["bits_per_byte_interval"] is None)
        if a["bits_per_byte_interval"] is not None:
            assert b["bits_per_byte_interval"] == pytest.approx(a["bits_per_byte_interval"],
                                                                abs=1e-9, rel=0)
        assert a["zero_probability_bytes"] == b["zero_probability_bytes"]
    # each process recorded its own pieces: every other one, no piece twice
    logs = [tmp_path / f"log.jsonl.rank{r}" for r in range(2)]
    records = [list(map(json.loads, log.read_text().splitlines())) for log in logs]
    pieces = [{(rec["system"], rec["piece"]) for rec in recs if "piece" in rec}
              for recs in records]
    assert pieces[0] and pieces[1] and not pieces[0] & pieces[1]
    assert {p % 2 for _, p in pieces[0]} == {0} and {p % 2 for _, p in pieces[1]} == {1}


def test_a_resumed_output_is_not_scored_again(tmp_path):
    text, log = tmp_path / "story.txt", tmp_path / "log.jsonl"
    text.write_text(STORY[:600])
    argv = ["score", str(text), "--chunk-bytes", "200", "--output", str(log)]
    first = _run(argv)
    lines = log.read_text().splitlines()
    again = _run(argv)
    added = log.read_text().splitlines()[len(lines):]
    assert [json.loads(line).get("summary") is not None for line in added] == [True]
    for a, b in zip(first["results"], again["results"], strict=True):
        assert b["bits_per_byte"] == a["bits_per_byte"]


def test_two_processes_evaluate_what_one_process_evaluates(tmp_path):
    data = asset_path("corpora/gsm8k-test.jsonl")
    argv = ["eval", "gsm8k", "--data", str(data), "--limit", "5", "--marginalization",
            "chared"]
    one = _run([*argv, "--output", str(tmp_path / "one.jsonl")])
    two = _run([*argv, "--output", str(tmp_path / "two.jsonl")], processes=2)
    assert [(r["system"], r["correct"], r["problems"]) for r in one["results"]] == [
        (r["system"], r["correct"], r["problems"]) for r in two["results"]]

    def verdicts(paths):
        return {(rec["system"], rec["problem"]): (rec["correct"], rec["completion"])
                for path in paths for rec in map(json.loads, path.read_text().splitlines())
                if "problem" in rec}

    split = verdicts([tmp_path / f"two.jsonl.rank{r}" for r in range(2)])
    assert split == verdicts([tmp_path / "one.jsonl"]) and len(split) == 5 * 3
