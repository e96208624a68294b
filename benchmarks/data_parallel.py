"""``chared score`` in one process against a ``torchrun`` job of two processes (gloo), one torch
thread each, on the same text: wall time (members loaded, text scored, results gathered) and
whether rank 0's figures equal the one process' (to 1e-9).

stories260K + SmolLM2-135M-Instruct (the GGUF in the assets), the exact mode (K=8), the first
``--bytes`` of ``benchmarks/data/story.txt`` in pieces of ``--chunk-bytes``; medians of
``--repeats``.

    python benchmarks/data_parallel.py [--bytes 6000] [--chunk-bytes 500] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ASSETS, REPO, print_table, write_json


def run(argv: list[str], processes: int) -> tuple[float, dict]:
    launch = [sys.executable, "-m", "chared_hf.tools.cli"]
    if processes > 1:
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                  f"--nproc_per_node={processes}", "-m", "chared_hf.tools.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run([*launch, *argv, "--json"], env=env, capture_output=True, text=True,
                          check=True)
    seconds = time.perf_counter() - start
    line = next(line for line in done.stdout.splitlines() if line.startswith("{"))
    return seconds, json.loads(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bytes", type=int, default=6000)
    parser.add_argument("--chunk-bytes", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    text = (REPO / "benchmarks" / "data" / "story.txt").read_text()[:args.bytes]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "text.txt"
        path.write_text(text)
        argv = ["score", str(path), "--chunk-bytes", str(args.chunk_bytes),
                "--member", str(ASSETS / "models" / "stories260K"),
                "--member", str(ASSETS / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")]
        runs = {1: [], 2: []}
        for _ in range(args.repeats):
            for processes in (1, 2):
                runs[processes].append(run(argv, processes))
    one, two = (statistics.median(s for s, _ in runs[p]) for p in (1, 2))
    same = all(abs(a["bits_per_byte"] - b["bits_per_byte"]) <= 1e-9
               for (_, x), (_, y) in zip(runs[1], runs[2], strict=True)
               for a, b in zip(x["results"], y["results"], strict=True))
    rows = [{"processes": 1, "seconds": round(one, 2), "ratio": 1.0},
            {"processes": 2, "seconds": round(two, 2), "ratio": round(two / one, 3),
             "same_figures": same}]
    print_table(rows, ["processes", "seconds", "ratio", "same_figures"])
    print("figures:", [(r["system"], r["bits_per_byte"]) for r in runs[1][0][1]["results"]])
    write_json("data-parallel", {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
