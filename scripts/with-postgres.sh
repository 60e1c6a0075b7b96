#!/usr/bin/env bash
# with-postgres.sh - runs a command against a throwaway local PostgreSQL server.
#
#   scripts/with-postgres.sh CMD ARGS...
#
# Creates a temporary data directory (initdb, UTF-8, C locale), starts
# postgres on 127.0.0.1 on a free TCP port (its unix socket in the same
# directory) with TLS (a CA and a server certificate for 127.0.0.1 and
# localhost, made with openssl in the same directory), creates user
# kiroku/kiroku (SCRAM password over TCP) and database `kiroku_test` owned by
# it, runs CMD with these variables exported, then stops the server and
# deletes the directory whatever happens. The exit status is CMD's.
#
#   KIROKU_TEST_POSTGRES_URL      postgresql://kiroku:kiroku@127.0.0.1:PORT/kiroku_test (plain TCP)
#   KIROKU_TEST_POSTGRES_TLS_URL  postgresql://kiroku:kiroku@127.0.0.1:PORT/kiroku_test
#                                   ?sslmode=verify-full&sslrootcert=CA
#   KIROKU_TEST_POSTGRES_CA       the CA certificate (PEM) that signed the server's
#   KIROKU_TEST_POSTGRES_ADMIN    postgresql://postgres@/kiroku_test?host=DIR (the superuser,
#                                   over the unix socket, no password)
#   KIROKU_TEST_POSTGRES_SOCKET_DIR  the unix socket directory
#   KIROKU_TEST_POSTGRES_PORT     the TCP port
#   KIROKU_TEST_POSTGRES_CTL      a control script for outage tests, same data dir and port:
#                                   CTL stop       fast shutdown, waits until it is gone
#                                   CTL kill       SIGKILL (a crash), waits until it is gone
#                                   CTL start      starts it again, waits until it answers
#                                   CTL pid        prints the running server's pid
#                                   CTL sql STMT   runs STMT in kiroku_test as the superuser,
#                                                  prints tab-separated rows
#
# The server is tuned to start fast, not to survive a crash of the machine
# (fsync=off). As root, the server runs as the system user `postgres` (made by
# the Debian package). Nesting with other wrappers is fine: nothing here is
# global but the port.
set -euo pipefail

die() { echo "with-postgres: $*" >&2; exit 2; }

[ $# -ge 1 ] || die "usage: $0 CMD [ARGS...]"
PGBIN=${KIROKU_POSTGRES_BIN:-}
if [ -z "$PGBIN" ]; then
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/postgres" ] && PGBIN=$d; done
fi
[ -n "$PGBIN" ] && [ -x "$PGBIN/postgres" ] || die "postgres not found (install postgresql-15)"
command -v openssl >/dev/null 2>&1 || die "openssl not found"

RUN_AS=()
OWNER=$(id -un)
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || die "running as root needs the system user postgres (made by postgresql-15)"
  RUN_AS=(runuser -u postgres --)
  OWNER=postgres
fi

free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
    return
  fi
  local p
  for _ in $(seq 1 100); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  return 1
}

