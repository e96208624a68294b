"""Regenerate the measured parts of ``benchmarks/README.md``: one section per question, each
the output of one command, stamped with the commit, the machine and the date it ran on.

The README keeps its prose (the question, how to read the table) outside markers; between
``<!-- regenerate:ID -->`` and ``<!-- /regenerate:ID -->`` this script writes the command,
where and when it ran, how long it took, the machine's load average when it started and ended, and
what the command printed. Nothing else in the README is touched, so a section can be rerun
alone (``python benchmarks/regenerate.py overhead``) and the others keep their stamps.

It does not judge the figures (the prose around the markers says what they mean and does not
quote them), and it does not run anything the list below does not name.

    python benchmarks/regenerate.py                 # every section, one after another
    python benchmarks/regenerate.py overhead batch  # these sections only
    python benchmarks/regenerate.py --list          # the sections and their commands
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# id -> the command (run from the repository's root with this interpreter), in README order.
SECTIONS: dict[str, str] = {
    "demo": "benchmarks/demo_outputs.py",
    "evals": "benchmarks/evals.py --limit 40 --benchmarks humaneval",
    "weighting-demo": "benchmarks/weighting.py --members demo --repeats 1",
    "weighting": "benchmarks/weighting.py --members pair --repeats 1",
    "generation": ("benchmarks/generation.py --new-bytes 128 --parts main exact --exact-prompt all "
                   "--exact-bytes 128 --no-unbounded"),
    "batch": "benchmarks/batch.py",
    "overhead": "benchmarks/overhead.py --members pair --repeats 3",
    "scoring": "benchmarks/scoring.py --corpus-exact --repeats 1 --exact-repeats 3",
    "genlm": "benchmarks/genlm_compare.py --bytes 300",
    "memory": "benchmarks/memory.py",
    "long-run": "benchmarks/long_run.py",
    "lm-eval": "benchmarks/lm_eval_check.py",
    "views": "benchmarks/view_precision.py --bytes 1500",
    "data-parallel": "benchmarks/data_parallel.py --bytes 3000 --chunk-bytes 250 --repeats 3",
}


def machine() -> str:
    """The CPU model, its cores and the memory, e.g. ``AMD EPYC, 2 cores, 24 GB``."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M)
        model = names[0].strip() if names else model
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{model}, {os.cpu_count()} cores, {memory:.0f} GB, {platform.system()}"


def commit() -> str:
    """The short commit of the code that runs, marked where the package or the benchmarks
    differ from it."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                          capture_output=True, text=True, check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "chared_hf", "benchmarks"],
                           cwd=REPO, capture_output=True, text=True, check=True).stdout
    changed = [line for line in dirty.splitlines() if not line.endswith("README.md")]
    return head + (" with uncommitted changes" if changed else "")


def run(section: str) -> str:
    """Run one section's command; return the block to put between its markers."""
    command = SECTIONS[section]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    done = subprocess.run([sys.executable, *shlex.split(command)], cwd=REPO, env=env,
                          capture_output=True, text=True)
    minutes = (time.perf_counter() - start) / 60
    if done.returncode != 0:
        raise SystemExit(f"{section}: `{command}` exited {done.returncode}:\n{done.stderr}")
    stamp = (f"`python {command}` · commit {commit()} · {machine()} · "
             f"{datetime.date.today().isoformat()} · {minutes:.1f} min · "
             f"load average {load:.2f} when it started, {os.getloadavg()[0]:.2f} when it ended")
    return f"{stamp}\n\n```text\n{done.stdout.rstrip()}\n```\n"


def replace(readme: Path, section: str, block: str) -> None:
    """Put ``block`` between the section's markers, under a lock (two runs may share it)."""
    begin, end = f"<!-- regenerate:{section} -->", f"<!-- /regenerate:{section} -->"
    with open(readme, "r+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        text = handle.read()
        if begin not in text or end not in text:
            raise SystemExit(f"{readme} has no markers for section {section!r}")
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1]
        handle.seek(0)
        handle.write(f"{head}{begin}\n{block}{end}{tail}")
        handle.truncate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sections", nargs="*", metavar="SECTION",
                        help="sections to rerun (default: all, in order)")
    parser.add_argument("--readme", type=Path, default=REPO / "benchmarks" / "README.md",
                        help="the file whose markers are rewritten (default: %(default)s)")
    parser.add_argument("--list", action="store_true", help="print the sections and exit")
    args = parser.parse_args()
    if args.list:
        for section, command in SECTIONS.items():
            print(f"{section:14} python {command}")
        return
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown SECTION {', '.join(unknown)}; --list shows them")
    for section in args.sections or list(SECTIONS):
        print(f"{section}: python {SECTIONS[section]}", flush=True)
        replace(args.readme, section, run(section))


if __name__ == "__main__":
    main()
