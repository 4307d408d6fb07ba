#!/usr/bin/env bash
# Throughput and peak memory of `meshgate audit` on a generated manifest set
# (issue 12: at least 20,000 objects/s on 100,000 objects).
#
#   scripts/audit-throughput.sh
#   OBJECTS=100000 RUNS=3 scripts/audit-throughput.sh
#
# Builds the release `meshgate` and examples/gen_manifests.rs, generates
# $OBJECTS objects into a temporary directory (a directory per namespace,
# multi-document YAML files: Namespaces, PeerAuthentications,
# AuthorizationPolicies, DestinationRules, injected and plain Deployments and
# Pods shaped like `istioctl kube-inject` output; see the example's header),
# then runs `meshgate audit --output json DIR` $RUNS times on every CPU (the
# audit reads and judges on all of them) or pinned to the CPUs in $AUDIT_CPU
# (a taskset list: `AUDIT_CPU=0` for one core), each under GNU
# `/usr/bin/time -v` and bounded by `timeout`.
# Objects/s is `summary.objectsChecked` of the JSON report divided by the
# wall time of the whole command (reading, parsing, indexing, judging,
# printing); peak RSS is time's "Maximum resident set size". Reported: every
# run, the median objects/s, the highest peak RSS; exit status 1 if the goal
# fails or the audit did not check every generated object.
#
# Environment: OBJECTS (default 100000), RUNS (default 3), AUDIT_CPU
# (default: all CPUs), TIMEOUT (s per run, default 600), GOAL (objects/s, default
# 20000), KEEP=1 keeps the work directory (manifests, reports), RESULTS=FILE
# also writes the summary as Markdown to FILE.
#
# Needs: cargo, jq, taskset, timeout, GNU time (/usr/bin/time; Debian
# package `time`). The generated set takes about 4.2 KB of disk per object
# (420 MB for 100,000).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OBJECTS=${OBJECTS:-100000}
RUNS=${RUNS:-3}
AUDIT_CPU=${AUDIT_CPU:-0-$(($(nproc) - 1))}
TIMEOUT=${TIMEOUT:-600}
GOAL=${GOAL:-20000}

for tool in cargo jq taskset timeout; do
    command -v "$tool" >/dev/null || { echo "audit-throughput.sh: $tool is required" >&2; exit 2; }
done
if [[ ! -x /usr/bin/time ]] || ! /usr/bin/time -v true >/dev/null 2>&1; then
    echo "audit-throughput.sh: GNU time is required at /usr/bin/time (apt-get install time)" >&2
    exit 2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/meshgate-audit.XXXXXX")
cleanup() {
    if [[ "${KEEP:-0}" == 1 ]]; then
        echo "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== building release binaries"
(cd "$ROOT" && cargo build --release --bin meshgate --example gen_manifests)
TARGET_DIR=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
MESHGATE="$TARGET_DIR/release/meshgate"
GENERATOR="$TARGET_DIR/release/examples/gen_manifests"

echo "== generating $OBJECTS objects"
"$GENERATOR" --objects "$OBJECTS" --out "$WORK/manifests"
input_bytes=$(du -sb "$WORK/manifests" | cut -f1)
input_files=$(find "$WORK/manifests" -type f | wc -l)
echo "   $input_files files, $input_bytes bytes"

# One line per run in $WORK/runs.tsv: run exit objects seconds objects_per_s peak_rss_kib user_s sys_s findings
for ((run = 1; run <= RUNS; run++)); do
    echo "== run $run of $RUNS: meshgate audit on CPUs $AUDIT_CPU ($(nproc) online)"
    start=$EPOCHREALTIME
    status=0
    timeout "$TIMEOUT" /usr/bin/time -v -o "$WORK/time-$run.txt" \
        taskset -c "$AUDIT_CPU" "$MESHGATE" audit --output json "$WORK/manifests" \
        >"$WORK/report-$run.json" 2>"$WORK/stderr-$run.txt" || status=$?
    end=$EPOCHREALTIME
    # 0: no enforce-level finding, 1: enforce-level findings; both are a
    # complete report. Anything else (2: error, 124: timeout) is not.
    if ((status > 1)); then
        echo "audit-throughput.sh: meshgate audit exited $status; its stderr:" >&2
        head -c 2000 "$WORK/stderr-$run.txt" >&2
        exit 1
    fi
    checked=$(jq .summary.objectsChecked "$WORK/report-$run.json")
    findings=$(jq .summary.findings "$WORK/report-$run.json")
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time-$run.txt")
    user=$(awk -F': ' '/User time/ {print $2}' "$WORK/time-$run.txt")
    sys=$(awk -F': ' '/System time/ {print $2}' "$WORK/time-$run.txt")
    awk -v r="$run" -v st="$status" -v n="$checked" -v t0="$start" -v t1="$end" -v rss="$rss" \
        -v u="$user" -v s="$sys" -v f="$findings" \
        'BEGIN {t = t1 - t0; printf "%s\t%s\t%s\t%.3f\t%.0f\t%s\t%s\t%s\t%s\n", r, st, n, t, n / t, rss, u, s, f}' |
        tee -a "$WORK/runs.tsv" |
        awk -F'\t' '{printf "   %s objects in %s s: %s objects/s, peak RSS %.1f MiB, CPU %s s user + %s s sys, %s findings (exit %s)\n", $3, $4, $5, $6 / 1024, $7, $8, $9, $2}'
done

median_rate=$(cut -f5 "$WORK/runs.tsv" | sort -g |
    awk '{v[NR] = $1} END {m = int((NR + 1) / 2); if (NR % 2) print v[m]; else print (v[m] + v[m + 1]) / 2}')
peak_rss_mib=$(awk -F'\t' '$6 > max {max = $6} END {printf "%.1f", max / 1024}' "$WORK/runs.tsv")
all_checked=$(awk -F'\t' -v n="$OBJECTS" '$3 != n {bad = 1} END {print bad ? "no" : "yes"}' "$WORK/runs.tsv")
verdict() { if awk -v x="$1" "BEGIN { exit !($2) }"; then echo PASS; else echo FAIL; fi; }

{
    echo
    echo "### meshgate audit, $OBJECTS generated objects ($input_files files, $input_bytes bytes)"
    echo
    echo "| run | objects checked | wall s | objects/s | peak RSS MiB | user s | sys s | findings | exit |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    awk -F'\t' '{printf "| %s | %s | %s | %s | %.1f | %s | %s | %s | %s |\n", $1, $3, $4, $5, $6 / 1024, $7, $8, $9, $2}' \
        "$WORK/runs.tsv"
    echo
    echo "| goal | measured | verdict |"
    echo "|---|---:|---|"
    echo "| objects/s (median of $RUNS) ≥ $GOAL | $median_rate | $(verdict "$median_rate" "x >= $GOAL") |"
    echo "| every generated object checked ($OBJECTS) | $all_checked | $( [[ $all_checked == yes ]] && echo PASS || echo FAIL) |"
    echo "| (information) peak RSS | $peak_rss_mib MiB | |"
} | tee "$WORK/summary.md"

if [[ -n "${RESULTS:-}" ]]; then
    cp "$WORK/summary.md" "$RESULTS"
fi
if grep -q '| FAIL |' "$WORK/summary.md"; then
    exit 1
fi
