#!/usr/bin/env bash
# Every GPU benchmark in one go, sharing the random-weight 7B models (written once, ~15 GB each).
#   bash bench/run_gpu.sh [WORKDIR]        # results: bench/results/*-<gpu>.json, log: gpu-<gpu>.log
# Extra arguments per benchmark, e.g. only what is still missing (rows of an earlier run on the
# same GPU stay in the JSON: bench/report.py):
#   PLAN_ARGS="--shapes qwen2-vl-7b" FINETUNE_ARGS="--batches 4" bash bench/run_gpu.sh
# Steps, in this order: tests (the GPU-only tests: the captured decode step and follow-up
# prefill answer like generate), decode, finetune, plan, int4 (torchao's int4 weight-only
# format in the engine's loop beside NF4; needs torchao). SKIP="plan int4"
# leaves steps out. RESULTS=DIR writes the JSON and the log there instead of bench/results
# (each benchmark writes its file as soon as a shape or batch is done).
set -uo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d -t vd-gpu-bench-XXXX)}
gpu=$(python3 -c "import torch; print('-'.join(torch.cuda.get_device_name(0).lower().replace('nvidia', '').split()))") || exit 2
out=${RESULTS:-bench/results}
mkdir -p "$out"
log="$out/gpu-$gpu.log"
skip=" ${SKIP:-} "
run() { echo "=== $*" | tee -a "$log"; "$@" 2>&1 | tee -a "$log"; }
# shellcheck disable=SC2086  # the *_ARGS are meant to split into arguments
{
  [[ $skip == *" tests "* ]] ||
    run python3 -m pytest -q -p no:cacheprovider tests/engine/test_static_decode_cuda.py
  [[ $skip == *" decode "* ]] ||
    run python3 bench/decode_gpu.py --workdir "$work" --out "$out/decode_gpu-$gpu.json" ${DECODE_ARGS:-}
  [[ $skip == *" finetune "* ]] ||
    run python3 bench/finetune_gpu.py --workdir "$work" --out "$out/finetune_gpu-$gpu.json" ${FINETUNE_ARGS:-}
  [[ $skip == *" plan "* ]] ||
    run python3 bench/memory_plan_gpu.py --workdir "$work" --out "$out/memory_plan_gpu-$gpu.json" ${PLAN_ARGS:-}
  [[ $skip == *" int4 "* ]] ||
    run python3 bench/decode_gpu.py --workdir "$work" --out "$out/decode_gpu-$gpu.json" --paths torchao_int4 ${INT4_ARGS:-}
}
if [ -z "${1:-}" ]; then rm -rf "$work"; fi  # (a given workdir is kept; the status is 0)
