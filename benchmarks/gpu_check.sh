#!/usr/bin/env bash
# GPU check in one command on a CUDA machine whose Python already has PyTorch (e.g. one H100/H200):
# installs the carried wheels of the dependencies that machine lacks, puts the project on PYTHONPATH,
# and runs benchmarks/gpu_check.py (GPU tests + the 7B-shape measurements) under a hard time limit.
#
#   benchmarks/gpu_check.sh fetch-wheels [--nemo]  # with package-index access: fill .whl/ for the GPU
#                                                  # machine's Python (GPU_PYTHON_VERSION, default 3.12)
#   benchmarks/gpu_check.sh [ARGS...]              # on the GPU machine: set up from .whl/, then run
#
# ARGS go to gpu_check.py (e.g. --budget-s 300). Results: $OUT when set, else
# benchmarks/results/gpu_check (gpu_check.json, gpu_check.md, gpu_check.log).
# GPU_CHECK_TIMEOUT (default 540 s) is the wall-clock limit of the whole run, set-up included.
#
# Exit status: 0 only when every section ran and every GPU test passed; otherwise non-zero, and the
# first line of gpu_check.log and gpu_check.md, and the last line printed, say FAILED and why (a
# failed or skipped test, a failed section, a time-out, a crash, a wheel that did not install).
# Piping this script (`gpu_check.sh | tee x`) keeps its status only under `set -o pipefail`.
set -uo pipefail
cd "$(dirname "$0")/.."

# What focus_nemo's core and tests/gpu import that a bare PyTorch machine may lack, as
# import-name=requirement: a wheel is installed only where its module does not import, so the
# machine's own packages are never shadowed.
WHEELS=(pyfaidx=pyfaidx==0.9.2.2 Bio=biopython==1.88 safetensors=safetensors==0.8.0 einops=einops==0.8.2
        pytest=pytest==9.2.0 pluggy=pluggy==1.7.0 iniconfig=iniconfig==2.3.1 packaging=packaging==24.2
        yaml=PyYAML==6.0.3)
# The NeMo stack the NeMo GPU tests need (`fetch-wheels --nemo`; pins of pyproject's nemo extra). Without
# it those tests skip, and a skip for a missing NeMo stack fails the check.
NEMO_WHEELS=(nemo=nemo_toolkit==2.7.3 megatron.core=megatron-core==0.15.3 nemo_run=nemo_run==0.11.1
             lightning=lightning==2.4.0 hydra=hydra-core==1.3.2 omegaconf=omegaconf==2.3.0
             antlr4=antlr4-python3-runtime==4.9.3)
PY=${PYTHON:-python3}
PYVER=${GPU_PYTHON_VERSION:-3.12}
SITE=${GPU_CHECK_SITE:-/tmp/focus_nemo_site}

if [ "${1:-}" = "fetch-wheels" ]; then
    wanted=("${WHEELS[@]}")
    [ "${2:-}" = "--nemo" ] && wanted+=("${NEMO_WHEELS[@]}")
    mkdir -p .whl
    exec "$PY" -m pip download --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "${wanted[@]#*=}"
fi

start=$(date +%s)
OUT_DIR=${OUT:-benchmarks/results/gpu_check}
mkdir -p "$OUT_DIR"
LOG=$OUT_DIR/gpu_check.log
rm -f "$OUT_DIR/gpu_check.md" "$OUT_DIR/gpu_check.json"  # a report left by an earlier run is not this run's
: >"$LOG"

fail() {  # FAILED and why as the log's first line and the last line printed; exit non-zero
    local why="FAILED: $1"
    if [ -s "$LOG" ]; then { echo "$why"; cat "$LOG"; } >"$LOG.tmp" && mv "$LOG.tmp" "$LOG"; else echo "$why" >"$LOG"; fi
    echo "$why"
    exit "${2:-1}"
}

# Install the carried wheels of the modules this Python cannot find (and only those).
all_wheels=("${WHEELS[@]}" "${NEMO_WHEELS[@]}")
absent=$("$PY" - "${all_wheels[@]%%=*}" <<'PYEOF'
import importlib.util, sys
for module in sys.argv[1:]:
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        print(module)
PYEOF
) || fail "$PY does not run"
missing=()
for entry in "${all_wheels[@]}"; do
    module=${entry%%=*} req=${entry#*=}
    grep -qx "$module" <<<"$absent" || continue
    name=${req%%==*}
    wheel=$(compgen -G ".whl/${name//-/_}-*.whl" || compgen -G ".whl/${name}-*.whl" || true)
    if [ -n "$wheel" ]; then
        missing+=("${wheel%%$'\n'*}")
    else
        echo "gpu_check.sh: $module is not importable and no wheel of $req is carried in .whl/"
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "gpu_check.sh: installing ${missing[*]}" | tee -a "$LOG"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "${missing[@]}" >>"$LOG" 2>&1 || fail "installing the carried wheels (${missing[*]}) failed; see $LOG"
    export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
left=$(( ${GPU_CHECK_TIMEOUT:-540} - ($(date +%s) - start) ))
budget=$(( left - (left > 160 ? 40 : left / 4) ))  # the script's own hard budget, with room to write its results
[ "$budget" -gt 0 ] || fail "no time left for the check after the set-up (GPU_CHECK_TIMEOUT=${GPU_CHECK_TIMEOUT:-540})"
timeout --kill-after=20 "$left" "$PY" benchmarks/gpu_check.py --out "$OUT_DIR" --budget-s "$budget" "$@" 2>&1 \
    | tee -a "$LOG"
status=${PIPESTATUS[0]}
case $status in
    0) head -n 1 "$OUT_DIR/gpu_check.md" 2>/dev/null | grep -q '^PASSED' \
           || fail "gpu_check.py exited 0 but its report does not say PASSED"
       { head -n 1 "$OUT_DIR/gpu_check.md"; cat "$LOG"; } >"$LOG.tmp" && mv "$LOG.tmp" "$LOG"
       exit 0 ;;
    124|137) fail "gpu_check.py timed out after ${left} s (GPU_CHECK_TIMEOUT=${GPU_CHECK_TIMEOUT:-540})" "$status" ;;
    *) why=$(head -n 1 "$OUT_DIR/gpu_check.md" 2>/dev/null | sed -n 's/^FAILED: //p')
       fail "${why:-gpu_check.py exited with status $status; see $LOG}" "$status" ;;
esac
