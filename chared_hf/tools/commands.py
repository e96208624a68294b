"""The ``chared`` commands behind the command line (``cli.py`` parses, this module runs):
loading members, the ensemble, generating, scoring, fitting weights and evaluating, and the
report of results (JSON lines to ``--output``, resumed; a table or JSON at the end).

It imports torch and Transformers, so ``cli.py`` imports it only once a command runs; it does
not parse arguments.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import TextStreamer, set_seed
from transformers.utils import logging as hf_logging

from .. import loading
from ..configuration import check_weights
from ..decoding.weighting import DEFAULT_SWITCH_RATE
from ..modeling import CharEDModel
from ..tokenization import ByteTokenizer
from . import distributed, scoring, tasks
from .distributed import World


class CLIError(ValueError):
    """Bad input to the command line: printed as one line, exit status 2."""


# -- members and options ---------------------------------------------------------------------
def load_member(ref: str, trust_remote_code: bool = False):
    """A (model, tokenizer) pair from a Hub id, a model folder, or a ``.gguf`` file; the
    member's own code runs only with ``--trust-remote-code``."""
    path = Path(ref).expanduser()
    looks_local = path.suffix == ".gguf" or ref.startswith(("/", ".", "~")) or ref.count("/") > 1
    if looks_local and not path.exists():
        raise CLIError(f"--member: {ref!r} does not exist (expected a model folder, a .gguf "
                       "file or a Hub id)")
    # A local path goes in resolved: the loader reads "./x" as relative to an ensemble folder.
    name = str(path.resolve()) if path.exists() else ref
    spec = ({"name_or_path": str(path.resolve().parent), "gguf_file": path.name}
            if path.suffix == ".gguf" else {"name_or_path": name})
    try:
        model, tokenizer, _ = loading.load_member(spec, trust_remote_code=trust_remote_code)
        return model, tokenizer
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        first = re.sub(r"^members\[\d+\] \(.*?\): ", "", first).replace(
            "trust_remote_code=True (on the command line --trust-remote-code)",
            "--trust-remote-code")
        raise CLIError(f"--member: cannot load {ref!r}: {first}") from None


def load_members(args, world: World | None = None) -> tuple[list[str], list[tuple]]:
    """Names and (model, tokenizer) pairs of ``--member``, or of the demo ensemble when none
    is given (its weights become the default ``--weights``); in a ``torchrun`` job on a
    machine with GPUs, on this process' GPU."""
    device = world.device() if world is not None else None
    if not args.member:
        from ..demo import load_demo

        demo = load_demo()
        if args.weights is None:
            args.weights = list(demo.member_weights)
        if args.weighting is None and args.combine == "mixture":  # product: fixed only
            args.weighting = demo.config.weighting
            if args.switch_rate is None:
                args.switch_rate = demo.config.switch_rate
        _default_weighting(args)
        pairs = [(m.model, m.tokenizer) for m in demo.members]
        names = [m.name for m in demo.members]
    else:
        _default_weighting(args)
        names = [member_name(ref) for ref in args.member]
        pairs = [load_member(ref, args.trust_remote_code) for ref in args.member]
    if device is not None:
        pairs = [(model.to(device), tokenizer) for model, tokenizer in pairs]
    return names, pairs


def _default_weighting(args) -> None:
    args.weighting = args.weighting or "fixed"
    args.switch_rate = DEFAULT_SWITCH_RATE if args.switch_rate is None else args.switch_rate


def _member_count(args) -> int:
    if args.member:
        return len(args.member)
    from ..configuration import CharEDConfig
    from ..demo import DEMO_PATH

    return len(CharEDConfig.from_pretrained(DEMO_PATH).members)


def member_name(ref: str) -> str:
    path = Path(ref)
    return path.stem if path.suffix == ".gguf" else (path.name or ref)


