#!/usr/bin/env bash
# Every test binary of `cargo test --all-targets`, as .ci/run runs them:
# built once, then the real-node binaries (tests/node_*.rs: one cluster per
# machine, and their rollouts and kills are timed) one after the other, then
# all the others MESHGATE_TEST_JOBS at a time (default 3). Most of the suite's
# time is the envtest binaries waiting on their own API servers (each picks
# free ports), which overlap well; `cargo test` would run them one by one.
#
# Each binary's output is printed whole when it ends, under cargo's own
# `Running <source> (<binary>)` line, so the summary and the checks in .ci/run
# read it as they read cargo's. Every binary runs even when one fails (as
# --no-fail-fast); the exit status is 1 if any failed.
#
#   scripts/test-all.sh [cargo test flags...]    (e.g. --locked)
#
# MESHGATE_TEST_LANES=node runs only the node binaries, =others only the
# rest (.ci/run starts the fuzz build between the two); default both.
set -euo pipefail
cd "$(dirname "$0")/.."

jobs="${MESHGATE_TEST_JOBS:-3}"
# Line tables only: backtraces keep their file and line, and the ~40 test
# binaries link in two thirds of the time full debug information takes.
export CARGO_PROFILE_DEV_DEBUG="${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}"
export CARGO_PROFILE_TEST_DEBUG="${CARGO_PROFILE_TEST_DEBUG:-line-tables-only}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cargo test --all-targets --no-run --message-format=json-render-diagnostics "$@" \
  >"$work/build.json"
# One line per test binary (not the meshgate binary the CLI tests run):
# lane, label, executable. The node binaries first (lane 0), then the two
# longest envtest ones, the other envtest ones, the rest: the longest start
# first, so the lanes end together.
python3 - "$work/build.json" "$PWD" >"$work/binaries" <<'EOF'
import json, os, sys
root = sys.argv[2]
longest = ["tests/envtest_outage.rs", "tests/envtest_native_mount_diff.rs"]
found = []
for line in open(sys.argv[1]):
    message = json.loads(line)
    if message.get("reason") != "compiler-artifact" or not message.get("executable"):
        continue
    if not message["profile"]["test"]:
        continue
    target = message["target"]
    source = os.path.relpath(target["src_path"], root)
    label = source if target["kind"][0] in ("test", "bench") else "unittests " + source
    if source.startswith("tests/node_"):
        lane = 0
    elif source in longest:
        lane = 1
    elif source.startswith("tests/envtest_"):
        lane = 2
    else:
        lane = 3
    found.append((lane, label, os.path.relpath(message["executable"], root)))
for lane, label, executable in sorted(found):
    print(f"{lane}\t{label}\t{executable}")
EOF

# Runs one binary, then prints its output under its Running line, whole.
run_one() {
  local label=$1 executable=$2 out status=0
  out="$(mktemp -p "$work")"
  "./$executable" </dev/null >"$out" 2>&1 || status=$?
  {
    flock 9
    echo "     Running $label ($executable)"
    cat "$out"
    if [[ $status != 0 ]]; then
      echo "error: test failed: $label (exit $status)"
    fi
  } 9>"$work/lock"
  return "$status"
}
export -f run_one
export work

lanes="${MESHGATE_TEST_LANES:-all}"
status=0
if [[ "$lanes" != others ]]; then
  while IFS=$'\t' read -r _ label executable; do
    run_one "$label" "$executable" || status=1
  done < <(awk -F'\t' '$1 == 0' "$work/binaries")
fi
if [[ "$lanes" != node ]]; then
  awk -F'\t' '$1 != 0 { print $2 "\t" $3 }' "$work/binaries" | tr '\t\n' '\0\0' |
    xargs -0 -n 2 -P "$jobs" bash -c 'run_one "$1" "$2"' _ || status=1
fi
exit "$status"
