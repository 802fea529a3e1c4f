#!/usr/bin/env bash
# The compile-time query data (`.sqlx/`): regenerate it from a freshly migrated database, or
# with --check fail when a query in the code and the committed data disagree.
# Needs the stack's PostgreSQL (scripts/stack.sh start) and sqlx-cli (scripts/setup.sh).
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"

eval "$("$ROOT/scripts/stack.sh" env)"
db=seckill_sqlx_prepare
base=${DATABASE_URL%/*}
psql -q "$base/postgres" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
export DATABASE_URL=$base/$db
export SQLX_OFFLINE=false
cargo sqlx migrate run --source order-core/migrations >/dev/null
cargo sqlx prepare --workspace "$@" -- --all-targets --locked
