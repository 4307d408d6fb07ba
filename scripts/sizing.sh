#!/usr/bin/env bash
# Memory of `meshgate serve --state-from` by mesh size: the README's Sizing
# table. For each namespace count, writes a state file (per namespace: the
# Namespace, enrolled; a STRICT PeerAuthentication; an allow-nothing
# AuthorizationPolicy; an ALLOW AuthorizationPolicy with two rules), starts
# the release binary on it, waits until /readyz answers and the background
# audit has judged everything (meshgate_background_audit_complete 1), and
# reads VmRSS (held) and VmHWM (peak) from /proc.
#
#   scripts/sizing.sh                      # 1000 5000 10000 20000 namespaces
#   NAMESPACES="1000 10000" scripts/sizing.sh
#   BACKGROUND=false scripts/sizing.sh     # with backgroundAudit.enabled=false
#
# Needs: cargo, openssl (CLI, throwaway certificate), curl, timeout.
# Loopback only; each server is stopped before the next starts.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NAMESPACES=${NAMESPACES:-1000 5000 10000 20000}
BACKGROUND=${BACKGROUND:-true}
PORT=${PORT:-18643}
METRICS_PORT=$((PORT + 1))

for tool in cargo openssl curl timeout; do
    command -v "$tool" >/dev/null || { echo "sizing.sh: $tool is required" >&2; exit 2; }
done
WORK=$(mktemp -d "${TMPDIR:-/tmp}/meshgate-sizing.XXXXXX")
SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

(cd "$ROOT" && cargo build --release --bin meshgate)
MESHGATE="$ROOT/target/release/meshgate"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$WORK/tls.key" -out "$WORK/tls.crt" -days 1 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
printf 'backgroundAudit:\n  enabled: %s\n' "$BACKGROUND" >"$WORK/config.yaml"

state() { # namespaces -> YAML on stdout
    local i
    for ((i = 0; i < $1; i++)); do
        cat <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: ns-$i, labels: {istio-injection: enabled}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: ns-$i}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: ns-$i}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-frontend, namespace: ns-$i}
spec:
  action: ALLOW
  selector: {matchLabels: {app: web}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/ns-$i/sa/frontend]}}]
    to: [{operation: {methods: [GET], paths: [/api/*]}}]
  - from: [{source: {namespaces: [istio-system]}}]
---
YAML
    done
}

kib() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }

printf '| namespaces | policies | RSS after load | peak while loading |\n|---|---|---|---|\n'
for n in $NAMESPACES; do
    state "$n" >"$WORK/state.yaml"
    "$MESHGATE" serve --listen "127.0.0.1:$PORT" --metrics-listen "127.0.0.1:$METRICS_PORT" \
        --tls-cert "$WORK/tls.crt" --tls-key "$WORK/tls.key" --config "$WORK/config.yaml" \
        --state-from "$WORK/state.yaml" --log-format json >"$WORK/serve.log" 2>&1 &
    SERVER_PID=$!
    ready=""
    for _ in $(seq 600); do
        if curl -sk --max-time 1 -o /dev/null -w '%{http_code}' "https://127.0.0.1:$PORT/readyz" | grep -q 200; then
            if [[ "$BACKGROUND" != true ]] || curl -s --max-time 1 "http://127.0.0.1:$METRICS_PORT/metrics" |
                grep -q '^meshgate_background_audit_complete 1'; then
                ready=1
                break
            fi
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [[ -z "$ready" ]]; then
        echo "sizing.sh: meshgate did not become ready with $n namespaces; its log:" >&2
        cat "$WORK/serve.log" >&2
        exit 1
    fi
    sleep 1 # freed memory goes back to the OS after a short delay
    printf '| %s | %s | %s MiB | %s MiB |\n' "$n" "$((n * 3))" \
        "$(($(kib "$SERVER_PID" VmRSS) / 1024))" "$(($(kib "$SERVER_PID" VmHWM) / 1024))"
    kill "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
done
