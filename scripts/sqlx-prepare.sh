#!/usr/bin/env bash
# The compile-time query data (`.sqlx/`): regenerate it from a freshly migrated database, or
# with --check fail when a query in the code and the committed data disagree.
#
#   scripts/sqlx-prepare.sh [--check] [CARGO-BUILD-COMMAND…]
#
# sqlx's query macros write that data themselves when a build runs against a database with
# SQLX_OFFLINE_DIR set, so no sqlx-cli is needed: the script runs a build that way (by default
# `cargo check --workspace --all-targets`; `make test` passes its own test build, so the check
# costs no build of its own), then compares or copies what the macros wrote.
# Needs the stack's PostgreSQL (scripts/stack.sh start).
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"

check=0
if [ "${1:-}" = --check ]; then
  check=1
  shift
fi
[ $# -gt 0 ] || set -- cargo check --workspace --all-targets --locked

eval "$("$ROOT/scripts/stack.sh" env)"
db=seckill_sqlx_prepare
base=${DATABASE_URL%/*}
psql -q "$base/postgres" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
# The migrations as the binaries run them: in name order, each in one transaction, beside
# the table where sqlx's migrator records them (the readiness check queries it).
for migration in order-core/migrations/*.sql; do
  psql -q -X -v ON_ERROR_STOP=1 --single-transaction -f "$migration" "$base/$db" >/dev/null
done
psql -q -X -v ON_ERROR_STOP=1 "$base/$db" -c "CREATE TABLE _sqlx_migrations (
  version BIGINT PRIMARY KEY, description TEXT NOT NULL,
  installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), success BOOLEAN NOT NULL,
  checksum BYTEA NOT NULL, execution_time BIGINT NOT NULL)"

# Every query lives in order-core, and every crate that could hold one depends on it. The
# data follows from order-core's sources, the migrations and the sqlx version alone: when
# they changed since the data was last written, touching order-core's root makes the build
# expand each query macro again and write its data afresh.
written=$ROOT/target/sqlx-prepare
stamp=$( (cat Cargo.lock; find order-core/src order-core/migrations -type f | sort | xargs cat) | sha256sum)
if [ "$(cat "$written.stamp" 2>/dev/null)" != "$stamp" ]; then
  rm -rf "$written" "$written.stamp"
  mkdir -p "$written"
  touch order-core/src/lib.rs
fi
DATABASE_URL=$base/$db SQLX_OFFLINE=false SQLX_OFFLINE_DIR=$written "$@"
echo "$stamp" >"$written.stamp"

if [ "$check" = 1 ]; then
  if ! diff -r "$written" .sqlx >/dev/null; then
    diff -rq "$written" .sqlx | sed "s#$written#(the code)#; s#\.sqlx#(.sqlx/)#" >&2 || true
    die ".sqlx/ does not match the queries in the code: run scripts/sqlx-prepare.sh and commit .sqlx/"
  fi
  say ".sqlx/ matches the $(ls "$written" | wc -l) queries in the code"
else
  rm -f .sqlx/query-*.json
  cp "$written"/query-*.json .sqlx/
  say ".sqlx/ holds the $(ls .sqlx | wc -l) queries in the code"
fi
