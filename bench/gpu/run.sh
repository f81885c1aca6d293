#!/bin/bash
# One device call: snaketune trials sharing one GPU against plain TRL (bench/gpu_throughput.py).
# Here, first: bash bench/gpu/fetch_wheels.sh (the device image lacks trl, datasets, optuna and
# snakemake). Then, through the device tool, from the repository root, with `.whl` carried:
#   bash bench/gpu/run.sh [gpu_throughput.py options]
# What comes back in $OUT: the log and RESULTS.md with the new section appended.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
export PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
python3 bench/gpu_throughput.py "$@" 2>&1 | tee "$OUT/gpu_throughput.log"
status=${PIPESTATUS[0]}
cp bench/RESULTS.md "$OUT/RESULTS.md"
exit "$status"
