#!/usr/bin/env bash
# The GPU measurements with the python already on the machine (no venv, no network), left in
# results/<gpu>-<date>/, ready to commit. Usage:
#   scripts/gpu_benchmark.sh [outdir] [--phases a,b] [--budget-s S]        (see scripts/gpu_run.py)
# One 15-minute lease: bash scripts/gpu_benchmark.sh "" --budget-s 540
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
gpu=$($PY -c "import torch; print(torch.cuda.get_device_name(0).replace('NVIDIA ','').replace(' ','-').lower() if torch.cuda.is_available() else 'cpu')")
out=${1:-results/${gpu}-$(date -u +%Y-%m-%d)}
mkdir -p "$out"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || echo "nvidia-smi not available" > "$out/nvidia-smi.txt"
PYTHONUNBUFFERED=1 $PY scripts/gpu_run.py --out "$out" "${@:2}" 2>&1 | tee "$out/run.log"
rc=${PIPESTATUS[0]}
echo "results in $out (exit $rc)"
exit "$rc"
