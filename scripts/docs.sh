#!/usr/bin/env bash
# Builds the documentation book (docs/ -> docs/book/) with mdBook, installing
# it from crates.io when missing (no server, no file watcher: only what a
# build needs). Its links and anchors are checked offline by tests/docs.rs,
# which cargo test runs.
#
#   MDBOOK_VERSION   default 0.5.4
set -euo pipefail
cd "$(dirname "$0")/.."

version="${MDBOOK_VERSION:-0.5.4}"
if ! mdbook --version 2>/dev/null | grep -qF "v$version"; then
    echo "docs: installing mdbook $version from crates.io" >&2
    cargo install --quiet --locked mdbook --version "$version" \
        --no-default-features --features search
fi
mdbook build docs
