#!/usr/bin/env bash
# Load test of meshgate's webhook endpoints over keep-alive HTTPS (HTTP/1.1,
# as the API server calls webhooks), side by side with the no-op webhook
# examples/baseline_server.rs, in one run.
#
#   ROUNDS=3 DURATION=10 scripts/load.sh
#
# Scenarios (benches/fixtures/, see docs/src/operations/benchmarks.md):
#   injected    POST /validate, pod-injected.json (the review a real
#               kube-apiserver sends after Istio's injector ran; allowed)
#   plain       POST /validate, pod-plain.json (no sidecar; meshgate denies)
#   deployment  POST /validate, deployment.json
#   large-env   POST /validate, pod-large-env.json (the 85 KB pod)
#   mutate      POST /mutate, pod-injected.json
# Each scenario runs against both servers in every round; the order
# alternates (baseline, meshgate, meshgate, baseline, ...) so that drift of
# the machine does not favour either. Every run starts a fresh server pinned
# to CPU $SERVER_CPU (default 0) and drives it with oha pinned to CPU
# $LOAD_CPU (default 1): a short warm-up, then 1 connection for $DURATION
# seconds, then $CONNS (default 16) connections for $DURATION seconds (the
# server's core saturated). Measured per run: requests/s, p50/p99 latency,
# server CPU time per request (utime+stime from /proc/PID/stat over the run,
# divided by the HTTP 200 answers), the server's share of its core, and peak
# RSS (VmHWM). Reported: every round's figures, the median over the rounds
# per scenario, and the goals of issue 12 as PASS/FAIL, computed on the
# medians. Exit status 1 if a goal fails.
#
# Environment: ROUNDS (default 3), DURATION (s, default 10), CONNS (default
# 16), WARMUP (s, default 1), SERVER_CPU, LOAD_CPU, PORT (default 18443), OHA
# (path to oha), SCENARIOS (space-separated subset, default all; the goals
# of scenarios left out are not judged), KEEP=1 keeps the work directory
# (logs, oha JSON, TSV), RESULTS=FILE also writes the summary as Markdown to
# FILE, MESHGATE_BIN another meshgate binary to measure (e.g. a PGO build,
# see scripts/pgo.sh) instead of the release build.
#
# Needs: cargo, oha (installed with `cargo install oha --locked` if missing;
# it uses rustls, no OpenSSL), openssl (CLI, for a throwaway certificate),
# curl, jq, taskset, timeout. Traffic goes to 127.0.0.1 only; every load run
# is bounded by `timeout`.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-16}
WARMUP=${WARMUP:-1}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PORT=${PORT:-18443}
METRICS_PORT=$((PORT + 1))
OHA=${OHA:-oha}
FIXTURES="$ROOT/benches/fixtures"
CLK_TCK=$(getconf CLK_TCK)

# name path fixture meshgate's expected "allowed" (the baseline always allows)
ALL_SCENARIOS=(
    "injected /validate pod-injected.json true"
    "plain /validate pod-plain.json false"
    "deployment /validate deployment.json true"
    "large-env /validate pod-large-env.json true"
    "mutate /mutate pod-injected.json true"
)
SCENARIOS=${SCENARIOS:-injected plain deployment large-env mutate}

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
MESHGATE=${MESHGATE_BIN:-$TARGET_DIR/release/meshgate}
BASELINE="$TARGET_DIR/release/examples/baseline_server"

# --- certificate and cluster state --------------------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$WORK/tls.key" -out "$WORK/tls.crt" -days 1 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
mkdir -p "$WORK/state"
cp "$FIXTURES/state.yaml" "$WORK/state/state.yaml"   # the same state as benches/rules.rs

# --- helpers -------------------------------------------------------------------
cpu_ticks() { # utime + stime of all threads, in clock ticks
    sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}
peak_rss_kib() {
    awk '/^VmHWM:/ {print $2}' "/proc/$1/status"
}

