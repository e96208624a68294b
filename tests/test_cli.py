"""The ``chared`` command on tiny model folders: every subcommand, its JSON and JSON-lines
output, figures checked against the Python API, and the error paths (one line, exit 2)."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import save_tiny_member
from transformers import AutoModelForCausalLM, AutoTokenizer

from chared_hf import ByteTokenizer, CharEDModel
from chared_hf.tools.cli import main
from chared_hf.tools.scoring import bits_per_byte, byte_logprobs, own_logprob, split_text

TEXT = "ab ca cab\nab c\nbca ab a\n"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("members")
    a = save_tiny_member(root / "a", ["a", "b", "c", " ", "\n", "ab", "ca", " a"], seed=3)
    b = save_tiny_member(root / "b", ["a", "b", "c", " ", "\n", "bc", "a b", "cab"], seed=4)
    return [str(a), str(b)]


def _members(folders):
    return [x for f in folders for x in ("--member", f)]


def _loaded(folder):
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    return model, AutoTokenizer.from_pretrained(folder)


def _run_json(capsys, *argv) -> dict:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_generate_streams_what_the_model_generates(folders, capsys):
    assert main(["generate", *_members(folders), "--max-new-bytes", "12", "ab"]) == 0
    streamed = capsys.readouterr().out
    ens = CharEDModel.from_members([_loaded(f) for f in folders])
    tok = ByteTokenizer()
    out = ens.generate(**tok("ab", return_tensors="pt"), max_new_tokens=12)
    assert streamed.rstrip("\n") == tok.decode(out[0], skip_special_tokens=True)
    result = _run_json(capsys, "generate", *_members(folders), "--max-new-bytes", "12",
                       "--json", "ab")
    assert "ab" + result["text"] == streamed.rstrip("\n")


@pytest.mark.parametrize(("flags", "kwargs"), [
    ([], {}),  # the default: the exact mode
    (["--marginalization", "chared"], {"marginalization": "chared"}),
    (["--marginalization", "chared", "--no-heal-prompt"],
     {"marginalization": "chared", "heal_prompt": False}),
])
def test_generate_modes_are_the_python_apis(folders, capsys, flags, kwargs):
    """Every mode flag reaches the ensemble: the text of ``from_members`` with those
    arguments (the default of both being the exact mode)."""
    prompt = "ab ca\n"
    result = _run_json(capsys, "generate", *_members(folders), *flags, "--max-new-bytes", "16",
                       "--json", prompt)
    ens = CharEDModel.from_members([_loaded(f) for f in folders], **kwargs)
    assert ens.config.marginalization == kwargs.get("marginalization", "exact")
    tok = ByteTokenizer()
    enc = tok(prompt, return_tensors="pt")
    out = ens.generate(**enc, max_new_tokens=16)
    assert result["text"] == tok.decode(out[0, enc["input_ids"].shape[1]:],
                                        skip_special_tokens=True)


def test_generate_samples_reproducibly(folders, capsys):
    argv = ["generate", *_members(folders), "--sample", "--seed", "7", "--json", "--weights",
            "0.3", "0.7", "--max-new-bytes", "20", "c"]
    assert _run_json(capsys, *argv) == _run_json(capsys, *argv)


def test_no_member_means_the_demo_ensemble(capsys):
    from chared_hf.demo import load_demo

    result = _run_json(capsys, "generate", "--max-new-bytes", "30", "--json", "Once upon a time")
    demo, tok = load_demo(), ByteTokenizer()
    out = demo.generate(**tok("Once upon a time", return_tensors="pt"), max_new_tokens=30)
    assert result["text"] == tok.decode(out[0, 17:], skip_special_tokens=True)


def test_score_reports_members_own_figures_and_the_ensemble(folders, tmp_path, capsys):
    text_file = tmp_path / "t.txt"
    text_file.write_text(TEXT)
    log = tmp_path / "log.jsonl"
    result = _run_json(capsys, "score", *_members(folders), str(text_file), "--weights", "1",
                       "3", "--json", "--output", str(log), "--chunk-bytes", "10")
    rows = {r["system"]: r for r in result["results"]}
    n = len(TEXT.encode())
    pairs = [_loaded(f) for f in folders]
    pieces = split_text(TEXT, 10)
    assert len(pieces) == 3
    for name, (model, tok) in zip(("a", "b"), pairs, strict=True):
        want = bits_per_byte(sum(own_logprob(model, tok, p) for p in pieces), n)
        assert rows[name]["bits_per_byte"] == pytest.approx(want, rel=1e-6)
    ens = CharEDModel.from_members(pairs, weights=[1, 3], marginalization="exact")  # default
    want = bits_per_byte(sum(float(byte_logprobs(ens, p).sum()) for p in pieces), n)
    assert rows["ensemble"]["bits_per_byte"] == pytest.approx(want, rel=1e-6)
    assert rows["ensemble"]["mode"] == "exact K=8 mixture"
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert sum(1 for r in lines if r.get("system") == "ensemble" and "piece" in r) == 3
    assert lines[-1]["summary"] == result["results"]


def test_fit_weights_minimises_bits_per_byte_and_matches_the_exact_ensemble(folders, tmp_path,
                                                                            capsys):
    dev, held = tmp_path / "dev.txt", tmp_path / "held.txt"
    dev.write_text("ab ab ab ca\ncab ab\n")
    held.write_text("ca ab cab\n")
    result = _run_json(capsys, "fit-weights", *_members(folders), str(dev), "--heldout",
                       str(held), "--max-hypotheses", "4", "--json")
    weights = result["weights"]
    assert sum(weights) == pytest.approx(1.0, abs=1e-3)
    dev_rows = {r["system"]: r["bits_per_byte"] for r in result["results"] if r["text"] == "dev"}
    fixed_rows = {k: v for k, v in dev_rows.items() if "bayes" not in k and "switch" not in k}
    assert dev_rows["fixed (EM)"] <= min(fixed_rows.values()) + 1e-9
    rates = result["switch_rates"]
    assert set(rates) == {"EM prior", "equal prior"} and all(0 < r <= 0.5 for r in rates.values())
    # A fitted rate is at least as good on the dev text as Bayes (rate 0) with the same prior.
    for prior in rates:
        assert dev_rows[f"switching, {prior}"] <= dev_rows[f"bayes, {prior}"] + 1e-6
    assert result["best"] == min((k for k in dev_rows if k not in ("equal weights", "a", "b")),
                                 key=dev_rows.get)
    held_rows = {r["system"]: r["bits_per_byte"] for r in result["results"]
                 if r["text"] == "heldout"}
    # Every held-out figure is what the exact ensemble with those flags gives, byte for byte;
    # the printed flags are the best system's.
    assert result["flags"].startswith("--weights ")
    equal = ["0.5", "0.5"]
    for system, extra in (("fixed (EM)", [*map(str, weights), "--weighting", "fixed"]),
                          ("bayes, equal prior", [*equal, "--weighting", "bayes"]),
                          ("switching, equal prior", [*equal, "--weighting", "switching",
                                                      "--switch-rate",
                                                      str(rates["equal prior"])])):
        scored = _run_json(capsys, "score", *_members(folders), str(held), "--json",
                           "--marginalization", "exact", "--max-hypotheses", "4",
                           "--weights", *extra)
        ensemble = next(r for r in scored["results"] if r["system"] == "ensemble")
        assert ensemble["bits_per_byte"] == pytest.approx(held_rows[system], abs=2e-3), system


def test_exact_scores_report_the_interval_the_unbounded_figure_lies_in(folders, tmp_path,
                                                                       capsys):
    """score --marginalization exact: the ensemble's bits per byte comes with the interval
    the unbounded exact mode lies in (one member; a "bayes" mixture), which holds the
    unbounded figure; fit-weights gives the members' and the "bayes" systems' intervals."""
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    for members, extra in (([folders[0]], []), (folders, ["--weighting", "bayes"])):
        argv = ["score", *_members(members), str(text), "--json", "--marginalization", "exact",
                *extra]
        rows = [next(r for r in _run_json(capsys, *argv, "--max-hypotheses", k)["results"]
                     if r["system"] == "ensemble") for k in ("1", "none")]
        pruned, unbounded = rows
        low, high = pruned["bits_per_byte_interval"]
        assert low - 1e-9 <= unbounded["bits_per_byte"] <= high + 1e-9
        assert unbounded["bits_per_byte_interval"] == pytest.approx(
            [unbounded["bits_per_byte"]] * 2, abs=1e-6)
        if len(members) == 1:
            unbounded_one = unbounded["bits_per_byte"]
    fixed = _run_json(capsys, "score", *_members(folders), str(text), "--json",
                      "--marginalization", "exact")["results"]
    assert next(r for r in fixed if r["system"] == "ensemble")["bits_per_byte_interval"] is None
    fitted = _run_json(capsys, "fit-weights", *_members(folders), str(text), "--json",
                       "--max-hypotheses", "1")["results"]
    intervals = {r["system"]: r["bits_per_byte_interval"] for r in fitted}
    assert all(intervals[s] is not None for s in ("a", "b", "bayes, equal prior"))
    assert intervals["equal weights"] is None
    assert all(low <= high for low, high in filter(None, intervals.values()))
    pruned = _run_json(capsys, "score", "--member", folders[0], str(text), "--json",
                       "--marginalization", "exact", "--prune-below", "0.05")["results"]
    low, high = next(r for r in pruned if r["system"] == "ensemble")["bits_per_byte_interval"]
    assert low - 1e-9 <= unbounded_one <= high + 1e-9
    with pytest.raises(SystemExit) as exit_:
        main(["score", "--member", folders[0], str(text), "--prune-below", "1"])
    assert exit_.value.code == 2
    assert "--prune-below: expected a number in [0, 1), got '1'" in capsys.readouterr().err


def _problems(tmp_path: Path) -> Path:
    path = tmp_path / "problems.jsonl"
    rows = [{"task_id": f"T/{i}", "prompt": "def f(x):\n", "entry_point": "f",
             "canonical_solution": "    return x\n",
             "test": "def check(c):\n    assert c(2) == 2\n"} for i in range(3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_humaneval_reports_each_member_and_the_ensemble(folders, tmp_path, capsys):
    log = tmp_path / "he.jsonl"
    result = _run_json(capsys, "eval", "humaneval", *_members(folders), "--data",
                       str(_problems(tmp_path)), "--limit", "2", "--json", "--output", str(log))
    assert [r["system"] for r in result["results"]] == ["a", "b", "ensemble"]
    assert all(r["problems"] == 2 and r["pass@1"] == r["correct"] / 2 for r in result["results"])
    records = [json.loads(line) for line in log.read_text().splitlines()]
    per_problem = [r for r in records if "completion" in r]
    assert len(per_problem) == 6
    assert all(len(r["completion"].encode()) <= 512 for r in per_problem)


def test_eval_gsm8k_reads_a_given_file(folders, tmp_path, capsys):
    data = tmp_path / "gsm.jsonl"
    data.write_text(json.dumps({"question": "What is 1+1?", "answer": "1+1=2\n#### 2"}) + "\n")
    result = _run_json(capsys, "eval", "gsm8k", *_members(folders), "--data", str(data),
                       "--json")
    assert [r["problems"] for r in result["results"]] == [1, 1, 1]
    assert all(r["accuracy"] in (0.0, 1.0) for r in result["results"])


@pytest.fixture
def files(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    (tmp_path / "ok.txt").write_text(TEXT)
    return tmp_path


ERRORS = [
    (["score", "--member", "{tmp}/missing", "{tmp}/ok.txt"],
     r"--member: '.*missing' does not exist"),
    (["score", "--member", "{tmp}/m.gguf", "{tmp}/ok.txt"], r"--member: '.*m.gguf' does not exist"),
    (["score", "{A}", "{B}", "{tmp}/ok.txt", "--weights", "1"],
     r"--weights: expected 2 weights \(one per --member\), got 1"),
    (["score", "{A}", "{B}", "{tmp}/ok.txt", "--weights", "1", "-1"],
     r"--weights: expected finite non-negative numbers"),
    (["score", "{A}", "{B}", "{tmp}/empty.txt"], r"FILE: '.*empty.txt' is empty"),
    (["score", "{A}", "{B}", "{tmp}/latin1.txt"],
     r"FILE: '.*latin1.txt' is not UTF-8 text \(byte 0xe9 at offset 3\)"),
    (["score", "{A}", "{B}", "{tmp}/none.txt"], r"FILE: cannot read '.*none.txt'"),
    (["fit-weights", "{A}", "{B}", "{tmp}/ok.txt", "--heldout", "{tmp}/empty.txt"],
     r"--heldout: '.*empty.txt' is empty"),
    (["eval", "mmlu", "{A}"], r"argument benchmark: invalid choice: 'mmlu'"),
    (["eval", "gsm8k", "{A}", "--data", "{tmp}/none.jsonl"], r"--data: no GSM8K file at"),
    (["eval", "humaneval", "{A}", "--data", "{tmp}/ok.txt"], r"problems: .* is not JSON lines"),
    (["score", "{A}", "--max-hypotheses", "0", "{tmp}/ok.txt"],
     r"argument --max-hypotheses: expected a positive integer or 'none', got '0'"),
    (["score", "{A}", "{tmp}/ok.txt", "--output", "{tmp}/no/such/dir/x.jsonl"],
     r"--output: cannot write"),
    (["generate", "{A}", "--max-new-bytes", "0", "x"], r"argument --max-new-bytes: expected a "
     "positive integer, got '0'"),
    (["score", "{tmp}/ok.txt", "--weights", "1", "2", "3"],
     r"--weights: expected 2 weights \(one per --member\), got 3"),  # the demo's two
]


@pytest.mark.parametrize(("argv", "message"), ERRORS)
def test_bad_input_is_one_line_and_exit_status_2(folders, files, capsys, argv, message):
    fill = {"tmp": str(files), "A": None, "B": None}
    args = []
    for a in argv:
        if a in ("{A}", "{B}"):
            args += ["--member", folders[a == "{B}"]]
        else:
            args.append(a.format(**fill))
    try:
        status = main(args)
    except SystemExit as exit_:  # argparse's own errors
        status = exit_.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and "Loading weights" not in line]
    assert status == 2
    assert len(lines) == 1 and lines[0].startswith("chared"), err
    assert "Traceback" not in err
    assert re.search(message, lines[0]), lines[0]


def _cli(*argv, **kwargs):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    return subprocess.Popen([sys.executable, "-m", "chared_hf.tools.cli", *argv], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_a_hub_id_that_cannot_be_reached_is_one_line(tmp_path):
    proc = _cli("generate", "--member", "nobody/no-such-model-xyz", "hi")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(
        "chared generate: error: --member: cannot load 'nobody/no-such-model-xyz'")


def test_ctrl_c_keeps_the_results_so_far(folders, tmp_path):
    data = tmp_path / "gsm.jsonl"
    row = json.dumps({"question": "What is 1+1?", "answer": "#### 2"}) + "\n"
    data.write_text(row * 400)
    log, err_file = tmp_path / "log.jsonl", tmp_path / "stderr.txt"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    with open(err_file, "w") as err_out:  # a file, not a pipe: the child never blocks on it
        proc = subprocess.Popen(
            [sys.executable, "-m", "chared_hf.tools.cli", "eval", "gsm8k", *_members(folders),
             "--data", str(data), "--output", str(log)],
            env=env, stdout=subprocess.PIPE, stderr=err_out, text=True,
            # A shell running the suite in the background ignores SIGINT, and children
            # inherit that: give the child the default, as an interactive terminal does.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and (not log.exists()
                                               or log.read_text().count("\n") < 3):
            time.sleep(0.2)
        written = log.read_text().count("\n") if log.exists() else 0
        if written < 3:
            proc.kill()
            pytest.fail(f"no 3 results within 300 s; stderr: {err_file.read_text()[-2000:]}")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    err = err_file.read_text()
    assert proc.returncode == 130, err
    assert "interrupted; results so far are in" in err and "Traceback" not in err
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert sum("completion" in r for r in records) >= 3
    assert records[-1]["interrupted"] is True
    assert "(interrupted: results so far)" in out


def test_every_subcommand_has_help(capsys):
    for command in ("generate", "score", "fit-weights", "eval"):
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0
        assert "--member" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--help"], ["generate", "--help"], ["score", "--help"],
                                  ["generate", "--max-new-bytes", "0", "x"]])
def test_help_and_bad_flags_import_neither_torch_nor_transformers(argv):
    """The ``chared`` console script parses before it imports the heavy packages: its help
    and argparse's errors come without importing torch or Transformers (what made
    ``chared --help`` take seconds); a command that runs imports them."""
    script = Path(sys.executable).with_name("chared")
    if not script.is_file():
        pytest.skip(f"the console script {script} is not installed (pip install -e .)")
    proc = subprocess.run([sys.executable, "-X", "importtime", str(script), *argv],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == (0 if "--help" in argv else 2), proc.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert "argparse" in imported and "chared_hf.tools.cli" in imported
    assert not {m for m in imported if m.split(".")[0] in ("torch", "transformers")}
    if "--help" in argv:
        assert proc.stdout.startswith("usage: chared")


def test_under_the_command_the_package_loads_when_used_and_then_registers():
    """Imported by the ``chared`` console script, ``chared_hf`` defers its names (no torch);
    the first use loads them, and with them the Auto classes' registration that
    ``import chared_hf`` gives everywhere else (docs/security.md)."""
    code = ("import sys; sys.modules['__main__'].__file__ = '/usr/local/bin/chared';"
            "import chared_hf; print('torch' in sys.modules);"
            "from chared_hf.tools import commands; model = chared_hf.CharEDModel;"
            "from transformers.models.auto.configuration_auto import CONFIG_MAPPING;"
            "print('chared' in CONFIG_MAPPING, model.__name__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["False", "True", "CharEDModel"]


def test_the_parsers_choices_are_the_packages():
    """cli.py repeats the weighting names and the default switch rate so that parsing needs no
    torch; they must agree with decoding/weighting.py."""
    from chared_hf.decoding import weighting
    from chared_hf.tools import cli

    assert cli.WEIGHTINGS == weighting.WEIGHTINGS
    assert cli.SWITCH_RATE == weighting.DEFAULT_SWITCH_RATE


def test_the_table_shows_an_interval_only_where_it_narrows_the_figure():
    """A certified interval wider than 1% of its figure (or next to an infinite figure) is
    left out of the table; a narrow one stays; the row itself (the JSON) is not changed."""
    from chared_hf.tools.commands import _useful_interval

    wide = {"bits_per_byte": 0.79, "bits_per_byte_interval": [0.0547, 2.948]}
    narrow = {"bits_per_byte": 0.79, "bits_per_byte_interval": [0.789, 0.7925]}
    infinite = {"bits_per_byte": math.inf, "bits_per_byte_interval": [1.0, 2.0]}
    assert _useful_interval(wide)["bits_per_byte_interval"] is None
    assert _useful_interval(narrow) == narrow
    assert _useful_interval(infinite)["bits_per_byte_interval"] is None
    assert wide["bits_per_byte_interval"] == [0.0547, 2.948]




def test_score_counts_every_byte_and_reports_zero_probability_as_infinite(tmp_path, capsys):
    """A byte the paper mode gives probability zero (a lossy member cannot spell "z") is not
    left out: bits per byte is infinite, the count is exact, and the warning names the
    system."""
    lossy = save_tiny_member(tmp_path / "lossy", ["a", "b", " ", "\n", "ab"], seed=5)
    text = tmp_path / "t.txt"
    text.write_text("ab za ab\nb z\n")
    paper = ["--marginalization", "chared"]
    result = _run_json(capsys, "score", "--member", str(lossy), str(text), "--json", *paper)
    row = next(r for r in result["results"] if r["system"] == "ensemble")
    logp = byte_logprobs(CharEDModel.from_members([_loaded(str(lossy))]), "ab za ab\nb z\n")
    assert int(np.isneginf(logp).sum()) == row["zero_probability_bytes"] >= 2
    assert row["bits_per_byte"] == float("inf")
    assert main(["score", "--member", str(lossy), str(text), *paper]) == 0
    captured = capsys.readouterr()
    assert "inf" in captured.out
    assert "ensemble (chared mixture) gives" in captured.err and "infinite" in captured.err


def test_weighting_flags_reach_the_ensemble(folders, tmp_path, capsys):
    """--weighting/--switch-rate give the figures of the Python API with those settings;
    bad values are one line and exit 2."""
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    result = _run_json(capsys, "score", *_members(folders), str(text), "--json",
                       "--weighting", "switching", "--switch-rate", "0.1")
    ens = CharEDModel.from_members([_loaded(f) for f in folders], weighting="switching",
                                   switch_rate=0.1, marginalization="exact")
    pieces = split_text(TEXT, 2000)
    want = bits_per_byte(sum(float(byte_logprobs(ens, p).sum()) for p in pieces),
                         len(TEXT.encode()))
    row = next(r for r in result["results"] if r["system"] == "ensemble")
    assert row["bits_per_byte"] == pytest.approx(want, rel=1e-6)
    for argv, message in (
            (["--switch-rate", "2"], "argument --switch-rate: expected a number in [0, 1], "
                                     "got '2'"),
            (["--weighting", "product-of-bayes"], "argument --weighting: invalid choice"),
            (["--combine", "product", "--weighting", "bayes"],
             "--weighting: 'bayes' needs --combine mixture")):
        try:
            code = main(["score", *_members(folders), str(text), *argv])
        except SystemExit as exit_:  # argparse's own errors
            code = exit_.code
        assert code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]  # after loading's progress bars
        assert err.startswith("chared score: error: ") and message in err, err


def test_a_prompt_that_is_not_utf8_is_one_line_naming_it():
    """A shell in another encoding hands Python bytes it cannot decode (lone surrogates):
    one line naming the argument, exit status 2, no traceback, nothing echoed."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    proc = subprocess.run([sys.executable.encode(), b"-m", b"chared_hf.tools.cli", b"generate",
                           b"caf\xe9"], env=env, capture_output=True, timeout=120)
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2 and "Traceback" not in err and not proc.stdout
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == ["chared generate: error: PROMPT: not valid UTF-8 (the prompt is read as "
                     "UTF-8 text; convert it, e.g. with iconv)"]


def test_every_option_says_what_it_does_and_its_default():
    import argparse

    from chared_hf.tools.cli import _parser

    parser = _parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command, p in sub.choices.items():
        for action in p._actions:
            if not action.option_strings or action.dest == "help":
                continue
            assert action.help, (command, action.option_strings)
            if action.default not in (None, False, True):
                assert "default" in action.help, (command, action.option_strings)
