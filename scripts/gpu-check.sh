#!/usr/bin/env bash
# One-shot GPU check of a filtermon binary built with `--features cuda`:
#
#   scripts/gpu-check.sh BIN          # BIN: the binary, or BIN.gz (gunzipped to /tmp)
#
# Run from anywhere; it works in the repository root. Steps (each guarded: one failing step
# is recorded in the summary and the others still run):
#   setup   CUDA 13 libraries of the torch venv on LD_LIBRARY_PATH, wheels in .whl/ (if any)
#           installed to /tmp/site and put on PYTHONPATH, GPU name/driver, `BIN --version`
#   parity  `BIN parity` on tests/fixtures/hf/* (f32) and tests/fixtures/hf_bf16/* (bf16)
#   watch   a random 1B-shaped transformer checkpoint (scripts/make_random_checkpoint.py),
#           an evalset prepared from text in the repository, `BIN watch` on it with the GPU
#           memory of the daemon sampled every 0.2 s while it scores and while it idles
#   bench   `BIN bench` of the three twins at 1B shape against transformers
#           (scripts/bench_torch.py), per arch
# The steps themselves are scripts/gpu_check.py. Everything comes back under $OUT
# (default ./gpu-check-out): gpu-check.json (the summary, also printed) and logs/.
#
# Environment (defaults in brackets):
#   PYTHON                 interpreter with torch [/opt/torch/.venv/bin/python3, else python3]
#   GPU_CHECK_DEVICE       cuda | cpu [cuda]; cpu is a dry run of the plumbing with tiny shapes
#   GPU_CHECK_BUDGET_S     seconds for everything; later steps get what is left [450]
#   GPU_CHECK_FLA          0: do not install fla-core from .whl/ (GDN in torch fallback) [1]
#   GPU_CHECK_BENCH_BATCH, GPU_CHECK_BENCH_WINDOWS   bench --batch, --windows [32, 64]
#   GPU_CHECK_BENCH_ARCHS  archs benchmarked, in order ["transformer hybrid gdn"]
#   GPU_CHECK_STEPS        steps run, in order ["parity watch bench"]
#   see scripts/gpu_check.py --help for the rest
set -u
T0=$(date +%s.%N)
export GPU_CHECK_T0=$T0

