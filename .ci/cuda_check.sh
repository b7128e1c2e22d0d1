#!/usr/bin/env bash
# Compiles the `cuda` feature without a GPU, candle's CUDA kernels included,
# for compute capability 9.0 (H100/H200) and 8.0 (A100). The CUDA 13
# compiler and headers come from PyPI into a cache outside the repository.
# `cargo check` runs candle-kernels' build script, which compiles every
# kernel with nvcc for CUDA_COMPUTE_CAP; nothing is linked, because linking
# needs the driver's libcuda.so, which no package registry ships.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${GLIMP_CACHE_DIR:-$HOME/.cache/glimprouter}/cuda-13.0"
if [ ! -x "$CACHE/venv/bin/python" ]; then
    python3 -m venv "$CACHE/venv"
fi
# One release throughout: unpinned, pip pulls the newest crt/nvvm beside
# an older nvcc.
"$CACHE/venv/bin/python" -m pip install -q \
    "nvidia-cuda-nvcc==13.0.88" "nvidia-cuda-crt==13.0.88" "nvidia-nvvm==13.0.88" \
    "nvidia-cuda-runtime==13.0.96" "nvidia-cuda-cccl==13.0.85"
CUDA_ROOT="$("$CACHE/venv/bin/python" -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')"
export CUDA_ROOT CUDA_PATH="$CUDA_ROOT" PATH="$CUDA_ROOT/bin:$PATH"
export CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-$(nproc)}"
nvcc --version | tail -1

for cap in 90 80; do
    echo "cargo check -p glimprouter-cli --features cuda (CUDA_COMPUTE_CAP=$cap)"
    CUDA_COMPUTE_CAP=$cap cargo check -q -p glimprouter-cli --features cuda
done
