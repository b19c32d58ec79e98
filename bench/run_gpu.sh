#!/usr/bin/env bash
# Every GPU benchmark in one go, sharing the random-weight 7B models (written once, ~15 GB each).
#   bash bench/run_gpu.sh [WORKDIR]        # results: bench/results/*-<gpu>.json, log: <gpu>.log
set -uo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d -t vd-gpu-bench-XXXX)}
gpu=$(python3 -c "import torch; print(torch.cuda.get_device_name(0).split()[-1].lower())") || exit 2
out=bench/results
log="$out/gpu-$gpu.log"
run() { echo "=== $*" | tee -a "$log"; "$@" 2>&1 | tee -a "$log"; }
run python3 bench/decode_gpu.py --workdir "$work" --out "$out/decode_gpu-$gpu.json"
run python3 bench/memory_plan_gpu.py --workdir "$work" --out "$out/memory_plan_gpu-$gpu.json"
run python3 bench/finetune_gpu.py --workdir "$work" --out "$out/finetune_gpu-$gpu.json"
[ -z "${1:-}" ] && rm -rf "$work"
