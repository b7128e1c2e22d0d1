#!/usr/bin/env bash
# Serving benchmark: builds in release, starts `glimp serve` with the bundled
# models, load-tests it with glimp-loadtest at several concurrencies for the
# routing policies llm, glimp and glimp with speculation, and writes the
# results and the measured targets to benches/RESULTS.md.
#
#   benches/run_serving_bench.sh
#
# Knobs (environment variables, defaults in brackets):
#   PORT [8765]  CONFIG [configs/default.toml]  CONCURRENCIES ["1 8 32 64"]
#   POLICIES ["llm glimp glimp-spec"]  MAX_TOKENS [128]  INPUT_LEN [64]
#   REQUESTS_PER_SLOT [4] and MIN_REQUESTS [16]: requests = max(MIN, c * PER_SLOT)
#   TAU [server default]  SPEC_K [4]  HEALTH_TIMEOUT_S [300]
#   SERVER_ARGS [none]: extra arguments for `glimp serve`
#   OUT_DIR [target/serving-bench]: per-run JSON reports and the server log
#   RESULTS [benches/RESULTS.md]
#   GLIMP_BIN, LOADTEST_BIN [target/release/...] and SKIP_BUILD=1: run other
#   binaries without building (to try the script against a stand-in server)
# Prompts: benches/task_prompts.jsonl (`--dataset task`) when it exists,
# else INPUT_LEN random words. Needs curl.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PORT="${PORT:-8765}"
CONFIG="${CONFIG:-configs/default.toml}"
CONCURRENCIES="${CONCURRENCIES:-1 8 32 64}"
POLICIES="${POLICIES:-llm glimp glimp-spec}"
MAX_TOKENS="${MAX_TOKENS:-128}"
INPUT_LEN="${INPUT_LEN:-64}"
REQUESTS_PER_SLOT="${REQUESTS_PER_SLOT:-4}"
MIN_REQUESTS="${MIN_REQUESTS:-16}"
TAU="${TAU:-}"
SPEC_K="${SPEC_K:-4}"
HEALTH_TIMEOUT_S="${HEALTH_TIMEOUT_S:-300}"
SERVER_ARGS="${SERVER_ARGS:-}"
OUT_DIR="${OUT_DIR:-target/serving-bench}"
RESULTS="${RESULTS:-benches/RESULTS.md}"

GLIMP="${GLIMP_BIN:-target/release/glimp}"
LOADTEST="${LOADTEST_BIN:-target/release/glimp-loadtest}"
URL="http://127.0.0.1:${PORT}"

command -v curl >/dev/null || { echo "error: curl is needed to poll /health" >&2; exit 1; }

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    echo "== building (release)"
    cargo build --release -p glimprouter-cli -p glimprouter-loadtest
fi

