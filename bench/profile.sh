# `bench/run.sh profile SCENARIO`: where each microsecond goes. Sourced by bench/run.sh.
# perf records the gateway and the consumers (CPU clock, DWARF call graphs), started with its
# events off: the bench turns the gateway's on for the load only and the consumers' from the
# load's start to the end (their work follows the load). Redis' command counters and
# PostgreSQL's statement statistics (pg_stat_statements) are reset before the bench and read
# after. Output: $out/profile.md (tables in µs per request or accepted order), flame graphs
# $out/gateway.svg and $out/consumers.svg, and the raw readings beside them.

PROFILE_HZ=${PROFILE_HZ:-299}

# profile_scenario NAME [ARGS…]: the bench arguments of a named path, or NAME as given.
#   reserve   every order accepted (stock 10 M, 100 per buyer), closed loop
#   sold-out  every order refused as sold out (stock 0), closed loop
profile_scenario() {
  local name=$1
  shift
  case $name in
    reserve) echo flash-sale --users 200000 --stock 10000000 --per-user-limit 100 --rate max --retry-fraction 0 --again-fraction 0 "$@" ;;
    sold-out) echo flash-sale --users 20000 --stock 0 --per-user-limit 1 --rate max --retry-fraction 0 --again-fraction 0 "$@" ;;
    *) echo "$name" "$@" ;;
  esac
}

profile_tools() {
  command -v perf >/dev/null || as_root apt-get install -y -qq linux-perf >/dev/null
  # pg_stat_statements must be loaded at server start (scripts/stack.sh starts PostgreSQL
  # with it); a stack started before that needs a restart.
  if ! psql -tAc "SHOW shared_preload_libraries" "$DATABASE_URL" | grep -q pg_stat_statements; then
    say "restarting the stack's PostgreSQL with pg_stat_statements"
    DATABASE_URL='' scripts/stack.sh restart postgres
  fi
  psql -q -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" "$DATABASE_URL"
}

# profile_start NAME=PID… : perf on each process (events off), counters reset.
profile_start() {
  local spec name pid fd during="" from=""
  profile_pids=()
  profile_fds=()
  for spec in "$@"; do
    name=${spec%%=*}
    pid=${spec#*=}
    rm -f "$out/$name.ctl"
    mkfifo "$out/$name.ctl"
    perf record -q -e cpu-clock -F "$PROFILE_HZ" --call-graph dwarf,16384 -D -1 \
      --control "fifo:$out/$name.ctl" -p "$pid" -o "$out/$name.perf.data" >"$out/$name.perf.log" 2>&1 &
    profile_pids+=($!)
    # A FIFO whose last writer closed it reads as hung up, and perf then polls it in a busy
    # loop: this shell holds it open for writing until the end.
    exec {fd}<>"$out/$name.ctl"
    profile_fds+=("$fd")
    # The gateway answers the load's requests; the consumers' work follows the load.
    if [ "$name" = gateway ]; then during+="${during:+,}$out/$name.ctl"; else from+="${from:+,}$out/$name.ctl"; fi
  done
  export BENCH_PERF_LOAD=$during BENCH_PERF_FROM_LOAD=$from
  redis-cli -u "$REDIS_URL" CONFIG RESETSTAT >/dev/null
  psql -q -tAc "SELECT pg_stat_statements_reset()" "$DATABASE_URL" >/dev/null
}

# profile_finish NAME… : stop perf, then the tables and flame graphs into $out/profile.md.
profile_finish() {
  local name per per_what report=$out/report.json md=$out/profile.md
  local fd
  kill -INT "${profile_pids[@]}" 2>/dev/null || true
  wait "${profile_pids[@]}" 2>/dev/null || true
  for fd in "${profile_fds[@]}"; do exec {fd}>&-; done
  redis-cli -u "$REDIS_URL" INFO commandstats >"$out/redis-commandstats.txt"
  psql -q -A -F $'\t' -c "SELECT calls, round(total_exec_time::numeric, 1) AS total_ms, rows,
      regexp_replace(query, '\s+', ' ', 'g') AS query
    FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
    ORDER BY total_exec_time DESC LIMIT 15" "$DATABASE_URL" >"$out/postgres-statements.tsv"
  # Per accepted order when the load accepted any, else per request.
  read -r per per_what < <(python3 -c '
import json, sys
run = json.load(open(sys.argv[1]))[0]
accepted = run["outcomes"].get("accepted", 0)
print(accepted, "accepted order") if accepted else print(run["requests"], "request")' "$report")
  {
    echo "# Profile: bench $* ($(git rev-parse --short HEAD), $(date -u +%Y-%m-%d))"
    echo
    echo "perf at $PROFILE_HZ Hz (CPU clock, DWARF stacks): the gateway during the load, the"
    echo "consumers from the load's start until every accepted order was stored. Figures per"
    echo "$per_what ($per of them). Flame graphs: gateway.svg, consumers.svg."
    echo
  } >"$md"
  for name in gateway consumers; do
    [ -s "$out/$name.perf.data" ] || continue
    perf script --no-inline -i "$out/$name.perf.data" >"$out/$name.perf.txt" 2>/dev/null
    target/release/bench profile --perf-script "$out/$name.perf.txt" --name "$name" --hz "$PROFILE_HZ" \
      --per "$per" --per-what "$per_what" --out "$out" >/dev/null
    cat "$out/$name.md" >>"$md"
    echo >>"$md"
    rm -f "$out/$name.perf.txt"
  done
  {
    echo "### Redis: commands (INFO commandstats)"
    echo
    echo "| command | calls per $per_what | µs per call | µs per $per_what |"
    echo "|---|---|---|---|"
    awk -F'[:,=]' -v per="$per" '/^cmdstat_/ {
        sub("cmdstat_", "", $1); printf "| %s | %.2f | %.2f | %.2f |\n", $1, $3 / per, $7, $5 / per }' \
      "$out/redis-commandstats.txt" | sort -t'|' -k5 -gr
    echo
    echo "### PostgreSQL: statements by total time (pg_stat_statements)"
    echo
    echo "| calls per $per_what | µs per $per_what | rows per call | statement |"
    echo "|---|---|---|---|"
    awk -F'\t' -v per="$per" 'NR > 1 && NF >= 4 && $1 ~ /^[0-9]+$/ {
        q = substr($4, 1, 120); gsub(/\|/, "/", q)
        printf "| %.3f | %.2f | %.1f | `%s` |\n", $1 / per, $2 * 1000 / per, $3 / $1, q }' \
      "$out/postgres-statements.tsv"
  } >>"$md"
  rm -f "$out"/*.ctl
  say "profile: $md"
}
