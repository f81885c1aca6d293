#!/bin/bash
# One device call: a 4-trial study of the tiny test model on a real GPU, two trials sharing it
# (tuning.trials_per_gpu: 2, --resources gpu=1), through the real Snakefile. Checks what a CPU run
# cannot: the device lease (snaketune.gpu.trial_devices) finds the GPU by nvidia-smi, sets
# CUDA_VISIBLE_DEVICES before torch starts, and the trials train on it, side by side.
# Here, first: bash bench/gpu/fetch_wheels.sh. Then, through the device tool, with `.whl` carried:
#   bash bench/gpu/smoke.sh
# What comes back in $OUT: the log, the trials' devices.json records, the table, and the GPU's
# compute processes sampled every second during the run.
set -uo pipefail
REPO=$PWD
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$REPO/workflow:$REPO/tests PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1 \
  HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
nvidia-smi -L | tee "$OUT/device.txt"
WORK=$(mktemp -d)
cd "$WORK" && python3 - <<'EOF' || exit 1
from pathlib import Path
from workflow_helpers import tiny_config, write_config, write_reverse_words
write_reverse_words(Path("data.jsonl"), rows=200)
write_config(Path("."), tiny_config(n_trials=4, trials_per_gpu=2, fixed_training_params={
    "max_steps": 60, "per_device_train_batch_size": 8, "gradient_checkpointing": False}))
EOF
(while sleep 1; do nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader; done) \
  > "$OUT/gpu_apps.csv" 2>&1 &
sampler=$!
python3 -m snakemake -s "$REPO/Snakefile" --configfile tune.yaml --cores 8 --resources gpu=1 \
  --until aggregate 2>&1 | tee "$OUT/snakemake.log"
status=${PIPESTATUS[0]}
kill $sampler
cp tuning_output/trials_results.csv "$OUT/" 2>/dev/null
for d in tuning_output/trial_*; do
  echo "== $d"; cat "$d/logs/devices.json"; grep -m1 "CUDA_VISIBLE_DEVICES" "$d/logs/trial.log"
done > "$OUT/devices.txt" 2>&1
python3 - <<'EOF' | tee "$OUT/check.txt"
from snaketune.study import load_study
study = load_study("tuning_output")
for t in study.trials:
    print(t.number, t.state.name, t.user_attrs.get("slot"), t.user_attrs.get("cuda_visible_devices"),
          (t.user_attrs.get("gpu_lease") or {}).get("files"), t.values)
EOF
exit "$status"
