#!/usr/bin/env bash
# with-clickhouse.sh - runs a command against throwaway local ClickHouse servers.
#
#   scripts/with-clickhouse.sh CMD ARGS...
#
# Starts KIROKU_CLICKHOUSE_SHARDS servers (default 2), each with its own
# configuration and data directory under one temporary directory, listening on
# 127.0.0.1 only on free ports (HTTP, native TCP, interserver HTTP); creates on
# each the database `kiroku_test` and the user kiroku/kiroku (the `default` user
# stays, without a password, for the control script); runs CMD with these
# variables exported, then stops the servers and deletes the directory whatever
# happens. The exit status is CMD's.
#
#   KIROKU_TEST_CLICKHOUSE_URL          clickhouse://kiroku:kiroku@127.0.0.1:HTTP1/kiroku_test (server 1)
#   KIROKU_TEST_CLICKHOUSE_CLUSTER_URL  the same with ?shards=127.0.0.1:HTTP2,... (every server)
#   KIROKU_TEST_CLICKHOUSE_PORTS        the HTTP ports, space-separated, server 1 first
#   KIROKU_TEST_CLICKHOUSE_CTL          a control script for outage tests (N: 1..SHARDS):
#                                         CTL stop N      clean shutdown, waits until it is gone
#                                         CTL kill N      SIGKILL (a crash), waits until it is gone
#                                         CTL start N     starts it again, waits until it answers
#                                         CTL pid N       prints the running server's pid
#                                         CTL sql N STMT  runs STMT as `default`, prints TSV
#
# As root the servers run as the `clickhouse` user the Debian package creates
# (ClickHouse refuses nothing as root, but its files then belong to root).
# Start-up is quick: small caches, no system log tables, no listening on ::1.
# The servers form the cluster `kiroku` (remote_servers), so that a
# Distributed table can read every shard at once.
# Nesting with other wrappers is fine: nothing here is global but the ports.
set -euo pipefail

die() { echo "with-clickhouse: $*" >&2; exit 2; }

