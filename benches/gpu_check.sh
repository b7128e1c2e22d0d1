#!/usr/bin/env bash
# The GPU path, on a machine with an NVIDIA GPU: builds `glimp` with the
# `cuda` feature, runs the models' equivalence tests and the engine's tests
# with their models on the GPU (GLIMP_TEST_DEVICE), the forward bench's
# decode and prefill groups, and the serving bench of the bundled pair with
# `engine.device` on the GPU, then prints a short report (also written to
# $OUT_DIR/report.md; each step's full output is beside it).
#
#   benches/gpu_check.sh
#
# Needs a Rust toolchain, python3, a C++ compiler and the NVIDIA driver
# (nvidia-smi, libcuda.so.1). CUDA: the machine's toolkit when `nvcc` is on
# PATH or CUDA_ROOT is set; otherwise CUDA 13.0 from PyPI into
# ~/.cache/glimprouter (CUDA 13 needs a driver of the R580 series or newer).
# Knobs: DEVICE [cuda:0], OUT_DIR [target/gpu-check], CUDA_COMPUTE_CAP [the GPU's].
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DEVICE="${DEVICE:-cuda:0}"
OUT_DIR="${OUT_DIR:-target/gpu-check}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
REPORT="$OUT_DIR/report.md"
: >"$REPORT"
say() { echo "$*" | tee -a "$REPORT"; }
die() { say "gpu_check: $*"; exit 1; }

command -v nvidia-smi >/dev/null || die "no nvidia-smi: this script needs an NVIDIA GPU and its driver"
GPU="$(nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv,noheader | head -1)"
CAP="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '. ')"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-$CAP}"

# The toolkit: the machine's, else PyPI's (compiler, headers and the
# libraries candle links: cuBLAS, cuRAND, NVRTC, the runtime).
if [[ -z ${CUDA_ROOT:-} ]] && command -v nvcc >/dev/null; then
    CUDA_ROOT="$(cd "$(dirname "$(command -v nvcc)")/.." && pwd)"
fi
if [[ -z ${CUDA_ROOT:-} ]]; then
    VENV="${GLIMP_CACHE_DIR:-$HOME/.cache/glimprouter}/cuda-13.0-libs/venv"
    [[ -x $VENV/bin/python ]] || python3 -m venv "$VENV" || die "python3 -m venv failed"
    "$VENV/bin/python" -m pip install -q \
        "nvidia-cuda-nvcc==13.0.88" "nvidia-cuda-crt==13.0.88" "nvidia-nvvm==13.0.88" \
        "nvidia-cuda-runtime==13.0.96" "nvidia-cuda-cccl==13.0.85" \
        "nvidia-cuda-nvrtc==13.0.*" "nvidia-cublas==13.0.*" "nvidia-curand==10.4.0.*" \
        || die "pip could not install CUDA 13.0 from PyPI"
    CUDA_ROOT="$("$VENV/bin/python" -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')"
fi
export CUDA_ROOT CUDA_PATH="$CUDA_ROOT" PATH="$CUDA_ROOT/bin:$PATH"
export CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-$(nproc)}"

# The linker wants unversioned names (libcublas.so); wheels and some
# driver installs ship only versioned ones (libcublas.so.13, libcuda.so.1).
LINK_DIR="$OUT_DIR/link"
mkdir -p "$LINK_DIR"
for lib in cuda cudart cublas cublasLt curand nvrtc; do
    found=""
    for dir in "$CUDA_ROOT/lib64" "$CUDA_ROOT/lib" "$CUDA_ROOT/lib64/stubs" \
        /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/local/nvidia/lib64 /usr/lib/wsl/lib; do
        found="$(ls "$dir/lib$lib.so" "$dir"/lib"$lib".so.[0-9]* 2>/dev/null | head -1)"
        [[ -n $found ]] && break
    done
    [[ -n $found ]] || die "lib$lib.so not found (CUDA_ROOT=$CUDA_ROOT)"
    ln -sf "$found" "$LINK_DIR/lib$lib.so"
done
export RUSTFLAGS="${RUSTFLAGS:-} -L native=$LINK_DIR"
export LD_LIBRARY_PATH="$LINK_DIR:$CUDA_ROOT/lib64:$CUDA_ROOT/lib:${LD_LIBRARY_PATH:-}"

say "# GPU check"
say ""
say "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u +%Y-%m-%dT%H:%MZ)"
say "GPU: $GPU; device $DEVICE; CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP"
say "nvcc: $(nvcc --version | tail -1)"
say ""
say "| step | result | seconds | last line |"
say "|---|---|---:|---|"
FAILED=0
step() {
    local name="$1"
    shift
    local start=$SECONDS
    if "$@" >"$OUT_DIR/$name.log" 2>&1; then result=ok; else result=FAILED; FAILED=1; fi
    local last
    last="$(grep -E "test result|Finished|error|panicked" "$OUT_DIR/$name.log" | tail -1 | tr '|' '/')"
    say "| $name | $result | $((SECONDS - start)) | ${last:0:120} |"
}

step build cargo build --release -p glimprouter-cli -p glimprouter-loadtest \
    --features glimprouter-cli/cuda
export GLIMP_TEST_DEVICE="$DEVICE"
step model-equivalence cargo test --release -p glimprouter-models \
    --features glimprouter-models/cuda --test equivalence --test gguf_equivalence
step engine-tests cargo test --release -p glimprouter-engine --features cuda --test engine
step forward-bench cargo bench -p glimprouter-models --features glimprouter-models/cuda \
    --bench forward -- "decode_ctx512|prefill|smollm2_decode_ctx512"
step serving-bench env SKIP_BUILD=1 GLIMP_BIN=target/release/glimp \
    LOADTEST_BIN=target/release/glimp-loadtest CONCURRENCIES="1 8 32" \
    SERVER_ARGS="--set engine.device=\"$DEVICE\"" OUT_DIR="$OUT_DIR/serving" \
    RESULTS="$OUT_DIR/serving.md" benches/run_serving_bench.sh

say ""
say "## forward bench (criterion medians)"
# criterion prints a long name on its own line and "time: [low mid high]" under it.
awk '/time:/ { line = $0; sub(/^ */, "", line); if (line ~ /^time:/) print "- " name " " line; else print "- " line; next }
     /^[A-Za-z0-9_]/ { name = $1 }' "$OUT_DIR/forward-bench.log" | tee -a "$REPORT"
say ""
say "## serving bench"
[[ -f $OUT_DIR/serving.md ]] && tee -a "$REPORT" <"$OUT_DIR/serving.md"
exit "$FAILED"
