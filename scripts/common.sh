# Shared by the scripts in this folder: paths, ports and small helpers. Source it, don't run it.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACK_DIR=${SECKILL_STACK_DIR:-$ROOT/.stack}
REDIS_PORT=${SECKILL_REDIS_PORT:-16379}
REDIS_CLUSTER_PORT=${SECKILL_REDIS_CLUSTER_PORT:-17000}
REDIS_SENTINEL_PORT=${SECKILL_REDIS_SENTINEL_PORT:-17100}
PG_PORT=${SECKILL_PG_PORT:-15432}
PULSAR_PORT=${SECKILL_PULSAR_PORT:-16650}
PULSAR_METRICS_PORT=${SECKILL_PULSAR_METRICS_PORT:-16651}
PG_DB=${SECKILL_PG_DB:-seckill}
PULSAR_LITE_VERSION=0.2.0
PULSAR_CRATE_VERSION=6.9.1
# The broker binary is shared by every stack directory (tests start private stacks).
PULSAR_LITE_BIN=${SECKILL_PULSAR_LITE_BIN:-$ROOT/.stack-tools/pulsar-lite-$PULSAR_LITE_VERSION/bin/pulsar-lite}

say() { printf '[seckill] %s\n' "$*" >&2; }
die() { printf '[seckill] error: %s\n' "$*" >&2; exit 1; }

# Run a command as root: directly when we are root, through sudo otherwise.
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# clippy's lints as part of a real build: cargo runs clippy-driver (rustc plus clippy's lints)
# for the workspace's own crates, as `cargo clippy` does, and the build goes on to generate
# code. One build then serves the lints and the tests, where `cargo clippy` would check every
# dependency a second time for nothing else. Warnings are errors, as with
# `cargo clippy -- -D warnings` (CLIPPY_ARGS is how cargo-clippy hands its arguments over).
lint_while_building() {
  RUSTC_WORKSPACE_WRAPPER="$(rustc --print sysroot)/bin/clippy-driver"
  CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
  export RUSTC_WORKSPACE_WRAPPER CLIPPY_ARGS
}

# The service binaries in target/debug (`build_debug_binaries [CARGO-BUILD-ARGS…]`). Under
# make test the test build made them already: `cargo test --no-run` builds each binary the
# integration tests start, with the features the tests turn on, which a `cargo build` would
# build a second time without.
build_debug_binaries() {
  if [ "${SECKILL_BINARIES_FROM_TESTS:-0}" = 1 ]; then
    cargo test --workspace --locked --no-run -q
  else
    cargo build --locked "$@"
  fi
}
