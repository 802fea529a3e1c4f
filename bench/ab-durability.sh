#!/usr/bin/env bash
# What the durability step costs on the reserve path, in one run on one replicated Redis: a
# primary with its replica (the Sentinel group of scripts/stack.sh), the same closed-loop
# reserve load (stock 10 M, 200,000 buyers, no consumers) against three gateways in turn,
# A B C C B A …, so drift in the machine's load hits all alike:
#   before    the gateway before confirmations (a baseline binary: reserve, then publish)
#   history   confirmations without replicas (redis.durability.replicas = 0): the batched
#             confirm.lua that checks the shard's Redis history, no WAIT
#   replica   confirmations on one replica (replicas = 1): confirm.lua and WAIT 1, the
#             production setting on a Cluster or under Sentinel
# Each gateway talks to the primary directly (REDIS_URL), so the three differ only in the
# step. Reports req/s, latency, and CPU time per request of the gateway, the primary and the
# replica (from /proc), which move far less with the machine's noise than req/s.
#   bench/ab-durability.sh /path/to/baseline/gateway [rounds]
# Build the baseline from the commit before confirmations in a worktree, e.g.
#   git worktree add /tmp/base d054404 && (cd /tmp/base && scripts/patch-pulsar.sh &&
#     CARGO_TARGET_DIR=/tmp/base-target cargo build --release -p gateway)
set -euo pipefail
source "$(dirname "$0")/../scripts/common.sh"
cd "$ROOT"
[ $# -ge 1 ] || die "usage: bench/ab-durability.sh BASELINE_GATEWAY_BINARY [rounds]"
baseline=$(realpath "$1")
rounds=${2:-3}
[ -x "$baseline" ] || die "$baseline is not an executable"
source "$ROOT/bench/common.sh"
bench_prepare ab-durability gateway bench
scripts/stack.sh start redis-sentinel
candidate=$ROOT/target/release/gateway
ticks=$(getconf CLK_TCK)
primary=$(scripts/stack.sh master redis-sentinel)
replica=redis-sentinel-$((1 - ${primary#redis-sentinel-}))
primary_pid=$(head -n1 "$(scripts/stack.sh pidfile "$primary")")
replica_pid=$(head -n1 "$(scripts/stack.sh pidfile "$replica")")
primary_url=redis://127.0.0.1:$((REDIS_SENTINEL_PORT + ${primary#redis-sentinel-}))
say "primary $primary ($primary_url), replica $replica"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run_one WAY ROUND : start that way's gateway, drive the reserve path, stop it.
run_one() {
  local way=$1 round=$2 dir="$out/$1-$2" bin=$candidate
  mkdir -p "$dir"
  local env=(REDIS_URL="$primary_url" APP_GATEWAY__PORT=18080)
  case $way in
    before) bin=$baseline ;;
    history) env+=(APP_REDIS__DURABILITY__REPLICAS=0) ;;
    replica) env+=(APP_REDIS__DURABILITY__REPLICAS=1) ;;
  esac
  env "${env[@]}" "$bin" >"$dir/gateway.log" 2>&1 &
  local pid=$!
  wait_ready http://127.0.0.1:18080/readyz
  local g0 p0 r0 g1 p1 r1
  g0=$(cpu_ticks "$pid") p0=$(cpu_ticks "$primary_pid") r0=$(cpu_ticks "$replica_pid")
  target/release/bench flash-sale --gateway http://127.0.0.1:18080 --rate max \
    --users 200000 --stock 10000000 --per-user-limit 100 --retry-fraction 0 --again-fraction 0 \
    --seconds 10 --no-verify --out "$dir" >"$dir/bench.log" 2>&1
  g1=$(cpu_ticks "$pid") p1=$(cpu_ticks "$primary_pid") r1=$(cpu_ticks "$replica_pid")
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  python3 - "$dir/report.json" "$way" "$round" "$((g1 - g0))" "$((p1 - p0))" "$((r1 - r0))" "$ticks" <<'PY' | tee -a "$out/ab.tsv"
import json, sys
run = json.load(open(sys.argv[1]))[0]
way, rnd = sys.argv[2], sys.argv[3]
gw, primary, replica, ticks = (int(v) for v in sys.argv[4:8])
n = max(run["accepted_per_sec"] * run["seconds"], 1)
us = lambda t: t / ticks / n * 1e6
print(f"{way}\t{rnd}\t{run['accepted_per_sec']:.0f}\t{run['latency_ms']['p50']:.2f}\t{run['latency_ms']['p99']:.2f}\t{us(gw):.1f}\t{us(primary):.1f}\t{us(replica):.1f}")
PY
}

printf 'way\tround\taccepted/s\tp50 ms\tp99 ms\tgateway µs/order\tprimary µs/order\treplica µs/order\n' | tee "$out/ab.tsv"
ways=(before history replica)
for round in $(seq 1 "$rounds"); do
  order=("${ways[@]}")
  if [ $((round % 2)) = 0 ]; then order=(replica history before); fi
  for way in "${order[@]}"; do run_one "$way" "$round"; done
done
python3 - "$out/ab.tsv" <<'PY'
import csv, statistics, sys
rows = list(csv.reader(open(sys.argv[1]), delimiter="\t"))[1:]
by = {}
for way, _, *figures in rows:
    by.setdefault(way, []).append([float(f) for f in figures])
names = ["accepted/s", "p50 ms", "p99 ms", "gateway µs/order", "primary µs/order", "replica µs/order"]
med = {w: [statistics.median(col) for col in zip(*v)] for w, v in by.items()}
print("| way | " + " | ".join(names) + " |")
print("|---|" + "---|" * len(names))
for way in ["before", "history", "replica"]:
    if way in med:
        print(f"| {way} | " + " | ".join(f"{v:.1f}" for v in med[way]) + " |")
b = med.get("before")
for way in ["history", "replica"]:
    if b and way in med:
        m = med[way]
        print(f"{way} vs before: accepted/s {m[0] / b[0]:.2f}x, gateway CPU {m[3] / b[3]:.2f}x, primary CPU {m[4] / b[4]:.2f}x")
PY
echo "details: $out"
