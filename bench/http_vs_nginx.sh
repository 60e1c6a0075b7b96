#!/usr/bin/env bash
# http_vs_nginx.sh - kiroku's maximum ingestion throughput against nginx
# answering 204, side by side on this machine.
#
#   bench/http_vs_nginx.sh [ROUNDS] [SECONDS] [DURABILITY] [SINK]
#
# Alternates `wrk -t1 -c64 -dSECONDS` rounds between nginx (one worker,
# `return 204;`) and kiroku (`GET /?name=bench&value=1`, one IO thread like
# nginx's one worker; KIROKU_BENCH_THREADS changes it), then stops kiroku
# gracefully and checks that every accepted event is a row. Prints a Markdown
# table; with BENCH_JSON=FILE also writes the figures there as JSON. Exits 1
# if rows differ from accepted events or kiroku answered anything but 2xx.
# SINK defaults to SQLite in a temporary directory; for MariaDB:
#   scripts/with-mariadb.sh bash -c 'bench/http_vs_nginx.sh 3 5 process "$KIROKU_TEST_MYSQL_URL"'
# Needs wrk, nginx, curl, python3, sqlite3 (scripts/setup.sh) and build/kiroku.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/lib.sh
rounds="${1:-3}"
secs="${2:-5}"
durability="${3:-process}"
sink="${4:-}"

work=$(mktemp -d /tmp/kiroku-bench-XXXXXX)
trap 'bench_cleanup; rm -rf "$work"' EXIT

start_nginx "$work/nginx"
nginx_worker=$(pgrep -P "$nginx_pid" | head -n 1)
sink="${sink:-sqlite://$work/events.db}"
table="bench_wrk_$durability"
start_kiroku "$work/kiroku" "$sink" "$durability" "$table"

# wrk's summary: requests/s, completed requests, non-2xx answers, socket errors.
wrk_round() {
  local out
  out=$(wrk -t1 -c64 -d"${secs}s" "$1")
  echo "$out" >> "$work/wrk.txt"
  echo "$out" | wrk_summary
}

# CPU seconds a process used, and wall seconds, during the rounds against it.
n_rps=(); k_rps=(); n_cpu=0; k_cpu=0; n_wall=0; k_wall=0; completed=0; non2xx=0; sock_errors=0
add() { awk -v a="$1" -v b="$2" -v c="$3" 'BEGIN {print a + c - b}'; }
for _ in $(seq 1 "$rounds"); do
  c0=$(cpu_seconds "$nginx_worker"); t0=$(now)
  read -r rps _ _ _ < <(wrk_round "http://127.0.0.1:$nginx_port/?name=bench&value=1")
  n_cpu=$(add "$n_cpu" "$c0" "$(cpu_seconds "$nginx_worker")"); n_wall=$(add "$n_wall" "$t0" "$(now)")
  n_rps+=("$rps")
  c0=$(cpu_seconds "$kiroku_pid"); t0=$(now)
  read -r rps completed_now bad errs < <(wrk_round "http://127.0.0.1:$kiroku_port/?name=bench&value=1")
  k_cpu=$(add "$k_cpu" "$c0" "$(cpu_seconds "$kiroku_pid")"); k_wall=$(add "$k_wall" "$t0" "$(now)")
  k_rps+=("$rps")
  completed=$((completed + completed_now)); non2xx=$((non2xx + bad)); sock_errors=$((sock_errors + errs))
done
curl -fs "http://127.0.0.1:$kiroku_port/metrics" > "$work/metrics.txt"
accepted=$(metric "$work/metrics.txt" kiroku_events_accepted_total)
peak_rss_kb=$(status_kb "$kiroku_pid" VmHWM)
stop_kiroku
stop_nginx
rows=$(count_rows "$sink" "$table")

python3 - "$rounds" "$secs" "$durability" "$(sink_kind "$sink")" "${n_rps[*]}" "${k_rps[*]}" \
  "$n_cpu" "$k_cpu" "$n_wall" "$k_wall" "$completed" "$non2xx" "$sock_errors" "$accepted" "$rows" "$peak_rss_kb" \
  "${BENCH_JSON:-}" <<'PY'
import json, sys
(rounds, secs, durability, sink, n_rps, k_rps, n_cpu, k_cpu, n_wall, k_wall, completed, non2xx, sock_errors,
 accepted, rows, peak_rss_kb, json_path) = sys.argv[1:]
rounds, secs = int(rounds), float(secs)
n = [float(x) for x in n_rps.split()]
k = [float(x) for x in k_rps.split()]
print(f"| round | nginx 204 (req/s) | kiroku {sink} {durability} (req/s) | ratio |")
print("|---|---|---|---|")
for i, (a, b) in enumerate(zip(n, k)):
    print(f"| {i + 1} | {a:.0f} | {b:.0f} | {b / a:.2f} |")
nm, km = sum(n) / len(n), sum(k) / len(k)
print(f"| mean | {nm:.0f} | {km:.0f} | {km / nm:.2f} |")
print()
print(f"kiroku: completed requests (wrk) {completed}, non-2xx {non2xx}, socket errors {sock_errors}, "
      f"accepted (metrics) {int(float(accepted))}, rows {rows}, peak RSS {int(peak_rss_kb) // 1024} MiB")
ok = int(rows) == int(float(accepted)) and int(non2xx) == 0
print("rows == accepted: " + ("yes" if int(rows) == int(float(accepted)) else "NO"))
if json_path:
    json.dump({
        "sink": sink, "durability": durability, "rounds": rounds, "seconds": secs,
        "nginx_rps": n, "kiroku_rps": k, "nginx_mean": nm, "kiroku_mean": km, "ratio": km / nm,
        # CPU time used during the rounds against it: cores = CPU seconds / wall seconds.
        "nginx_cpu_cores": float(n_cpu) / float(n_wall), "kiroku_cpu_cores": float(k_cpu) / float(k_wall),
        "completed": int(completed), "non2xx": int(non2xx), "socket_errors": int(sock_errors),
        "accepted": int(float(accepted)), "rows": int(rows), "peak_rss_kb": int(peak_rss_kb),
        "ok": ok,
    }, open(json_path, "w"), indent=1)
sys.exit(0 if ok else 1)
PY
