# shellcheck shell=bash
# lib.sh - shell functions shared by the benchmark scripts (sourced, not run).
#
# Starting and stopping nginx and kiroku in a work directory on free loopback
# ports, reading figures from /proc and from kiroku's /metrics, and counting
# the rows of a table in SQLite or MariaDB. Every process started here is
# registered and killed by bench_cleanup (called from the sourcing script's
# EXIT trap). The kiroku binary is $KIROKU_BIN (default build/kiroku).
#
# Variables set by the start functions:
#   nginx_port nginx_pid           after start_nginx
#   kiroku_port kiroku_pid         after start_kiroku

KIROKU_BIN="${KIROKU_BIN:-build/kiroku}"
bench_pids=()

bench_die() { echo "bench: $*" >&2; exit 1; }

# forget_pid PID: the process has been waited for; cleanup leaves it alone.
forget_pid() {
  local p kept=()
  for p in "${bench_pids[@]}"; do [[ "$p" == "$1" ]] || kept+=("$p"); done
  bench_pids=("${kept[@]}")
}

bench_cleanup() {
  local p _
  for p in "${bench_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    local alive=0
    for p in "${bench_pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [[ $alive -eq 0 ]] && break
    sleep 0.1
  done
  for p in "${bench_pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_http URL: waits up to 15 s for a 2xx answer.
wait_http() {
  local _
  for _ in $(seq 1 150); do
    curl -fs -o /dev/null --max-time 1 "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  bench_die "no answer from $1"
}

# start_nginx DIR: nginx with one worker answering `return 204;` to everything.
start_nginx() {
  local dir="$1"
  mkdir -p "$dir"
  nginx_port=$(free_port)
  cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
error_log $dir/error.log;
pid $dir/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir;
  proxy_temp_path $dir;
  fastcgi_temp_path $dir;
  uwsgi_temp_path $dir;
  scgi_temp_path $dir;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$nginx_port; location / { return 204; } }
}
CONF
  nginx -c "$dir/nginx.conf" -g 'daemon off;' &
  nginx_pid=$!
  bench_pids+=("$nginx_pid")
  wait_http "http://127.0.0.1:$nginx_port/"
}

stop_nginx() {
  [[ -n "${nginx_pid:-}" ]] || return 0
  kill -QUIT "$nginx_pid" 2>/dev/null || true
  wait "$nginx_pid" 2>/dev/null || true
  forget_pid "$nginx_pid"
  nginx_pid=""
}

# start_kiroku DIR SINK DURABILITY TABLE [EXTRA_ARGS...]: `kiroku serve` with
# one IO thread (KIROKU_BENCH_THREADS), the spool under DIR, log in DIR/kiroku.log.
start_kiroku() {
  local dir="$1" sink="$2" durability="$3" table="$4"
  shift 4
  mkdir -p "$dir"
  kiroku_port=$(free_port)
  "$KIROKU_BIN" serve --listen "127.0.0.1:$kiroku_port" --threads "${KIROKU_BENCH_THREADS:-1}" \
    --sink "$sink" --table "$table" --durability "$durability" --spool-dir "$dir/spool" \
    --log-level warn "$@" > "$dir/kiroku.log" 2>&1 &
  kiroku_pid=$!
  bench_pids+=("$kiroku_pid")
  local _
  for _ in $(seq 1 150); do
    curl -fs -o /dev/null --max-time 1 "http://127.0.0.1:$kiroku_port/healthz" 2>/dev/null && return 0
    kill -0 "$kiroku_pid" 2>/dev/null || break
    sleep 0.1
  done
  cat "$dir/kiroku.log" >&2
  bench_die "kiroku did not start"
}

# stop_kiroku: SIGTERM (graceful: everything accepted is written) and wait;
# fails unless kiroku exits 0.
stop_kiroku() {
  local rc=0
  kill -TERM "$kiroku_pid"
  wait "$kiroku_pid" || rc=$?
  forget_pid "$kiroku_pid"
  kiroku_pid=""
  [[ $rc -eq 0 ]] || bench_die "kiroku exited with status $rc"
}

# metric FILE NAME: the value of an unlabelled series in Prometheus text.
metric() { awk -v n="$2" '$1 == n {print $2; exit}' "$1"; }