if [ $# -lt 1 ]; then
    echo "usage: scripts/gpu-check.sh BIN[.gz]" >&2
    exit 2
fi
BIN_ARG=$1
case "$BIN_ARG" in /*) ;; *) BIN_ARG="$PWD/$BIN_ARG" ;; esac
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2

OUT=${OUT:-$ROOT/gpu-check-out}
export OUT
mkdir -p "$OUT/logs"
SETUP_LOG=$OUT/logs/setup.log
: >"$SETUP_LOG"
SETUP_ERRORS=()
log() { echo "[$(date +%T)] $*" >>"$SETUP_LOG"; }
err() { log "ERROR: $*"; SETUP_ERRORS+=("setup: $*"); }

# --- the binary --------------------------------------------------------------
BIN=$BIN_ARG
if [[ $BIN_ARG == *.gz ]]; then
    mkdir -p /tmp/filtermon-gpu-check
    BIN=/tmp/filtermon-gpu-check/$(basename "${BIN_ARG%.gz}")
    if gunzip -c "$BIN_ARG" >"$BIN" 2>>"$SETUP_LOG"; then
        chmod +x "$BIN"
        log "gunzipped $BIN_ARG to $BIN"
    else
        err "cannot gunzip $BIN_ARG"
    fi
fi
[ -x "$BIN" ] || err "$BIN is not an executable file"

# --- python ------------------------------------------------------------------
if [ -z "${PYTHON:-}" ]; then
    if [ -x /opt/torch/.venv/bin/python3 ]; then
        PYTHON=/opt/torch/.venv/bin/python3
    else
        PYTHON=$(command -v python3 || true)
    fi
fi
export PYTHON
log "PYTHON=$PYTHON"

# --- CUDA libraries of the torch venv (libcudart.so.13, libcublas*.so.13, libcurand,
# libnvrtc); the driver's libcuda.so.1 is the system's ----------------------------
LIBDIRS=()
add_libdir() {
    local d
    for d in "$@"; do
        [ -d "$d" ] || continue
        compgen -G "$d/*.so*" >/dev/null || continue
        case " ${LIBDIRS[*]:-} " in *" $d "*) ;; *) LIBDIRS+=("$d") ;; esac
    done
}
add_libdir /opt/torch/.venv/lib/python3*/site-packages/nvidia/cu13/lib \
    /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib
if [ -n "$PYTHON" ]; then
    PYPREFIX=$(cd "$(dirname "$PYTHON")/.." 2>/dev/null && pwd)
    [ -n "$PYPREFIX" ] && add_libdir "$PYPREFIX"/lib/python3*/site-packages/nvidia/cu13/lib \
        "$PYPREFIX"/lib/python3*/site-packages/nvidia/*/lib
fi
if [ ${#LIBDIRS[@]} -gt 0 ]; then
    LD_LIBRARY_PATH=$(IFS=:; echo "${LIBDIRS[*]}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    export LD_LIBRARY_PATH
fi
log "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
if [ -x "$BIN" ] && command -v ldd >/dev/null; then
    MISSING=$(ldd "$BIN" 2>&1 | grep 'not found' | awk '{print $1}' | tr '\n' ' ')
    ldd "$BIN" >>"$SETUP_LOG" 2>&1
    [ -n "$MISSING" ] && err "libraries not found by ldd: $MISSING"
fi

# --- wheels carried in .whl/ (transformers with olmo_hybrid, fla-core, einops) -------
WHEELS=()
for w in "$ROOT"/.whl/*.whl; do
    [ -f "$w" ] || continue
    case "$(basename "$w")" in
        fla_core-* | einops-*) [ "${GPU_CHECK_FLA:-1}" = 0 ] && continue ;;
    esac
    WHEELS+=("$w")
done
if [ ${#WHEELS[@]} -gt 0 ] && [ -n "$PYTHON" ]; then
    SITE=${GPU_CHECK_SITE:-/tmp/site}
    log "installing ${WHEELS[*]##*/} into $SITE"
    if "$PYTHON" -m pip --version >>"$SETUP_LOG" 2>&1; then
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" "${WHEELS[@]}" >>"$SETUP_LOG" 2>&1 || err "pip install of .whl/ failed"
    else  # a venv without pip: pure-Python wheels are zip files of the site-packages tree
        log "no pip in $PYTHON: unzipping the wheels"
        mkdir -p "$SITE"
        for w in "${WHEELS[@]}"; do
            "$PYTHON" -m zipfile -e "$w" "$SITE" >>"$SETUP_LOG" 2>&1 || err "cannot unzip $w"
        done
    fi
    export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
fi
log "PYTHONPATH=${PYTHONPATH:-}"

# --- the steps ---------------------------------------------------------------
export GPU_CHECK_SETUP_ERRORS
GPU_CHECK_SETUP_ERRORS=$(printf '%s\n' "${SETUP_ERRORS[@]+"${SETUP_ERRORS[@]}"}")
rc=0
if [ -n "$PYTHON" ]; then
    "$PYTHON" "$ROOT/scripts/gpu_check.py" --bin "$BIN" --out "$OUT" --python "$PYTHON" || rc=$?
else
    rc=127
fi
if [ ! -s "$OUT/gpu-check.json" ]; then
    # gpu_check.py could not run at all: a summary that says so.
    elapsed=$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    esc() { sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' | tr '\n\t' '  '; }
    msg="gpu_check.py did not write a summary (exit $rc, PYTHON=${PYTHON:-none})"
    {
        printf '{"gpu": null, "driver": null, "binary_version": null, "parity": {"f32": [], "bf16": []}, '
        printf '"bench": [], "watch": {}, "errors": ["%s"' "$(printf %s "$msg" | esc)"
        for e in "${SETUP_ERRORS[@]+"${SETUP_ERRORS[@]}"}"; do printf ', "%s"' "$(printf %s "$e" | esc)"; done
        printf '], "seconds_total": %s}\n' "$elapsed"
    } >"$OUT/gpu-check.json"
    cat "$OUT/gpu-check.json"
fi
exit "$rc"
