#!/usr/bin/env bash
# A pod through meshgate's native policies vs through meshgate's webhooks,
# on the envtest kube-apiserver (../shared/envtest, v1.36.2):
#
#   N=200 scripts/native-bench.sh
#
# Three setups, each on a fresh API server: `none` (no policy, no webhook:
# the API server's own cost), `native` (`meshgate serve --native-policies
# true` writes the policies, then is stopped: only the API server answers)
# and `webhook` (meshgate serve running, its validating and mutating webhooks
# registered with url: configs to 127.0.0.1). In each, N server-side dry runs
# of the same injected pod in an enrolled namespace: the request `kubectl
# apply --dry-run=server` sends (POST .../pods?dryRun=All), made with curl so
# that kubectl's own start-up (tens of ms) does not drown the difference.
# Reported per setup: median and p90 latency, and the API server's CPU time
# per request (utime+stime from /proc/PID/stat before and after the N runs);
# for `webhook` also meshgate's.
#
# Environment: N (default 200), MESHGATE (binary; default: cargo build
# --release, then target/release/meshgate), CONFIG (a config file for
# serve, e.g. to turn rules off and measure the others), ENVTEST (default: the first
# shared/envtest above the repository), PORT (API server, default 17443). Every request is
# bounded by curl --max-time 10, every wait by a deadline.
# Needs: etcd, openssl, curl, jq, awk.

set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-200}
if [ -z "${ENVTEST:-}" ]; then   # the first shared/envtest above the repository, as the tests look
  for up in .. ../.. ../../..; do
    [ -f "$up/shared/envtest/start.sh" ] && { ENVTEST=$(cd "$up/shared/envtest" && pwd); break; }
  done
fi
[ -n "${ENVTEST:-}" ] || { echo "no shared/envtest found; set ENVTEST" >&2; exit 1; }
PORT=${PORT:-17443}
ETCD_PORT=${ETCD_PORT:-37790}
HOOK_PORT=${HOOK_PORT:-18643}
if [ -z "${MESHGATE:-}" ]; then
  cargo build --release --quiet
  MESHGATE=target/release/meshgate
fi
WORK=$(mktemp -d)
ST=$WORK/envtest
TICK=$(getconf CLK_TCK)
MESHGATE_PID=
cleanup() {
  [ -n "$MESHGATE_PID" ] && kill "$MESHGATE_PID" 2>/dev/null || true
  bash "$ENVTEST/start.sh" stop "$ST" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

start_envtest() {
  APISERVER_PORT=$PORT ETCD_PORT=$ETCD_PORT timeout 180 bash "$ENVTEST/start.sh" "$ST" >/dev/null
  export KUBECONFIG=$ST/kubeconfig
  kubectl create namespace meshgate >/dev/null
  kubectl create namespace shop >/dev/null
  kubectl label namespace shop istio-injection=enabled >/dev/null
  # Istio's CRDs and the mesh baseline, so the webhook admits the pod.
  kubectl create namespace istio-system >/dev/null
  kubectl apply -f tests/fixtures/istio-crds.yaml >/dev/null
  kubectl wait --for condition=established --timeout=60s crd --all >/dev/null
  kubectl apply -f deploy/baseline/ >/dev/null
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# meshgate serve against the envtest, with a serving certificate signed by
# the envtest CA; its pid in MESHGATE_PID.
start_meshgate() {
  openssl req -newkey rsa:2048 -nodes -keyout "$WORK/tls.key" -out "$WORK/tls.csr" \
    -subj /CN=meshgate 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\n' > "$WORK/tls.ext"
  openssl x509 -req -in "$WORK/tls.csr" -CA "$ST/ca.crt" -CAkey "$ST/ca.key" -CAcreateserial \
    -out "$WORK/tls.crt" -days 1 -extfile "$WORK/tls.ext" 2>/dev/null
  "$MESHGATE" serve --listen "127.0.0.1:$HOOK_PORT" --metrics-listen 127.0.0.1:0 \
    --tls-cert "$WORK/tls.crt" --tls-key "$WORK/tls.key" --drain-delay 0s \
    --policy-reports false ${CONFIG:+--config "$CONFIG"} "$@" > "$WORK/meshgate.log" 2>&1 &
  MESHGATE_PID=$!
  local deadline=$((SECONDS + 60))
  until curl -skf --max-time 2 "https://127.0.0.1:$HOOK_PORT/readyz" >/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "meshgate not ready" >&2; tail "$WORK/meshgate.log" >&2; exit 1; }
    sleep 0.5
  done
}

stop_meshgate() {
  kill "$MESHGATE_PID"; wait "$MESHGATE_PID" 2>/dev/null || true; MESHGATE_PID=
}

register_webhooks() {
  local ca; ca=$(base64 -w0 < "$ST/ca.crt")
  local rules='[{"apiGroups":[""],"apiVersions":["v1"],"operations":["CREATE"],"resources":["pods"]}]'
  for kind in Validating Mutating; do
    local path=/validate; [ $kind = Mutating ] && path=/mutate
    jq -n --arg kind "${kind}WebhookConfiguration" --arg ca "$ca" --arg url "https://127.0.0.1:$HOOK_PORT$path" \
      --argjson rules "$rules" '{apiVersion: "admissionregistration.k8s.io/v1", kind: $kind,
        metadata: {name: "meshgate-bench"}, webhooks: [{name: "bench.meshgate.io",
        clientConfig: {url: $url, caBundle: $ca}, rules: $rules, failurePolicy: "Fail",
        sideEffects: "None", admissionReviewVersions: ["v1"], timeoutSeconds: 10}]}' \
      | kubectl apply -f - >/dev/null
  done
}

