#!/usr/bin/env bash
# cpu_per_event.sh - CPU time per ingested event, kiroku against nginx's
# per-request CPU for its empty 204, side by side.
#
#   bench/cpu_per_event.sh [ROUNDS] [SECONDS] [DURABILITY] [SINK]
#
# Alternates rounds of `wrk -t1 -c64 -dSECONDS` on nginx (one worker,
# `return 204;`) and on a fresh kiroku (one IO thread, SQLite in a temporary
# directory unless SINK is given, e.g. "$KIROKU_TEST_MYSQL_URL" under
# scripts/with-mariadb.sh), each after a 1 s warm-up, and reads the process's
# user + system time (/proc/PID/stat: nginx's worker; kiroku's whole process,
# its writer thread included) around the round. Prints microseconds of CPU
# per request for each round, the means and kiroku's events per CPU-second
# as a fraction of nginx's requests per CPU-second. The database server's own
# CPU is not counted. Needs wrk, nginx, curl, python3 and build/kiroku.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/lib.sh
rounds="${1:-3}"
secs="${2:-5}"
durability="${3:-process}"
sink="${4:-}"

work=$(mktemp -d /tmp/kiroku-cpu-XXXXXX)
trap 'bench_cleanup; rm -rf "$work"' EXIT
hz=$(getconf CLK_TCK)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Prints "requests cpu_us_per_request" for one wrk round on url against pid.
measure() {
  local pid=$1 url=$2 t0 t1 out req
  wrk -t1 -c64 -d1s "$url" >/dev/null
  t0=$(cpu_ticks "$pid")
  out=$(wrk -t1 -c64 -d"${secs}s" "$url")
  t1=$(cpu_ticks "$pid")
  req=$(awk '/requests in/{print $1}' <<<"$out")
  python3 -c "print($req, round(($t1 - $t0) / $hz * 1e6 / $req, 3))"
}

start_nginx "$work/nginx"
nginx_worker=$(pgrep -P "$nginx_pid" | head -n 1)

printf '| round | nginx requests | nginx CPU µs / request | kiroku events | kiroku CPU µs / event |\n|---|---|---|---|---|\n'
sum_n=0 sum_k=0
for round in $(seq 1 "$rounds"); do
  read -r n_req n_us < <(measure "$nginx_worker" "http://127.0.0.1:$nginx_port/?name=bench&value=1")
  run="$work/kiroku-$round"
  mkdir -p "$run"
  port=$(free_port)
  "$KIROKU_BIN" serve --listen "127.0.0.1:$port" --threads 1 --durability "$durability" \
    --sink "${sink:-sqlite://$run/events.db}" --table "cpu_$round" --spool-dir "$run/spool" >"$run/log" 2>&1 &
  kpid=$!
  bench_pids+=("$kpid")
  wait_http "http://127.0.0.1:$port/healthz"
  read -r k_req k_us < <(measure "$kpid" "http://127.0.0.1:$port/?name=bench&value=1")
  kill -TERM "$kpid"
  wait "$kpid" 2>/dev/null || true
  forget_pid "$kpid"
  printf '| %d | %d | %.3f | %d | %.3f |\n' "$round" "$n_req" "$n_us" "$k_req" "$k_us"
  sum_n=$(python3 -c "print($sum_n + $n_us)")
  sum_k=$(python3 -c "print($sum_k + $k_us)")
done
python3 - "$sum_n" "$sum_k" "$rounds" <<'PY'
import sys
n, k, r = float(sys.argv[1]) / int(sys.argv[3]), float(sys.argv[2]) / int(sys.argv[3]), 0
print(f"| mean | | {n:.3f} | | {k:.3f} |")
print(f"\nkiroku events per CPU-second / nginx requests per CPU-second: {n / k:.2f}")
PY
