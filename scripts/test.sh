#!/usr/bin/env bash
# The test command: set up the machine, start the local stack, then formatting, lints and
# every test against the real Redis, PostgreSQL and pulsar-lite.
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"

"$ROOT/scripts/setup.sh"
"$ROOT/scripts/stack.sh" start
eval "$("$ROOT/scripts/stack.sh" env)"

say "cargo fmt --check"
cargo fmt --all --check
say "SQL checked against the schema (.sqlx/ matches the code)"
"$ROOT/scripts/sqlx-prepare.sh" --check
say "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
say "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast "$@"
else
  cargo test --workspace --locked --no-fail-fast "$@"
fi
say "API fuzzing over the OpenAPI spec (schemathesis, zero 5xx)"
"$ROOT/scripts/api-fuzz.sh" 25
say "make demo, as a newcomer runs it (on the debug build, its own services and ports)"
DEMO_PROFILE=debug DEMO_USE_RUNNING=0 APP_GATEWAY__PORT=18380 APP_CONSUMERS__PORT=18381 \
  "$ROOT/scripts/demo.sh"
