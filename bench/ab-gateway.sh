#!/usr/bin/env bash
# The gateway's hot path against a baseline gateway binary, in one run on one stack: the
# reserve path (closed loop, stock 10 M, 200,000 buyers) driven against each binary in
# turn, A B B A … so drift in the machine's load hits both alike. Reports req/s and the
# gateway's CPU time per request (user + system, from /proc), which moves far less with
# the machine's noise than req/s.
#   bench/ab-gateway.sh /path/to/baseline/gateway [rounds]
#   AB_STOCK=0 AB_USERS=20000 bench/ab-gateway.sh …   # the sold-out path (every order refused)
# Build a baseline from an earlier commit in a worktree, e.g.
#   git worktree add /tmp/base <commit> && (cd /tmp/base && scripts/patch-pulsar.sh &&
#     CARGO_TARGET_DIR=/tmp/base-target cargo build --release -p gateway)
# No consumers run: accepted orders wait in Pulsar, the database stays idle.
set -euo pipefail
source "$(dirname "$0")/../scripts/common.sh"
cd "$ROOT"
[ $# -ge 1 ] || die "usage: bench/ab-gateway.sh BASELINE_GATEWAY_BINARY [rounds]"
baseline=$(realpath "$1")
rounds=${2:-3}
[ -x "$baseline" ] || die "$baseline is not an executable"
source "$ROOT/bench/common.sh"
bench_prepare ab-gateway gateway bench
candidate=$ROOT/target/release/gateway
ticks=$(getconf CLK_TCK)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run_one LABEL BINARY ROUND : start the binary, drive the reserve path, stop it.
run_one() {
  local label=$1 bin=$2 round=$3 dir="$out/$label-$round"
  mkdir -p "$dir"
  # A baseline from before worker-id leases needs its worker id set.
  local extra=()
  [ "$label" = baseline ] && extra=(APP_SECKILL__WORKER_ID=0)
  env "${extra[@]}" APP_GATEWAY__PORT=18080 "$bin" >"$dir/gateway.log" 2>&1 &
  local pid=$!
  wait_ready http://127.0.0.1:18080/readyz
  local before after
  before=$(cpu_ticks "$pid")
  target/release/bench flash-sale --gateway http://127.0.0.1:18080 --rate max \
    --users "${AB_USERS:-200000}" --stock "${AB_STOCK:-10000000}" --per-user-limit 100 --retry-fraction 0 --again-fraction 0 \
    --seconds 10 --no-verify --out "$dir" >"$dir/bench.log" 2>&1
  after=$(cpu_ticks "$pid")
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  python3 - "$dir/report.json" "$label" "$round" "$((after - before))" "$ticks" <<'PY' | tee -a "$out/ab.tsv"
import json, sys
run = json.load(open(sys.argv[1]))[0]
label, rnd, cpu, ticks = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
requests = run["requests"]
print(f"{label}\t{rnd}\t{run['throughput_rps']:.0f}\t{cpu / ticks / max(requests, 1) * 1e6:.1f}\t{requests}")
PY
}

printf 'binary\tround\treq/s\tgateway CPU µs/request\trequests\n' | tee "$out/ab.tsv"
for round in $(seq 1 "$rounds"); do
  if [ $((round % 2)) = 1 ]; then order=(baseline candidate); else order=(candidate baseline); fi
  for label in "${order[@]}"; do
    if [ "$label" = baseline ]; then run_one baseline "$baseline" "$round"; else run_one candidate "$candidate" "$round"; fi
  done
done
python3 - "$out/ab.tsv" <<'PY'
import csv, statistics, sys
rows = list(csv.reader(open(sys.argv[1]), delimiter="\t"))[1:]
by = {}
for label, _, rps, cpu, _ in rows:
    by.setdefault(label, []).append((float(rps), float(cpu)))
med = {k: (statistics.median(r for r, _ in v), statistics.median(c for _, c in v)) for k, v in by.items()}
b, c = med["baseline"], med["candidate"]
print(f"median req/s: baseline {b[0]:.0f}, candidate {c[0]:.0f} ({c[0] / b[0]:.2f}x)")
print(f"median gateway CPU per request: baseline {b[1]:.1f} µs, candidate {c[1]:.1f} µs ({c[1] / b[1]:.2f}x)")
PY
echo "details: $out"