[ $# -ge 1 ] || die "usage: $0 CMD [ARGS...]"
SHARDS=${KIROKU_CLICKHOUSE_SHARDS:-2}
[[ "$SHARDS" =~ ^[1-9]$ ]] || die "KIROKU_CLICKHOUSE_SHARDS must be 1-9"
SERVER=$(command -v clickhouse-server 2>/dev/null || echo /usr/sbin/clickhouse-server)
[ -x "$SERVER" ] || die "clickhouse-server not found (install clickhouse-server)"
command -v curl >/dev/null 2>&1 || die "curl not found"

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

DIR=$(mktemp -d "${TMPDIR:-/tmp}/kiroku-clickhouse.XXXXXX")
CTL="$DIR/ctl"
# shellcheck disable=SC2317  # runs from the EXIT trap
cleanup() {
  local rc=$?
  trap '' INT TERM HUP  # a second signal must not cut the clean-up short
  if [ -x "$CTL" ]; then
    for n in $(seq 1 "$SHARDS"); do "$CTL" stop "$n" >/dev/null 2>&1 || true; done
  fi
  rm -rf "$DIR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

RUN_AS=""
if [ "$(id -u)" = 0 ] && id clickhouse >/dev/null 2>&1; then RUN_AS=clickhouse; fi

HTTP_PORTS=()
TCP_PORTS=()
INTER_PORTS=()
for n in $(seq 1 "$SHARDS"); do
  http=$(free_port) && tcp=$(free_port) && inter=$(free_port) || die "no free TCP port found"
  HTTP_PORTS+=("$http")
  TCP_PORTS+=("$tcp")
  INTER_PORTS+=("$inter")
done
# Every server knows the others as the cluster `kiroku` (for reading through
# a Distributed table; kiroku itself writes to each shard directly).
CLUSTER=""
for tcp in "${TCP_PORTS[@]}"; do
  CLUSTER+="<shard><replica><host>127.0.0.1</host><port>$tcp</port><user>kiroku</user><password>kiroku</password></replica></shard>"
done
for n in $(seq 1 "$SHARDS"); do
  d="$DIR/s$n"
  mkdir -p "$d/data" "$d/tmp" "$d/user_files" "$d/format_schemas"
  http=${HTTP_PORTS[$((n - 1))]}
  tcp=${TCP_PORTS[$((n - 1))]}
  inter=${INTER_PORTS[$((n - 1))]}
  echo "$http" >"$d/http_port"
  cat >"$d/config.xml" <<EOF
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>$d/server.log</log><errorlog>$d/server.err.log</errorlog></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>$http</http_port>
  <tcp_port>$tcp</tcp_port>
  <interserver_http_port>$inter</interserver_http_port>
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <path>$d/data/</path>
  <tmp_path>$d/tmp/</tmp_path>
  <user_files_path>$d/user_files/</user_files_path>
  <format_schema_path>$d/format_schemas/</format_schema_path>
  <users_config>$d/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mark_cache_size>16777216</mark_cache_size>
  <uncompressed_cache_size>16777216</uncompressed_cache_size>
  <max_concurrent_queries>64</max_concurrent_queries>
  <mlock_executable>false</mlock_executable>
  <remote_servers><kiroku>$CLUSTER</kiroku></remote_servers>
</yandex>
EOF
  cat >"$d/users.xml" <<'EOF'
<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>1000000000</max_memory_usage></default></profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>127.0.0.1</ip></networks>
      <profile>default</profile><quota>default</quota>
    </default>
    <kiroku>
      <password>kiroku</password>
      <networks><ip>127.0.0.1</ip></networks>
      <profile>default</profile><quota>default</quota>
    </kiroku>
  </users>
  <quotas><default></default></quotas>
</yandex>
EOF
done
if [ -n "$RUN_AS" ]; then chown -R "$RUN_AS:" "$DIR"; fi

# The control script carries every path, so tests can stop and start these very servers.
{
  echo '#!/usr/bin/env bash'
  echo '# Controls the ClickHouse servers of one with-clickhouse.sh run: stop|kill|start|pid N, sql N STMT.'
  echo 'set -euo pipefail'
  printf 'DIR=%q\nSERVER=%q\nRUN_AS=%q\nSHARDS=%q\n' "$DIR" "$SERVER" "$RUN_AS" "$SHARDS"
  cat <<'EOF'
n=${2:-}
[[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le "$SHARDS" ] || { echo "usage: $0 stop|kill|start|pid N | sql N STMT (N: 1-$SHARDS)" >&2; exit 2; }
d="$DIR/s$n"
PIDFILE="$d/server.pid"
http=$(cat "$d/http_port")
pid() { [ -s "$PIDFILE" ] && cat "$PIDFILE"; }
alive() { local p; p=$(pid) && kill -0 "$p" 2>/dev/null; }
answers() { curl -sf -m 2 "http://127.0.0.1:$http/ping" >/dev/null 2>&1; }
wait_gone() {  # PID TENTHS
  local p=$1
  for _ in $(seq 1 "$2"); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
  return 1
}
case "$1" in
  start)
    if alive; then echo "already running (pid $(pid))"; exit 0; fi
    rm -f "$PIDFILE"
    if [ -n "$RUN_AS" ]; then
      setsid runuser -u "$RUN_AS" -- "$SERVER" --config-file="$d/config.xml" --pidfile="$PIDFILE" \
        </dev/null >>"$d/stdout.log" 2>&1 &
    else
      setsid "$SERVER" --config-file="$d/config.xml" --pidfile="$PIDFILE" </dev/null >>"$d/stdout.log" 2>&1 &
    fi
    launcher=$!
    for _ in $(seq 1 300); do
      if answers && alive; then exit 0; fi
      if ! kill -0 "$launcher" 2>/dev/null && ! alive; then break; fi
      sleep 0.1
    done
    kill -KILL -- "-$launcher" 2>/dev/null || true  # its own session (setsid): nothing left behind
    echo "clickhouse-server $n did not answer; last lines of its logs:" >&2
    tail -n 30 "$d/stdout.log" "$d/server.err.log" >&2 || true
    exit 1
    ;;
  stop|kill)
    # ClickHouse 18.16 waits for busy keep-alive connections on SIGTERM (20 s
    # and more under load): a stop that takes longer than 3 s ends in SIGKILL.
    p=$(pid) || exit 0
    if [ "$1" = kill ]; then kill -KILL "$p" 2>/dev/null || true
    else kill -TERM "$p" 2>/dev/null || true; fi
    if ! wait_gone "$p" 30; then kill -KILL "$p" 2>/dev/null || true; wait_gone "$p" 300 || exit 1; fi
    rm -f "$PIDFILE"
    ;;
  pid)
    alive && pid || exit 1
    ;;
  sql)
    shift 2
    out=$(curl -sS -m 30 -w '\n%{http_code}' "http://127.0.0.1:$http/" --data-binary "$*") || exit 1
    code=${out##*$'\n'}
    body=${out%$'\n'*}
    if [ "$code" != 200 ]; then echo "$body" >&2; exit 1; fi
    body=${body%$'\n'}
    [ -z "$body" ] || printf '%s\n' "$body"
    ;;
  *)
    echo "usage: $0 stop|kill|start|pid N | sql N STMT" >&2
    exit 2
    ;;
esac
EOF
} >"$CTL"
chmod +x "$CTL"
if [ -n "$RUN_AS" ]; then chown "$RUN_AS:" "$CTL"; fi

for n in $(seq 1 "$SHARDS"); do
  "$CTL" start "$n" &
done
for n in $(seq 1 "$SHARDS"); do wait -n || die "a clickhouse-server failed to start"; done
for n in $(seq 1 "$SHARDS"); do
  "$CTL" sql "$n" "CREATE DATABASE IF NOT EXISTS kiroku_test" || die "could not create the test database"
done

export KIROKU_TEST_CLICKHOUSE_URL="clickhouse://kiroku:kiroku@127.0.0.1:${HTTP_PORTS[0]}/kiroku_test"
others=""
for p in "${HTTP_PORTS[@]:1}"; do others+="${others:+,}127.0.0.1:$p"; done
if [ -n "$others" ]; then
  export KIROKU_TEST_CLICKHOUSE_CLUSTER_URL="$KIROKU_TEST_CLICKHOUSE_URL?shards=$others"
else
  export KIROKU_TEST_CLICKHOUSE_CLUSTER_URL="$KIROKU_TEST_CLICKHOUSE_URL"
fi
export KIROKU_TEST_CLICKHOUSE_PORTS="${HTTP_PORTS[*]}"
export KIROKU_TEST_CLICKHOUSE_CTL="$CTL"

set +e
"$@"
rc=$?
set -e
exit "$rc"
