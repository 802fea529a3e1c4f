#!/usr/bin/env bash
# The local stack: redis-server (AOF on), PostgreSQL and pulsar-lite, each on its own port and
# data directory under $SECKILL_STACK_DIR (default .stack/), so it never collides with services
# already on the machine. Idempotent.
#
#   scripts/stack.sh start|stop|restart [part ...]   (default: redis, postgres and pulsar)
#   scripts/stack.sh kill [part ...]    SIGKILL (fault tests: a crash, not a clean stop)
#   scripts/stack.sh pause|resume [part ...]   SIGSTOP / SIGCONT (fault tests: a part that
#                                       hangs without dying, then comes back)
#   scripts/stack.sh status | wait | env | pidfile [part ...]   (pidfile: where each part's pid is)
#   scripts/stack.sh master redis-cluster SLOT | master redis-sentinel
#                                       the part that is the master now (of a slot, or of the
#                                       Sentinel group): faults follow failovers
#
# Two replicated shapes of Redis, started only when named (production runs one of them):
# - redis-cluster: a Redis Cluster of three masters with one replica each, from the same
#   redis-server binary, on ports $SECKILL_REDIS_CLUSTER_PORT.. (default 17000-17005), AOF on,
#   cluster-node-timeout $SECKILL_REDIS_NODE_TIMEOUT_MS (default 1000: a short one, for tests).
#   redis-cluster-0 .. redis-cluster-5 name one node (0-2 start as masters, 3-5 as replicas;
#   a failover swaps roles); `env redis-cluster` prints REDIS_CLUSTER_NODES.
# - redis-sentinel: one primary and one replica (ports $SECKILL_REDIS_SENTINEL_PORT and +1,
#   default 17100-17101; redis-sentinel-0 and -1, 0 starts as primary) watched by three
#   Sentinels (+2..+4, redis-sentinel-s0 .. -s2; down-after $SECKILL_REDIS_NODE_TIMEOUT_MS);
#   `env redis-sentinel` prints REDIS_SENTINEL_NODES and REDIS_SENTINEL_MASTER.
# Both keep writes from a master that lost its replica (min-replicas-to-write 1) and let a
# lagging replica be promoted (cluster-replica-validity-factor 0): losses are the system's to
# detect, and the tests make them on purpose.
#
# A part whose URL is given from outside (REDIS_URL, DATABASE_URL, PULSAR_URL) is not started;
# `env` prints the URLs the apps should use.
set -euo pipefail
source "$(dirname "$0")/common.sh"

WAIT_SECS=${SECKILL_STACK_WAIT_SECS:-60}
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)

CLUSTER_MASTERS=3
CLUSTER_NODES=$((CLUSTER_MASTERS * 2))
NODE_TIMEOUT_MS=${SECKILL_REDIS_NODE_TIMEOUT_MS:-1000}
SENTINEL_MASTER=${SECKILL_REDIS_SENTINEL_MASTER:-seckill}
cluster_port() { echo $((REDIS_CLUSTER_PORT + $1)); }
cluster_nodes() {
  local urls=() i
  for i in $(seq 0 $((CLUSTER_NODES - 1))); do urls+=("redis://127.0.0.1:$(cluster_port "$i")"); done
  (IFS=,; echo "${urls[*]}")
}
sentinel_port() { echo $((REDIS_SENTINEL_PORT + $1)); }
sentinel_nodes() {
  local urls=() i
  for i in 2 3 4; do urls+=("redis://127.0.0.1:$(sentinel_port "$i")"); done
  (IFS=,; echo "${urls[*]}")
}
redis_url() { echo "${REDIS_URL:-redis://127.0.0.1:$REDIS_PORT}"; }
database_url() { echo "${DATABASE_URL:-postgres://postgres@127.0.0.1:$PG_PORT/$PG_DB}"; }
pulsar_url() { echo "${PULSAR_URL:-pulsar://127.0.0.1:$PULSAR_PORT}"; }
external() { case $1 in redis) [ -n "${REDIS_URL:-}" ] ;; postgres) [ -n "${DATABASE_URL:-}" ] ;; pulsar) [ -n "${PULSAR_URL:-}" ] ;; *) false ;; esac; }

