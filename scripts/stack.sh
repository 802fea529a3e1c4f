#!/usr/bin/env bash
# The local stack: redis-server (AOF on), PostgreSQL and pulsar-lite, each on its own port and
# data directory under $SECKILL_STACK_DIR (default .stack/), so it never collides with services
# already on the machine. Idempotent.
#
#   scripts/stack.sh start|stop|restart [redis|postgres|pulsar|redis-cluster ...]
#                                       (default: redis, postgres and pulsar)
#   scripts/stack.sh kill [part ...]    SIGKILL (fault tests: a crash, not a clean stop)
#   scripts/stack.sh pause|resume [part ...]   SIGSTOP / SIGCONT (fault tests: a part that
#                                       hangs without dying, then comes back)
#   scripts/stack.sh status | wait | env | pidfile [part ...]   (pidfile: where each part's pid is)
#
# redis-cluster is a Redis Cluster of three masters (no replicas) from the same redis-server
# binary, on ports $SECKILL_REDIS_CLUSTER_PORT.. (default 17000-17002), AOF on; started only
# when named. Its node is a part name too (redis-cluster-0 .. redis-cluster-2) for
# pause/resume/kill/restart of one node; `env redis-cluster` prints REDIS_CLUSTER_NODES.
#
# A part whose URL is given from outside (REDIS_URL, DATABASE_URL, PULSAR_URL) is not started;
# `env` prints the URLs the apps should use.
set -euo pipefail
source "$(dirname "$0")/common.sh"

WAIT_SECS=${SECKILL_STACK_WAIT_SECS:-60}
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)

CLUSTER_NODES=3
cluster_port() { echo $((REDIS_CLUSTER_PORT + $1)); }
cluster_nodes() {
  local urls=() i
  for i in $(seq 0 $((CLUSTER_NODES - 1))); do urls+=("redis://127.0.0.1:$(cluster_port "$i")"); done
  (IFS=,; echo "${urls[*]}")
}
redis_url() { echo "${REDIS_URL:-redis://127.0.0.1:$REDIS_PORT}"; }
database_url() { echo "${DATABASE_URL:-postgres://postgres@127.0.0.1:$PG_PORT/$PG_DB}"; }
pulsar_url() { echo "${PULSAR_URL:-pulsar://127.0.0.1:$PULSAR_PORT}"; }
external() { case $1 in redis) [ -n "${REDIS_URL:-}" ] ;; postgres) [ -n "${DATABASE_URL:-}" ] ;; pulsar) [ -n "${PULSAR_URL:-}" ] ;; *) false ;; esac; }

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
  as_pg "$PG_BIN/pg_ctl" -D "$data" -l "$run/postgres.log" -w -t "$WAIT_SECS" start >/dev/null \
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

# One node of the cluster: its own directory, nodes.conf and append-only file.
start_cluster_node() {
  local i=$1 dir=$STACK_DIR/redis-cluster/$1 port
  port=$(cluster_port "$i")
  mkdir -p "$dir"
  if pid_alive "$dir/redis.pid"; then return; fi
  if port_open "$port"; then port_taken "$port" SECKILL_REDIS_CLUSTER_PORT; fi
  redis-server --port "$port" --bind 127.0.0.1 --daemonize yes \
    --cluster-enabled yes --cluster-config-file "$dir/nodes.conf" --cluster-node-timeout 5000 \
    --appendonly yes --appendfsync everysec --save "" \
    --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >/dev/null
}
stop_cluster_node() {
  local pidfile=$STACK_DIR/redis-cluster/$1/redis.pid
  if pid_alive "$pidfile"; then
    redis-cli -p "$(cluster_port "$1")" shutdown >/dev/null 2>&1 || kill "$(cat "$pidfile")" 2>/dev/null || true
    for _ in $(seq 1 50); do pid_alive "$pidfile" || break; sleep 0.1; done
  fi
}
wait_cluster_node() { redis-cli -p "$(cluster_port "$1")" ping 2>/dev/null | grep -q PONG; }
cluster_ok() { redis-cli -p "$(cluster_port 0)" cluster info 2>/dev/null | grep -q 'cluster_state:ok'; }
start_redis-cluster() {
  local i
  for i in $(seq 0 $((CLUSTER_NODES - 1))); do start_cluster_node "$i"; done
}
wait_redis-cluster() {
  local i
  for i in $(seq 0 $((CLUSTER_NODES - 1))); do wait_cluster_node "$i" || return 1; done
  # A first start: the nodes know nothing of each other until they are joined once (their
  # nodes.conf remembers it from then on).
  if ! redis-cli -p "$(cluster_port 0)" cluster info 2>/dev/null | grep -q 'cluster_slots_assigned:16384'; then
    local addrs=()
    for i in $(seq 0 $((CLUSTER_NODES - 1))); do addrs+=("127.0.0.1:$(cluster_port "$i")"); done
    redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes >"$STACK_DIR/redis-cluster/create.log" 2>&1 || return 1
  fi
  cluster_ok
}
stop_redis-cluster() {
  local i
  for i in $(seq 0 $((CLUSTER_NODES - 1))); do stop_cluster_node "$i"; done
}
node_of() { echo "${1#redis-cluster-}"; }
redis-cluster_url() { cluster_nodes; }
# start/stop/wait of a part; a cluster node by its number.
part_do() {
  case $2 in
    redis-cluster-*) "$1_cluster_node" "$(node_of "$2")" ;;
    *) "$1_$2" ;;
  esac
}

pidfile_of() {
  case $1 in
    redis-cluster) for i in $(seq 0 $((CLUSTER_NODES - 1))); do echo "$STACK_DIR/redis-cluster/$i/redis.pid"; done ;;
    redis-cluster-*) echo "$STACK_DIR/redis-cluster/$(node_of "$1")/redis.pid" ;;
    redis) echo "$STACK_DIR/redis/redis.pid" ;;
    pulsar) echo "$STACK_DIR/pulsar/pulsar-lite.pid" ;;
    postgres) echo "$(pg_data)/postmaster.pid" ;;
  esac
}

log_of() {
  case $1 in
    redis-cluster) echo "$STACK_DIR/redis-cluster/0/redis.log" ;;
    redis-cluster-*) echo "$STACK_DIR/redis-cluster/$(node_of "$1")/redis.log" ;;
    redis) echo "$STACK_DIR/redis/redis.log" ;;
    postgres) echo "$(pg_data)-run/postgres.log" ;;
    pulsar) echo "$STACK_DIR/pulsar/pulsar-lite.log" ;;
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
[ $# -gt 0 ] && parts=("$@")
for part in "${parts[@]}"; do
  case $part in
    redis | postgres | pulsar | redis-cluster) ;;
    redis-cluster-[0-2]) ;;
    *) die "unknown part '$part' (redis, postgres, pulsar, redis-cluster, redis-cluster-0..2)" ;;
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
    # The cluster only when named: the apps run on it once REDIS_CLUSTER_NODES is set.
    if [[ " ${parts[*]} " == *" redis-cluster "* ]] && [ $# -gt 0 ]; then
      echo "export REDIS_CLUSTER_NODES=$(cluster_nodes)"
    fi
    ;;
  *) die "usage: stack.sh start|stop|restart|kill|pause|resume|status|wait|env|pidfile [redis|postgres|pulsar|redis-cluster|redis-cluster-N ...]" ;;
esac