# cpu_seconds PID: user + system CPU time the process has used so far.
cpu_seconds() {
  local tck
  tck=$(getconf CLK_TCK)
  # Fields after the command name (which may hold spaces) start at field 3.
  sed 's/^.*) //' "/proc/$1/stat" | awk -v t="$tck" '{printf "%.2f\n", ($12 + $13) / t}'
}

# wrk_summary: reads wrk's output on stdin and prints "requests/s completed
# non-2xx socket-errors".
wrk_summary() {
  awk '
    /Requests\/sec/ {rps = $2}
    /requests in/ {done = $1}
    /Non-2xx/ {bad = $NF}
    /Socket errors/ {gsub(",", ""); errs = $4 + $6 + $8 + $10}
    END {printf "%s %d %d %d\n", rps, done, bad, errs}'
}

# now: seconds since the epoch, to the microsecond.
now() { date +%s.%6N; }

# seconds DURATION: "500ms", "5s", "2m" or a bare number of seconds, in seconds.
seconds() {
  awk -v d="$1" 'BEGIN {
    if (d ~ /ms$/) { sub(/ms$/, "", d); print d / 1000 }
    else if (d ~ /s$/) { sub(/s$/, "", d); print d + 0 }
    else if (d ~ /m$/) { sub(/m$/, "", d); print d * 60 }
    else print d + 0 }'
}

# status_kb PID FIELD: VmHWM, VmRSS, ... of the process in KiB.
status_kb() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }

# reset_peak_rss PID: makes VmHWM start again from the current RSS.
reset_peak_rss() { echo 5 > "/proc/$1/clear_refs"; }

# count_rows SINK TABLE: rows in the table (SQLite file, or the MariaDB,
# PostgreSQL or ClickHouse servers of the scripts/with-*.sh wrappers, through
# their control scripts; ClickHouse: with FINAL, summed over every shard).
count_rows() {
  local sink="$1" table="$2"
  case "$sink" in
    sqlite://*) sqlite3 "${sink#sqlite://}" "select count(*) from $table" ;;
    mysql://*)
      [[ -n "${KIROKU_TEST_MYSQL_CTL:-}" ]] || bench_die "counting MariaDB rows needs scripts/with-mariadb.sh"
      local db=${sink##*/}
      db=${db%%\?*}
      "$KIROKU_TEST_MYSQL_CTL" sql "SELECT COUNT(*) FROM \`$db\`.\`$table\`"
      ;;
    postgresql://* | postgres://*)
      [[ -n "${KIROKU_TEST_POSTGRES_CTL:-}" ]] || bench_die "counting PostgreSQL rows needs scripts/with-postgres.sh"
      "$KIROKU_TEST_POSTGRES_CTL" sql "SELECT COUNT(*) FROM $table"
      ;;
    clickhouse://*)
      [[ -n "${KIROKU_TEST_CLICKHOUSE_CTL:-}" ]] || bench_die "counting ClickHouse rows needs scripts/with-clickhouse.sh"
      local db=${sink##*/} total=0 n=0 shard
      db=${db%%\?*}
      for _ in ${KIROKU_TEST_CLICKHOUSE_PORTS:-x}; do
        n=$((n + 1))
        shard=$("$KIROKU_TEST_CLICKHOUSE_CTL" sql "$n" "SELECT count() FROM $db.$table FINAL" 2>/dev/null || echo 0)
        total=$((total + ${shard:-0}))
      done
      echo "$total"
      ;;
    *) bench_die "unknown sink $sink" ;;
  esac
}

# stored_bytes SINK TABLE: bytes the database holds for the table (SQLite:
# the whole file; MariaDB: InnoDB data and index length after ANALYZE).
stored_bytes() {
  local sink="$1" table="$2"
  case "$sink" in
    sqlite://*) stat -c %s "${sink#sqlite://}" ;;
    mysql://*)
      local db=${sink##*/}
      db=${db%%\?*}
      "$KIROKU_TEST_MYSQL_CTL" sql "ANALYZE TABLE \`$db\`.\`$table\`" > /dev/null
      "$KIROKU_TEST_MYSQL_CTL" sql "SELECT data_length + index_length FROM information_schema.tables
        WHERE table_schema = '$db' AND table_name = '$table'"
      ;;
  esac
}

# sink_kind SINK: sqlite or mariadb.
sink_kind() { case "$1" in mysql://*) echo mariadb ;; *) echo sqlite ;; esac; }