# redis-cli with a deadline: a paused node (SIGSTOP) would hold it forever.
rcli() { timeout 2 redis-cli "$@"; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
# A port that answers but is not ours: refuse rather than silently share someone else's data.
port_taken() { die "port $1 is in use by another process; pick another with $2"; }

# PostgreSQL refuses to run as root: as root, run it as the `postgres` system user, with its
# data directory somewhere that user can reach.
pg_user() { if [ "$(id -u)" = 0 ]; then echo postgres; else id -un; fi; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pg_data() {
  local dir=$STACK_DIR/postgres
  if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$STACK_DIR" 2>/dev/null; then
    dir=/var/tmp/seckill-postgres-$(echo "$STACK_DIR" | sha256sum | cut -c1-12)
  fi
  echo "$dir"
}

start_redis() {
  local dir=$STACK_DIR/redis
  mkdir -p "$dir"
  if pid_alive "$dir/redis.pid"; then return; fi
  if port_open "$REDIS_PORT"; then port_taken "$REDIS_PORT" SECKILL_REDIS_PORT; fi
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes \
    --appendonly yes --appendfsync everysec --save "" \
    --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >/dev/null
}
stop_redis() {
  local pidfile=$STACK_DIR/redis/redis.pid
  if pid_alive "$pidfile"; then
    redis-cli -p "$REDIS_PORT" shutdown >/dev/null 2>&1 || kill "$(cat "$pidfile")" 2>/dev/null || true
    for _ in $(seq 1 50); do pid_alive "$pidfile" || break; sleep 0.1; done
  fi
}
wait_redis() { redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

start_postgres() {
  [ -n "$PG_BIN" ] || die "no PostgreSQL binaries under /usr/lib/postgresql (run scripts/setup.sh)"
  if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then useradd --system --no-create-home postgres; fi
  local data run
  data=$(pg_data)
  run=$data-run
  mkdir -p "$data" "$run"
  if [ "$(id -u)" = 0 ]; then chown postgres "$data" "$run"; chmod 700 "$data"; fi
  if [ ! -f "$data/PG_VERSION" ]; then
    as_pg "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --no-locale >"$run/initdb.log" 2>&1 \
      || die "initdb failed: $(tail -n5 "$run/initdb.log")"
    cat >>"$data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$run'
max_connections = 400
shared_buffers = 256MB
CONF
  fi
  if as_pg "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then return; fi
  if port_open "$PG_PORT"; then port_taken "$PG_PORT" SECKILL_PG_PORT; fi
  # pg_stat_statements: statement statistics for `bench/run.sh profile` (loaded at start).
  as_pg "$PG_BIN/pg_ctl" -D "$data" -l "$run/postgres.log" -w -t "$WAIT_SECS" \
    -o "-c shared_preload_libraries=pg_stat_statements" start >/dev/null \
    || die "PostgreSQL did not start: $(tail -n5 "$run/postgres.log")"
  if ! psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'" postgres | grep -q 1; then
    psql -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -c "CREATE DATABASE \"$PG_DB\"" postgres
  fi
}
stop_postgres() {
  local data
  data=$(pg_data)
  [ -f "$data/PG_VERSION" ] || return 0
  as_pg "$PG_BIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
}
wait_postgres() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; }

start_pulsar() {
  local dir=$STACK_DIR/pulsar
  mkdir -p "$dir"
  if pid_alive "$dir/pulsar-lite.pid"; then return; fi
  if port_open "$PULSAR_PORT"; then port_taken "$PULSAR_PORT" SECKILL_PULSAR_PORT; fi
  [ -x "$PULSAR_LITE_BIN" ] || die "no pulsar-lite at $PULSAR_LITE_BIN (run scripts/setup.sh)"
  cat >"$dir/pulsar-lite.toml" <<CONF
[metrics]
addr = "127.0.0.1:$PULSAR_METRICS_PORT"
CONF
  setsid "$PULSAR_LITE_BIN" --addr "127.0.0.1:$PULSAR_PORT" --db-path "$dir/db" \
    --config "$dir/pulsar-lite.toml" --log-level warn >>"$dir/pulsar-lite.log" 2>&1 </dev/null &
  echo $! >"$dir/pulsar-lite.pid"
}
stop_pulsar() {
  local pidfile=$STACK_DIR/pulsar/pulsar-lite.pid pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}
wait_pulsar() { port_open "$PULSAR_PORT"; }

# Settings every replicated node shares: a master refuses writes once no replica has
# acknowledged it for 4 s, a replica is promoted however far it lags (seckill detects what it
# lost), full resyncs start at once (a returning master comes back as a replica in a second).
replicated_node_args() {
  echo --appendonly yes --appendfsync everysec --save "" \
    --min-replicas-to-write 1 --min-replicas-max-lag 4 \
    --repl-diskless-sync-delay 0 --repl-timeout 5
}

# One node of the cluster: its own directory, nodes.conf and append-only file.
start_cluster_node() {
  local i=$1 dir=$STACK_DIR/redis-cluster/$1 port
  port=$(cluster_port "$i")
  mkdir -p "$dir"
  if pid_alive "$dir/redis.pid"; then return; fi
  if port_open "$port"; then port_taken "$port" SECKILL_REDIS_CLUSTER_PORT; fi
  # shellcheck disable=SC2046
  redis-server --port "$port" --bind 127.0.0.1 --daemonize yes \
    --cluster-enabled yes --cluster-config-file "$dir/nodes.conf" \
    --cluster-node-timeout "$NODE_TIMEOUT_MS" --cluster-replica-validity-factor 0 \
    $(replicated_node_args) \
    --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >/dev/null
}
stop_cluster_node() {
  local pidfile=$STACK_DIR/redis-cluster/$1/redis.pid
  if pid_alive "$pidfile"; then
    rcli -p "$(cluster_port "$1")" shutdown >/dev/null 2>&1 || kill "$(cat "$pidfile")" 2>/dev/null || true
    for _ in $(seq 1 50); do pid_alive "$pidfile" || break; sleep 0.1; done
  fi
}
wait_cluster_node() { rcli -p "$(cluster_port "$1")" ping 2>/dev/null | grep -q PONG; }
# Healthy: every slot served, every master with a replica in sync (a test's fault starts from
# a whole cluster, and the next one waits until the last has healed).
cluster_ok() {
  local i info masters=0 synced=0
  rcli -p "$(cluster_port 0)" cluster info 2>/dev/null | grep -q 'cluster_state:ok' || return 1
  for i in $(seq 0 $((CLUSTER_NODES - 1))); do
    info=$(rcli -p "$(cluster_port "$i")" info replication 2>/dev/null) || return 1
    if grep -q '^role:master' <<<"$info"; then
      masters=$((masters + 1))
      grep -q 'state=online' <<<"$info" && synced=$((synced + 1))
    fi
  done
  [ "$masters" = "$CLUSTER_MASTERS" ] && [ "$synced" = "$CLUSTER_MASTERS" ]
}
start_redis-cluster() {
  local i conf=$STACK_DIR/redis-cluster/0/nodes.conf
  # A cluster made by an older stack.sh (three masters, no replicas) is made anew: it is the
  # local test cluster, its data is not kept.
  if [ -f "$conf" ] && [ "$(grep -c -E '(master|slave)' "$conf")" -lt "$CLUSTER_NODES" ]; then
    say "the local Redis Cluster has no replicas (made by an older stack.sh); making it anew"
    stop_redis-cluster
    rm -rf "$STACK_DIR/redis-cluster"
  fi
  for i in $(seq 0 $((CLUSTER_NODES - 1))); do start_cluster_node "$i"; done
}
wait_redis-cluster() {
  local i
  for i in $(seq 0 $((CLUSTER_NODES - 1))); do wait_cluster_node "$i" || return 1; done
  # A first start: the nodes know nothing of each other until they are joined once (their
  # nodes.conf remembers it from then on). Nodes 0-2 become the masters, 3-5 their replicas.
  if ! rcli -p "$(cluster_port 0)" cluster info 2>/dev/null | grep -q 'cluster_slots_assigned:16384'; then
    local addrs=()
    for i in $(seq 0 $((CLUSTER_NODES - 1))); do addrs+=("127.0.0.1:$(cluster_port "$i")"); done
    redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$STACK_DIR/redis-cluster/create.log" 2>&1 || return 1
  fi
  cluster_ok
}
stop_redis-cluster() {
  local i
  for i in $(seq 0 $((CLUSTER_NODES - 1))); do stop_cluster_node "$i"; done
}

# The Sentinel shape: data nodes 0 (first primary) and 1, Sentinels s0-s2. Each node starts
# from a config file of its own that Redis rewrites when a Sentinel changes its role, so a
# restarted node comes back as what it last was.
sentinel_dir() { echo "$STACK_DIR/redis-sentinel/$1"; }
start_sentinel_node() {
  local i=$1 dir port
  dir=$(sentinel_dir "$i")
  port=$(sentinel_port "$i")
  mkdir -p "$dir"
  if pid_alive "$dir/redis.pid"; then return; fi
  if port_open "$port"; then port_taken "$port" SECKILL_REDIS_SENTINEL_PORT; fi
  if [ ! -f "$dir/redis.conf" ]; then
    {
      echo "port $port"
      echo "bind 127.0.0.1"
      echo "dir $dir"
      [ "$i" = 0 ] || echo "replicaof 127.0.0.1 $(sentinel_port 0)"
    } >"$dir/redis.conf"
  fi
  # A node that comes back while the Sentinels name another primary rejoins as its replica at
  # once (as an orchestrator restarts one), instead of serving its old data as a primary until
  # a Sentinel converts it.
  local rejoin=() master="" s
  for s in 2 3 4; do
    master=$(sentinel_master_port "$s")
    [ -n "$master" ] && break
  done
  if [ -n "$master" ] && [ "$master" != "$port" ]; then rejoin=(--replicaof 127.0.0.1 "$master"); fi
  # shellcheck disable=SC2046
  redis-server "$dir/redis.conf" --daemonize yes $(replicated_node_args) "${rejoin[@]}" \
    --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >/dev/null
}
stop_sentinel_node() {
  local pidfile
  pidfile=$(sentinel_dir "$1")/redis.pid
  if pid_alive "$pidfile"; then
    rcli -p "$(sentinel_port "$1")" shutdown >/dev/null 2>&1 || kill "$(cat "$pidfile")" 2>/dev/null || true
    for _ in $(seq 1 50); do pid_alive "$pidfile" || break; sleep 0.1; done
  fi
}
wait_sentinel_node() { rcli -p "$(sentinel_port "$1")" ping 2>/dev/null | grep -q PONG; }
start_sentinel() {
  local s=$1 dir port
  dir=$(sentinel_dir "s$s")
  port=$(sentinel_port $((s + 2)))
  mkdir -p "$dir"
  if pid_alive "$dir/redis.pid"; then return; fi
  if port_open "$port"; then port_taken "$port" SECKILL_REDIS_SENTINEL_PORT; fi
  if [ ! -f "$dir/sentinel.conf" ]; then
    cat >"$dir/sentinel.conf" <<CONF
port $port
bind 127.0.0.1
dir $dir
sentinel monitor $SENTINEL_MASTER 127.0.0.1 $(sentinel_port 0) 2
sentinel down-after-milliseconds $SENTINEL_MASTER $NODE_TIMEOUT_MS
sentinel failover-timeout $SENTINEL_MASTER 3000
sentinel parallel-syncs $SENTINEL_MASTER 1
CONF
  fi
  redis-server "$dir/sentinel.conf" --sentinel --daemonize yes \
    --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >/dev/null
}
stop_sentinel() {
  local pidfile
  pidfile=$(sentinel_dir "s$1")/redis.pid
  if pid_alive "$pidfile"; then
    rcli -p "$(sentinel_port $(($1 + 2)))" shutdown >/dev/null 2>&1 || kill "$(cat "$pidfile")" 2>/dev/null || true
    for _ in $(seq 1 50); do pid_alive "$pidfile" || break; sleep 0.1; done
  fi
}
wait_sentinel() { rcli -p "$(sentinel_port $(($1 + 2)))" ping 2>/dev/null | grep -q PONG; }
# Healthy: every Sentinel names the same primary, which answers as a master with its replica in
# sync.
sentinel_master_port() {
  { rcli -p "$(sentinel_port "$1")" sentinel get-master-addr-by-name "$SENTINEL_MASTER" 2>/dev/null || true; } | sed -n 2p
}
sentinel_ok() {
  local s first="" port
  for s in 2 3 4; do
    port=$(sentinel_master_port "$s")
    [ -n "$port" ] || return 1
    [ -z "$first" ] && first=$port
    [ "$port" = "$first" ] || return 1
  done
  rcli -p "$first" info replication 2>/dev/null | grep -q 'state=online' || return 1
  # Each Sentinel has found the other two and the replica (a failover needs a quorum).
  for s in 2 3 4; do
    rcli -p "$(sentinel_port "$s")" sentinel master "$SENTINEL_MASTER" 2>/dev/null \
      | awk 'prev=="num-other-sentinels"{o=$0} prev=="num-slaves"{r=$0} {prev=$0} END{exit !(o>=2 && r>=1)}' || return 1
  done
}
start_redis-sentinel() {
  start_sentinel_node 0
  start_sentinel_node 1
  local s
  for s in 0 1 2; do start_sentinel "$s"; done
}
wait_redis-sentinel() {
  local s
  wait_sentinel_node 0 && wait_sentinel_node 1 || return 1
  for s in 0 1 2; do wait_sentinel "$s" || return 1; done
  sentinel_ok
}
stop_redis-sentinel() {
  local s
  for s in 0 1 2; do stop_sentinel "$s"; done
  stop_sentinel_node 0
  stop_sentinel_node 1
}
node_of() { echo "${1#redis-cluster-}"; }
redis-cluster_url() { cluster_nodes; }
redis-sentinel_url() { sentinel_nodes; }
# start/stop/wait of a part; a cluster node, a Sentinel group's node or Sentinel by its number.
part_do() {
  case $2 in
    redis-cluster-*) "$1_cluster_node" "$(node_of "$2")" ;;
    redis-sentinel-s*) "$1_sentinel" "${2#redis-sentinel-s}" ;;
    redis-sentinel-*) "$1_sentinel_node" "${2#redis-sentinel-}" ;;
    *) "$1_$2" ;;
  esac
}

