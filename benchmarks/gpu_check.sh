#!/bin/bash
# The GPU check, one prepared script for the device machine (about 8 minutes at most).
#
# That machine gets only the working tree, so first run here (it downloads ~30 MB of wheels and
# copies the Qwen2 and GPT-2 tokenizers into benchmarks/gpu_payload/, which git ignores):
#     bash benchmarks/gpu_check.sh --prepare
# then, with the device tool, carrying that folder:
#     run(command="bash benchmarks/gpu_check.sh", carry=["benchmarks/gpu_payload"])
# Results come back in $OUT (gpu_check.json, tests.txt); put them in benchmarks/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PAYLOAD=benchmarks/gpu_payload
if [[ "${1:-}" == "--prepare" ]]; then
    ASSETS="${CHARED_ASSETS:-../shared/assets}"
    mkdir -p "$PAYLOAD/wheels" "$PAYLOAD/assets/tokenizers" "$PAYLOAD/assets/models"
    # The versions this project is tested with (the machine has an older transformers).
    pip download --no-deps --dest "$PAYLOAD/wheels" \
        "transformers==$(python -c 'import transformers; print(transformers.__version__)')" \
        "huggingface_hub==$(python -c 'import huggingface_hub; print(huggingface_hub.__version__)')" \
        "tokenizers==$(python -c 'import tokenizers; print(tokenizers.__version__)')" \
        "safetensors==$(python -c 'import safetensors; print(safetensors.__version__)')" \
        pytest hypothesis iniconfig pluggy sortedcontainers attrs
    cp -r "$ASSETS/tokenizers/gpt2" "$ASSETS/tokenizers/qwen2" "$PAYLOAD/assets/tokenizers/"
    cp -r "$ASSETS/models/stories260K" "$PAYLOAD/assets/models/"
    du -sh "$PAYLOAD"
    exit 0
fi
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
cd "$PAYLOAD/wheels"  # the package stack, then the test tools (each may fail alone)
pip install --quiet --no-deps --no-index transformers-*.whl huggingface_hub-*.whl \
    tokenizers-*.whl safetensors-*.whl 2>&1 | tail -2 || true
pip install --quiet --no-deps --no-index pytest-*.whl hypothesis-*.whl iniconfig-*.whl \
    pluggy-*.whl sortedcontainers-*.whl attrs-*.whl 2>&1 | tail -2 || true
cd - >/dev/null
python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
export PYTHONPATH="$PWD" CHARED_ASSETS="$PWD/$PAYLOAD/assets"
export GPU_CHECK_TOKENIZERS="$PWD/$PAYLOAD/assets/tokenizers"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv || true
# 1. The CUDA tests (members on CUDA, mixed devices, device_map), ~1 minute.
timeout 120 python -m pytest -q -p no:cacheprovider tests/test_devices.py 2>&1 \
    | tail -15 | tee "$OUT/tests.txt" || true
# 2. The measurements: host loop, then the loop's ids on the GPU (batch 1 and 32).
timeout 240 python benchmarks/gpu_check.py --out "$OUT/gpu_check.json" || true
timeout 90 python benchmarks/gpu_check.py --members demo --loop-device cuda \
    --out "$OUT/gpu_check_loop_cuda.json" || true
# 3. float32 byte views (segment sums) against float64, with the GPU's reduction order.
timeout 60 python benchmarks/view_precision.py --members stories --bytes 1500 --story --device cuda \
    > "$OUT/view_precision.txt" 2>&1 || true