# -- output ----------------------------------------------------------------------------------
class Report:
    """Results as they come: JSON lines to ``--output`` (flushed each time) and a summary.

    An ``--output`` file that exists already is resumed: the items it records (a scored piece,
    a solved problem) are taken from it instead of being computed again, and new lines are
    appended. In a ``torchrun`` job each process keeps its own file (``World.output``) and
    only rank 0 prints."""

    KEY = ("system", "mode", "piece", "bytes", "benchmark", "problem")  # what names an item

    def __init__(self, args, world: World | None = None):
        self.args, self.rows, self.extra = args, [], {}
        self.world = world or World()
        self.file, self.done = None, {}
        path = self.world.output(args.output)
        if path:
            try:
                if Path(path).is_file():  # resume: the items recorded before
                    for line in Path(path).read_text(encoding="utf-8").splitlines():
                        fields = json.loads(line) if line.strip() else {}
                        if "summary" not in fields:
                            self.done[self._key(fields)] = fields
                self.file = open(path, "a", encoding="utf-8")
            except OSError as err:
                raise CLIError(f"--output: cannot write {path!r} ({err.strerror})") from None
            except json.JSONDecodeError:
                raise CLIError(f"--output: {path!r} is not a file of JSON lines written by "
                               "chared; give another path") from None

    def _key(self, fields: dict) -> tuple:
        return tuple(fields.get(k) for k in self.KEY)

    def recorded(self, **fields) -> dict | None:
        """The record of the item ``fields`` names, from a resumed ``--output`` file."""
        return self.done.get(self._key(fields))

    def record(self, **fields) -> None:
        if self.file:
            self.file.write(json.dumps(fields, ensure_ascii=False) + "\n")
            self.file.flush()

    def summary(self, rows: list[dict], interrupted: bool = False, **extra) -> None:
        """Print the summary (a table, or JSON with ``--json``) and record it (rank 0)."""
        if not self.world.main:
            return
        self.record(summary=rows, interrupted=interrupted, **extra)
        if self.args.json:
            print(json.dumps({"command": self.args.command, "results": rows,
                              "interrupted": interrupted, **extra}, ensure_ascii=False))
            return
        rows = [_useful_interval(row) for row in rows]
        if rows:
            keys = [k for k in rows[0] if k != INTERVAL or any(r.get(k) for r in rows)]
            print(" | ".join(keys))
            for row in rows:
                # "-": does not apply, or (an interval) too wide to tell anything
                print(" | ".join("-" if row.get(k) is None else _fmt(row[k]) for k in keys))
        for key, value in extra.items():
            print(f"{key}: {_fmt(value)}")
        if interrupted:
            print("(interrupted: results so far)")

    def close(self) -> None:
        if self.file:
            self.file.close()


INTERVAL = "bits_per_byte_interval"
USEFUL_WIDTH = 0.01  # the table shows an interval no wider than 1% of its figure


def _useful_interval(row: dict) -> dict:
    """``row`` for the table: the certified interval only where it is narrower than
    ``USEFUL_WIDTH`` of the figure (a wider one bounds what pruning could have cost, but says
    little about the figure itself; ``--json`` and ``--output`` keep it)."""
    interval, figure = row.get(INTERVAL), row.get("bits_per_byte")
    if interval is None or (figure and math.isfinite(figure)
                            and interval[1] - interval[0] <= USEFUL_WIDTH * figure):
        return row
    return {**row, INTERVAL: None}


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return " ".join(_fmt(v) for v in value)
    return str(value)


def _progress(total: int, desc: str):
    return tqdm(total=total, desc=desc, file=sys.stderr, disable=None, leave=False)