mkdir -p "$OUT_DIR"
rm -f "$OUT_DIR"/*.json

echo "== starting $GLIMP serve --config $CONFIG --port $PORT $SERVER_ARGS"
# shellcheck disable=SC2086 # SERVER_ARGS is a list of words
"$GLIMP" serve --config "$CONFIG" --port "$PORT" $SERVER_ARGS >"$OUT_DIR/server.log" 2>&1 &
SERVER_PID=$!
stop_server() {
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
}
trap stop_server EXIT

healthy=0
for ((i = 0; i < HEALTH_TIMEOUT_S * 2; i++)); do
    if curl -sf "$URL/health" >/dev/null 2>&1; then
        healthy=1
        break
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "error: the server exited; last lines of $OUT_DIR/server.log:" >&2
        tail -n 30 "$OUT_DIR/server.log" >&2
        exit 1
    fi
    sleep 0.5
done
if [[ $healthy != 1 ]]; then
    echo "error: $URL/health not ready after ${HEALTH_TIMEOUT_S}s" >&2
    exit 1
fi
echo "== server healthy"

if [[ -f benches/task_prompts.jsonl ]]; then
    PROMPT_ARGS=(--dataset task)
    PROMPTS_DESC="benches/task_prompts.jsonl"
else
    PROMPT_ARGS=(--random-input-len "$INPUT_LEN")
    PROMPTS_DESC="$INPUT_LEN random words (benches/task_prompts.jsonl absent)"
fi

tau_field=""
if [[ -n $TAU ]]; then tau_field=", \"tau\": $TAU"; fi
extra_body() {
    case "$1" in
        llm) echo "{\"routing\": {\"policy\": \"llm\", \"speculative_k\": 0, \"answer_model\": \"llm\"}}" ;;
        glimp) echo "{\"routing\": {\"policy\": \"glimp\"$tau_field, \"speculative_k\": 0}}" ;;
        glimp-spec) echo "{\"routing\": {\"policy\": \"glimp\"$tau_field, \"speculative_k\": $SPEC_K}}" ;;
        *) echo "error: unknown policy $1" >&2; return 1 ;;
    esac
}

REPORTS=()
FAILED_RUNS=()
for policy in $POLICIES; do
    body="$(extra_body "$policy")"
    for c in $CONCURRENCIES; do
        requests=$((c * REQUESTS_PER_SLOT))
        if ((requests < MIN_REQUESTS)); then requests=$MIN_REQUESTS; fi
        json="$OUT_DIR/${policy}-c${c}.json"
        echo "== $policy, concurrency $c, $requests requests"
        if "$LOADTEST" --url "$URL" --endpoint completions \
            --concurrency "$c" --requests "$requests" --warmup "$c" \
            --max-tokens "$MAX_TOKENS" --ignore-eos "${PROMPT_ARGS[@]}" \
            --extra-body "$body" --label "$policy c=$c" --timeout 600 \
            --no-progress --json "$json"; then
            REPORTS+=("$json")
        else
            FAILED_RUNS+=("$policy c=$c")
        fi
    done
done

# Whole solutions at concurrency 32: no ignore_eos, so every request ends
# at its own answer and the tokens counted are the ones a user wants (with
# ignore_eos, whoever writes the answer also writes the filler after it).
EOS_REPORTS=()
for policy in $POLICIES; do
    json="$OUT_DIR/${policy}-eos-c32.json"
    echo "== $policy, concurrency 32, whole solutions"
    if "$LOADTEST" --url "$URL" --endpoint completions \
        --concurrency 32 --requests 128 --warmup 32 \
        --max-tokens 200 "${PROMPT_ARGS[@]}" \
        --extra-body "$(extra_body "$policy")" --label "$policy c=32 whole" --timeout 600 \
        --no-progress --json "$json"; then
        EOS_REPORTS+=("$json")
    else
        FAILED_RUNS+=("$policy c=32 whole")
    fi
done

# ratio NAME A.json B.json: B/A of one metric, or "n/a".
ratio() {
    if [[ -f $2 && -f $3 ]]; then
        "$LOADTEST" compare "$2" "$3" --metric "$1" 2>/dev/null || echo "n/a"
    else
        echo "n/a"
    fi
}
# check VALUE OP THRESHOLD: yes / no / n/a
check() {
    if [[ $1 == n/a ]]; then echo "n/a"; return; fi
    awk -v v="$1" -v t="$3" -v op="$2" 'BEGIN {
        ok = (op == ">=") ? (v >= t) : (v < t); print (ok ? "yes" : "no") }'
}
fmt() { if [[ $1 == n/a ]]; then echo "n/a"; else printf '%.2fx' "$1"; fi; }

{
    echo "# Serving benchmark results"
    echo
    echo "Generated by \`benches/run_serving_bench.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "(commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(uname -sm), $(nproc) CPUs)."
    echo "Server: \`glimp serve --config $CONFIG $SERVER_ARGS\`. Load: closed loop, completions endpoint,"
    echo "$MAX_TOKENS output tokens per request (ignore_eos), prompts: $PROMPTS_DESC,"
    echo "requests per run = max($MIN_REQUESTS, $REQUESTS_PER_SLOT x concurrency), warm-up = concurrency."
    echo "Policies via the request body: llm = \`$(extra_body llm)\`, glimp = \`$(extra_body glimp)\`,"
    echo "glimp-spec = \`$(extra_body glimp-spec)\`."
    echo
    echo "## Results"
    echo
    if ((${#REPORTS[@]} > 0)); then
        "$LOADTEST" table "${REPORTS[@]}"
    else
        echo "No run completed."
    fi
    if ((${#FAILED_RUNS[@]} > 0)); then
        echo
        echo "Runs that did not complete: ${FAILED_RUNS[*]} (see $OUT_DIR/server.log)."
    fi
    echo
    echo "## Targets (measured in this run)"
    echo
    echo "| target | policy | measured | met |"
    echo "|---|---|---:|---|"
    for policy in $POLICIES; do
        r=$(ratio output_throughput "$OUT_DIR/${policy}-c1.json" "$OUT_DIR/${policy}-c32.json")
        echo "| output tok/s at c=32 >= 8x c=1 | $policy | $(fmt "$r") | $(check "$r" ">=" 8) |"
    done
    for policy in $POLICIES; do
        r=$(ratio itl_p99_ms "$OUT_DIR/${policy}-c1.json" "$OUT_DIR/${policy}-c32.json")
        echo "| p99 ITL at c=32 < 4x c=1 | $policy | $(fmt "$r") | $(check "$r" "<" 4) |"
    done
    for policy in glimp glimp-spec; do
        r=$(ratio output_throughput "$OUT_DIR/llm-c32.json" "$OUT_DIR/${policy}-c32.json")
        echo "| output tok/s at c=32 >= 1.3x llm-only | $policy | $(fmt "$r") | $(check "$r" ">=" 1.3) |"
    done
    echo
    echo "## Whole solutions at c=32 (no ignore_eos, up to 200 tokens, 128 requests)"
    echo
    if ((${#EOS_REPORTS[@]} > 0)); then
        "$LOADTEST" table "${EOS_REPORTS[@]}"
    fi
    echo
    echo "| ratio to llm-only | policy | requests/s | output tok/s |"
    echo "|---|---|---:|---:|"
    for policy in glimp glimp-spec; do
        rq=$(ratio request_throughput "$OUT_DIR/llm-eos-c32.json" "$OUT_DIR/${policy}-eos-c32.json")
        rt=$(ratio output_throughput "$OUT_DIR/llm-eos-c32.json" "$OUT_DIR/${policy}-eos-c32.json")
        echo "| whole solutions, c=32 | $policy | $(fmt "$rq") | $(fmt "$rt") |"
    done
    echo
    echo "Per-run JSON reports: \`$OUT_DIR/\`; compare two with \`glimp-loadtest compare A.json B.json\`."
} >"$RESULTS"

echo "== wrote $RESULTS"
cat "$RESULTS"