start_server() { # log name, command...
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

check_answer() { # url, body, expected "allowed" value
    local answer
    answer=$(curl -sk --max-time 5 -H 'Content-Type: application/json' \
        --data-binary "@$2" "$1")
    if [[ $(jq -r .response.allowed <<<"$answer") != "$3" ]]; then
        echo "load.sh: expected allowed=$3 for $(basename "$2") on $1, got: ${answer:0:400}" >&2
        exit 1
    fi
}

oha_run() { # url, seconds, connections, body, output
    timeout $(($2 + 30)) taskset -c "$LOAD_CPU" "$OHA" -z "${2}s" -c "$3" \
        --no-tui --worker-threads 1 -m POST -T application/json -D "$4" \
        --insecure --output-format json "$1" >"$5"
}

# One line per run in $WORK/results.tsv:
# round server scenario conns rps p50_ms p99_ms ok not_200 cpu_us_per_req cpu_pct busy_pct
run() { # round, server, scenario, url, connections, body, busy_pct
    local round=$1 server=$2 scenario=$3 url=$4 conns=$5 body=$6 busy=$7
    local out="$WORK/r$1-$2-$3-c$5.json" t0 t1
    t0=$(cpu_ticks "$SERVER_PID")
    oha_run "$url" "$DURATION" "$conns" "$body" "$out"
    t1=$(cpu_ticks "$SERVER_PID")
    jq -r --argjson r "$round" --arg srv "$server" --arg s "$scenario" --argjson c "$conns" \
        --argjson ticks $((t1 - t0)) --argjson hz "$CLK_TCK" --argjson dur "$DURATION" \
        --argjson busy "$busy" '
        (.statusCodeDistribution["200"] // 0) as $ok
        | ([.statusCodeDistribution | to_entries[] | select(.key != "200") | .value] | add // 0) as $bad
        | [$r, $srv, $s, $c,
           (.summary.requestsPerSec * 10 | round / 10),
           ((.latencyPercentiles.p50 // 0) * 1e6 | round / 1e3),
           ((.latencyPercentiles.p99 // 0) * 1e6 | round / 1e3),
           $ok, $bad,
           (if $ok > 0 then ($ticks / $hz / $ok * 1e7 | round / 10) else 0 end),
           ($ticks / $hz / $dur * 100 | round),
           $busy]
        | @tsv' "$out" | tee -a "$WORK/results.tsv" |
        awk -F'\t' '{printf "   c=%-3s %9s req/s  p50 %7s ms  p99 %7s ms  %8s µs CPU/req  CPU %3s%%  (%s ok, %s not 200)\n", $4, $5, $6, $7, $10, $11, $8, $9}'
}

cpu_sample() { # total and idle jiffies of all CPUs
    awk '/^cpu / { t = 0; for (i = 2; i <= 9; i++) t += $i; print t, $5 + $6 }' /proc/stat
}

# Anything else running (a build) takes the pinned cores away and shows up as
# p99 outliers of several milliseconds: check that the machine is idle for a
# second before each run, say so when it is not, and record it.
busy_percent() {
    local t0 i0 t1 i1
    read -r t0 i0 < <(cpu_sample)
    sleep 1
    read -r t1 i1 < <(cpu_sample)
    echo $((100 * ((t1 - t0) - (i1 - i0)) / (t1 - t0 > 0 ? t1 - t0 : 1)))
}

measure() { # round, server (baseline|meshgate), scenario, path, fixture, expected allowed
    local round=$1 server=$2 scenario=$3 path=$4 body="$FIXTURES/$5" expect=$6
    local url="https://127.0.0.1:$PORT$path?timeout=5s" name="r$1-$2-$3" busy
    echo "== round $round, $server, $scenario: POST $path $(basename "$body") ($(wc -c <"$body") bytes)"
    busy=$(busy_percent)
    if ((busy > 10)); then
        echo "   WARNING: the CPUs were ${busy}% busy before this run (other processes): figures will be off" >&2
    fi
    if [[ $server == baseline ]]; then
        start_server "$name" "$BASELINE" --listen "127.0.0.1:$PORT" \
            --tls-cert "$WORK/tls.crt" --tls-key "$WORK/tls.key"
        expect=true
    else
        start_server "$name" "$MESHGATE" serve --listen "127.0.0.1:$PORT" \
            --metrics-listen "127.0.0.1:$METRICS_PORT" \
            --tls-cert "$WORK/tls.crt" --tls-key "$WORK/tls.key" \
            --state-from "$WORK/state"
    fi
    check_answer "$url" "$body" "$expect"
    if [[ $WARMUP -gt 0 ]]; then
        oha_run "$url" "$WARMUP" 4 "$body" "$WORK/$name-warmup.json"
    fi
    run "$round" "$server" "$scenario" "$url" 1 "$body" "$busy"
    run "$round" "$server" "$scenario" "$url" "$CONNS" "$body" "$busy"
    printf '%s\t%s\t%s\t%s\n' "$round" "$server" "$scenario" "$(peak_rss_kib "$SERVER_PID")" >>"$WORK/rss.tsv"
    echo "   peak RSS $(awk -v k="$(peak_rss_kib "$SERVER_PID")" 'BEGIN {printf "%.1f", k / 1024}') MiB"
    stop_server
}

# --- runs ----------------------------------------------------------------------
echo "== $ROUNDS rounds, ${DURATION}s per run; servers on CPU $SERVER_CPU, oha on CPU $LOAD_CPU; $(nproc) CPUs"
for ((round = 1; round <= ROUNDS; round++)); do
    index=0
    for spec in "${ALL_SCENARIOS[@]}"; do
        read -r scenario path fixture expect <<<"$spec"
        [[ " $SCENARIOS " == *" $scenario "* ]] || continue
        # (round + index) odd: baseline first. Consecutive pairs and the same
        # scenario in consecutive rounds both alternate.
        if (((round + index) % 2 == 1)); then order=(baseline meshgate); else order=(meshgate baseline); fi
        for server in "${order[@]}"; do
            measure "$round" "$server" "$scenario" "$path" "$fixture" "$expect"
        done
        index=$((index + 1))
    done
done

# --- summary -----------------------------------------------------------------------
# Median over the rounds of one column (see results.tsv) of one server,
# scenario and connection count; empty when there is no such run.
median() { # server, scenario, conns, column
    awk -F'\t' -v srv="$1" -v s="$2" -v c="$3" -v f="$4" '$2 == srv && $3 == s && $4 == c {print $f}' \
        "$WORK/results.tsv" | sort -g |
        awk '{v[NR] = $1} END {if (NR == 0) exit; m = int((NR + 1) / 2); if (NR % 2) print v[m]; else print (v[m] + v[m + 1]) / 2}'
}
peak_rss_mib() { # server, [scenario]: the highest VmHWM over the rounds
    awk -F'\t' -v srv="$1" -v s="${2:-}" '$2 == srv && (s == "" || $3 == s) && $4 > max {max = $4}
        END {if (max != "") printf "%.1f", max / 1024}' "$WORK/rss.tsv"
}
not_200() { # server, scenario: non-200 answers over every round
    awk -F'\t' -v srv="$1" -v s="$2" '$2 == srv && $3 == s {n += $9} END {print n + 0}' "$WORK/results.tsv"
}
ratio() { # numerator, denominator: empty when either is missing or the denominator is 0
    awk -v n="$1" -v d="$2" 'BEGIN {if (n != "" && d != "" && d + 0 != 0) printf "%.2f", n / d}'
}
goal() { # description, measured, awk condition over x
    local verdict=FAIL
    if [[ -n "$2" ]] && awk -v x="$2" "BEGIN { exit !($3) }"; then verdict=PASS; fi
    echo "| $1 | ${2:-not measured} | $verdict |"
}
selected() { [[ " $SCENARIOS " == *" $1 "* ]]; }

{
    echo
    echo "### Median over $ROUNDS rounds (${DURATION}s per run)"
    echo
    echo "| scenario | server | conns | req/s | p50 ms | p99 ms | server CPU µs/req | server CPU % | peak RSS MiB | non-200 |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for spec in "${ALL_SCENARIOS[@]}"; do
        read -r s _ <<<"$spec"
        selected "$s" || continue
        for srv in baseline meshgate; do
            for c in 1 "$CONNS"; do
                echo "| $s | $srv | $c | $(median "$srv" "$s" "$c" 5) | $(median "$srv" "$s" "$c" 6) |" \
                    "$(median "$srv" "$s" "$c" 7) | $(median "$srv" "$s" "$c" 10) | $(median "$srv" "$s" "$c" 11) |" \
                    "$(peak_rss_mib "$srv" "$s") | $(not_200 "$srv" "$s") |"
            done
        done
    done
    echo
    echo "### Every round"
    echo
    echo "| round | server | scenario | conns | req/s | p50 ms | p99 ms | server CPU µs/req | server CPU % | CPUs busy before % |"
    echo "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"
    awk -F'\t' '{printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $10, $11, $12}' \
        "$WORK/results.tsv"
    echo

    echo "### Goals (issue 12), on the medians"
    echo
    echo "| goal | measured | verdict |"
    echo "|---|---:|---|"
    if selected injected; then
        goal "throughput meshgate / no-op, /validate injected pod, $CONNS conns ≥ 1.0" \
            "$(ratio "$(median meshgate injected "$CONNS" 5)" "$(median baseline injected "$CONNS" 5)")" 'x >= 1.0'
        goal "p99 meshgate / no-op, /validate injected pod, 1 conn ≤ 1.2" \
            "$(ratio "$(median meshgate injected 1 7)" "$(median baseline injected 1 7)")" 'x <= 1.2'
        goal "server CPU per review meshgate / no-op, /validate injected pod, $CONNS conns ≤ 1.0" \
            "$(ratio "$(median meshgate injected "$CONNS" 10)" "$(median baseline injected "$CONNS" 10)")" 'x <= 1.0'
    fi
    if selected large-env; then
        goal "85 KB pod p99, meshgate, 1 conn < 2 ms" "$(median meshgate large-env 1 7)" 'x < 2'
    fi
    if selected injected && selected mutate; then
        goal "throughput /validate / /mutate, meshgate injected pod, $CONNS conns ≤ 1.2" \
            "$(ratio "$(median meshgate injected "$CONNS" 5)" "$(median meshgate mutate "$CONNS" 5)")" 'x <= 1.2'
        goal "p99 /mutate / /validate, meshgate injected pod, 1 conn ≤ 1.2" \
            "$(ratio "$(median meshgate mutate 1 7)" "$(median meshgate injected 1 7)")" 'x <= 1.2'
    fi
    goal "meshgate peak RSS under load (MiB, every run) ≤ 24" "$(peak_rss_mib meshgate)" 'x <= 24'
    goal "non-200 answers, both servers, every run = 0" \
        "$(awk -F'\t' '{n += $9} END {print n + 0}' "$WORK/results.tsv")" 'x == 0'
    echo
    echo "Information (no goal):"
    echo
    for s in plain deployment large-env; do
        selected "$s" || continue
        echo "- $s: throughput meshgate / no-op at $CONNS conns" \
            "$(ratio "$(median meshgate "$s" "$CONNS" 5)" "$(median baseline "$s" "$CONNS" 5)"), p99 at 1 conn" \
            "$(ratio "$(median meshgate "$s" 1 7)" "$(median baseline "$s" 1 7)")"
    done
    if selected large-env; then
        echo "- 85 KB pod p99, meshgate, $CONNS conns (queueing on one core): $(median meshgate large-env "$CONNS" 7) ms"
    fi
    echo "- no-op peak RSS: $(peak_rss_mib baseline) MiB"
    busy_runs=$(awk -F'\t' '$4 == 1 && $12 > 10' "$WORK/results.tsv" | wc -l)
    echo "- runs that started with the CPUs more than 10% busy: $busy_runs of $(awk -F'\t' '$4 == 1' "$WORK/results.tsv" | wc -l)" \
        "$( ((busy_runs > 0)) && echo '(other processes were running: the figures are not reliable)')"
} | tee "$WORK/summary.md"

if [[ -n "${RESULTS:-}" ]]; then
    cp "$WORK/summary.md" "$RESULTS"
fi
if grep -q '| FAIL |' "$WORK/summary.md"; then
    exit 1
fi
