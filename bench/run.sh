#!/usr/bin/env bash
# Run a bench scenario against a fresh local deployment: the stack, release builds of the
# gateway and consumers on a database and topics of their own, then `bench <scenario>`.
#   bench/run.sh suite                          # everything, the figures for BENCHMARKS.md
#   bench/run.sh flash-sale --rate 0:20000      # a ramp; see `target/release/bench --help`
#   bench/run.sh profile reserve|sold-out|SCENARIO [options]   # where the CPU goes (profile.sh)
# Each run reports the CPU time of every process per request (gateway, consumers, Redis,
# PostgreSQL with its backends, the broker, the load generator).
# BENCH_PACE sets the order writer's pace (rows/s, default 5000). Reports go to
# bench/results/<scenario>-<time>/.
set -euo pipefail
source "$(dirname "$0")/../scripts/common.sh"
cd "$ROOT"
[ $# -ge 1 ] || die "usage: bench/run.sh <scenario> [bench options] | profile <scenario> [bench options]"
source "$ROOT/bench/common.sh"
profiling=0
if [ "$1" = profile ]; then
  [ $# -ge 2 ] || die "usage: bench/run.sh profile reserve|sold-out|<scenario> [bench options]"
  source "$ROOT/bench/profile.sh"
  profiling=1
  name=profile-$2
  shift
  read -r -a args < <(profile_scenario "$@")
  set -- "${args[@]}"
  bench_prepare "$name" gateway consumers bench
  profile_tools
else
  bench_prepare "$1" gateway consumers bench
fi
pace=${BENCH_PACE:-5000}
export APP_WRITER__MAX_ROWS_PER_SEC=$pace APP_WRITER__INITIAL_ROWS_PER_SEC=$pace
export APP_POST_PAYMENT__ANALYTICS_DIR=$out/analytics
# Paid orders stay `paid` for the run (a warehouse's pick-up delay), so seed-day's refunds
# are refunds, not refused transitions on orders shipped the moment they were paid.
export APP_POST_PAYMENT__HANDOVER_AFTER_SECS=3600

APP_GATEWAY__PORT=18080 target/release/gateway >"$out/gateway.log" 2>&1 &
gateway_pid=$!
APP_CONSUMERS__PORT=18081 target/release/consumers >"$out/consumers.log" 2>&1 &
consumers_pid=$!
trap 'kill $gateway_pid $consumers_pid 2>/dev/null || true' EXIT
wait_ready http://127.0.0.1:18080/readyz http://127.0.0.1:18081/readyz
BENCH_PROCESSES="$(bench_processes gateway=$gateway_pid consumers=$consumers_pid)"
export BENCH_PROCESSES
[ $profiling = 0 ] || profile_start gateway=$gateway_pid consumers=$consumers_pid
target/release/bench "$@" --gateway http://127.0.0.1:18080 --out "$out"
[ $profiling = 0 ] || profile_finish "$@"
