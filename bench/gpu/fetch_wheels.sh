#!/bin/bash
# Downloads, into .whl/ (git-ignored), the wheels that bench/gpu/run.sh installs on a device machine:
# trl, datasets, optuna, snakemake and what they need that the device image lacks (bench/gpu/wheels.txt,
# the versions this project pins), built for the device's Python 3.12 on x86-64. A package published
# only as source (pure Python, e.g. connection-pool) is built into a wheel here.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
while read -r requirement; do
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d .whl "$requirement" 2>/dev/null \
  || python3 -m pip wheel --quiet --no-deps -w .whl "$requirement"
done < bench/gpu/wheels.txt
du -sh .whl
