#!/usr/bin/env bash
# One flash sale three ways, in one run, on one deployment shape (one gateway, one consumers
# process, release builds): on the single Redis node; on the Redis Cluster (three masters, a
# replica each) with the sale on one shard; on the cluster with the sale on three shards. Closed loop, so each way
# sells as fast as the machine lets it. Prints accepted orders/s and each Redis process' CPU
# per accepted order side by side (the bench's own per-process figures, from /proc).
#   bench/redis-cluster.sh [seconds per way, default 10] [stock, default 200000]
set -euo pipefail
source "$(dirname "$0")/../scripts/common.sh"
cd "$ROOT"
source "$ROOT/bench/common.sh"
seconds=${1:-10}
stock=${2:-200000}
bench_prepare redis-cluster gateway consumers bench
scripts/stack.sh start redis-cluster
nodes=$(scripts/stack.sh env redis-cluster | sed -n 's/^export REDIS_CLUSTER_NODES=//p')
export APP_WRITER__MAX_ROWS_PER_SEC=${BENCH_PACE:-5000} APP_WRITER__INITIAL_ROWS_PER_SEC=${BENCH_PACE:-5000}

running=()
trap 'kill "${running[@]}" 2>/dev/null || true' EXIT
# run NAME SHARDS CLUSTER_NODES : a fresh gateway and consumers, one sale, stopped after.
run() {
  local name=$1 shards=$2 cluster=$3 gateway consumers procs i pidfile
  REDIS_CLUSTER_NODES=$cluster APP_GATEWAY__PORT=18080 target/release/gateway >"$out/$name-gateway.log" 2>&1 &
  gateway=$!
  REDIS_CLUSTER_NODES=$cluster APP_CONSUMERS__PORT=18081 target/release/consumers >"$out/$name-consumers.log" 2>&1 &
  consumers=$!
  running=("$gateway" "$consumers")
  wait_ready http://127.0.0.1:18080/readyz http://127.0.0.1:18081/readyz
  procs=$(bench_processes gateway=$gateway consumers=$consumers)
  if [ -n "$cluster" ]; then
    for i in 0 1 2 3 4 5; do
      pidfile=$(scripts/stack.sh pidfile "redis-cluster-$i")
      procs="$procs redis-node-$i=$(head -n1 "$pidfile")"
    done
  fi
  say "$name: $shards shard(s), Redis ${cluster:-single node}"
  REDIS_CLUSTER_NODES=$cluster BENCH_PROCESSES=$procs target/release/bench flash-sale --rate max --users "$stock" --stock "$stock" \
    --seconds "$seconds" --shards "$shards" --gateway http://127.0.0.1:18080 --out "$out/$name" |
    tee "$out/$name.txt"
  kill "$gateway" "$consumers"
  wait "$gateway" "$consumers" 2>/dev/null || true
}
run single-node 1 ""
run cluster-1-shard 1 "$nodes"
run cluster-3-shards 3 "$nodes"

python3 - "$out" <<'PY'
import json, sys, os
out = sys.argv[1]
rows = []
for name in ["single-node", "cluster-1-shard", "cluster-3-shards"]:
    run = json.load(open(os.path.join(out, name, "report.json")))[0]
    redis = {c["process"]: c["us_per_accepted"] for c in run["cpu"] if c["process"].startswith("redis")}
    if name != "single-node":
        redis.pop("redis", None)  # the idle single node beside the cluster
    gw = next((c["us_per_accepted"] for c in run["cpu"] if c["process"] == "gateway"), None)
    rows.append((name, run["accepted_per_sec"], gw, redis))
print("| way | accepted orders/s | gateway µs per accepted | Redis µs per accepted, per process | Redis µs per accepted, all |")
print("|---|---|---|---|---|")
for name, rate, gw, redis in rows:
    per = ", ".join(f"{p} {v:.1f}" for p, v in sorted(redis.items()) if v is not None)
    total = sum(v for v in redis.values() if v is not None)
    print(f"| {name} | {rate:.0f} | {gw:.1f} | {per} | {total:.1f} |")
PY
echo "reports: $out"
