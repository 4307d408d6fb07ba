#!/usr/bin/env bash
# Load test of POST /validate over keep-alive HTTPS (HTTP/1.1, as the API
# server calls webhooks), meshgate against examples/baseline_server.rs.
#
#   DURATION=10 scripts/load.sh
#
# Each scenario starts a fresh server pinned to CPU $SERVER_CPU (default 0)
# and drives it with oha pinned to CPU $LOAD_CPU (default 1): a short warm-up,
# then 1 connection for $DURATION seconds, then $CONNS (default 16)
# connections for $DURATION seconds. Reported per run: requests/s, p50/p99
# latency, server CPU time per request (utime+stime from /proc/PID/stat) and
# the server's share of its core; per server: peak RSS (VmHWM).
#
# Environment: DURATION (s, default 10), CONNS (default 16), WARMUP (s,
# default 1), SERVER_CPU, LOAD_CPU, PORT (default 18443), OHA (path to oha),
# KEEP=1 keeps the work directory (logs, oha JSON), RESULTS=FILE also writes
# the summary as Markdown to FILE. Exit status 1 if a goal fails.
#
# Needs: cargo, oha (installed with `cargo install oha --locked` if missing;
# it uses rustls, no OpenSSL), openssl (CLI, for a throwaway certificate),
# curl, jq, taskset, timeout. Traffic goes to 127.0.0.1 only.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-10}
CONNS=${CONNS:-16}
WARMUP=${WARMUP:-1}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PORT=${PORT:-18443}
METRICS_PORT=$((PORT + 1))
OHA=${OHA:-oha}
FIXTURES="$ROOT/benches/fixtures"
URL="https://127.0.0.1:$PORT/validate?timeout=5s"
CLK_TCK=$(getconf CLK_TCK)

for tool in cargo openssl curl jq taskset timeout; do
    command -v "$tool" >/dev/null || { echo "load.sh: $tool is required" >&2; exit 2; }
done
if ! command -v "$OHA" >/dev/null; then
    echo "load.sh: oha not found; installing it (cargo install oha --locked, rustls build)" >&2
    cargo install oha --locked
    OHA=oha
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/meshgate-load.XXXXXX")
SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ "${KEEP:-0}" == 1 ]]; then
        echo "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- build -------------------------------------------------------------------
echo "== building release binaries"
(cd "$ROOT" && cargo build --release --bin meshgate --example baseline_server)
TARGET_DIR=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
MESHGATE="$TARGET_DIR/release/meshgate"
BASELINE="$TARGET_DIR/release/examples/baseline_server"

# --- certificate and cluster state --------------------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$WORK/tls.key" -out "$WORK/tls.crt" -days 1 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
mkdir -p "$WORK/state"
cp "$ROOT/benches/fixtures/state.yaml" "$WORK/state/state.yaml"   # the same state as benches/rules.rs

# --- helpers -------------------------------------------------------------------
cpu_ticks() { # utime + stime of all threads, in clock ticks
    sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}
peak_rss_kib() {
    awk '/^VmHWM:/ {print $2}' "/proc/$1/status"
}

start_server() { # name, command...
    local name=$1
    shift
    taskset -c "$SERVER_CPU" "$@" >"$WORK/$name.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 100); do
        if curl -sk --max-time 1 -o /dev/null "https://127.0.0.1:$PORT/"; then
            return 0
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "load.sh: $name did not start; its log:" >&2
    cat "$WORK/$name.log" >&2
    exit 1
}

stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

check_answer() { # body, expected "allowed" value
    local answer
    answer=$(curl -sk --max-time 5 -H 'Content-Type: application/json' \
        --data-binary "@$1" "$URL")
    if [[ $(jq -r .response.allowed <<<"$answer") != "$2" ]]; then
        echo "load.sh: expected allowed=$2 for $(basename "$1"), got: ${answer:0:400}" >&2
        exit 1
    fi
}

oha_run() { # seconds, connections, body, output
    timeout $(($1 + 30)) taskset -c "$LOAD_CPU" "$OHA" -z "${1}s" -c "$2" \
        --no-tui --worker-threads 1 -m POST -T application/json -D "$3" \
        --insecure --output-format json "$URL" >"$4"
}

