"""Print the README's results tables from ``benchmarks/results/cli/`` (``cli_results.sh``).

    python benchmarks/cli_table.py [--demo]
"""

from __future__ import annotations

import json
import sys

from common import REPO

OUT = REPO / "benchmarks" / "results" / ("cli-demo" if "--demo" in sys.argv else "cli")


def _load(name: str) -> dict | None:
    path = OUT / f"{name}.json"
    text = path.read_text() if path.exists() else ""
    return json.loads(text) if text.strip() else None  # absent, or still running


def _times() -> dict[str, str]:
    lines = (OUT / "times.txt").read_text().splitlines() if (OUT / "times.txt").exists() else []
    return dict(line.split(": ", 1) for line in lines if ": " in line)


def main() -> None:
    times = _times()
    fit = _load("fit")
    if fit:
        print(f"weights {fit['weights']} after {fit['iterations']} EM iterations "
              f"(K={fit['max_hypotheses']}), {times.get('fit')}\n")
        print("| text | system | bits/byte |\n| --- | --- | --- |")
        for r in fit["results"]:
            print(f"| {r['text']} | {r['system']} | {r['bits_per_byte']:.3f} |")
        print()
    print("| text | system | mode | bytes | bits/byte | bytes at probability 0 | s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for text in ("story", "humaneval", "gsm8k"):
        for suffix in ("", "-exact"):
            result = _load(f"score-{text}{suffix}")
            for r in (result or {}).get("results", []):
                if suffix and r["mode"] == "own":
                    continue
                print(f"| {text} | {r['system']} | {r['mode']} | {r['bytes']} | "
                      f"{r['bits_per_byte']:.3f} | {r['zero_probability_bytes']} | "
                      f"{r['seconds']} |")
    for bench, metric in (("humaneval", "pass@1"), ("gsm8k", "accuracy")):
        result = _load(bench)
        if not result:
            continue
        print(f"\n{bench} ({times.get(bench)})\n")
        print(f"| system | {metric} | correct | problems | s |\n| --- | --- | --- | --- | --- |")
        for r in result["results"]:
            print(f"| {r['system']} | {r[metric]:.3f} | {r['correct']} | {r['problems']} | "
                  f"{r['seconds']} |")


if __name__ == "__main__":
    main()
