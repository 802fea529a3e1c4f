#!/usr/bin/env bash
# Invariant 6 in one run: normal checkout latency at a steady rate, first idle, then while a
# seckill flood (wrk on the reserve path) runs and the order writer persists its orders.
#   bench/isolation.sh [checkouts/s, default 100] [seconds, default 10]
set -euo pipefail
source "$(dirname "$0")/../scripts/common.sh"
cd "$ROOT"
rate=${1:-100}
secs=${2:-10}
command -v wrk >/dev/null || as_root apt-get install -y -qq wrk >/dev/null

scripts/setup.sh
scripts/stack.sh start
eval "$(scripts/stack.sh env)"
cargo build -q --release --locked -p gateway -p consumers -p bench

out=$ROOT/bench/results/isolation-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
export APP_AUTH__JWT_SECRET="bench-jwt-secret-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export APP_AUTH__ADMIN_KEY="bench-admin-key-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export TOKENS=$out/tokens.txt
target/release/bench mint-tokens --count 20000 --out "$TOKENS"
topic="bench-$(date +%s)"
export APP_PULSAR__SECKILL_ORDERS_TOPIC=$topic APP_PULSAR__ORDER_EVENTS_TOPIC="$topic-events" APP_LOG__FILTER=warn
export APP_RATE_LIMIT__GLOBAL__PER_SECOND=10000000 APP_RATE_LIMIT__GLOBAL__BURST=10000000
export APP_RATE_LIMIT__PER_IP__PER_SECOND=10000000 APP_RATE_LIMIT__PER_IP__BURST=10000000
export APP_RATE_LIMIT__PER_USER__PER_SECOND=100000 APP_RATE_LIMIT__PER_USER__BURST=100000
export APP_POST_PAYMENT__ANALYTICS_DIR=$out/analytics

APP_GATEWAY__PORT=18080 APP_SECKILL__WORKER_ID=1003 target/release/gateway >"$out/gateway.log" 2>&1 &
gateway_pid=$!
APP_CONSUMERS__PORT=18081 target/release/consumers >"$out/consumers.log" 2>&1 &
consumers_pid=$!
trap 'kill $gateway_pid $consumers_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
  curl -sf http://127.0.0.1:18080/readyz >/dev/null && curl -sf http://127.0.0.1:18081/readyz >/dev/null && break
  sleep 0.1
done
admin() { curl -sf -H "Authorization: Bearer $APP_AUTH__ADMIN_KEY" -H 'Content-Type: application/json' "$@"; }
sku="bench-sku-$(date +%s)"
admin -X POST http://127.0.0.1:18080/admin/skus -d "{\"id\":\"$sku\",\"title\":\"bench\",\"price_cents\":1000,\"stock\":10000000}" >/dev/null
start=$(date -u -d '-2 seconds' +%Y-%m-%dT%H:%M:%SZ)
end=$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)
promo=$(admin -X POST http://127.0.0.1:18080/admin/promotions \
  -d "{\"sku_id\":\"bench\",\"title\":\"bench\",\"price_cents\":100,\"stock\":10000000,\"per_user_limit\":100,\"starts_at\":\"$start\",\"ends_at\":\"$end\"}" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')

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
