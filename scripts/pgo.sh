#!/usr/bin/env bash
# Profile-guided release build of meshgate (the Dockerfile's build).
#
#   scripts/pgo.sh [OUT]        (default target/pgo/meshgate)
#
# Why: per review meshgate runs no more instructions than the no-op webhook
# (benches/instructions.sh) but missed the CPU's instruction cache about
# twice as often: typed decoding, judging and logging touch far more code
# than a generic JSON parse. A profile lets LLVM lay the hot path out
# together and inline by measured frequency; on load.sh that took the plain
# pod from 0.75x to 1.02x the no-op's throughput (docs/src/operations/
# benchmarks.md). Behaviour is untouched: the profile only steers codegen.
#
# Steps: an instrumented release build; that binary serves (127.0.0.1, a
# throwaway certificate, the benches' cluster state) while curl sends each
# of the load scenarios' reviews $PGO_REQUESTS times over keep-alive HTTPS,
# as the API server does; SIGTERM (the profile is written at exit); the
# profile is merged with the toolchain's own llvm-profdata (rustup component
# llvm-tools, installed if missing: the profile format follows rustc's
# LLVM); the optimised release build reads it. Both builds use
# `--target <host>`, so build scripts and proc macros are neither
# instrumented nor optimised with it, and their own target directory
# (target/pgo), so target/release stays as it is.
#
# Environment: CARGO_BUILD_EXTRA (extra cargo flags, as in the Dockerfile),
# PGO_REQUESTS (per scenario, default 2000), PGO_PORT (default 18843).
# Needs: cargo, rustup (unless llvm-tools is installed), curl, openssl.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-target/pgo/meshgate}
REQUESTS=${PGO_REQUESTS:-2000}
PORT=${PGO_PORT:-18843}
HOST=$(rustc -vV | sed -n 's/^host: //p')
TARGET_DIR=target/pgo
WORK=$(mktemp -d "${TMPDIR:-/tmp}/meshgate-pgo.XXXXXX")
PID=""
cleanup() {
    if [[ -n "$PID" ]] && kill -0 "$PID" 2>/dev/null; then kill "$PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
log() { echo "pgo: $*" >&2; }

PROFDATA="$(rustc --print sysroot)/lib/rustlib/$HOST/bin/llvm-profdata"
if [[ ! -x "$PROFDATA" ]]; then
    log "installing the toolchain's llvm-tools (for llvm-profdata)"
    rustup component add llvm-tools
fi

build() { # RUSTFLAGS for the target artifacts
    # shellcheck disable=SC2086 # CARGO_BUILD_EXTRA is a list of flags
    RUSTFLAGS="$1" cargo build --release --locked --bin meshgate \
        --target "$HOST" --target-dir "$TARGET_DIR" ${CARGO_BUILD_EXTRA:-}
}

log "instrumented build"
build "-Cprofile-generate=$WORK/raw"

log "training: $REQUESTS reviews per scenario"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$WORK/tls.key" -out "$WORK/tls.crt" -days 1 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
mkdir -p "$WORK/state"
cp benches/fixtures/state.yaml "$WORK/state/"
LLVM_PROFILE_FILE="$WORK/raw/meshgate-%p-%m.profraw" \
    "$TARGET_DIR/$HOST/release/meshgate" serve --listen "127.0.0.1:$PORT" \
    --metrics-listen "127.0.0.1:$((PORT + 1))" --tls-cert "$WORK/tls.crt" \
    --tls-key "$WORK/tls.key" --state-from "$WORK/state" >"$WORK/serve.log" 2>&1 &
PID=$!
for _ in $(seq 300); do
    curl -sk --max-time 1 -o /dev/null "https://127.0.0.1:$PORT/readyz" && break
    kill -0 "$PID" 2>/dev/null || { cat "$WORK/serve.log" >&2; exit 1; }
    sleep 0.1
done
# The scenarios of scripts/load.sh: endpoint and review (tests/release.rs
# keeps the two lists equal; load.sh is not in the image build context).
for scenario in "validate pod-plain.json" "validate deployment.json" \
    "validate pod-injected.json" "validate pod-large-env.json" "mutate pod-injected.json"; do
    read -r endpoint fixture <<<"$scenario"
    config="$WORK/$endpoint-$fixture.curl"
    for _ in $(seq "$REQUESTS"); do
        printf 'url = "https://127.0.0.1:%s/%s"\ninsecure\nsilent\nshow-error\nfail\noutput = "/dev/null"\nheader = "Content-Type: application/json"\ndata-binary = "@%s"\nnext\n' \
            "$PORT" "$endpoint" "$PWD/benches/fixtures/$fixture"
    done >"$config"
    sed -i '$ d' "$config" # no `next` after the last transfer
    # Two connections at a time, each keeping its connection alive.
    timeout 300 curl -K "$config" &
    second=$!
    timeout 300 curl -K "$config"
    wait "$second"
done
kill -TERM "$PID"
wait "$PID" || true
PID=""
ls "$WORK"/raw/meshgate-*.profraw >/dev/null

log "merging the profile"
"$PROFDATA" merge -o "$WORK/meshgate.profdata" "$WORK"/raw/meshgate-*.profraw

log "optimised build"
build "-Cprofile-use=$WORK/meshgate.profdata"
install -D -m 0755 "$TARGET_DIR/$HOST/release/meshgate" "$OUT"
log "$OUT written"
