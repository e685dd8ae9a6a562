# syntax=docker/dockerfile:1.7
# One image, every vexxy process: the five stages, the REST gateway and the CLI. A Deployment
# picks its process with `command` (deploy/base/*.yaml); compose does the same.
#   docker build -t ghcr.io/vexxy/vexxy:dev .
# tests/system/tests/deploy_manifests_dockerfile.rs checks this file's structure (no Docker
# engine runs in CI): stages, USER, and that every binary below is a workspace binary.

ARG RUST_VERSION=1.95
ARG HELM_VERSION=3.16.4

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
# The binaries the image ships, in pipeline order, then the gateway and the CLI.
ARG VEXXY_BINARIES="vexxy-install-check vexxy-deploy vexxy-wait vexxy-extract vexxy-enrich vexxy-gateway vexxy"
COPY . .
# Cache mounts keep the registry and target directory between builds; the binaries are copied
# out of the cached target directory because a cache mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    set -eu; \
    bins=""; for bin in $VEXXY_BINARIES; do bins="$bins --bin $bin"; done; \
    cargo build --release --locked $bins; \
    mkdir -p /out; \
    for bin in $VEXXY_BINARIES; do cp "target/release/$bin" /out/; done

# install-check runs helm when VEXXY_KUBESCAPE_AUTO_INSTALL=true (a static Go binary).
FROM alpine/helm:${HELM_VERSION} AS helm

# glibc + libgcc for Rust binaries, no shell, no package manager; uid/gid 65532 "nonroot".
FROM gcr.io/distroless/cc-debian12:nonroot AS base
COPY --from=builder /out/ /usr/local/bin/
COPY --from=helm /usr/bin/helm /usr/local/bin/helm
COPY deploy/kubescape-values.yaml /etc/vexxy/kubescape-values.yaml
ENV VEXXY_KUBESCAPE_VALUES=/etc/vexxy/kubescape-values.yaml \
    VEXXY_LOG_FORMAT=json \
    VEXXY_HEALTH_ADDR=0.0.0.0:8081
USER 65532:65532
EXPOSE 8081 8080
# No default process: run one of the binaries, e.g. `docker run IMAGE vexxy-enrich`.
ENTRYPOINT []
CMD ["/usr/local/bin/vexxy", "--help"]

# For docker compose only (`target: local`): plus a static busybox, so compose healthchecks can
# fetch /readyz. Kubernetes probes need nothing inside the image, so the default image has no shell.
FROM busybox:1.37-musl AS busybox
FROM base AS local
COPY --from=busybox /bin/busybox /usr/local/bin/busybox

# The default (last) target: what ghcr.io/vexxy/vexxy ships.
FROM base AS runtime
