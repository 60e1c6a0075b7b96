#!/usr/bin/env bash
# test-package.sh - builds the Debian package, installs it on this machine
# with apt-get, runs the unit's ExecStart line as the unit's user with the
# shipped config (on a free loopback port, given by KIROKU_LISTEN: systemd is
# not assumed to run), sends an event, checks it became a row, reloads and
# stops the server, then purges the package and checks nothing is left.
#
#   scripts/test-package.sh [BUILD_DIR]     (as root; about 10 s after a build)
#
# Refuses to run where a kiroku package is already installed or the user or
# /var/lib/kiroku already exist: it would remove them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
build="${1:-build}"
unit=/lib/systemd/system/kiroku.service

fail() {
  echo "test-package: FAIL: $*" >&2
  exit 1
}
if [[ $(id -u) -ne 0 ]]; then fail "must run as root (apt-get install)"; fi
if dpkg-query -W -f='${Status}' kiroku 2>/dev/null | grep -q installed; then fail "a kiroku package is installed already"; fi
if getent passwd kiroku >/dev/null || [[ -e /var/lib/kiroku ]]; then fail "user kiroku or /var/lib/kiroku exists already"; fi

echo "test-package: building the package"
cmake --build "$build" --target kiroku kiroku_package_config >/dev/null
rm -f "$build"/kiroku_*.deb
(cd "$build" && timeout 120 cpack -G DEB >/dev/null)
debs=("$build"/kiroku_*_amd64.deb)
[[ -f "${debs[0]}" ]] || fail "cpack made no kiroku_*_amd64.deb"
deb="$(realpath "${debs[0]}")"

pid=""
main_pid=""
cleanup() {
  for p in $main_pid $pid; do kill -KILL "$p" 2>/dev/null || true; done
  if dpkg-query -W -f='${Status}' kiroku 2>/dev/null | grep -q "ok installed\|config-files"; then
    DEBIAN_FRONTEND=noninteractive timeout 120 apt-get purge -y -qq kiroku >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

echo "test-package: installing $(basename "$deb")"
DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq "$deb" >/dev/null

# What the package put in place.
[[ -x /usr/bin/kiroku ]] || fail "/usr/bin/kiroku missing"
[[ -f "$unit" ]] || fail "$unit missing"
cmp -s /etc/kiroku/kiroku.toml <(/usr/bin/kiroku config example) ||
  fail "/etc/kiroku/kiroku.toml differs from kiroku config example"
dpkg-query --showformat='${Conffiles}\n' --show kiroku | grep -q "/etc/kiroku/kiroku.toml" ||
  fail "/etc/kiroku/kiroku.toml is not a conffile"
getent passwd kiroku >/dev/null || fail "no user kiroku"
[[ "$(stat -c %U /var/lib/kiroku)" == kiroku ]] || fail "/var/lib/kiroku not owned by kiroku"
# postinst again (a reconfigure) must be harmless.
dpkg-reconfigure kiroku >/dev/null 2>&1 || /var/lib/dpkg/info/kiroku.postinst configure || fail "postinst not idempotent"

# The unit's service, as systemd would start it.
unit_value() { sed -n "s/^$1=//p" "$unit" | head -1; }
exec_start="$(unit_value ExecStart)"
user="$(unit_value User)"
workdir="$(unit_value WorkingDirectory)"
environment="$(unit_value Environment)"
[[ -n "$exec_start" && "$user" == kiroku && -n "$workdir" ]] || fail "unit without ExecStart, User or WorkingDirectory"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
log="$(mktemp)"
read -r -a argv <<<"$exec_start"
echo "test-package: running '$exec_start' as $user in $workdir on 127.0.0.1:$port"
(cd "$workdir" && exec runuser -u "$user" -- env $environment KIROKU_LISTEN="127.0.0.1:$port" "${argv[@]}") \
  >"$log" 2>&1 &
pid=$!
for _ in $(seq 150); do
  curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; fail "kiroku exited at start"; }
  sleep 0.1
done
curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" || { cat "$log" >&2; fail "no /healthz within 15 s"; }
# runuser waits for its child: the signals go to kiroku itself, as systemd
# sends them to the main process.
main_pid="$(pgrep -P "$pid" -x kiroku)" || fail "no kiroku process under runuser"
[[ "$(stat -c %U "/proc/$main_pid")" == "$user" ]] || fail "kiroku does not run as $user"

name="package_test_$$"
code="$(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/?name=$name&value=42")"
[[ "$code" == 204 ]] || fail "GET /?name=... answered $code"
# A reload (systemctl reload sends SIGHUP) keeps it running.
kill -HUP "$main_pid"
for _ in $(seq 50); do grep -q "configuration reloaded" "$log" && break; sleep 0.1; done
grep -q "configuration reloaded" "$log" || { cat "$log" >&2; fail "SIGHUP did not reload"; }
kill -0 "$main_pid" 2>/dev/null || fail "SIGHUP stopped the server"
kill -TERM "$main_pid"
timeout 60 tail --pid="$pid" -f /dev/null || fail "kiroku did not stop within 60 s"
wait "$pid" || fail "kiroku exited with $?"
pid=""
main_pid=""
db="$workdir/kiroku-data/events.db"
rows="$(runuser -u "$user" -- sqlite3 "$db" "SELECT count(*) FROM events WHERE name='$name' AND value=42")"
[[ "$rows" == 1 ]] || { cat "$log" >&2; fail "expected 1 row in $db, found '$rows'"; }
[[ "$(stat -c %U "$db")" == kiroku ]] || fail "$db not owned by kiroku"
rm -f "$log"

echo "test-package: purging"
DEBIAN_FRONTEND=noninteractive timeout 120 apt-get purge -y -qq kiroku >/dev/null
for p in /usr/bin/kiroku "$unit" /etc/kiroku /var/lib/kiroku; do
  [[ ! -e "$p" ]] || fail "$p left after purge"
done
! getent passwd kiroku >/dev/null || fail "user kiroku left after purge"
echo "test-package: ok ($(basename "$deb"): installed, served an event as $user, reloaded, stopped, purged)"
