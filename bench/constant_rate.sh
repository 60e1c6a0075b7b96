#!/usr/bin/env bash
# constant_rate.sh - the seed's test: a constant request rate for a while
# against kiroku, with latency as the client sees it (coordinated omission
# corrected, `kiroku load`), accept-to-durable latency from kiroku's own
# histogram, peak RSS, and rows stored against events accepted.
#
#   bench/constant_rate.sh RATE DURATION DURABILITY [SINK]
#
# SINK defaults to SQLite in a temporary directory; for MariaDB run it under
# scripts/with-mariadb.sh and pass "$KIROKU_TEST_MYSQL_URL". Prints one
# Markdown table row. Needs build/kiroku, curl, python3, sqlite3.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rate="$1"; duration="$2"; durability="$3"; sink="${4:-}"
work=$(mktemp -d /tmp/kiroku-rate-XXXXXX)
kiroku_pid=""
cleanup() { [[ -n "$kiroku_pid" ]] && kill -KILL "$kiroku_pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
table="bench_$$"
sink="${sink:-sqlite://$work/events.db}"
build/kiroku serve --listen "127.0.0.1:$port" --threads "${KIROKU_BENCH_THREADS:-1}" --sink "$sink" --table "$table" \
  --durability "$durability" --spool-dir "$work/spool" --log-level warn > "$work/kiroku.log" 2>&1 &
kiroku_pid=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

build/kiroku load --url "http://127.0.0.1:$port/?name={name}&value={seq}" --rate "$rate" --duration "$duration" \
  --connections 64 --threads "${LOAD_THREADS:-1}" --quiet --json > "$work/load.json"
sleep 1  # let the last batch commit
curl -fs "http://127.0.0.1:$port/stats" > "$work/stats.json"
hwm_kb=$(awk '/VmHWM/ {print $2}' "/proc/$kiroku_pid/status")
kill -TERM "$kiroku_pid"; wait "$kiroku_pid" || true; kiroku_pid=""

if [[ "$sink" == sqlite://* ]]; then
  rows=$(sqlite3 "${sink#sqlite://}" "select count(*) from $table")
elif [[ -n "${KIROKU_TEST_MYSQL_CTL:-}" ]]; then
  db=${sink##*/}; db=${db%%\?*}
  rows=$("$KIROKU_TEST_MYSQL_CTL" sql "SELECT COUNT(*) FROM $db.$table")
else
  rows="n/a"
fi
python3 - "$work/load.json" "$work/stats.json" "$hwm_kb" "$rows" "$rate" "$duration" "$durability" "${sink%%:*}" <<'PY'
import json, sys
load = json.load(open(sys.argv[1])); stats = json.load(open(sys.argv[2]))
hwm_kb, rows, rate, duration, durability, sink = sys.argv[3:9]
lat = load["latency_ms"]
a2d = stats["kiroku_accept_to_durable_seconds"]["series"][0]
acc = stats["kiroku_events_accepted_total"]["series"][0]["value"]
print(f"| {sink} | {durability} | {rate}/s for {duration} | {load['requests']['answered']} | "
      f"{load['throughput_rps']:.0f} | {load['errors']['total']} | {load['status']['2xx']} | "
      f"{lat['p99']:.1f} | {lat['max']:.1f} | {a2d['p99']*1000:.1f} | {a2d['max']*1000:.1f} | "
      f"{int(hwm_kb)//1024} | {int(acc)} | {rows} |")
PY