def read_text(path: str, argument: str) -> str:
    """A non-empty UTF-8 text file, or a one-line error naming the argument."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise CLIError(f"{argument}: cannot read {path!r} ({err.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise CLIError(f"{argument}: {path!r} is not UTF-8 text (byte 0x{data[err.start]:02x} "
                       f"at offset {err.start})") from None
    if not text:
        raise CLIError(f"{argument}: {path!r} is empty")
    return text


# -- commands --------------------------------------------------------------------------------
def _ensemble(args, members) -> CharEDModel:
    return CharEDModel.from_members(members, weights=args.weights, combine=args.combine,
                                    marginalization=args.marginalization,
                                    max_hypotheses=args.max_hypotheses,
                                    prune_below=args.prune_below,
                                    weighting=args.weighting, switch_rate=args.switch_rate,
                                    heal_prompt=args.heal_prompt,
                                    exact_prompt_tokens=args.exact_prompt_tokens)


def _check_weights_early(args) -> None:
    """Catch bad weights before loading any model."""
    if args.combine == "product" and args.weighting not in (None, "fixed"):
        raise CLIError(f"--weighting: {args.weighting!r} needs --combine mixture (a product "
                       "of experts has no posterior over members)")
    if args.weights is not None:
        try:
            check_weights(args.weights, _member_count(args))
        except ValueError as err:
            raise CLIError("--" + str(err).replace("member)", "--member)")) from None


def _generate(args, report: Report) -> None:
    model = _ensemble(args, load_members(args)[1])
    tok = ByteTokenizer()
    set_seed(args.seed)
    sampling = dict(do_sample=True, temperature=args.temperature, top_p=args.top_p, top_k=0)
    streamer = None if args.json else TextStreamer(tok, skip_prompt=True,
                                                   skip_special_tokens=True)
    if streamer:
        sys.stdout.write(args.prompt)
    ids = tok(args.prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=args.max_new_bytes, streamer=streamer,
                             **(sampling if args.sample else {}))
    text = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    report.record(prompt=args.prompt, text=text)
    if args.json:
        print(json.dumps({"command": "generate", "prompt": args.prompt, "text": text},
                         ensure_ascii=False))


def _score(args, report: Report) -> None:
    text = read_text(args.file, "FILE")
    names, members = load_members(args, report.world)
    model = _ensemble(args, members)
    pieces = scoring.split_text(text, args.chunk_bytes)
    total = len(text.encode())
    rows: list[dict] = []
    try:
        for name, (m, t) in zip(names, members, strict=True):
            rows.append(_score_system(report, name, "own", pieces, total,
                                      lambda p, m=m, t=t: (scoring.own_logprob(m, t, p), 0,
                                                           None)))
        rows.append(_score_system(report, "ensemble", _mode(args), pieces, total,
                                  lambda p: _ensemble_score(model, p)))
    except KeyboardInterrupt:
        report.summary(rows, interrupted=True, file=args.file)
        raise
    report.summary(rows, file=args.file)
    for row in rows if report.world.main else []:
        if row["zero_probability_bytes"]:
            print(f"chared score: {row['system']} ({row['mode']}) gives "
                  f"{row['zero_probability_bytes']} of {row['bytes']} bytes probability zero, "
                  "so its bits per byte is infinite; --marginalization exact gives every byte "
                  "a member can spell a probability", file=sys.stderr)


def _mode(args) -> str:
    if args.marginalization == "exact":
        return f"exact K={args.max_hypotheses or 'unbounded'} {args.combine}"
    return f"chared {args.combine}"


def _ensemble_score(model, piece: str) -> tuple[float, int, tuple[float, float] | None]:
    """Nats, zero-probability bytes and (exact mode) certified bounds of one piece."""
    if model.config.marginalization != "exact":
        return (*_finite_sum(scoring.byte_logprobs(model, piece)), None)
    result = scoring.exact_score(model, piece)
    return (*_finite_sum(result.byte_logprobs), result.bounds)


def _finite_sum(logp: np.ndarray) -> tuple[float, int]:
    """Total log-probability (``-inf`` if any byte has probability zero) and how many do."""
    return float(logp.sum()), int(np.isneginf(logp).sum())


def _score_system(report: Report, name: str, mode: str, pieces, total: int, fn) -> dict:
    """Score every piece with ``fn`` -> (nats, zero-probability bytes, bounds or None); one
    row (rank 0; in a ``torchrun`` job each process scores its share of the pieces). Every
    byte counts: one of probability zero makes bits per byte infinite (the count says how
    many). With bounds for every piece (the exact mode), the row has the interval of bits per
    byte the unbounded exact mode lies in. Pieces a resumed ``--output`` recorded are not
    scored again."""
    start, world, found = time.perf_counter(), report.world, {}
    mine = world.mine(pieces)
    with _progress(sum(len(pieces[i].encode()) for i in mine), f"{name} ({mode})") as bar:
        for i in mine:
            size = len(pieces[i].encode())
            done = report.recorded(system=name, mode=mode, piece=i, bytes=size)
            if done is None:
                n, z, b = fn(pieces[i])
                report.record(system=name, mode=mode, piece=i, bytes=size, nats=n,
                              zero_probability_bytes=z, bounds=b)
            else:
                n, z, b = done["nats"], done["zero_probability_bytes"], done["bounds"]
            found[i] = (n, z, b)
            bar.update(size)
    found = world.gather(found)
    if found is None:
        return {}
    nats, zero, bounds = 0.0, 0, [0.0, 0.0]
    for i in range(len(pieces)):  # in the pieces' order: the sums of one process
        n, z, b = found[i]
        nats, zero = nats + n, zero + z
        bounds = None if b is None or bounds is None else [bounds[0] + b[0], bounds[1] + b[1]]
    return {"system": name, "mode": mode, "bytes": total,
            "bits_per_byte": scoring.bits_per_byte(nats, total),
            "bits_per_byte_interval": _interval(bounds, total),
            "zero_probability_bytes": zero, "seconds": round(time.perf_counter() - start, 2)}


def _interval(bounds, n_bytes: int) -> list[float] | None:
    """Log-probability bounds (lower, upper) -> bits per byte ``[lower, upper]``."""
    if bounds is None:
        return None
    return [scoring.bits_per_byte(bounds[1], n_bytes), scoring.bits_per_byte(bounds[0], n_bytes)]


def _fit_weights(args, report: Report) -> None:
    dev = read_text(args.file, "DEV_FILE")
    heldout = read_text(args.heldout, "--heldout") if args.heldout else None
    names, members = load_members(args)
    exact = scoring.exact_members(members, args.max_hypotheses, args.prune_below)
    init = None if args.weights is None else np.asarray(args.weights, dtype=np.float64)
    dev_logp, dev_pieces, dev_bounds = _member_byte_logprobs(report, "dev", exact, names,
                                                             dev, args.chunk_bytes)
    # Fixed weights by EM; then, for each prior (EM's weights, equal weights), the switch
    # rate by likelihood. Every figure is what the exact ensemble with those flags gives.
    weights, iterations = scoring.fit_mixture_weights(dev_logp, init=init)
    priors = {"EM prior": weights, "equal prior": np.full(len(names), 1.0 / len(names))}
    rates = {label: scoring.fit_switch_rate(dev_logp, prior, dev_pieces)
             for label, prior in priors.items()}
    systems = _weighting_systems(priors, rates)
    report.record(weights=weights.tolist(), iterations=iterations, switch_rates=rates)
    rows = _mixture_rows("dev", dev_logp, dev_pieces, dev_bounds, names, systems)
    if heldout is not None:
        held_logp, held_pieces, held_bounds = _member_byte_logprobs(
            report, "heldout", exact, names, heldout, args.chunk_bytes)
        rows += _mixture_rows("heldout", held_logp, held_pieces, held_bounds, names, systems)
    dev_rows = {r["system"]: r["bits_per_byte"] for r in rows if r["text"] == "dev"}
    best = min(systems, key=lambda system: dev_rows[system])
    prior, rule, rate = systems[best]
    flags = "--weights " + " ".join(f"{w:.4f}" for w in prior) + f" --weighting {rule}"
    flags += f" --switch-rate {rate:.4g}" if rule == "switching" else ""
    report.summary(rows, weights=[round(float(w), 4) for w in weights], iterations=iterations,
                   switch_rates={k: float(f"{v:.4g}") for k, v in rates.items()},
                   best=best, flags=flags, max_hypotheses=args.max_hypotheses)
    if not args.json:
        print("use: " + flags)


def _weighting_systems(priors: dict, rates: dict) -> dict[str, tuple]:
    """``{system: (prior, weighting, rate)}``: fixed at EM's weights, then Bayes and
    switching (at its fitted rate) with each prior."""
    systems = {"fixed (EM)": (priors["EM prior"], "fixed", 0.0)}
    for label, prior in priors.items():
        systems[f"bayes, {label}"] = (prior, "bayes", 0.0)
        systems[f"switching, {label}"] = (prior, "switching", rates[label])
    return systems


def _member_byte_logprobs(report: Report, label: str, exact, names, text: str,
                          chunk_bytes: int) -> tuple[np.ndarray, list[int], np.ndarray]:
    """``[members, bytes]`` log-probabilities of every byte, each member an exact byte LM,
    the lengths of the pieces (each scored from its start), and ``[members, pieces, 2]``
    certified bounds on each piece's log-probability under the unbounded exact mode."""
    pieces = scoring.split_text(text, chunk_bytes)
    rows, bounds = [], []
    for name, model in zip(names, exact, strict=True):
        parts, member_bounds = [], []
        with _progress(len(text.encode()), f"{name} exact ({label})") as bar:
            for i, piece in enumerate(pieces):
                result = scoring.exact_score(model, piece)
                parts.append(result.byte_logprobs)
                member_bounds.append(result.bounds)
                report.record(text=label, system=name, piece=i, bytes=len(result.byte_logprobs),
                              nats=float(result.byte_logprobs.sum()), bounds=result.bounds)
                bar.update(len(result.byte_logprobs))
        rows.append(np.concatenate(parts))
        bounds.append(member_bounds)
    return np.stack(rows), [len(p.encode()) for p in pieces], np.asarray(bounds)


