#!/usr/bin/env bash
# Overload and abuse soak of `glimp serve` (bundled pair, one tenant with an API
# key, max_waiting_requests = WAITING). One command:
#
#   benches/soak.sh            # DURATION=180 seconds of soak by default
#
# 1. Measures capacity: closed loop at concurrency 32 for 15 s -> requests/s.
# 2. For DURATION seconds at once: glimp-loadtest open loop at twice that rate
#    (128 output tokens, ignore_eos), and benches/soak_abuse.py sending
#    abandoned streams, malformed bodies, a bad key, over-long prompts and
#    too many choices.
# 3. Waits for the server to go idle and checks: every load request either
#    completed or got a clean 503 (the bounded queue), every abuse request got
#    the error it was owed, no request is running or waiting, no KV block is
#    held, and RSS (taken after the capacity run, once the KV pools' pages
#    are in use) came back near where it was. Prints the figures
#    README.md quotes (requests sent, completed, refused by reason, errors by
#    kind, RSS at start / peak / end).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DURATION="${DURATION:-180}"
WAITING="${WAITING:-64}"
PORT="${PORT:-8411}"
KEY="sk-soak"
URL="http://127.0.0.1:$PORT"
OUT="$(mktemp -d)"
cd "$ROOT"
cargo build --release -p glimprouter-cli -p glimprouter-loadtest

cat >"$OUT/soak.toml" <<EOF
[engine]
max_waiting_requests = $WAITING
[engine.slm]
path = "$ROOT/models/slm"
kv_cache_mb = 64
[engine.llm]
path = "$ROOT/models/llm"
kv_cache_mb = 256
[engine.routing]
tau = 0.8
[[server.tenants]]
name = "soak"
api_key = "$KEY"
EOF
target/release/glimp serve --config "$OUT/soak.toml" --port "$PORT" >"$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
# shellcheck source=benches/wait_healthy.sh
source "$ROOT/benches/wait_healthy.sh"
wait_healthy "$PORT"
rss() { awk '/VmRSS/ {print $2}' "/proc/$SERVER/status"; }

loadtest() {
    target/release/glimp-loadtest --url "$URL" --api-key "$KEY" --endpoint completions \
        --prompts benches/task_prompts.jsonl --max-tokens 128 --ignore-eos --no-progress "$@"
}
loadtest --concurrency 32 --duration 15 --json "$OUT/capacity.json" >/dev/null
RATE=$(python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(round(2 * m['completed'] / m['duration_s'], 1))" "$OUT/capacity.json")
echo "capacity run done; soaking at $RATE requests/s (twice capacity) for $DURATION s"
# After the capacity run: the KV pools are allocated at start but only take
# memory as their pages are first written.
RSS_START=$(rss)

PEAK=$RSS_START
(while kill -0 $SERVER 2>/dev/null; do echo "$(rss)"; sleep 1; done) >"$OUT/rss.txt" &
SAMPLER=$!
python3 benches/soak_abuse.py "$URL" "$KEY" "$DURATION" >"$OUT/abuse.json" &
ABUSE=$!
loadtest --rate "$RATE" --duration "$DURATION" --timeout 600 --json "$OUT/soak.json" >"$OUT/soak.txt"
wait $ABUSE

# Idle: nothing running or waiting, no KV block held.
for _ in $(seq 60); do
    METRICS=$(curl -sf "$URL/metrics")
    busy=$(echo "$METRICS" | awk '/^glimp:num_requests_(running|waiting)/ {s += $2} /^glimp:kv_cache_usage_perc/ {s += $2} END {print s + 0}')
    [ "$busy" = "0" ] && break
    sleep 1
done
RSS_END=$(rss)
kill $SAMPLER 2>/dev/null || true
PEAK=$(sort -n "$OUT/rss.txt" | tail -1)

python3 - "$OUT" "$RSS_START" "$PEAK" "$RSS_END" "$busy" "$METRICS" <<'EOF'
import json, sys
out, start, peak, end, busy, metrics = sys.argv[1], *map(int, sys.argv[2:6]), sys.argv[6]
m = json.load(open(f"{out}/soak.json"))
abuse = json.load(open(f"{out}/abuse.json"))
refused = {l.split('"')[1]: int(float(l.split()[-1])) for l in metrics.splitlines()
           if l.startswith("glimp:requests_refused_total{")}
sent = m["completed"] + m["failed"]
print(f"load: {sent} sent, {m['completed']} completed, failed by kind {m['failed_by_kind']}")
print(f"refused by the server, by reason: {refused}")
print(f"abuse: {abuse['counts']}")
print(f"RSS (MiB): start {start // 1024}, peak {peak // 1024}, end {end // 1024}")
ok = True
if set(m["failed_by_kind"]) - {"http_503"}:
    print("FAIL: load requests failed other than with 503"); ok = False
if abuse["problems"]:
    print(f"FAIL: abuse answers: {abuse['problems']}"); ok = False
if any("unexpected" in k or "connection" in k for k in abuse["counts"]):
    ok = False
if busy != 0:
    print("FAIL: requests or KV blocks still held when idle"); ok = False
if end > start * 1.25 + 64 * 1024:
    print("FAIL: RSS did not come back near its start"); ok = False
print("PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
EOF
