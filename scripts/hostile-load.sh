#!/usr/bin/env bash
# Hostile load: legitimate reviews while hostile clients hold connections to
# the webhook port (examples/hostile_load.rs does the clients).
#
#   scripts/hostile-load.sh
#   IDLE=1000 DRIP=1000 SECONDS_PER_PHASE=20 scripts/hostile-load.sh
#   EXTRA_ARGS="--max-connections 1000" scripts/hostile-load.sh   # past the cap
#   SERVER_NOFILE=1024 scripts/hostile-load.sh   # server limited to 1,024 descriptors (cap 896)
#
# Starts a release `meshgate serve` on 127.0.0.1 with its default timeouts
# (plus EXTRA_ARGS), then: $SECONDS_PER_PHASE s of legitimate reviews
# ($WORKERS keep-alive HTTP/1.1 connections, back to back) on the quiet
# server; then $IDLE connections silent after the TLS handshake and $DRIP
# connections dripping a request body one byte every 3 s (each reopened as
# soon as the server closes it) and the same legitimate load again. Prints
# p50/p99/max and errors of both phases, how long the server let the hostile
# connections live, RSS before/peak/after, and the server's shed counters.
#
# Needs cargo, openssl (CLI, throwaway certificate), curl. Raises `ulimit -n`
# (the client holds IDLE + DRIP descriptors). Traffic goes to 127.0.0.1 only;
# the whole run is bounded (about 2 x SECONDS_PER_PHASE + 60 s).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IDLE=${IDLE:-1000}
DRIP=${DRIP:-1000}
WORKERS=${WORKERS:-4}
SECONDS_PER_PHASE=${SECONDS_PER_PHASE:-20}
PORT=${PORT:-18543}
EXTRA_ARGS=${EXTRA_ARGS:-}
SERVER_NOFILE=${SERVER_NOFILE:-}

for tool in cargo openssl curl timeout; do
    command -v "$tool" >/dev/null || { echo "hostile-load.sh: $tool is required" >&2; exit 2; }
done
need=$((IDLE + DRIP + 512))
if (( $(ulimit -n) < need )); then
    ulimit -n "$need" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi
echo "== open-files limit of this shell: $(ulimit -n)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/meshgate-hostile.XXXXXX")
SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== building release binaries"
(cd "$ROOT" && cargo build --release --quiet --bin meshgate --example hostile_load)
TARGET_DIR=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps | sed 's/.*"target_directory":"\([^"]*\)".*/\1/')

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$WORK/tls.key" -out "$WORK/tls.crt" -days 1 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -addext "basicConstraints=critical,CA:FALSE" 2>/dev/null

# The server's own open-files limit (soft and hard) when SERVER_NOFILE is set,
# as in a container whose runtime sets it.
limit_server() {
    if [[ -n "$SERVER_NOFILE" ]]; then
        ulimit -Sn "$SERVER_NOFILE" && ulimit -Hn "$SERVER_NOFILE"
    fi
    exec "$@"
}
# shellcheck disable=SC2086 # EXTRA_ARGS is a list of flags
limit_server "$TARGET_DIR/release/meshgate" serve --listen "127.0.0.1:$PORT" \
    --metrics-listen "127.0.0.1:$((PORT + 1))" \
    --tls-cert "$WORK/tls.crt" --tls-key "$WORK/tls.key" \
    --state-from "$ROOT/benches/fixtures/state.yaml" --drain-delay 0s \
    $EXTRA_ARGS >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do
    curl -sfk "https://127.0.0.1:$PORT/readyz" >/dev/null && break
    sleep 0.1
done
grep -o '"max_connections":[0-9]*,"open_files_limit":[0-9]*' "$WORK/server.log" || true

timeout $((2 * SECONDS_PER_PHASE + 90)) "$TARGET_DIR/release/examples/hostile_load" \
    --addr "127.0.0.1:$PORT" --ca "$WORK/tls.crt" --pid "$SERVER_PID" \
    --review "$ROOT/tests/fixtures/admission/pod-create-injected.json" \
    --idle "$IDLE" --drip "$DRIP" --workers "$WORKERS" --seconds "$SECONDS_PER_PHASE"

echo "== server counters"
curl -s "http://127.0.0.1:$((PORT + 1))/metrics" | grep -E '^meshgate_connections_(shed_total|open)'
echo "accept failures logged: $(grep -c 'accept failed' "$WORK/server.log" || true)"
