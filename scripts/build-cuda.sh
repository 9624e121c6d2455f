#!/usr/bin/env bash
# Builds filtermon with the `cuda` feature on a machine without a GPU or a system CUDA toolkit,
# from the PyPI wheels that carry nvcc, its headers and the CUDA libraries.
#
#   scripts/build-cuda.sh            # → target/release/filtermon and target/release/filtermon.gz
#
# Environment:
#   CUDA_VENV          where the wheels are installed (default ~/.cache/filtermon/cuda-venv)
#   CUDA_COMPUTE_CAP   GPU architecture to compile the kernels for (default 90: H100/H200)
#   CARGO_TARGET_DIR   cargo's usual override of target/
#   CHECK_ONLY=1       only `cargo check --features cuda --all-targets` (what CI runs)
#
# The GPU machine's driver must be at least as new as the nvcc used here (CUDA 13.0): PTX from a
# newer nvcc does not load on an older driver, so the compiler packages are pinned, nvvm and crt
# included (left free, pip pairs nvcc 13.0 with a newer front end whose PTX ptxas 13.0 refuses).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${CUDA_VENV:-$HOME/.cache/filtermon/cuda-venv}
target=${CARGO_TARGET_DIR:-target}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}

if [ ! -x "$venv/bin/nvcc-ready" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q \
        "nvidia-cuda-nvcc==13.0.88" "nvidia-cuda-runtime==13.0.88" "nvidia-cuda-cccl==13.0.*" \
        "nvidia-cublas==13.0.*" "nvidia-curand==10.*" "nvidia-cuda-nvrtc==13.0.*" \
        "nvidia-nvvm==13.0.88" "nvidia-cuda-crt==13.0.88"
    printf '#!/bin/sh\n' > "$venv/bin/nvcc-ready" && chmod +x "$venv/bin/nvcc-ready"
fi
cuda=$(echo "$venv"/lib/python3*/site-packages/nvidia/cu13)
[ -x "$cuda/bin/nvcc" ] || { echo "build-cuda: no nvcc under $cuda" >&2; exit 1; }
export PATH="$cuda/bin:$PATH" CUDA_ROOT="$cuda" CUDA_PATH="$cuda" CUDA_HOME="$cuda"

if [ "${CHECK_ONLY:-0}" = 1 ]; then
    exec cargo check --features cuda --all-targets
fi

# candle links the CUDA libraries at build time, but the wheels ship only versioned names and no
# driver library: give the linker unversioned links and a stand-in libcuda.so with the driver's
# soname. At run time the loader finds the real libcuda.so.1 of the GPU machine's driver.
stubs="$target/cuda-link"
mkdir -p "$stubs"
for lib in cublas cublasLt cudart curand nvrtc; do
    ln -sf "$(ls "$cuda"/lib/lib$lib.so.* | head -n1)" "$stubs/lib$lib.so"
done
export LIBRARY_PATH="$stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"

driver_stub() {
    # Every driver entry point cudarc references, as an empty function: enough to link.
    nm "$target"/release/deps/libcudarc-*.rlib 2>/dev/null \
        | awk '$1 == "U" && $2 ~ /^cu[A-Z]/ { print "void " $2 "(void) {}" }' \
        | sort -u > "$stubs/libcuda.c"
    [ -s "$stubs/libcuda.c" ] || return 1
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stubs/libcuda.so" "$stubs/libcuda.c"
    # With this folder on LD_LIBRARY_PATH the binary also starts where there is no driver:
    # `--device cpu` works and `--device cuda:N` exits 2 with one line.
    ln -sf libcuda.so "$stubs/libcuda.so.1"
}

# The first build compiles cudarc, whose undefined symbols name what the stand-in must define;
# without a stand-in yet, only the final link fails.
if ! driver_stub; then
    cargo build --release --features cuda 2>"$stubs/first-link.log" || true
    driver_stub || { cat "$stubs/first-link.log" >&2; exit 1; }
fi
cargo build --release --features cuda
bin="$target/release/filtermon"
strip "$bin"
gzip -kf "$bin"
ls -l "$bin" "$bin.gz"
