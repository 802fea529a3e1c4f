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
source "$ROOT/bench/common.sh"
bench_prepare http-compare gateway bench

trivial_port=18090
gateway_port=18080
target/release/bench trivial-server --addr "127.0.0.1:$trivial_port" 2>"$out/trivial.log" &
trivial_pid=$!
APP_GATEWAY__PORT=$gateway_port target/release/gateway >"$out/gateway.log" 2>&1 &
gateway_pid=$!
trap 'kill $trivial_pid $gateway_pid 2>/dev/null || true' EXIT
wait_ready "http://127.0.0.1:$gateway_port/readyz"
sold_out=$(create_promotion "http://127.0.0.1:$gateway_port" 0 1)
reserve=$(create_promotion "http://127.0.0.1:$gateway_port" 10000000 100)

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