pidfile_of() {
  case $1 in
    redis-cluster) for i in $(seq 0 $((CLUSTER_NODES - 1))); do echo "$STACK_DIR/redis-cluster/$i/redis.pid"; done ;;
    redis-cluster-*) echo "$STACK_DIR/redis-cluster/$(node_of "$1")/redis.pid" ;;
    # The whole group: its data nodes (a fault on "redis" hits the data, not the Sentinels).
    redis-sentinel) for i in 0 1; do echo "$(sentinel_dir "$i")/redis.pid"; done ;;
    redis-sentinel-*) echo "$(sentinel_dir "${1#redis-sentinel-}")/redis.pid" ;;
    redis) echo "$STACK_DIR/redis/redis.pid" ;;
    pulsar) echo "$STACK_DIR/pulsar/pulsar-lite.pid" ;;
    postgres) echo "$(pg_data)/postmaster.pid" ;;
  esac
}

log_of() {
  case $1 in
    redis-cluster) echo "$STACK_DIR/redis-cluster/0/redis.log" ;;
    redis-cluster-*) echo "$STACK_DIR/redis-cluster/$(node_of "$1")/redis.log" ;;
    redis-sentinel) echo "$(sentinel_dir s0)/redis.log" ;;
    redis-sentinel-*) echo "$(sentinel_dir "${1#redis-sentinel-}")/redis.log" ;;
    redis) echo "$STACK_DIR/redis/redis.log" ;;
    postgres) echo "$(pg_data)-run/postgres.log" ;;
    pulsar) echo "$STACK_DIR/pulsar/pulsar-lite.log" ;;
  esac
}

