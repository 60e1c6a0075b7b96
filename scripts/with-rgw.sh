#!/usr/bin/env bash
# with-rgw.sh - runs a command with a throwaway Ceph RADOS Gateway (RGW, an
# S3 server that verifies SigV4 signatures as AWS does) on loopback.
#
#   scripts/with-rgw.sh CMD ARGS...
#
# Starts, in a fresh temporary directory, one monitor, one OSD on `memstore`
# (objects in memory, no disk), and radosgw on a free 127.0.0.1 port (cephx
# off; the messengers in crc mode), creates a user with an access key and a
# bucket, exports
#   KIROKU_TEST_RGW_ENDPOINT     http://127.0.0.1:PORT
#   KIROKU_TEST_RGW_BUCKET       the bucket's name
#   KIROKU_TEST_RGW_ACCESS_KEY   the user's access key id
#   KIROKU_TEST_RGW_SECRET_KEY   its secret key
#   KIROKU_TEST_RGW_ADMIN        "radosgw-admin -c CONF" for the tests (e.g. listing uploads)
# runs CMD, then stops the daemons and removes the directory whatever happens,
# and exits with CMD's status. AWS_* variables are left alone, so it nests
# with scripts/with-s3rver.sh. Needs the Debian packages ceph-mon, ceph-osd
# and radosgw (scripts/setup.sh). Up in about 20 s.
set -euo pipefail

