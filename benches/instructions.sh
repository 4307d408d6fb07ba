#!/usr/bin/env bash
# Load-independent cost of one review, whole process: each server (the
# release meshgate, started as scripts/load.sh starts it, and the no-op
# examples/baseline_server.rs) runs under callgrind; after a warm-up,
# oha sends a fixed number of reviews and callgrind's counters over exactly
# those requests are divided by their count. Instructions alone showed the
# two servers at parity while meshgate used ~1.5x the CPU time, so the
# simulated cache and branch predictor are on by default: I1/D1 misses and
# mispredicted branches per request are what differ.
#
#   benches/instructions.sh                  # plain and deployment, both servers
#   SCENARIOS="plain" N=2000 benches/instructions.sh
#
# Environment: SCENARIOS (plain deployment injected large-env), SERVERS
# (meshgate baseline), N (requests, default 2000; the CONNS TLS handshakes are
# included, the same for both servers), CONNS (default 16), BIN
# (directory of the release binaries, default target/release; build them
# with `cargo build --release --bin meshgate --example baseline_server`),
# SIM=0 (instructions only, ~2x faster), PORT (default 18643), KEEP=1
# keeps the callgrind files (for callgrind_annotate --inclusive=yes).
# Needs valgrind, oha, openssl, curl, timeout. Traffic: 127.0.0.1 only.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCENARIOS=${SCENARIOS:-plain deployment}
SERVERS=${SERVERS:-meshgate baseline}
N=${N:-2000}
CONNS=${CONNS:-16}
BIN=${BIN:-$ROOT/target/release}
PORT=${PORT:-18643}
SIM=${SIM:-1}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/meshgate-instr.XXXXXX")
PID=""
cleanup() {
    if [[ -n "$PID" ]] && kill -0 "$PID" 2>/dev/null; then
        kill "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    if [[ "${KEEP:-0}" == 1 ]]; then echo "callgrind files kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

fixture() {
    case $1 in
    plain) echo pod-plain.json ;;
    deployment) echo deployment.json ;;
    injected) echo pod-injected.json ;;
    large-env) echo pod-large-env.json ;;
    *) echo "unknown scenario $1" >&2; exit 2 ;;
    esac
}

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$WORK/tls.key" -out "$WORK/tls.crt" -days 1 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
mkdir -p "$WORK/state"
cp "$ROOT/benches/fixtures/state.yaml" "$WORK/state/"
sim=()
if [[ $SIM == 1 ]]; then sim=(--cache-sim=yes --branch-sim=yes); fi

measure() { # server scenario
    local server=$1 body out url
    body="$ROOT/benches/fixtures/$(fixture "$2")"
    out="$WORK/callgrind.$1.$2"
    url="https://127.0.0.1:$PORT/validate?timeout=5s"
    local cmd=("$BIN/examples/baseline_server" --listen "127.0.0.1:$PORT")
    if [[ $server == meshgate ]]; then
        cmd=("$BIN/meshgate" serve --listen "127.0.0.1:$PORT" \
            --metrics-listen "127.0.0.1:$((PORT + 1))" --state-from "$WORK/state")
    fi
    valgrind --tool=callgrind "${sim[@]}" --callgrind-out-file="$out" \
        "${cmd[@]}" --tls-cert "$WORK/tls.crt" --tls-key "$WORK/tls.key" >"$out.log" 2>&1 &
    PID=$!
    for _ in $(seq 300); do
        curl -sk --max-time 2 -o /dev/null "https://127.0.0.1:$PORT/" && break
        sleep 0.5
    done
    local oha=(timeout 900 oha --no-tui --insecure -m POST -T application/json -D "$body")
    "${oha[@]}" -n 200 -c 4 "$url" >/dev/null
    callgrind_control -z "$PID" >/dev/null 2>&1
    "${oha[@]}" -n "$N" -c "$CONNS" "$url" >"$out.oha"
    callgrind_control -d "$PID" >/dev/null 2>&1
    kill "$PID"
    wait "$PID" || true
    PID=""
    grep -q "\[200\] $N responses" "$out.oha" || { echo "not all $N answers were 200:" >&2; cat "$out.oha" >&2; exit 1; }
    # The dump taken after the measured requests is the one with a suffix.
    local dump
    dump=$(ls "$out".[0-9]* | head -1)
    callgrind_annotate "$dump" 2>/dev/null | awk -v n="$N" -v name="$server $2" '
        /^Events shown:/ { for (i = 3; i <= NF; i++) ev[i - 2] = $i; k = NF - 2 }
        /PROGRAM TOTALS/ {
            line = name; j = 0
            for (i = 1; i <= NF && j < k; i++) {
                if ($i ~ /^[0-9,]+$/) { gsub(",", "", $i); j++; per[ev[j]] = $i / n }
            }
            printf "%-22s Ir %7.0f", name, per["Ir"]
            if ("I1mr" in per) printf "  I1mr %5.0f  D1mr %5.0f  D1mw %5.0f  Bcm %5.0f  Bim %4.0f", per["I1mr"], per["D1mr"], per["D1mw"], per["Bcm"], per["Bim"]
            printf "  (per request)\n"
        }'
}

for scenario in $SCENARIOS; do
    for server in $SERVERS; do
        measure "$server" "$scenario"
    done
done