# One line per run in $WORK/results.tsv:
# scenario conns rps p50_ms p99_ms requests errors cpu_us_per_req cpu_pct
run() { # scenario, connections, body
    local scenario=$1 conns=$2 body=$3 out="$WORK/$1-c$2.json"
    local t0 t1
    t0=$(cpu_ticks "$SERVER_PID")
    oha_run "$DURATION" "$conns" "$body" "$out"
    t1=$(cpu_ticks "$SERVER_PID")
    jq -r --arg s "$scenario" --argjson c "$conns" --argjson ticks $((t1 - t0)) \
        --argjson hz "$CLK_TCK" --argjson dur "$DURATION" '
        (.statusCodeDistribution["200"] // 0) as $ok
        | ([.statusCodeDistribution | to_entries[] | select(.key != "200") | .value] | add // 0) as $bad
        | [$s, $c,
           (.summary.requestsPerSec * 10 | round / 10),
           (.latencyPercentiles.p50 * 1e6 | round / 1e3),
           (.latencyPercentiles.p99 * 1e6 | round / 1e3),
           $ok, $bad,
           (if $ok > 0 then ($ticks / $hz / $ok * 1e7 | round / 10) else 0 end),
           ($ticks / $hz / $dur * 100 | round)]
        | @tsv' "$out" | tee -a "$WORK/results.tsv" |
        awk -F'\t' '{printf "   %-22s c=%-3s %9s req/s  p50 %7s ms  p99 %7s ms  %8s µs CPU/req  CPU %3s%%  (%s ok, %s not 200)\n", $1, $2, $3, $4, $5, $8, $9, $6, $7}'
}

cpu_sample() { # total and idle jiffies of all CPUs
    awk '/^cpu / { t = 0; for (i = 2; i <= 9; i++) t += $i; print t, $5 + $6 }' /proc/stat
}

# Anything else running (a build) takes the pinned cores away and shows up as
# p99 outliers of several milliseconds: check that the machine is idle for a
# second before each scenario, and say so when it is not.
check_idle() {
    local t0 i0 t1 i1 busy
    read -r t0 i0 < <(cpu_sample)
    sleep 1
    read -r t1 i1 < <(cpu_sample)
    busy=$((100 * ((t1 - t0) - (i1 - i0)) / (t1 - t0 > 0 ? t1 - t0 : 1)))
    if ((busy > 10)); then
        echo "   WARNING: the CPUs were ${busy}% busy before this scenario (other processes): figures will be off" >&2
    fi
}

scenario() { # name, server (baseline|meshgate), body, expected allowed
    local name=$1 server=$2 body=$3 expect=$4
    echo "== $name: $server, $(basename "$body") ($(wc -c <"$body") bytes)"
    check_idle
    if [[ $server == baseline ]]; then
        start_server "$name" "$BASELINE" --listen "127.0.0.1:$PORT" \
            --tls-cert "$WORK/tls.crt" --tls-key "$WORK/tls.key"
    else
        start_server "$name" "$MESHGATE" serve --listen "127.0.0.1:$PORT" \
            --metrics-listen "127.0.0.1:$METRICS_PORT" \
            --tls-cert "$WORK/tls.crt" --tls-key "$WORK/tls.key" \
            --state-from "$WORK/state"
    fi
    check_answer "$body" "$expect"
    if [[ $WARMUP -gt 0 ]]; then
        oha_run "$WARMUP" 4 "$body" "$WORK/$name-warmup.json"
    fi
    run "$name" 1 "$body"
    run "$name" "$CONNS" "$body"
    printf '%s\t%s\n' "$name" "$(peak_rss_kib "$SERVER_PID")" >>"$WORK/rss.tsv"
    echo "   peak RSS $(($(peak_rss_kib "$SERVER_PID") / 1024)) MiB"
    stop_server
}

# --- scenarios -------------------------------------------------------------------
echo "== ${DURATION}s per run; server on CPU $SERVER_CPU, oha on CPU $LOAD_CPU; $(nproc) CPUs"
scenario baseline-injected baseline "$FIXTURES/pod-injected.json" true
scenario meshgate-injected meshgate "$FIXTURES/pod-injected.json" true
scenario meshgate-plain meshgate "$FIXTURES/pod-plain.json" false
scenario baseline-large-env baseline "$FIXTURES/pod-large-env.json" true
scenario meshgate-large-env meshgate "$FIXTURES/pod-large-env.json" true

# --- summary -----------------------------------------------------------------------
field() { # scenario, conns, column (1-based, see results.tsv)
    awk -F'\t' -v s="$1" -v c="$2" -v f="$3" '$1 == s && $2 == c {print $f}' "$WORK/results.tsv"
}
rss_mib() {
    awk -F'\t' -v s="$1" '$1 == s {printf "%.1f", $2 / 1024}' "$WORK/rss.tsv"
}
verdict() { # awk condition over x
    if awk -v x="$1" "BEGIN { exit !($2) }"; then echo PASS; else echo FAIL; fi
}

{
    echo
    echo "| scenario | conns | req/s | p50 ms | p99 ms | server CPU µs/req | server CPU % | peak RSS MiB | non-200 |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    while IFS=$'\t' read -r s c rps p50 p99 _ bad cpu pct; do
        echo "| $s | $c | $rps | $p50 | $p99 | $cpu | $pct | $(rss_mib "$s") | $bad |"
    done <"$WORK/results.tsv"
    echo

    tput_ratio=$(awk -v m="$(field meshgate-injected "$CONNS" 3)" -v b="$(field baseline-injected "$CONNS" 3)" \
        'BEGIN {printf "%.2f", m / b}')
    p99_ratio=$(awk -v m="$(field meshgate-injected 1 5)" -v b="$(field baseline-injected 1 5)" \
        'BEGIN {printf "%.2f", m / b}')
    peak_rss=$(for s in meshgate-injected meshgate-plain meshgate-large-env; do rss_mib "$s"; echo; done |
        sort -n | tail -1)
    large_p99=$(field meshgate-large-env 1 5)
    large_p99_c=$(field meshgate-large-env "$CONNS" 5)

    echo "| goal | measured | verdict |"
    echo "|---|---:|---|"
    echo "| throughput meshgate / baseline, injected pod, $CONNS conns ≥ 0.5 | $tput_ratio | $(verdict "$tput_ratio" 'x >= 0.5') |"
    echo "| p99 meshgate / baseline, injected pod, 1 conn ≤ 2 | $p99_ratio | $(verdict "$p99_ratio" 'x <= 2') |"
    echo "| meshgate peak RSS < 64 MiB | $peak_rss MiB | $(verdict "$peak_rss" 'x < 64') |"
    echo "| 85 KB pod p99, 1 conn < 5 ms | $large_p99 ms | $(verdict "$large_p99" 'x < 5') |"
    echo "| (info) 85 KB pod p99, $CONNS conns | $large_p99_c ms | |"
} | tee "$WORK/summary.md"

if [[ -n "${RESULTS:-}" ]]; then
    cp "$WORK/summary.md" "$RESULTS"
fi
if grep -q '| FAIL |' "$WORK/summary.md"; then
    exit 1
fi
