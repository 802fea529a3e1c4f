# Shared by the bench scripts: set up the stack, build, mint secrets and tokens, talk to
# the admin API. Source it after scripts/common.sh.

# bench_prepare NAME PACKAGE... : stack up, release build, $out, secrets, $TOKENS, and
# rate limits lifted so the load generator (one IP, few users) measures the paths, not 429s.
bench_prepare() {
  local name=$1
  shift
  command -v wrk >/dev/null || as_root apt-get install -y -qq wrk >/dev/null
  scripts/setup.sh
  scripts/stack.sh start
  eval "$(scripts/stack.sh env)"
  # A database of its own per run, so leftovers of earlier runs (e.g. reservations the
  # sweeper would republish) do not load the measurement.
  local db="bench_$(date +%s)"
  psql -q "$DATABASE_URL" -c "CREATE DATABASE $db"
  export DATABASE_URL="${DATABASE_URL%/*}/$db"
  local packages=()
  for p in "$@"; do packages+=(-p "$p"); done
  cargo build -q --release --locked "${packages[@]}"
  out=$ROOT/bench/results/$name-$(date -u +%Y%m%dT%H%M%SZ)
  mkdir -p "$out"
  export APP_AUTH__JWT_SECRET="bench-jwt-secret-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  export APP_AUTH__ADMIN_KEY="bench-admin-key-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  export TOKENS=$out/tokens.txt
  target/release/bench mint-tokens --count 20000 --out "$TOKENS"
  local topic
  topic="bench-$(date +%s)"
  export APP_PULSAR__SECKILL_ORDERS_TOPIC=$topic APP_PULSAR__ORDER_EVENTS_TOPIC="$topic-events" APP_LOG__FILTER=warn
  export APP_RATE_LIMIT__GLOBAL__PER_SECOND=10000000 APP_RATE_LIMIT__GLOBAL__BURST=10000000
  export APP_RATE_LIMIT__PER_IP__PER_SECOND=10000000 APP_RATE_LIMIT__PER_IP__BURST=10000000
  export APP_RATE_LIMIT__PER_USER__PER_SECOND=100000 APP_RATE_LIMIT__PER_USER__BURST=100000
}

# bench_processes NAME=PID... : those and the stack's Redis, PostgreSQL and broker as
# BENCH_PROCESSES for the bench's CPU figures (bench_prepare always runs the stack's own).
bench_processes() {
  local list=("$@") part pidfile
  for part in redis postgres pulsar; do
    # The stack's own parts, though their URLs are in the environment by now.
    pidfile=$(REDIS_URL='' DATABASE_URL='' PULSAR_URL='' scripts/stack.sh pidfile "$part")
    [ -f "$pidfile" ] && list+=("$([ $part = pulsar ] && echo broker || echo $part)=$(head -n1 "$pidfile")")
  done
  echo "${list[*]}"
}

# wait_ready URL... : every /readyz answers 200 within 30 s.
wait_ready() {
  for _ in $(seq 1 300); do
    local all=1
    for url in "$@"; do curl -sf "$url" >/dev/null || all=0; done
    [ $all = 1 ] && return 0
    sleep 0.1
  done
  die "not ready: $*; see $out"
}

admin() { curl -sf -H "Authorization: Bearer $APP_AUTH__ADMIN_KEY" -H 'Content-Type: application/json' "$@"; }

# create_promotion GATEWAY STOCK PER_USER_LIMIT : a running sale; prints its id.
create_promotion() {
  local start end
  start=$(date -u -d '-2 seconds' +%Y-%m-%dT%H:%M:%SZ)
  end=$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)
  admin -X POST "$1/admin/promotions" \
    -d "{\"sku_id\":\"bench\",\"title\":\"bench\",\"price_cents\":100,\"stock\":$2,\"per_user_limit\":$3,\"starts_at\":\"$start\",\"ends_at\":\"$end\"}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}
