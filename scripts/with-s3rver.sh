#!/usr/bin/env bash
# with-s3rver.sh - runs a command with a throwaway S3 server (s3rver) on loopback.
#
#   scripts/with-s3rver.sh CMD ARGS...
#
# Installs the pinned s3rver (scripts/s3rver, `npm ci`) if needed, starts it on
# 127.0.0.1 on a free port with a fresh data directory and one bucket, exports
#   KIROKU_TEST_S3_ENDPOINT  http://127.0.0.1:PORT
#   KIROKU_TEST_S3_BUCKET    the bucket's name
#   KIROKU_TEST_S3_PID       the server's process (benchmarks pin it to a core)
#   AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_REGION=us-east-1
# runs CMD, then stops the server and removes its directory whatever happens,
# and exits with CMD's status. Safe to nest inside other with-*.sh wrappers:
# it keeps all of its state in local variables and its own temporary directory.
set -euo pipefail

if [[ $# -eq 0 ]]; then
  echo "usage: $0 CMD [ARGS...]" >&2
  exit 2
fi

s3rver_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/s3rver"
s3rver_bucket="kiroku-test"
s3rver_tmp=""
s3rver_pid=""
s3rver_child=""

s3rver_cleanup() {
  if [[ -n "$s3rver_child" ]] && kill -0 "$s3rver_child" 2>/dev/null; then
    kill -TERM "$s3rver_child" 2>/dev/null || true
    wait "$s3rver_child" 2>/dev/null || true
  fi
  if [[ -n "$s3rver_pid" ]] && kill -0 "$s3rver_pid" 2>/dev/null; then
    kill -TERM "$s3rver_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$s3rver_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$s3rver_pid" 2>/dev/null || true
    wait "$s3rver_pid" 2>/dev/null || true
  fi
  if [[ -n "$s3rver_tmp" && -d "$s3rver_tmp" ]]; then
    rm -rf -- "$s3rver_tmp"
  fi
}
trap s3rver_cleanup EXIT
trap 's3rver_cleanup; exit 130' INT
trap 's3rver_cleanup; exit 143' TERM

if [[ ! -d "$s3rver_dir/node_modules/s3rver" ]]; then
  echo "with-s3rver: installing s3rver (npm ci in $s3rver_dir)" >&2
  (cd "$s3rver_dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi

s3rver_tmp="$(mktemp -d "${TMPDIR:-/tmp}/kiroku-s3rver.XXXXXX")"
mkdir -p "$s3rver_tmp/data"
# s3rver's ListObjectsV2 continuation tokens use DES, which Node's OpenSSL 3
# only offers through the legacy provider.
node --openssl-legacy-provider "$s3rver_dir/start.js" "$s3rver_tmp/data" "$s3rver_bucket" "$s3rver_tmp/port" \
  >"$s3rver_tmp/s3rver.log" 2>&1 </dev/null &
s3rver_pid=$!

# Wait (at most 30 s) for the port file, then for the server to answer HTTP.
s3rver_port=""
for _ in $(seq 1 300); do
  if [[ -s "$s3rver_tmp/port" ]]; then
    s3rver_port="$(cat "$s3rver_tmp/port")"
    if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$s3rver_port/$s3rver_bucket"; then
      break
    fi
  fi
  if ! kill -0 "$s3rver_pid" 2>/dev/null; then
    echo "with-s3rver: s3rver exited during start:" >&2
    cat "$s3rver_tmp/s3rver.log" >&2 || true
    exit 1
  fi
  s3rver_port=""
  sleep 0.1
done
if [[ -z "$s3rver_port" ]]; then
  echo "with-s3rver: s3rver did not answer within 30 s:" >&2
  cat "$s3rver_tmp/s3rver.log" >&2 || true
  exit 1
fi

export KIROKU_TEST_S3_ENDPOINT="http://127.0.0.1:$s3rver_port"
export KIROKU_TEST_S3_BUCKET="$s3rver_bucket"
export KIROKU_TEST_S3_PID="$s3rver_pid"
export AWS_ACCESS_KEY_ID=S3RVER
export AWS_SECRET_ACCESS_KEY=S3RVER
export AWS_REGION=us-east-1
unset AWS_SESSION_TOKEN

# The command runs in the background (stdin kept) so that a TERM or INT sent to
# this script reaches the trap at once and the trap can stop the command too.
set +e
"$@" <&0 &
s3rver_child=$!
wait "$s3rver_child"
status=$?
s3rver_child=""
set -e
exit "$status"
