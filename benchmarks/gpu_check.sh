#!/usr/bin/env bash
# Simulation speed on a GPU: s/round of the Flower path next to the pure-compute floor,
# for the Fashion-MNIST CNN and the CIFAR-10 ResNet-18-GN, 10 clients a round, clients
# training on CUDA (client.device=cuda) and sharing the GPU through fractional num_gpus
# (simulation=gpu: 2 CPUs and 0.25 GPU per ClientApp, so four ClientApps per GPU, the
# clients multiplexed over one simulated SuperNode each; the floor trains in one process,
# as CUDA does not survive the parallel floor's fork).
#
# Usage: benchmarks/gpu_check.sh OUTPUT_DIR [ROUNDS]
#   OUTPUT_DIR  receives speed_gpu.json (the schema of benchmarks/results/speed.json),
#               gpu_check.log and nvidia-smi.txt.
#   ROUNDS      rounds per run, default 4 (the first is warm-up and not averaged).
# Data: $FEDHYPER_DATA_DIR, else ../shared/data from the repository root. The floor of
# each configuration runs first, so the decoded-tensor cache is warm before the Ray
# workers read it. Budget: under 10 minutes on one H200 (see docs/performance.md).
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 OUTPUT_DIR [ROUNDS]" >&2
    exit 2
fi
out_dir=$1
rounds=${2:-4}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$out_dir"
out_dir=$(cd "$out_dir" && pwd)
cd "$repo"

if [[ -f .venv/bin/activate ]]; then
    # shellcheck disable=SC1091
    . .venv/bin/activate
fi

nvidia-smi > "$out_dir/nvidia-smi.txt" 2>&1 || true
python - <<'EOF'
import sys

import torch

if not torch.cuda.is_available():
    sys.exit("gpu_check.sh: torch sees no CUDA device")
print(f"CUDA: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
EOF

# 4 rounds of each: about 1-2 min of Ray start-up per configuration, a few seconds a round.
timeout 540 python -m benchmarks.speed \
    --configs fmnist_cnn_10 cifar10_resnet18gn_10 \
    --rounds "$rounds" \
    --override client.device=cuda \
    --override simulation=gpu \
    --output "$out_dir/speed_gpu.json" \
    2>&1 | tee "$out_dir/gpu_check.log"

python - "$out_dir/speed_gpu.json" <<'EOF'
import json
import sys

result = json.load(open(sys.argv[1], encoding="utf-8"))
print(result["machine"])
print("| config | clients/round | floor s/round | Flower s/round | ratio | start-up s | peak RSS MB |")
print("|---|---:|---:|---:|---:|---:|---:|")
for run in result["runs"]:
    print(
        f"| {run['config']} | {run['clients_per_round']} | {run['parallel_floor_s_per_round']} | "
        f"{run['flower_s_per_round']} | {run['ratio']} | {run['startup_s']} | "
        f"{run['peak_rss_mb']} |"
    )
EOF
