#!/usr/bin/env bash
# The README's results table for `chared` on stories260K + SmolLM2-135M-Instruct: fit weights
# on a development text, score held-out texts at those weights (paper and exact modes), then
# HumanEval and GSM8K on the first LIMIT problems. Each command's JSON summary, its JSON lines
# and its wall time go to benchmarks/results/cli/ (with DEMO=1: the demo ensemble inside the
# package, into benchmarks/results/cli-demo/).
#   [DEMO=1] bash benchmarks/cli_results.sh [LIMIT]
set -euo pipefail
cd "$(dirname "$0")/.."
# One thread: on a shared two-core machine a second OpenMP thread that waits for a busy core
# makes single-token forwards many times slower; one thread is as fast here when alone.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
LIMIT="${1:-40}"
A="${CHARED_ASSETS:-../shared/assets}/models"
MEMBERS=(--member "$A/stories260K" --member "$A/SmolLM2-135M-Instruct.Q4_1.gguf")
OUT=benchmarks/results/cli
if [ -n "${DEMO:-}" ]; then MEMBERS=(); OUT=benchmarks/results/cli-demo; fi
T=benchmarks/results/texts
mkdir -p "$OUT"
python benchmarks/cli_texts.py --bytes 700

run() {  # run NAME ARGS...: chared ARGS --json --output OUT/NAME.jsonl > OUT/NAME.json
  local name=$1; shift
  local start=$SECONDS
  chared "$@" "${MEMBERS[@]}" --json --output "$OUT/$name.jsonl" > "$OUT/$name.json"
  echo "$name: $((SECONDS - start)) s" | tee -a "$OUT/times.txt"
}

: > "$OUT/times.txt"
run fit fit-weights "$T/dev.txt" --heldout "$T/heldout.txt" --max-hypotheses 4
read -r -a W < <(python -c "import json; print(*json.load(open('$OUT/fit.json'))['weights'])")
for text in story humaneval gsm8k; do
  run "score-$text" score "$T/$text-heldout.txt" --weights "${W[@]}" --marginalization chared
  run "score-$text-exact" score "$T/$text-heldout.txt" --weights "${W[@]}" \
    --marginalization exact --max-hypotheses 4
done
run humaneval eval humaneval --limit "$LIMIT" --weights "${W[@]}"
run gsm8k eval gsm8k --limit "$LIMIT" --weights "${W[@]}"
