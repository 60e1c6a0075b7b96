#!/usr/bin/env bash
# with-mariadb.sh - runs a command against a throwaway local MariaDB server.
#
#   scripts/with-mariadb.sh CMD ARGS...
#
# Creates a temporary data directory, starts mariadbd on 127.0.0.1 on a free
# TCP port (socket in the same directory) with TLS (a CA and a server
# certificate for 127.0.0.1 and localhost, made with openssl in the same
# directory), creates database `kiroku_test`, user kiroku/kiroku with all
# privileges on it and user kiroku_tls/kiroku, the same but REQUIRE SSL, runs
# CMD with these variables exported, then stops the server and deletes the
# directory whatever happens. The exit status is CMD's.
#
#   KIROKU_TEST_MYSQL_URL     mysql://kiroku:kiroku@127.0.0.1:PORT/kiroku_test (plain TCP)
#   KIROKU_TEST_MYSQL_TLS_URL mysql://kiroku_tls:kiroku@127.0.0.1:PORT/kiroku_test
#                               ?ssl-mode=VERIFY_IDENTITY&ssl-ca=CA (unset without TLS)
#   KIROKU_TEST_MYSQL_CA      the CA certificate (PEM) that signed the server's (unset without TLS)
#   KIROKU_TEST_MYSQL_ADMIN   mysql://root@localhost/mysql?socket=SOCKET (root, no password)
#   KIROKU_TEST_MYSQL_SOCKET  the unix socket path
#   KIROKU_TEST_MYSQL_PORT    the TCP port
#   KIROKU_TEST_MYSQL_PID     the pid of the first mariadbd (after a restart see `CTL pid`)
#   KIROKU_TEST_MYSQL_CTL     a control script for outage tests, same data dir and port:
#                               CTL stop       clean shutdown, waits until it is gone
#                               CTL kill       SIGKILL (a crash), waits until it is gone
#                               CTL start      starts it again, waits until it answers
#                               CTL pid        prints the running server's pid
#                               CTL sql STMT   runs STMT as root, prints tab-separated rows
#
# Extra server options may be given in KIROKU_MARIADB_ARGS (space-separated);
# KIROKU_MARIADB_TLS=0 starts the server without TLS (and without kiroku_tls).
# Nesting with other wrappers is fine: nothing here is global but the port.
set -euo pipefail

die() { echo "with-mariadb: $*" >&2; exit 2; }

[ $# -ge 1 ] || die "usage: $0 CMD [ARGS...]"
TLS=${KIROKU_MARIADB_TLS:-1}
tools=(mariadbd mariadb-install-db mariadb)
if [ "$TLS" != 0 ]; then tools+=(openssl); fi
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] ||
    die "$tool not found (install mariadb-server and openssl)"
done
MARIADBD=$(command -v mariadbd 2>/dev/null || echo /usr/sbin/mariadbd)

free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
    return
  fi
  # No python: probe random high ports until one refuses a connection.
  local p
  for _ in $(seq 1 100); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  return 1
}

DIR=$(mktemp -d "${TMPDIR:-/tmp}/kiroku-mariadb.XXXXXX")
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
RUN_AS=()
if [ "$(id -u)" = 0 ]; then RUN_AS=(--user=root); fi

# Settings shared by install and every start: small and quick, not durable-tuned.
# shellcheck disable=SC2206
SERVER_ARGS=(--no-defaults --datadir="$DIR/data" "${RUN_AS[@]}"
  --innodb-buffer-pool-size=64M --innodb-log-file-size=16M
  --skip-log-bin --skip-name-resolve --skip-external-locking)
# shellcheck disable=SC2206
EXTRA_ARGS=(${KIROKU_MARIADB_ARGS:-})

# TLS: a throwaway CA and a server certificate for 127.0.0.1 and localhost
# (P-256 keys: made in milliseconds), valid for two days.
TLS_ARGS=()
if [ "$TLS" != 0 ]; then
  mkdir "$DIR/tls"
  printf '%s\n' 'basicConstraints=critical,CA:TRUE' 'keyUsage=critical,keyCertSign,cRLSign' \
    >"$DIR/tls/ca.ext"
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
  TLS_ARGS=(--ssl-ca="$DIR/tls/ca.pem" --ssl-cert="$DIR/tls/server.pem"
    --ssl-key="$DIR/tls/server-key.pem")
fi

if ! mariadb-install-db "${SERVER_ARGS[@]}" --auth-root-authentication-method=normal \
    --skip-test-db >"$DIR/install.log" 2>&1; then
  cat "$DIR/install.log" >&2
  die "mariadb-install-db failed"
fi

