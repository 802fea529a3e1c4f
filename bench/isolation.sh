#!/usr/bin/env bash
# Invariant 6 in one run: normal checkout latency at a steady rate, first idle, then while a
# seckill flood (wrk on the reserve path) runs and the order writer persists its orders.
#   bench/isolation.sh [checkouts/s, default 100] [seconds, default 10]
set -euo pipefail
source "$(dirname "$0")/../scripts/common.sh"
cd "$ROOT"
rate=${1:-100}
secs=${2:-10}
source "$ROOT/bench/common.sh"
bench_prepare isolation gateway consumers bench
export APP_POST_PAYMENT__ANALYTICS_DIR=$out/analytics

APP_GATEWAY__PORT=18080 APP_SECKILL__WORKER_ID=1003 target/release/gateway >"$out/gateway.log" 2>&1 &
gateway_pid=$!
APP_CONSUMERS__PORT=18081 target/release/consumers >"$out/consumers.log" 2>&1 &
consumers_pid=$!
trap 'kill $gateway_pid $consumers_pid 2>/dev/null || true' EXIT
wait_ready http://127.0.0.1:18080/readyz http://127.0.0.1:18081/readyz
sku="bench-sku-$(date +%s)"
admin -X POST http://127.0.0.1:18080/admin/skus -d "{\"id\":\"$sku\",\"title\":\"bench\",\"price_cents\":1000,\"stock\":10000000}" >/dev/null
promo=$(create_promotion http://127.0.0.1:18080 10000000 100)

checkout() { target/release/bench checkout-latency --rate "$rate" --seconds "$secs" --tokens "$TOKENS" --sku "$sku" --label "$1"; }
checkout idle | tee -a "$out/summary.txt"
wrk -t2 -c128 -d"$((secs + 6))s" -s bench/wrk/seckill.lua "http://127.0.0.1:18080/api/seckill/$promo/orders" >"$out/flood.txt" &
wrk_pid=$!
sleep 3
checkout during-flood | tee -a "$out/summary.txt"
wait $wrk_pid
echo "seckill flood: $(awk '/Requests\/sec/ {print $2}' "$out/flood.txt") req/s ($(awk '/Non-2xx/ {print $5}' "$out/flood.txt") non-2xx)" | tee -a "$out/summary.txt"
curl -s http://127.0.0.1:18081/status | tee "$out/consumers-status.json"; echo
python3 - "$out/summary.txt" <<'PY'
import sys, re
rows = {}
for line in open(sys.argv[1]):
    if "p50_ms" in line:
        label = line.split()[0]
        rows[label] = dict(re.findall(r"(\w+)=([\d.]+)", line))
idle, flood = rows["idle"], rows["during-flood"]
print("| checkout | p50 ms | p99 ms | failed |")
print("|---|---|---|---|")
for name, r in (("idle", idle), ("during seckill flood", flood)):
    print(f"| {name} | {float(r['p50_ms']):.2f} | {float(r['p99_ms']):.2f} | {r['failed']} |")
print(f"p99 ratio flood/idle: {float(flood['p99_ms']) / float(idle['p99_ms']):.2f}")
PY
echo "raw output: $out"
