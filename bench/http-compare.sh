#!/usr/bin/env bash
# The seckill endpoint against a trivial axum handler, measured in one run with the same load
# generator (wrk, same script, same connections) on the same machine:
#   trivial → sold-out path → reserve path → trivial again
# Prints req/s of each and the ratio to the trivial handler (mean of the two bracketing runs).
#   bench/http-compare.sh [seconds per run, default 10] [connections, default 128]
set -euo pipefail
source "$(dirname "$0")/../scripts/common.sh"
cd "$ROOT"
secs=${1:-10}
conns=${2:-128}
command -v wrk >/dev/null || as_root apt-get install -y -qq wrk >/dev/null

scripts/setup.sh
scripts/stack.sh start
eval "$(scripts/stack.sh env)"
cargo build -q --release --locked -p gateway -p bench

out=$ROOT/bench/results/http-compare-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
export APP_AUTH__JWT_SECRET="bench-jwt-secret-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export APP_AUTH__ADMIN_KEY="bench-admin-key-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export TOKENS=$out/tokens.txt
target/release/bench mint-tokens --count 20000 --out "$TOKENS"

trivial_port=18090
gateway_port=18080
target/release/bench trivial-server --addr "127.0.0.1:$trivial_port" 2>"$out/trivial.log" &
trivial_pid=$!
APP_GATEWAY__PORT=$gateway_port APP_LOG__FILTER=warn APP_SECKILL__WORKER_ID=1001 \
  APP_PULSAR__SECKILL_ORDERS_TOPIC="bench-$(date +%s)" \
  APP_RATE_LIMIT__GLOBAL__PER_SECOND=10000000 APP_RATE_LIMIT__GLOBAL__BURST=10000000 \
  APP_RATE_LIMIT__PER_IP__PER_SECOND=10000000 APP_RATE_LIMIT__PER_IP__BURST=10000000 \
  APP_RATE_LIMIT__PER_USER__PER_SECOND=100000 APP_RATE_LIMIT__PER_USER__BURST=100000 \
  target/release/gateway >"$out/gateway.log" 2>&1 &
gateway_pid=$!
trap 'kill $trivial_pid $gateway_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$gateway_port/readyz" >/dev/null && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$gateway_port/readyz" >/dev/null || die "gateway not ready; see $out/gateway.log"

create() { # stock per_user_limit
  local start end
  start=$(date -u -d '-2 seconds' +%Y-%m-%dT%H:%M:%SZ)
  end=$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)
  curl -sf -X POST "http://127.0.0.1:$gateway_port/admin/promotions" \
    -H "Authorization: Bearer $APP_AUTH__ADMIN_KEY" -H 'Content-Type: application/json' \
    -d "{\"sku_id\":\"bench\",\"title\":\"bench\",\"price_cents\":100,\"stock\":$1,\"per_user_limit\":$2,\"starts_at\":\"$start\",\"ends_at\":\"$end\"}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}
sold_out=$(create 0 1)
reserve=$(create 10000000 100)

run() { # name url
  wrk -t2 -c"$conns" -d"${secs}s" -s bench/wrk/seckill.lua "$2" >"$out/$1.txt"
  local rps non2xx
  rps=$(awk '/Requests\/sec/ {print $2}' "$out/$1.txt")
  non2xx=$(awk '/Non-2xx/ {print $5}' "$out/$1.txt")
  echo "$1 $rps ${non2xx:-0} $(awk '/Latency/ {print $2}' "$out/$1.txt")" >>"$out/summary.txt"
}
run trivial-1 "http://127.0.0.1:$trivial_port/api/seckill/1/orders"
run sold-out "http://127.0.0.1:$gateway_port/api/seckill/$sold_out/orders"
run reserve "http://127.0.0.1:$gateway_port/api/seckill/$reserve/orders"
run trivial-2 "http://127.0.0.1:$trivial_port/api/seckill/1/orders"

python3 - "$out/summary.txt" "$secs" "$conns" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1])]
rps = {r[0]: float(r[1]) for r in rows}
base = (rps["trivial-1"] + rps["trivial-2"]) / 2
print(f"wrk -t2 -c{sys.argv[3]} -d{sys.argv[2]}s, load generator on the same 2-core machine")
print("| run | req/s | non-2xx | mean latency | vs trivial handler |")
print("|---|---|---|---|---|")
for name, r, non2xx, lat in rows:
    print(f"| {name} | {float(r):.0f} | {non2xx} | {lat} | {float(r)/base:.2f} |")
PY
echo "raw output: $out"
