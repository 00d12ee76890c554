#!/usr/bin/env bash
# Run the GPU measurements with the python already on the machine (no venv, no network)
# and leave them in results/<gpu>-<date>/.
# Usage: scripts/gpu_benchmark.sh [profile] [outdir] [--phases a,b] [--budget-s S]  (see scripts/gpu_run.py)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
profile=${1:-gpu}
gpu=$($PY -c "import torch; print(torch.cuda.get_device_name(0).replace('NVIDIA ','').replace(' ','-').lower() if torch.cuda.is_available() else 'cpu')")
out=${2:-results/${gpu}-$(date -u +%Y-%m-%d)}
mkdir -p "$out"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || echo "nvidia-smi not available" > "$out/nvidia-smi.txt"
PYTHONUNBUFFERED=1 $PY scripts/gpu_run.py --profile "$profile" --out "$out" "${@:3}" 2>&1 | tee "$out/run.log"
rc=${PIPESTATUS[0]}
echo "results in $out (exit $rc)"
exit "$rc"
