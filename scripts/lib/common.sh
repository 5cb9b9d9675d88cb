# shellcheck shell=bash
# Shared by every script under scripts/: paths, settings from EDDY_* variables, messages.
# Source it; it defines functions and variables, and points cargo at the cached RocksDB build.

EDDY_REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# Downloads (Maven artifacts, Kafka, Apicurio, tools) and the cargo target dir live here,
# outside the clone, so a second run is offline and fast.
EDDY_CACHE_DIR=${EDDY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/eddy}
# Data, logs and pid files of the processes our scripts start.
EDDY_RUN_DIR=${EDDY_RUN_DIR:-$EDDY_REPO_DIR/.run}

# Everything binds loopback. Ports are configurable so two stacks can run side by side.
EDDY_KAFKA_PORT=${EDDY_KAFKA_PORT:-19092}
EDDY_KAFKA_CONTROLLER_PORT=${EDDY_KAFKA_CONTROLLER_PORT:-19093}
EDDY_REGISTRY_PORT=${EDDY_REGISTRY_PORT:-18081}

export EDDY_CACHE_DIR EDDY_RUN_DIR EDDY_KAFKA_PORT EDDY_KAFKA_CONTROLLER_PORT EDDY_REGISTRY_PORT

# Where the local stack answers; derived from the ports only (a component's own
# EDDY_KAFKA_BOOTSTRAP_SERVERS may point elsewhere and never changes what the stack does).
# shellcheck disable=SC2034 # used by the scripts that source this file
STACK_KAFKA_BOOTSTRAP=127.0.0.1:$EDDY_KAFKA_PORT
# shellcheck disable=SC2034
STACK_REGISTRY_URL=http://127.0.0.1:$EDDY_REGISTRY_PORT/apis/ccompat/v7

# Cargo builds into a persistent target dir outside the clone unless the caller chose one.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$EDDY_CACHE_DIR/cargo-target}

EDDY_SCRIPT_NAME=$(basename "$0")

info() { printf '%s: %s\n' "$EDDY_SCRIPT_NAME" "$*" >&2; }
die() {
  printf '%s: error: %s\n' "$EDDY_SCRIPT_NAME" "$*" >&2
  exit 1
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# poll_until SECONDS DESCRIPTION COMMAND...: runs COMMAND every 0.5 s until it succeeds or
# SECONDS pass; returns 1 on timeout.
poll_until() {
  local seconds=$1 description=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    if ((SECONDS >= deadline)); then
      info "timed out after ${seconds}s waiting for $description"
      return 1
    fi
    sleep 0.5
  done
}

# Build prerequisites for the Rust workspace (librdkafka is compiled from source by rdkafka-sys).
# Installs missing Debian packages when running as root with apt-get; otherwise says what to install.
ensure_build_deps() {
  command -v cargo >/dev/null || die "Rust is required: no cargo on PATH (install it with rustup, https://rustup.rs)"
  local missing=()
  command -v cc >/dev/null || missing+=(gcc)
  command -v c++ >/dev/null || missing+=(g++)
  command -v make >/dev/null || missing+=(make)
  command -v pkg-config >/dev/null || missing+=(pkg-config)
  command -v perl >/dev/null || missing+=(perl)
  if command -v pkg-config >/dev/null; then
    pkg-config --exists zlib || missing+=(zlib1g-dev)
    pkg-config --exists openssl || missing+=(libssl-dev)
  else
    missing+=(zlib1g-dev libssl-dev)
  fi
  # RocksDB (rust-rocksdb) generates its bindings with bindgen, which loads libclang.
  ldconfig -p 2>/dev/null | grep -qE 'libclang(-[0-9.]+)?\.so' || missing+=(libclang-dev)
  install_debian_packages "${missing[@]}"
  ensure_rocksdb_lib
}

# RocksDB's C++ (in librocksdb-sys) is by far the longest part of a cold build, and cargo compiles
# it once per profile: the tests (dev), the release binaries and the benchmarks would take it
# twice. Build it once, optimised, into the cache, as librocksdb-sys itself builds it (release,
# the same sources and flags), keyed by its version and the C++ compiler; every cargo run of our
# scripts then links that archive (librocksdb-sys's ROCKSDB_LIB_DIR and ROCKSDB_STATIC).
rocksdb_lib_dir() {
  local version
  version=$(sed -n '/^name = "librocksdb-sys"$/{n;s/^version = "\(.*\)"$/\1/p;q}' "$EDDY_REPO_DIR/Cargo.lock")
  printf '%s/rocksdb/%s-gcc%s\n' "$EDDY_CACHE_DIR" "$version" "$(c++ -dumpfullversion 2>/dev/null)"
}

use_cached_rocksdb_lib() {
  local dir
  dir=$(rocksdb_lib_dir)
  [[ -f $dir/librocksdb.a ]] || return 0
  export ROCKSDB_LIB_DIR=$dir ROCKSDB_STATIC=1
}

ensure_rocksdb_lib() {
  local dir build_dir archive
  dir=$(rocksdb_lib_dir)
  if [[ ! -f $dir/librocksdb.a ]]; then
    build_dir=$EDDY_CACHE_DIR/rocksdb/build
    info "building RocksDB once into $dir (the longest step of a cold build; every later build links it)"
    env -u ROCKSDB_LIB_DIR -u ROCKSDB_STATIC cargo build --release --locked --quiet \
      --manifest-path "$EDDY_REPO_DIR/Cargo.toml" --target-dir "$build_dir" -p librocksdb-sys ||
      die "building RocksDB (librocksdb-sys) failed"
    archive=$(find "$build_dir/release/build" -path '*/librocksdb-sys-*/out/librocksdb.a' -print -quit)
    [[ -n $archive ]] || die "librocksdb-sys built no librocksdb.a under $build_dir"
    mkdir -p "$dir"
    cp "$archive" "$dir/librocksdb.a.partial"
    mv "$dir/librocksdb.a.partial" "$dir/librocksdb.a"
    rm -rf "$build_dir"
  fi
  use_cached_rocksdb_lib
}

# Installs the given Debian packages when running as root with apt-get; otherwise fails saying
# what to install. Does nothing for an empty list.
install_debian_packages() {
  (($# == 0)) && return 0
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    info "installing $*"
    if ! { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; }; then
      die "could not install $* with apt-get"
    fi
  else
    die "missing prerequisites: $* (install them with your package manager)"
  fi
}

# Every cargo run of a script that sources this file links the cached RocksDB once it is built
# (a build started before that compiles it in its own target dir, as cargo does by default).
use_cached_rocksdb_lib
