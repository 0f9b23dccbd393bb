#!/usr/bin/env bash
# GPU check in one command on a CUDA machine whose Python already has PyTorch (e.g. one H100/H200):
# installs the carried wheels of the project's missing dependencies, puts the project on PYTHONPATH,
# and runs benchmarks/gpu_check.py (GPU tests + the 7B-shape measurements) under a hard time limit.
#
#   benchmarks/gpu_check.sh fetch-wheels   # on a machine with package-index access: fill .whl/
#   benchmarks/gpu_check.sh [ARGS...]      # on the GPU machine: set up from .whl/, then run the check
#
# ARGS go to gpu_check.py (e.g. --budget-s 300). Results: $OUT when set, else
# benchmarks/results/gpu_check (gpu_check.json, gpu_check.md, gpu_check.log).
# GPU_CHECK_TIMEOUT (default 470 s) is the wall-clock limit of the whole run, set-up included.
set -uo pipefail
cd "$(dirname "$0")/.."

# Dependencies of focus_nemo's core and of tests/gpu that a PyTorch image may lack (pure Python or
# manylinux wheels for CPython 3.12); torch, numpy, safetensors, tqdm and pytest come with the image.
WHEELS=(pyfaidx==0.9.2.2 biopython==1.88)
PY=${PYTHON:-python3}

if [ "${1:-}" = "fetch-wheels" ]; then
    mkdir -p .whl
    exec "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "${WHEELS[@]}"
fi

start=$(date +%s)
OUT_DIR=${OUT:-benchmarks/results/gpu_check}
mkdir -p "$OUT_DIR"
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/focus_nemo_site \
        .whl/*.whl || { echo "gpu_check.sh: installing .whl/*.whl failed" >&2; exit 1; }
    export PYTHONPATH=/tmp/focus_nemo_site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
left=$(( ${GPU_CHECK_TIMEOUT:-470} - ($(date +%s) - start) ))
budget=$(( left - 40 ))  # the script's own hard budget, with room to write its results
timeout --kill-after=20 "$left" "$PY" benchmarks/gpu_check.py --out "$OUT_DIR" --budget-s "$budget" "$@" 2>&1 \
    | tee "$OUT_DIR/gpu_check.log"