# The part that is the master now: of a slot on the cluster (asked of any node that answers),
# of the group on Sentinel (asked of the Sentinels).
master_part() {
  local port="" i
  case $1 in
    redis-cluster)
      [ -n "${2:-}" ] || die "usage: stack.sh master redis-cluster SLOT"
      for i in $(seq 0 $((CLUSTER_NODES - 1))); do
        # CLUSTER NODES: "id ip:port@bus flags master-id ping pong epoch link slot-ranges…";
        # the live master whose ranges hold the slot.
        port=$({ rcli -p "$(cluster_port "$i")" cluster nodes 2>/dev/null || true; } | awk -v slot="$2" '
          $3 ~ /master/ && $3 !~ /fail/ {
            for (f = 9; f <= NF; f++) {
              n = split($f, r, "-"); lo = r[1]; hi = (n == 2) ? r[2] : r[1]
              if (lo ~ /^[0-9]+$/ && lo + 0 <= slot + 0 && slot + 0 <= hi + 0) {
                split($2, a, "[:@]"); print a[2]; exit
              }
            }
          }')
        [ -n "$port" ] && break
      done
      [ -n "$port" ] || die "no cluster node names a master for slot $2"
      echo "redis-cluster-$((port - REDIS_CLUSTER_PORT))"
      ;;
    redis-sentinel)
      for i in 2 3 4; do
        port=$(sentinel_master_port "$i")
        [ -n "$port" ] && break
      done
      [ -n "$port" ] || die "no Sentinel names a master"
      echo "redis-sentinel-$((port - REDIS_SENTINEL_PORT))"
      ;;
    *) die "master: redis-cluster SLOT or redis-sentinel" ;;
  esac
}

