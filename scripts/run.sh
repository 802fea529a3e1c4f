#!/usr/bin/env bash
# The run command: set up the machine, start the local stack, build, and run the gateway and
# the consumers in the foreground until Ctrl-C (the stack keeps running; `make stop` stops it).
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"

"$ROOT/scripts/setup.sh"
"$ROOT/scripts/stack.sh" start
eval "$("$ROOT/scripts/stack.sh" env)"
cargo build --release --locked --bin gateway --bin consumers

target/release/consumers &
consumers_pid=$!
target/release/gateway &
gateway_pid=$!
stop() { kill -TERM "$gateway_pid" "$consumers_pid" 2>/dev/null || true; }
trap stop INT TERM
say "gateway on http://127.0.0.1:${APP_GATEWAY__PORT:-8080} (dashboard /admin/, try /readyz), consumers health on :${APP_CONSUMERS__PORT:-8081}; \`make demo\` in another terminal runs a sale; Ctrl-C stops"
status=0
wait "$gateway_pid" || status=$?
wait "$consumers_pid" || status=$?
exit "$status"
