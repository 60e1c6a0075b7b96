#!/usr/bin/env bash
# http_vs_nginx.sh - kiroku ingestion throughput against nginx answering 204,
# side by side on this machine, as BENCHMARKS.md reports it.
#
#   bench/http_vs_nginx.sh [ROUNDS] [SECONDS] [DURABILITY] [SINK]
#
# Alternates `wrk -t1 -c64 -dSECONDS` rounds between nginx (one worker,
# `return 204`) and kiroku (GET /?name=..&value=..), then stops kiroku
# gracefully and checks that every completed request is a row. kiroku runs
# with the same one worker thread as nginx. Prints a Markdown table.
# Needs: wrk, nginx, sqlite3 (scripts/setup.sh installs them), a built build/kiroku.
# For MariaDB: scripts/with-mariadb.sh bench/http_vs_nginx.sh 3 5 process "$KIROKU_TEST_MYSQL_URL"
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rounds="${1:-3}"
secs="${2:-5}"
durability="${3:-process}"
sink="${4:-}"
kiroku_threads="${KIROKU_BENCH_THREADS:-1}"

work=$(mktemp -d /tmp/kiroku-bench-XXXXXX)
nginx_pid=""
kiroku_pid=""
cleanup() {
  [[ -n "$kiroku_pid" ]] && kill -KILL "$kiroku_pid" 2>/dev/null || true
  [[ -n "$nginx_pid" ]] && kill -TERM "$nginx_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

nginx_port=$(free_port)
mkdir -p "$work/nginx"
cat > "$work/nginx/nginx.conf" <<CONF
worker_processes 1;
error_log $work/nginx/error.log;
pid $work/nginx/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/nginx;
  proxy_temp_path $work/nginx;
  fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx;
  scgi_temp_path $work/nginx;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$nginx_port; location / { return 204; } }
}
CONF
nginx -c "$work/nginx/nginx.conf" -g 'daemon off;' &
nginx_pid=$!

kiroku_port=$(free_port)
db="$work/events.db"
sink="${sink:-sqlite://$db}"
build/kiroku serve --listen "127.0.0.1:$kiroku_port" --threads "$kiroku_threads" --sink "$sink" \
  --durability "$durability" --spool-dir "$work/spool" --log-level warn > "$work/kiroku.log" 2>&1 &
kiroku_pid=$!
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$kiroku_port/healthz" >/dev/null 2>&1 && curl -fs -o /dev/null -w '' "http://127.0.0.1:$nginx_port/" 2>/dev/null && break
  sleep 0.1
done

rps() { awk '/Requests\/sec/ {print $2}'; }
completed() { awk '/requests in/ {print $1}'; }
non2xx() { awk '/Non-2xx/ {print $NF}'; }

total_kiroku=0
declare -a n_rps k_rps
for r in $(seq 1 "$rounds"); do
  out=$(wrk -t1 -c64 -d"${secs}s" "http://127.0.0.1:$nginx_port/?name=bench&value=1")
  n_rps+=("$(echo "$out" | rps)")
  out=$(wrk -t1 -c64 -d"${secs}s" "http://127.0.0.1:$kiroku_port/?name=bench&value=1")
  k_rps+=("$(echo "$out" | rps)")
  total_kiroku=$((total_kiroku + $(echo "$out" | completed)))
  bad=$(echo "$out" | non2xx)
  if [[ -n "$bad" ]]; then echo "kiroku answered $bad non-2xx" >&2; fi
done
# wrk's "requests in" counts completed requests; requests cut at the end of a
# round may still have been accepted, so rows >= completed is what must hold.
curl -fs "http://127.0.0.1:$kiroku_port/metrics" > "$work/metrics.txt"
accepted=$(awk '/^kiroku_events_accepted_total / {print $2}' "$work/metrics.txt")
kill -TERM "$kiroku_pid"
wait "$kiroku_pid" || true
kiroku_pid=""

rows="n/a"
if [[ "$sink" == sqlite://* ]]; then
  rows=$(sqlite3 "${sink#sqlite://}" 'select count(*) from events')
elif [[ "$sink" == mysql://* && -n "${KIROKU_TEST_MYSQL_CTL:-}" ]]; then
  db=${sink##*/}; db=${db%%\?*}
  rows=$("$KIROKU_TEST_MYSQL_CTL" sql "SELECT COUNT(*) FROM $db.events")
fi

echo "| round | nginx 204 (req/s) | kiroku $durability (req/s) | ratio |"
echo "|---|---|---|---|"
sum_n=0; sum_k=0
for i in $(seq 0 $((rounds - 1))); do
  ratio=$(awk -v k="${k_rps[$i]}" -v n="${n_rps[$i]}" 'BEGIN {printf "%.2f", k / n}')
  echo "| $((i + 1)) | ${n_rps[$i]} | ${k_rps[$i]} | $ratio |"
  sum_n=$(awk -v a="$sum_n" -v b="${n_rps[$i]}" 'BEGIN {print a + b}')
  sum_k=$(awk -v a="$sum_k" -v b="${k_rps[$i]}" 'BEGIN {print a + b}')
done
echo "| mean | $(awk -v s="$sum_n" -v r="$rounds" 'BEGIN {printf "%.0f", s / r}') | $(awk -v s="$sum_k" -v r="$rounds" 'BEGIN {printf "%.0f", s / r}') | $(awk -v k="$sum_k" -v n="$sum_n" 'BEGIN {printf "%.2f", k / n}') |"
echo
echo "kiroku: completed requests (wrk) $total_kiroku, accepted (metrics) $accepted, rows $rows"
if [[ "$rows" != "n/a" && "$rows" != "$accepted" ]]; then
  echo "MISMATCH: rows != accepted" >&2
  exit 1
fi