wait_part() {
  local part=$1 deadline=$((SECONDS + WAIT_SECS))
  until part_do wait "$part"; do
    if [ $SECONDS -ge $deadline ]; then
      say "$part did not become ready within ${WAIT_SECS}s; last lines of $(log_of "$part"):"
      tail -n 20 "$(log_of "$part")" >&2 2>/dev/null || true
      exit 1
    fi
    sleep 0.1
  done
}

parts=(redis postgres pulsar)
cmd=${1:-status}
shift || true
if [ "$cmd" = master ]; then
  master_part "$@"
  exit 0
fi
[ $# -gt 0 ] && parts=("$@")
for part in "${parts[@]}"; do
  case $part in
    redis | postgres | pulsar | redis-cluster | redis-sentinel) ;;
    redis-cluster-[0-5] | redis-sentinel-[01] | redis-sentinel-s[0-2]) ;;
    *) die "unknown part '$part' (redis, postgres, pulsar, redis-cluster, redis-cluster-0..5, redis-sentinel, redis-sentinel-0..1, redis-sentinel-s0..s2)" ;;
  esac
done

case $cmd in
  start)
    mkdir -p "$STACK_DIR"
    for part in "${parts[@]}"; do
      if external "$part"; then continue; fi
      part_do start "$part"
    done
    for part in "${parts[@]}"; do
      if external "$part"; then continue; fi
      wait_part "$part"
    done
    ;;
  stop)
    for part in "${parts[@]}"; do
      external "$part" && continue
      # A paused part would never answer a clean shutdown: let it run first.
      for pidfile in $(pidfile_of "$part"); do
        if [ -f "$pidfile" ]; then
          pid=$(head -n1 "$pidfile")
          kill -s CONT "$pid" $(pgrep -P "$pid" 2>/dev/null || true) 2>/dev/null || true
        fi
      done
      part_do stop "$part"
    done
    ;;
  restart)
    "$0" stop "${parts[@]}"
    "$0" start "${parts[@]}"
    ;;
  pause | resume)
    signal=STOP
    [ "$cmd" = resume ] && signal=CONT
    for part in "${parts[@]}"; do
      external "$part" && continue
      for pidfile in $(pidfile_of "$part"); do
        [ -f "$pidfile" ] || die "$part is not running (no $pidfile)"
        pid=$(head -n1 "$pidfile")
        # PostgreSQL is a postmaster and its backends: every one of them hangs.
        kill -s "$signal" "$pid" $(pgrep -P "$pid" || true)
      done
    done
    ;;
  kill)
    for part in "${parts[@]}"; do
      external "$part" && continue
      for pidfile in $(pidfile_of "$part"); do
        if [ -f "$pidfile" ]; then
          pid=$(head -n1 "$pidfile")
          kill -9 "$pid" 2>/dev/null || true
          for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
        [ "$part" = postgres ] || rm -f "$pidfile"
      done
    done
    ;;
  wait) for part in "${parts[@]}"; do external "$part" || wait_part "$part"; done ;;
  pidfile) for part in "${parts[@]}"; do external "$part" || pidfile_of "$part"; done ;;
  status)
    for part in "${parts[@]}"; do
      if external "$part"; then state="external"; elif part_do wait "$part"; then state="up"; else state="down"; fi
      printf '%-9s %-8s %s\n' "$part" "$state" "$("${part/postgres/database}_url" 2>/dev/null || true)"
    done
    ;;
  env)
    echo "export REDIS_URL=$(redis_url)"
    echo "export DATABASE_URL=$(database_url)"
    echo "export PULSAR_URL=$(pulsar_url)"
    # The replicated shapes only when named: the apps run on one once REDIS_CLUSTER_NODES or
    # REDIS_SENTINEL_NODES is set.
    if [[ " ${parts[*]} " == *" redis-cluster "* ]] && [ $# -gt 0 ]; then
      echo "export REDIS_CLUSTER_NODES=$(cluster_nodes)"
    fi
    if [[ " ${parts[*]} " == *" redis-sentinel "* ]] && [ $# -gt 0 ]; then
      echo "export REDIS_SENTINEL_NODES=$(sentinel_nodes)"
      echo "export REDIS_SENTINEL_MASTER=$SENTINEL_MASTER"
    fi
    ;;
  *) die "usage: stack.sh start|stop|restart|kill|pause|resume|status|wait|env|pidfile [part ...] | master redis-cluster SLOT | master redis-sentinel" ;;
esac