if [[ $# -eq 0 ]]; then
  echo "usage: $0 CMD [ARGS...]" >&2
  exit 2
fi
for tool in ceph-mon ceph-osd radosgw radosgw-admin monmaptool ceph; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "with-rgw: $tool not found (install ceph-mon ceph-osd radosgw: scripts/setup.sh)" >&2
    exit 1
  }
done

rgw_tmp=""
rgw_pids=()
rgw_child=""

rgw_cleanup() {
  if [[ -n "$rgw_child" ]] && kill -0 "$rgw_child" 2>/dev/null; then
    kill -TERM "$rgw_child" 2>/dev/null || true
    wait "$rgw_child" 2>/dev/null || true
  fi
  local pid
  for pid in "${rgw_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${rgw_pids[@]}"; do
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [[ -n "$rgw_tmp" && -d "$rgw_tmp" ]]; then rm -rf -- "$rgw_tmp"; fi
}
trap rgw_cleanup EXIT
trap 'rgw_cleanup; exit 130' INT
trap 'rgw_cleanup; exit 143' TERM

rgw_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

rgw_fail() {
  echo "with-rgw: $1" >&2
  local f
  for f in "$rgw_tmp"/*.log; do
    [[ -f "$f" ]] || continue
    echo "--- $f (last lines)" >&2
    tail -n 20 "$f" >&2 || true
  done
  exit 1
}

rgw_tmp="$(mktemp -d "${TMPDIR:-/tmp}/kiroku-rgw.XXXXXX")"
mon_port="$(rgw_free_port)"
rgw_port="$(rgw_free_port)"
fsid="$(python3 -c 'import uuid; print(uuid.uuid4())')"
conf="$rgw_tmp/ceph.conf"
mkdir -p "$rgw_tmp/mon" "$rgw_tmp/osd" "$rgw_tmp/run"

cat >"$conf" <<EOF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$mon_port
public addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
auth supported = none
ms_mon_cluster_mode = crc
ms_mon_service_mode = crc
ms_mon_client_mode = crc
ms_cluster_mode = crc
ms_service_mode = crc
ms_client_mode = crc
ms_bind_msgr1 = false
run dir = $rgw_tmp/run
admin socket = $rgw_tmp/run/\$name.asok
log file = $rgw_tmp/\$name.log
pid file = $rgw_tmp/run/\$name.pid
keyring = /dev/null
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
mon data avail warn = 1
mon data avail crit = 0
mgr initial modules =
[mon]
mon data = $rgw_tmp/mon
[osd]
osd data = $rgw_tmp/osd
osd objectstore = memstore
memstore device bytes = 2147483648
osd max object size = 1073741824
[client]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw data = $rgw_tmp/rgw
rgw enable usage log = false
rgw lc debug interval = 10
EOF

monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$rgw_tmp/monmap" >/dev/null 2>&1 ||
  rgw_fail "monmaptool failed"
ceph-mon -c "$conf" --mkfs -i a --monmap "$rgw_tmp/monmap" >"$rgw_tmp/mkfs.log" 2>&1 ||
  rgw_fail "ceph-mon --mkfs failed"
ceph-mon -c "$conf" -i a -f >"$rgw_tmp/mon.out.log" 2>&1 </dev/null &
rgw_pids+=($!)

ceph_cmd() { timeout 30 ceph -c "$conf" --connect-timeout 20 "$@"; }
osd_uuid="$(python3 -c 'import uuid; print(uuid.uuid4())')"
osd_id="$(ceph_cmd osd new "$osd_uuid" 2>>"$rgw_tmp/ceph-cli.log")" || rgw_fail "the monitor did not answer"
ceph-osd -c "$conf" -i "$osd_id" --mkfs --osd-uuid "$osd_uuid" >>"$rgw_tmp/mkfs.log" 2>&1 ||
  rgw_fail "ceph-osd --mkfs failed"
ceph-osd -c "$conf" -i "$osd_id" -f >"$rgw_tmp/osd.out.log" 2>&1 </dev/null &
rgw_pids+=($!)

radosgw -c "$conf" -n client.rgw -f >"$rgw_tmp/rgw.out.log" 2>&1 </dev/null &
rgw_pids+=($!)

# radosgw listens once it has created its pools (which needs the OSD up).
for _ in $(seq 1 900); do
  if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$rgw_port/"; then break; fi
  for pid in "${rgw_pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || rgw_fail "a Ceph daemon exited during start"
  done
  sleep 0.1
done
curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$rgw_port/" || rgw_fail "radosgw did not answer within 90 s"

rgw_access="KIROKUTEST$(python3 -c 'import secrets; print(secrets.token_hex(5).upper())')"
rgw_secret="$(python3 -c 'import secrets; print(secrets.token_urlsafe(30))')"
rgw_bucket="kiroku-test"
timeout 60 radosgw-admin -c "$conf" -n client.admin user create --uid=kiroku --display-name=kiroku \
  --access-key="$rgw_access" --secret-key="$rgw_secret" >"$rgw_tmp/user.log" 2>&1 ||
  rgw_fail "radosgw-admin user create failed"
# The bucket, through S3 itself (curl signs SigV4).
code="$(curl -s -o "$rgw_tmp/mb.log" -w '%{http_code}' --max-time 30 -X PUT \
  -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
  --aws-sigv4 "aws:amz:us-east-1:s3" -u "$rgw_access:$rgw_secret" "http://127.0.0.1:$rgw_port/$rgw_bucket")"
[[ "$code" == 200 ]] || rgw_fail "creating the bucket answered $code: $(cat "$rgw_tmp/mb.log")"

export KIROKU_TEST_RGW_ENDPOINT="http://127.0.0.1:$rgw_port"
export KIROKU_TEST_RGW_BUCKET="$rgw_bucket"
export KIROKU_TEST_RGW_ACCESS_KEY="$rgw_access"
export KIROKU_TEST_RGW_SECRET_KEY="$rgw_secret"
export KIROKU_TEST_RGW_ADMIN="radosgw-admin -c $conf -n client.admin"

# The command runs in the background (stdin kept) so that a TERM or INT sent to
# this script reaches the trap at once and the trap can stop the command too.
set +e
"$@" <&0 &
rgw_child=$!
wait "$rgw_child"
status=$?
rgw_child=""
set -e
exit "$status"
