# Sourced by the bench scripts. wait_healthy PORT: returns once
# 127.0.0.1:PORT/health answers 200; exits the script after 120 s.
wait_healthy() {
    for _ in $(seq 120); do
        curl -sf "127.0.0.1:$1/health" >/dev/null && return 0
        sleep 1
    done
    echo "no server on port $1 after 120 s" >&2
    exit 1
}