def _mixture_rows(label: str, logp: np.ndarray, pieces: list[int], bounds: np.ndarray, names,
                  systems: dict[str, tuple]) -> list[dict]:
    """Bits per byte of each member, equal fixed weights, and each weighting system (the
    exact ensemble's figures: ``scoring.mixture_logprobs``), with the interval the unbounded
    exact mode lies in where it follows from the members' bounds (members; ``"bayes"``)."""
    n = logp.shape[1]

    def row(system: str, byte_logp: np.ndarray, interval=None) -> dict:
        nats, zero = _finite_sum(byte_logp)  # every byte counts (∞ if one has probability 0)
        return {"text": label, "system": system, "bits_per_byte": scoring.bits_per_byte(nats, n),
                "bits_per_byte_interval": interval, "zero_probability_bytes": zero}

    rows = [row(name, member, _interval(bounds[i].sum(0), n))
            for i, (name, member) in enumerate(zip(names, logp, strict=True))]
    every = {"equal weights": (np.ones(len(names)), "fixed", 0.0), **systems}
    for system, (prior, rule, rate) in every.items():
        interval = None
        if rule == "bayes":  # each piece: log Σ π_i P_i from the members' bounds
            prior = np.asarray(prior, dtype=np.float64) / np.sum(prior)
            per_piece = [scoring.mixture_bounds(prior, bounds[:, j])
                         for j in range(bounds.shape[1])]
            interval = _interval(np.sum(per_piece, axis=0), n)
        rows.append(row(system, scoring.mixture_logprobs(logp, prior, rule, rate, pieces),
                        interval))
    return rows