POD='{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","namespace":"shop",
  "labels":{"app":"web"},"annotations":{"sidecar.istio.io/status":"{}"}},
  "spec":{"serviceAccountName":"web","initContainers":[{"name":"istio-init","image":"proxyv2"}],
  "containers":[{"name":"app","image":"shop:1"},{"name":"istio-proxy","image":"proxyv2","args":["proxy","sidecar"]}]}}'

# N dry runs; prints "median p90 apiserver_ms_per_request [meshgate_ms_per_request]".
measure() {
  local url="https://127.0.0.1:$PORT/api/v1/namespaces/shop/pods?dryRun=All"
  local curl_args=(-s -o /dev/null -w '%{http_code} %{time_total}\n' --max-time 10
    --cacert "$ST/ca.crt" --cert "$ST/pki/admin.crt" --key "$ST/pki/admin.key"
    -H 'Content-Type: application/json' -X POST --data "$POD" "$url")
  for _ in 1 2 3 4 5; do curl "${curl_args[@]}" >/dev/null; done   # warm-up
  local api; api=$(cat "$ST/apiserver.pid")
  local a0 m0=0; a0=$(cpu_ticks "$api")
  [ -n "$MESHGATE_PID" ] && m0=$(cpu_ticks "$MESHGATE_PID")
  for _ in $(seq "$N"); do curl "${curl_args[@]}"; done > "$WORK/times"
  local a1 m1=0; a1=$(cpu_ticks "$api")
  [ -n "$MESHGATE_PID" ] && m1=$(cpu_ticks "$MESHGATE_PID")
  if grep -qv '^201 ' "$WORK/times"; then
    echo "a dry run failed:" >&2; grep -v '^201 ' "$WORK/times" | cut -d' ' -f1 | sort | uniq -c >&2
    curl -s --max-time 10 "${curl_args[@]:4}" >&2; exit 1
  fi
  local sorted; sorted=$(awk '{print $2 * 1000}' "$WORK/times" | sort -n)
  local median p90
  median=$(echo "$sorted" | awk -v n="$N" 'NR == int((n + 1) / 2) {print}')
  p90=$(echo "$sorted" | awk -v n="$N" 'NR == int(n * 0.9) {print}')
  awk -v m="$median" -v p="$p90" -v a=$((a1 - a0)) -v w=$((m1 - m0)) -v n="$N" -v t="$TICK" -v hook="${1:-}" \
    'BEGIN {printf "%.2f ms  %.2f ms  %.2f ms", m, p, a * 1000 / t / n;
            if (hook) printf "  %.2f ms", w * 1000 / t / n; printf "\n"}'
}

echo "N=$N dry runs per setup; median, p90, API server CPU per request (meshgate CPU for webhook)"
start_envtest
echo "none:    $(measure)"

start_envtest
start_meshgate --native-policies true
deadline=$((SECONDS + 60))
until grep -q '"native policies applied"' "$WORK/meshgate.log"; do
  [ $SECONDS -lt $deadline ] || { echo "native policies not applied" >&2; tail "$WORK/meshgate.log" >&2; exit 1; }
  sleep 0.5
done
stop_meshgate
sleep 3   # the API server loads new policies within about a second
objects=$(kubectl get validatingadmissionpolicies,mutatingadmissionpolicies -l meshgate.io/native-policy=true -o name | wc -l)
echo "native:  $(measure)  ($objects policies)"

start_envtest
start_meshgate
register_webhooks
sleep 2
echo "webhook: $(measure hook)"
