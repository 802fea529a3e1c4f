#!/usr/bin/env bash
# The test command: set up the machine, start the local stack, then formatting, lints and
# every test against the real Redis, PostgreSQL and pulsar-lite.
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"

"$ROOT/scripts/setup.sh"
# The API fuzzer downloads while the build runs.
mkdir -p "$ROOT/target"
"$ROOT/scripts/api-fuzz.sh" --install >"$ROOT/target/schemathesis-install.log" 2>&1 &
fuzzer_install=$!
"$ROOT/scripts/stack.sh" start
# Redis in its production shapes: a Cluster with a replica per master, and a primary with a
# replica under three Sentinels.
"$ROOT/scripts/stack.sh" start redis-cluster redis-sentinel
eval "$("$ROOT/scripts/stack.sh" env)"
cluster_nodes=$("$ROOT/scripts/stack.sh" env redis-cluster | sed -n 's/^export REDIS_CLUSTER_NODES=//p')
sentinel_nodes=$("$ROOT/scripts/stack.sh" env redis-sentinel | sed -n 's/^export REDIS_SENTINEL_NODES=//p')

say "cargo fmt --check"
cargo fmt --all --check
# One build for lints, queries and tests: clippy's lints run as the workspace's crates compile
# (common.sh), and the query macros, online against a migrated scratch database, write the
# data `.sqlx/` must match.
lint_while_building
say "build: clippy's lints, the SQL checked against the schema (.sqlx/ matches the code)"
"$ROOT/scripts/sqlx-prepare.sh" --check cargo test --workspace --locked --no-run
# The fuzzer and the demo run the binaries that build made.
export SECKILL_BINARIES_FROM_TESTS=1
# `run_tests [FILTERSET] [ARGS…]`: the workspace's tests, those FILTERSET (a nextest filter
# expression; empty: all) picks. Without nextest, all of them.
run_tests() {
  local filter=$1
  shift
  if cargo nextest --version >/dev/null 2>&1; then
    if [ -n "$filter" ]; then
      cargo nextest run --workspace --locked --no-fail-fast -E "$filter" "$@"
    else
      cargo nextest run --workspace --locked --no-fail-fast "$@"
    fi
  else
    cargo test --workspace --locked --no-fail-fast "$@"
  fi
}
# The Cluster and Sentinel passes run the tests that reach Redis' data: not the unit and
# property tests (no running dependency), nor those of PostgreSQL or Pulsar alone, nor those
# of the HTTP edge and the processes' lifecycle (slow clients, input, logs, the spec, health
# and readiness, the dashboard) or of the broker's own counts, which meet Redis only in
# passing.
reaches_redis='not (kind(lib) | kind(bin) | binary(pricing_properties) | binary(parsing_properties) | binary(settings) | binary(schema) | binary(order_data) | binary(persist) | binary(pulsar_roundtrip) | binary_id(consumers::health) | (binary_id(gateway::api) & test(/^(abuse|binary|dashboard|health|input|openapi|readiness)::/)) | (binary_id(consumers::pipeline) & test(/^admin_actions::status_shows_the_writer_backlog/)))'
# Under Sentinel the binaries ask the Sentinels for the primary, then run the same code as on
# one node: that pass runs the Redis adapter's own tests and each binary's order path end to
# end (placed, retried on other gateways, polled, stored, through broker and database
# faults). The failover tests pick a replicated shape of their own (Sentinel when the run's
# Redis is one node), so they ran under Sentinel in the first pass already.
sentinel_subset='binary_id(order-core::stock) | binary_id(order-core::worker_lease) | (binary_id(gateway::api) & test(/^(seckill|scale_out|publish_failure)::/)) | (binary_id(consumers::pipeline) & test(/^(e2e|faults|order_polls)::/))'
say "tests, on a single Redis node"
run_tests "" "$@"
# The same suite with every Redis call on the Redis Cluster (three masters, a replica each;
# tests that start a private stack start a private cluster: its Redis faults hit cluster
# nodes, and its failovers are real ones).
say "tests, on the Redis Cluster ($cluster_nodes)"
(export REDIS_CLUSTER_NODES=$cluster_nodes && run_tests "$reaches_redis" "$@")
# And under Sentinel: the binaries follow the primary the Sentinels name.
say "tests, under Redis Sentinel ($sentinel_nodes)"
(export REDIS_SENTINEL_NODES=$sentinel_nodes REDIS_SENTINEL_MASTER=seckill &&
  run_tests "$sentinel_subset" "$@")
say "API fuzzing over the OpenAPI spec (schemathesis, zero 5xx)"
wait "$fuzzer_install" || die "installing schemathesis failed: $(tail -n5 "$ROOT/target/schemathesis-install.log")"
"$ROOT/scripts/api-fuzz.sh" 25
say "make demo, as a newcomer runs it (on the debug build, its own services and ports)"
DEMO_PROFILE=debug DEMO_USE_RUNNING=0 APP_GATEWAY__PORT=18380 APP_CONSUMERS__PORT=18381 \
  "$ROOT/scripts/demo.sh"