def _eval(args, report: Report) -> None:
    problems = _problems(args)
    names, members = load_members(args, report.world)
    systems: list = [tasks.MemberCompleter(m, t, name)
                     for name, (m, t) in zip(names, members, strict=True)]
    systems.append(tasks.EnsembleCompleter(_ensemble(args, members)))
    rows: list[dict] = []
    try:
        for system in systems:
            rows.append(_eval_system(args, report, system, problems))
    except KeyboardInterrupt:
        report.summary(rows, interrupted=True, benchmark=args.benchmark)
        raise
    report.summary(rows, benchmark=args.benchmark)


def _problems(args) -> list[dict]:
    if args.benchmark == "humaneval":
        problems = tasks.load_humaneval(args.data)
    else:
        default = Path(os.environ.get("CHARED_ASSETS", "../shared/assets"),
                       "corpora", "gsm8k-test.jsonl")
        path = args.data or default
        if not Path(path).is_file():
            raise CLIError(f"--data: no GSM8K file at {str(path)!r}; give --data PATH (JSON "
                           "lines with 'question' and 'answer')")
        problems = tasks.load_gsm8k(path)
    return problems[: args.limit] if args.limit else problems


def _eval_system(args, report: Report, system, problems) -> dict:
    """Greedy completions of every problem by one system, checked as they come (in a
    ``torchrun`` job each process solves its share; rank 0 returns the row). Problems a
    resumed ``--output`` recorded are not solved again."""
    start, world, found, good = time.perf_counter(), report.world, {}, 0
    mine = world.mine(problems)
    with _progress(len(mine), f"{args.benchmark}: {system.name}") as bar:
        for done, i in enumerate(mine, start=1):
            problem = problems[i]
            key = problem.get("task_id", i)
            old = report.recorded(benchmark=args.benchmark, system=system.name, problem=key)
            if old is None:
                ok, why, completion = tasks.solve(args.benchmark, system, problem,
                                                  args.timeout)
                report.record(benchmark=args.benchmark, system=system.name, problem=key,
                              completion=completion, correct=ok, why=why)
            else:
                ok = old["correct"]
            found[i], good = ok, good + ok
            bar.update(1)
            bar.set_postfix(score=f"{good}/{done}")
    found = world.gather(found)
    if found is None:
        return {}
    good, done = sum(found.values()), len(found)
    metric = "pass@1" if args.benchmark == "humaneval" else "accuracy"
    return {"system": system.name, metric: good / done if done else math.nan,
            "correct": good, "problems": done,
            "seconds": round(time.perf_counter() - start, 1)}


# -- running a parsed command ----------------------------------------------------------------
COMMANDS = {"generate": _generate, "score": _score, "fit-weights": _fit_weights, "eval": _eval}


def run(args) -> int:
    """Run the command ``args`` names (parsed by ``cli.py``); the exit status."""
    prog = f"chared {args.command}"
    report = None
    hf_logging.disable_progress_bar()  # no "Loading weights" bars: the command's own output
    try:
        _check_weights_early(args)
        report = Report(args, distributed.world() if args.command in ("score", "eval")
                        else None)
        COMMANDS[args.command](args, report)
        return 0
    except ValueError as err:  # bad input (CLIError included): one line, no traceback
        print(f"{prog}: error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        where = f"; results so far are in {args.output}" if args.output else ""
        print(f"{prog}: interrupted{where}", file=sys.stderr)
        return 130
    finally:
        hf_logging.enable_progress_bar()
        if report is not None:
            report.close()
