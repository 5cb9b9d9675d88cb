# syntax=docker/dockerfile:1
# The Eddy image: every component binary (eddy-<component>) and the operator CLI (eddy) on a
# Debian runtime, run as uid 10001. The Helm chart runs one binary per workload from it.
#
#   docker build -t eddy:dev .                 # the release image, built from source
#   docker build --target dev -t eddy:dev .    # Tilt: binaries built on the host, from .tilt/bin
#                                              # (scripts/dev/stage-binaries), live-updatable
#
# Build dependencies match scripts/lib/common.sh (ensure_build_deps): a C/C++ toolchain, make,
# perl, pkg-config, zlib and OpenSSL headers for librdkafka, libclang for RocksDB's bindings.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake perl pkg-config zlib1g-dev libssl-dev libclang-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Every crate under components/ (the generator adds new ones there), release profile; the
# binaries land in /out.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    set -eu; \
    packages=""; \
    for manifest in components/*/Cargo.toml; do \
      name=$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$manifest" | head -n 1); \
      packages="$packages -p $name"; \
    done; \
    cargo build --release --locked --bins $packages; \
    mkdir -p /out; \
    find target/release -maxdepth 1 -type f -perm -u+x \( -name 'eddy' -o -name 'eddy-*' \) \
      -exec cp {} /out/ \;; \
    ls -l /out

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 eddy \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/eddy --shell /usr/sbin/nologin eddy \
 && mkdir -p /var/lib/eddy/state \
 && chown -R 10001:10001 /var/lib/eddy
ENV EDDY_STATE_DIR=/var/lib/eddy/state \
    EDDY_LOG_FORMAT=json
WORKDIR /var/lib/eddy
USER 10001:10001

# Tilt's image: binaries built on the host (Linux, glibc not newer than Debian's) into .tilt/bin
# by scripts/dev/stage-binaries. They live in /opt/eddy/bin, owned by the runtime user so that
# Tilt's live update can replace them in running containers, and /usr/local/bin links to them
# (the chart's paths). eddy-dev-run restarts a component in place when its binary changes (the
# chart runs it with liveUpdate.enabled, as in helm/eddy/ci/dev-values.yaml).
FROM runtime AS dev
USER root
COPY --chown=10001:10001 .tilt/bin/ /opt/eddy/bin/
COPY --chmod=0755 scripts/dev/eddy-dev-run /usr/local/bin/eddy-dev-run
RUN chown 10001:10001 /opt/eddy/bin \
 && for binary in /opt/eddy/bin/*; do ln -s "$binary" /usr/local/bin/; done
USER 10001:10001

FROM runtime AS release
COPY --from=build /out/ /usr/local/bin/