DIR=$(mktemp -d "${TMPDIR:-/tmp}/kiroku-postgres.XXXXXX")
chmod 755 "$DIR"
CTL="$DIR/ctl"
# shellcheck disable=SC2317  # runs from the EXIT trap
cleanup() {
  local rc=$?
  if [ -x "$CTL" ]; then "$CTL" stop >/dev/null 2>&1 || true; fi
  rm -rf "$DIR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

PORT=$(free_port) || die "no free TCP port found"
if [ ${#RUN_AS[@]} -gt 0 ]; then
  chown "$OWNER" "$DIR"
  "${RUN_AS[@]}" test -w "$DIR" || die "user $OWNER cannot reach $DIR (set TMPDIR to a directory it can enter)"
fi

# TLS: a throwaway CA and a server certificate for 127.0.0.1 and localhost
# (P-256 keys: made in milliseconds), valid for two days.
mkdir "$DIR/tls"
printf '%s\n' 'basicConstraints=critical,CA:TRUE' 'keyUsage=critical,keyCertSign,cRLSign' >"$DIR/tls/ca.ext"
printf '%s\n' 'basicConstraints=critical,CA:FALSE' 'keyUsage=critical,digitalSignature' \
  'extendedKeyUsage=serverAuth' 'subjectAltName=IP:127.0.0.1,DNS:localhost' >"$DIR/tls/server.ext"
if ! {
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj '/CN=kiroku test CA' -keyout "$DIR/tls/ca-key.pem" -out "$DIR/tls/ca.csr" &&
  openssl x509 -req -in "$DIR/tls/ca.csr" -signkey "$DIR/tls/ca-key.pem" -days 2 \
    -extfile "$DIR/tls/ca.ext" -out "$DIR/tls/ca.pem" &&
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj '/CN=localhost' -keyout "$DIR/tls/server-key.pem" -out "$DIR/tls/server.csr" &&
  openssl x509 -req -in "$DIR/tls/server.csr" -CA "$DIR/tls/ca.pem" -CAkey "$DIR/tls/ca-key.pem" \
    -set_serial 2 -days 2 -extfile "$DIR/tls/server.ext" -out "$DIR/tls/server.pem"
} >"$DIR/tls/openssl.log" 2>&1; then
  cat "$DIR/tls/openssl.log" >&2
  die "openssl could not make the test certificates"
fi
chmod 644 "$DIR/tls/ca.pem"
chmod 600 "$DIR/tls/server-key.pem"
chown -R "$OWNER" "$DIR"

# The superuser has no password and logs in over the unix socket only (trust);
# every TCP login is by SCRAM password.
if ! "${RUN_AS[@]}" "$PGBIN/initdb" -D "$DIR/data" -U postgres -E UTF8 --locale=C --auth-local=trust \
    --auth-host=scram-sha-256 --no-sync >"$DIR/initdb.log" 2>&1; then
  cat "$DIR/initdb.log" >&2
  die "initdb failed"
fi
cat >>"$DIR/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DIR'
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 32MB
max_connections = 50
ssl = on
ssl_cert_file = '$DIR/tls/server.pem'
ssl_key_file = '$DIR/tls/server-key.pem'
ssl_ca_file = '$DIR/tls/ca.pem'
logging_collector = off
log_min_messages = warning
EOF

# The control script carries every path, so tests can stop and start this very server.
{
  echo '#!/usr/bin/env bash'
  echo '# Controls the PostgreSQL server of one with-postgres.sh run: stop|kill|start|pid|sql STMT.'
  echo 'set -euo pipefail'
  printf 'DIR=%q\nPORT=%q\nPGBIN=%q\n' "$DIR" "$PORT" "$PGBIN"
  printf 'RUN_AS=(' ; printf '%q ' "${RUN_AS[@]}"; printf ')\n'
  cat <<'EOF'
PIDFILE="$DIR/data/postmaster.pid"
pid() { [ -s "$PIDFILE" ] && head -n 1 "$PIDFILE"; }
alive() { local p; p=$(pid) && kill -0 "$p" 2>/dev/null; }
psql_() { "${RUN_AS[@]}" "$PGBIN/psql" -X -q -h "$DIR" -p "$PORT" -U postgres "$@"; }
answers() { psql_ -d postgres -tA -c 'SELECT 1' >/dev/null 2>&1; }
wait_gone() {
  local p=$1
  for _ in $(seq 1 300); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
  return 1
}
case "${1:-}" in
  start)
    if alive; then echo "already running (pid $(pid))"; exit 0; fi
    "${RUN_AS[@]}" setsid "$PGBIN/postgres" -D "$DIR/data" </dev/null >>"$DIR/server.log" 2>&1 &
    launcher=$!
    for _ in $(seq 1 300); do
      if answers; then exit 0; fi
      if ! kill -0 "$launcher" 2>/dev/null && ! alive; then break; fi
      sleep 0.1
    done
    echo "postgres did not answer; last lines of its log:" >&2
    tail -n 30 "$DIR/server.log" >&2 || true
    exit 1
    ;;
  stop|kill)
    p=$(pid) || exit 0
    # The server runs in a session of its own (setsid): its process group is
    # the postmaster and every backend.
    if [ "$1" = kill ]; then kill -KILL -- "-$p" 2>/dev/null || true  # a crash, backends included
    else kill -INT "$p" 2>/dev/null || true; fi                         # fast shutdown: ends the sessions
    if ! wait_gone "$p"; then kill -KILL -- "-$p" 2>/dev/null || true; wait_gone "$p" || exit 1; fi
    for _ in $(seq 1 100); do pgrep -g "$p" >/dev/null 2>&1 || break; sleep 0.1; done
    rm -f "$PIDFILE"
    ;;
  pid)
    alive && pid || exit 1
    ;;
  sql)
    shift
    psql_ -d kiroku_test -tA -F $'\t' -v ON_ERROR_STOP=1 -c "$*"
    ;;
  *)
    echo "usage: $0 stop|kill|start|pid|sql STMT" >&2
    exit 2
    ;;
esac
EOF
} >"$CTL"
chmod 755 "$CTL"

"$CTL" start || die "postgres failed to start"
"${RUN_AS[@]}" "$PGBIN/psql" -X -q -h "$DIR" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 \
  -c "CREATE USER kiroku PASSWORD 'kiroku'" -c "CREATE DATABASE kiroku_test OWNER kiroku" \
  >/dev/null || die "could not create the test database and user"

export KIROKU_TEST_POSTGRES_URL="postgresql://kiroku:kiroku@127.0.0.1:$PORT/kiroku_test"
export KIROKU_TEST_POSTGRES_TLS_URL="postgresql://kiroku:kiroku@127.0.0.1:$PORT/kiroku_test?sslmode=verify-full&sslrootcert=$DIR/tls/ca.pem"
export KIROKU_TEST_POSTGRES_CA="$DIR/tls/ca.pem"
export KIROKU_TEST_POSTGRES_ADMIN="postgresql://postgres@/kiroku_test?host=$DIR"
export KIROKU_TEST_POSTGRES_SOCKET_DIR="$DIR"
export KIROKU_TEST_POSTGRES_PORT="$PORT"
export KIROKU_TEST_POSTGRES_CTL="$CTL"

set +e
"$@"
rc=$?
set -e
exit "$rc"
