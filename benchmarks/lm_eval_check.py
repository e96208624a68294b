"""lm-evaluation-harness on a saved ensemble: its log-likelihoods against ``byte_logprobs``.

Saves the demo ensemble (stories260K + pycode) into a folder, writes a small local
multiple-choice task (``benchmarks/data/lm_eval_tiny.jsonl``: story, code and arithmetic
contexts, three continuations each), and runs the harness as users do
(``lm_eval --model hf --model_args pretrained=<folder>,trust_remote_code=True``, here through
``lm_eval.simple_evaluate``), in the paper mode and with ``marginalization=exact`` passed in
the model arguments. For every request it compares the harness's log-likelihood with
``chared_hf.tools.scoring.byte_logprobs`` summed over the continuation's bytes (the text read from
``<s>``), and times both per byte of the requests' texts (the harness's requests alone,
through its model's ``loglikelihood``, without loading or the task's set-up).

    pip install -e ".[harness]"   # lm-eval and accelerate
    python benchmarks/lm_eval_check.py [--batch-size 1] [--check]

``--check`` (CI) exits with status 1 when a log-likelihood differs by more than 1e-4.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from common import REPO, print_table, write_json

from chared_hf import CharEDModel
from chared_hf.demo import load_demo
from chared_hf.tools.scoring import byte_logprobs

DATA = REPO / "benchmarks" / "data" / "lm_eval_tiny.jsonl"
TASK = """task: chared_tiny
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
target_delimiter: ""
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def harness(folder: Path, tasks: Path, mode: str, batch_size: int) -> tuple[dict, float]:
    """The harness's accuracy and its requests ``(context, continuation, loglikelihood)``."""
    import lm_eval
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    # What `--model hf --model_args pretrained=...,trust_remote_code=True,...` builds; made
    # first, so that the time below is the requests' (and the small task's set-up).
    lm = HFLM(pretrained=str(folder), trust_remote_code=True, marginalization=mode,
              device="cpu", batch_size=batch_size)
    out = lm_eval.simple_evaluate(model=lm, tasks=["chared_tiny"],
                                  task_manager=TaskManager(include_path=str(tasks)),
                                  log_samples=True)
    requests = []
    for sample in out["samples"]["chared_tiny"]:
        for index, (context, continuation) in enumerate(sample["arguments"]):
            requests.append((context, continuation, float(sample["resps"][index][0][0])))
    # The requests alone, timed (what the harness does per request, without the task set-up).
    instances = [Instance(request_type="loglikelihood", doc={}, arguments=(c, x), idx=0)
                 for c, x, _ in requests]
    start = time.perf_counter()
    lm.loglikelihood(instances, disable_tqdm=True)
    seconds = time.perf_counter() - start
    return {"acc": out["results"]["chared_tiny"]["acc,none"], "requests": requests}, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a log-likelihood differs by more than 1e-4")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder, tasks = Path(tmp) / "ensemble", Path(tmp) / "tasks"
        load_demo().save_pretrained(folder)
        tasks.mkdir()
        (tasks / "chared_tiny.yaml").write_text(TASK.format(data=DATA))
        for mode in ("chared", "exact"):
            result, harness_s = harness(folder, tasks, mode, args.batch_size)
            ens = CharEDModel.from_pretrained(folder, trust_remote_code=True,
                                              marginalization=mode)
            start, diffs, n_bytes = time.perf_counter(), [], 0
            for context, continuation, loglik in result["requests"]:
                logp = byte_logprobs(ens, context + continuation)
                mine = float(logp[len(context.encode()):].sum())
                diffs.append(abs(mine - loglik))
                n_bytes += len((context + continuation).encode())
            ours_s = time.perf_counter() - start
            rows.append({"mode": mode, "requests": len(diffs), "acc": result["acc"],
                         "max_abs_difference": max(diffs),
                         "harness_ms_per_byte": 1000 * harness_s / n_bytes,
                         "byte_logprobs_ms_per_byte": 1000 * ours_s / n_bytes})
    print_table(rows, list(rows[0]))
    path = write_json("lm_eval_check", {"args": vars(args), "rows": rows})
    print(f"written to {path}")
    if args.check and max(r["max_abs_difference"] for r in rows) > 1e-4:
        raise SystemExit("lm_eval_check: the harness's log-likelihoods differ from byte_logprobs")


if __name__ == "__main__":
    main()
