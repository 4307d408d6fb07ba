#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ for a bounded time (FUZZ_SECONDS each,
# default 15), seeded from fuzz/seeds/<target> copied to a temporary corpus so
# nothing is written into the repository. Needs the nightly toolchain; without
# it, says so and succeeds. A crash (or a failed assertion) fails the script;
# libFuzzer leaves the input in fuzz/artifacts/<target>/.
#
#   FUZZ_SECONDS    seconds per target (default 15)
#   FUZZ_TARGETS    targets to run (default: validate mutate manifest)
#   FUZZ_OPT_LEVEL  optimisation of the fuzz build (default 1; 3 for long runs)
#   FUZZ_BUILD_ONLY 1: build the targets and stop (.ci/run builds them while
#                   the envtest tests wait on their API servers)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-15}"
read -r -a targets <<<"${FUZZ_TARGETS:-validate mutate manifest}"

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: skipped (no nightly toolchain; install one with: rustup toolchain install nightly)"
  exit 0
fi
corpus="$(mktemp -d)"
trap 'rm -rf "$corpus"' EXIT
# The build `cargo fuzz build --sanitizer none` makes (cargo-fuzz 0.13.2),
# without installing cargo-fuzz (minutes on a fresh machine): its coverage
# flags, debug assertions, line tables, target directory and host triple. No
# sanitizer: the targets are safe Rust, and ASan only slows building and
# running. opt-level 1 and parallel codegen (FUZZ_OPT_LEVEL=3 for long runs)
# keep the cold build of kube/k8s-openapi within CI's budget; a short run
# loses little to the slower code.
triple="$(rustc +nightly -vV | awk '/^host:/ { print $2 }')"
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing \
-Cllvm-args=-simplifycfg-branch-fold-threshold=0 -Cllvm-args=-sanitizer-coverage-stack-depth \
-Cdebug-assertions" CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
CARGO_PROFILE_RELEASE_OPT_LEVEL="${FUZZ_OPT_LEVEL:-1}" CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
  cargo +nightly build --manifest-path fuzz/Cargo.toml --release --locked \
  --target "$triple" --bins
bin="fuzz/target/$triple/release"
if [[ "${FUZZ_BUILD_ONLY:-}" == 1 ]]; then
  echo "fuzz: targets built"
  exit 0
fi
for target in "${targets[@]}"; do
  mkdir -p "$corpus/$target"
  log="$corpus/$target.log"
  mkdir -p "fuzz/artifacts/$target"
  if ! "$bin/$target" "$corpus/$target" fuzz/seeds/"$target" -artifact_prefix="fuzz/artifacts/$target/" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -dict=fuzz/meshgate.dict \
    -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz: $target FAILED (input saved under fuzz/artifacts/$target/)" >&2
    exit 1
  fi
  runs=$(awk '/stat::number_of_executed_units/ { print $NF }' "$log")
  echo "fuzz: $target ok, ${runs:-?} executions in ${seconds}s"
done
