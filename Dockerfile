# syntax=docker/dockerfile:1
#
# meshgate container image.
#
#   docker build -t meshgate:dev \
#     --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#
# Without Docker or a registry (CI, the real-node tests): scripts/build-image.sh
# builds this file with buildah on locally assembled base images.
#
# Two stages: the release binary is built in the official Rust image, then
# copied alone into distroless "cc" (glibc and libgcc, which the binary links
# against; no shell, no package manager), running as the nonroot user 65532,
# the user the Helm chart's securityContext expects.

# Both bases are pinned by digest, so a rebuild uses the bytes that were
# reviewed (Dependabot proposes new digests, .github/dependabot.yml). The
# runtime has no shell and no HEALTHCHECK: the kubelet's probes on /healthz
# and /readyz are the health checks, and the binary writes nothing to its
# root filesystem (the chart mounts it read-only).
ARG RUST_IMAGE=rust:1.91-bookworm@sha256:c1e5f19e773b7878c3f7a805dd00a495e747acbdc76fb2337a4ebf0418896b33
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f

FROM ${RUST_IMAGE} AS builder
# Extra cargo flags for the release build. Empty for a release image; the
# test image of .ci/run (scripts/build-image.sh) passes
# `--config profile.release.lto=false ...`: fat LTO on one codegen unit would
# take most of a CI run on 2 cores.
ARG CARGO_BUILD_EXTRA=""
# A profile-guided build (scripts/pgo.sh: instrumented build, the load
# scenarios' reviews served on loopback, optimised build): about 1.3x the
# throughput on small reviews, for twice the build time. Needs bash, curl and
# openssl in the builder (the official Rust image has them) and rustup's
# llvm-tools (installed by the script). The test image of .ci/run passes
# PGO=false.
ARG PGO=true
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# benches/ is declared in Cargo.toml, so cargo needs it to read the manifest;
# its fixtures are also the PGO training reviews.
COPY benches benches
COPY src src
COPY scripts/pgo.sh scripts/pgo.sh
# The registry and target caches survive between builds (BuildKit); the binary
# is copied out of the cache mount so the next stage can see it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    if [ "$PGO" = true ]; then \
        CARGO_BUILD_EXTRA="$CARGO_BUILD_EXTRA" bash scripts/pgo.sh /out/meshgate; \
    else \
        cargo build --release --locked --bin meshgate $CARGO_BUILD_EXTRA \
        && install -D -m 0755 target/release/meshgate /out/meshgate; \
    fi

FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="meshgate" \
      org.opencontainers.image.description="Kubernetes admission webhook that enforces zero-trust posture in an Istio mesh" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.vendor="meshgate" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=builder /out/meshgate /usr/local/bin/meshgate
USER 65532:65532
# 8443: admission webhooks, /healthz and /readyz (HTTPS); 9090: /metrics (HTTP).
EXPOSE 8443 9090
ENTRYPOINT ["/usr/local/bin/meshgate"]
# The chart passes the same arguments explicitly; this default serves with the
# paths the chart mounts (tls/ from the Secret, config/ from the ConfigMap).
CMD ["serve", \
     "--listen", "0.0.0.0:8443", \
     "--metrics-listen", "0.0.0.0:9090", \
     "--tls-cert", "/etc/meshgate/tls/tls.crt", \
     "--tls-key", "/etc/meshgate/tls/tls.key", \
     "--config", "/etc/meshgate/config/config.yaml", \
     "--log-format", "json"]
