#!/usr/bin/env bash
# `make demo`: a small flash sale to watch. With `make run` up in another terminal it uses
# that gateway; on its own it starts the stack and both services itself, and stops the
# services when the sale is over. Prints the dashboard URL and the local admin key, drives a
# thousand buyers through `bench demo`, and prints the outcome.
#   DEMO_PROFILE=debug  use the debug build (the test suite runs the demo this way)
#   DEMO_USE_RUNNING=0  never use a gateway already running (start its own)
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"

profile=${DEMO_PROFILE:-release}
port=${APP_GATEWAY__PORT:-8080}
gateway=http://127.0.0.1:$port

"$ROOT/scripts/setup.sh"
"$ROOT/scripts/stack.sh" start
eval "$("$ROOT/scripts/stack.sh" env)"
if [ "$profile" = release ]; then
  cargo build --release --locked --bin gateway --bin consumers --bin bench
else
  build_debug_binaries --bin gateway --bin consumers --bin bench
fi
bin=$ROOT/target/$profile

pids=()
stop() { [ ${#pids[@]} -eq 0 ] || kill -TERM "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop EXIT
ready() { curl -sf --max-time 2 -o /dev/null "$gateway/readyz"; }
alive() { for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null || return 1; done; }
if [ "${DEMO_USE_RUNNING:-1}" = 1 ] && ready; then
  say "using the gateway already running on $gateway"
else
  logs=$ROOT/target/demo
  mkdir -p "$logs"
  say "starting the consumers and a gateway (logs in target/demo/)"
  "$bin/consumers" >"$logs/consumers.log" 2>&1 &
  pids+=($!)
  "$bin/gateway" >"$logs/gateway.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 120); do
    ready && break
    alive || die "a service stopped; see target/demo/*.log"
    sleep 0.5
  done
  ready || die "the gateway did not become ready; see target/demo/gateway.log"
  alive || die "a service stopped; see target/demo/*.log"
fi

# The development key from config/local.toml (or the environment's).
admin_key=${APP_AUTH__ADMIN_KEY:-$(sed -n 's/^admin_key *= *"\(.*\)"/\1/p' "$ROOT/config/local.toml")}
say "dashboard: $gateway/admin/  (admin key: $admin_key)"
"$bin/bench" demo --gateway "$gateway"
