#!/usr/bin/env bash
# Checks the size of the release `meshgate` binary against issue 12's goal:
# at most 25 MB (25,000,000 bytes) as `cargo build --release` leaves it
# (the release profile is meant to carry no debug info). For information it
# also says whether the binary still has DWARF sections and what `strip`
# would leave.
#
#   scripts/binary-size.sh            # builds, then checks
#   SKIP_BUILD=1 scripts/binary-size.sh
#
# Environment: LIMIT_BYTES (default 25000000), SKIP_BUILD=1 (check the
# binary already built). Exit status 1 if the goal fails.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LIMIT_BYTES=${LIMIT_BYTES:-25000000}

for tool in cargo jq; do
    command -v "$tool" >/dev/null || { echo "binary-size.sh: $tool is required" >&2; exit 2; }
done
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    (cd "$ROOT" && cargo build --release --bin meshgate)
fi
TARGET_DIR=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
BINARY="$TARGET_DIR/release/meshgate"
[[ -f "$BINARY" ]] || { echo "binary-size.sh: $BINARY is missing (build it first)" >&2; exit 2; }

mb() { awk -v b="$1" 'BEGIN {printf "%.1f MB", b / 1e6}'; }
size=$(stat -c %s "$BINARY")
echo "release binary: $BINARY, $size bytes ($(mb "$size"))"
if command -v readelf >/dev/null; then
    if readelf -S "$BINARY" | grep -q '\.debug_info'; then
        echo "  it has DWARF debug info (the release profile sets debug)"
    else
        echo "  it has no DWARF debug info"
    fi
fi
if command -v strip >/dev/null; then
    stripped=$(mktemp)
    trap 'rm -f "$stripped"' EXIT
    strip -o "$stripped" "$BINARY"
    echo "  after strip (information): $(stat -c %s "$stripped") bytes ($(mb "$(stat -c %s "$stripped")"))"
fi

if ((size <= LIMIT_BYTES)); then
    echo "| release binary ≤ $(mb "$LIMIT_BYTES") | $(mb "$size") | PASS |"
else
    echo "| release binary ≤ $(mb "$LIMIT_BYTES") | $(mb "$size") | FAIL |"
    exit 1
fi