# The control script carries every path, so tests can stop and start this very server.
{
  echo '#!/usr/bin/env bash'
  echo '# Controls the MariaDB server of one with-mariadb.sh run: stop|kill|start|pid|sql STMT.'
  echo 'set -euo pipefail'
  printf 'DIR=%q\nPORT=%q\nMARIADBD=%q\n' "$DIR" "$PORT" "$MARIADBD"
  printf 'SERVER_ARGS=(' ; printf '%q ' "${SERVER_ARGS[@]}" "${TLS_ARGS[@]}" "${EXTRA_ARGS[@]}"
  printf ')\n'
  cat <<'EOF'
SOCK="$DIR/mysqld.sock"
PIDFILE="$DIR/mysqld.pid"
pid() { [ -s "$PIDFILE" ] && cat "$PIDFILE"; }
alive() { local p; p=$(pid) && kill -0 "$p" 2>/dev/null; }
answers() {
  mariadb --no-defaults --protocol=socket --socket="$SOCK" -uroot --connect-timeout=2 \
    -e 'SELECT 1' >/dev/null 2>&1
}
wait_gone() {
  local p=$1
  for _ in $(seq 1 300); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
  return 1
}
case "${1:-}" in
  start)
    if alive; then echo "already running (pid $(pid))"; exit 0; fi
    rm -f "$PIDFILE"
    setsid "$MARIADBD" "${SERVER_ARGS[@]}" --bind-address=127.0.0.1 --port="$PORT" \
      --socket="$SOCK" --pid-file="$PIDFILE" --log-error="$DIR/error.log" \
      </dev/null >>"$DIR/error.log" 2>&1 &
    launcher=$!
    for _ in $(seq 1 300); do
      if answers; then exit 0; fi
      if ! kill -0 "$launcher" 2>/dev/null && ! alive; then break; fi
      sleep 0.1
    done
    echo "mariadbd did not answer; last lines of its log:" >&2
    tail -n 30 "$DIR/error.log" >&2 || true
    exit 1
    ;;
  stop|kill)
    p=$(pid) || exit 0
    if [ "$1" = kill ]; then kill -KILL "$p" 2>/dev/null || true
    else kill -TERM "$p" 2>/dev/null || true; fi
    if ! wait_gone "$p"; then kill -KILL "$p" 2>/dev/null || true; wait_gone "$p" || exit 1; fi
    rm -f "$PIDFILE"
    ;;
  pid)
    alive && pid || exit 1
    ;;
  sql)
    shift
    mariadb --no-defaults --protocol=socket --socket="$SOCK" -uroot --batch --skip-column-names \
      -e "$*"
    ;;
  *)
    echo "usage: $0 stop|kill|start|pid|sql STMT" >&2
    exit 2
    ;;
esac
EOF
} >"$CTL"
chmod +x "$CTL"

"$CTL" start || die "mariadbd failed to start"
"$CTL" sql "CREATE DATABASE kiroku_test;
  CREATE USER 'kiroku'@'127.0.0.1' IDENTIFIED BY 'kiroku';
  CREATE USER 'kiroku'@'localhost' IDENTIFIED BY 'kiroku';
  GRANT ALL PRIVILEGES ON kiroku_test.* TO 'kiroku'@'127.0.0.1';
  GRANT ALL PRIVILEGES ON kiroku_test.* TO 'kiroku'@'localhost';" ||
  die "could not create the test database and user"
if [ "$TLS" != 0 ]; then
  "$CTL" sql "CREATE USER 'kiroku_tls'@'127.0.0.1' IDENTIFIED BY 'kiroku' REQUIRE SSL;
    GRANT ALL PRIVILEGES ON kiroku_test.* TO 'kiroku_tls'@'127.0.0.1';" ||
    die "could not create the TLS test user"
  export KIROKU_TEST_MYSQL_CA="$DIR/tls/ca.pem"
  export KIROKU_TEST_MYSQL_TLS_URL="mysql://kiroku_tls:kiroku@127.0.0.1:$PORT/kiroku_test?ssl-mode=VERIFY_IDENTITY&ssl-ca=$DIR/tls/ca.pem"
else
  unset KIROKU_TEST_MYSQL_CA KIROKU_TEST_MYSQL_TLS_URL
fi

export KIROKU_TEST_MYSQL_URL="mysql://kiroku:kiroku@127.0.0.1:$PORT/kiroku_test"
export KIROKU_TEST_MYSQL_ADMIN="mysql://root@localhost/mysql?socket=$DIR/mysqld.sock"
export KIROKU_TEST_MYSQL_SOCKET="$DIR/mysqld.sock"
export KIROKU_TEST_MYSQL_PORT="$PORT"
KIROKU_TEST_MYSQL_PID=$("$CTL" pid)
export KIROKU_TEST_MYSQL_PID
export KIROKU_TEST_MYSQL_CTL="$CTL"

set +e
"$@"
rc=$?
set -e
exit "$rc"
