#!/usr/bin/env bash
# The local stack: redis-server (AOF on), PostgreSQL and pulsar-lite, each on its own port and
# data directory under $SECKILL_STACK_DIR (default .stack/), so it never collides with services
# already on the machine. Idempotent.
#
#   scripts/stack.sh start|stop|restart [redis|postgres|pulsar ...]   (default: all three)
#   scripts/stack.sh kill [part ...]    SIGKILL (fault tests: a crash, not a clean stop)
#   scripts/stack.sh pause|resume [part ...]   SIGSTOP / SIGCONT (fault tests: a part that
#                                       hangs without dying, then comes back)
#   scripts/stack.sh status | wait | env | pidfile [part ...]   (pidfile: where each part's pid is)
#
# A part whose URL is given from outside (REDIS_URL, DATABASE_URL, PULSAR_URL) is not started;
# `env` prints the URLs the apps should use.
set -euo pipefail
source "$(dirname "$0")/common.sh"

WAIT_SECS=${SECKILL_STACK_WAIT_SECS:-60}
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)

redis_url() { echo "${REDIS_URL:-redis://127.0.0.1:$REDIS_PORT}"; }
database_url() { echo "${DATABASE_URL:-postgres://postgres@127.0.0.1:$PG_PORT/$PG_DB}"; }
pulsar_url() { echo "${PULSAR_URL:-pulsar://127.0.0.1:$PULSAR_PORT}"; }
external() { case $1 in redis) [ -n "${REDIS_URL:-}" ] ;; postgres) [ -n "${DATABASE_URL:-}" ] ;; pulsar) [ -n "${PULSAR_URL:-}" ] ;; esac; }

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

pidfile_of() {
  case $1 in
    redis) echo "$STACK_DIR/redis/redis.pid" ;;
    pulsar) echo "$STACK_DIR/pulsar/pulsar-lite.pid" ;;
    postgres) echo "$(pg_data)/postmaster.pid" ;;
  esac
}

log_of() {
  case $1 in
    redis) echo "$STACK_DIR/redis/redis.log" ;;
    postgres) echo "$(pg_data)-run/postgres.log" ;;
    pulsar) echo "$STACK_DIR/pulsar/pulsar-lite.log" ;;
  esac
}

wait_part() {
  local part=$1 deadline=$((SECONDS + WAIT_SECS))
  until "wait_$part"; do
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
  case $part in redis | postgres | pulsar) ;; *) die "unknown part '$part' (redis, postgres, pulsar)" ;; esac
done

case $cmd in
  start)
    mkdir -p "$STACK_DIR"
    for part in "${parts[@]}"; do
      if external "$part"; then continue; fi
      "start_$part"
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
      pidfile=$(pidfile_of "$part")
      if [ -f "$pidfile" ]; then
        pid=$(head -n1 "$pidfile")
        kill -s CONT "$pid" $(pgrep -P "$pid" 2>/dev/null || true) 2>/dev/null || true
      fi
      "stop_$part"
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
      pidfile=$(pidfile_of "$part")
      [ -f "$pidfile" ] || die "$part is not running (no $pidfile)"
      pid=$(head -n1 "$pidfile")
      # PostgreSQL is a postmaster and its backends: every one of them hangs.
      kill -s "$signal" "$pid" $(pgrep -P "$pid" || true)
    done
    ;;
  kill)
    for part in "${parts[@]}"; do
      external "$part" && continue
      pidfile=$(pidfile_of "$part")
      if [ -f "$pidfile" ]; then
        pid=$(head -n1 "$pidfile")
        kill -9 "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      fi
      [ "$part" = postgres ] || rm -f "$pidfile"
    done
    ;;
  wait) for part in "${parts[@]}"; do external "$part" || wait_part "$part"; done ;;
  pidfile) for part in "${parts[@]}"; do external "$part" || pidfile_of "$part"; done ;;
  status)
    for part in "${parts[@]}"; do
      if external "$part"; then state="external"; elif "wait_$part"; then state="up"; else state="down"; fi
      printf '%-9s %-8s %s\n' "$part" "$state" "$("${part/postgres/database}_url" 2>/dev/null || true)"
    done
    ;;
  env)
    echo "export REDIS_URL=$(redis_url)"
    echo "export DATABASE_URL=$(database_url)"
    echo "export PULSAR_URL=$(pulsar_url)"
    ;;
  *) die "usage: stack.sh start|stop|restart|kill|pause|resume|status|wait|env|pidfile [redis|postgres|pulsar ...]" ;;
esac
