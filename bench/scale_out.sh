#!/usr/bin/env bash
# scale_out.sh - N kiroku instances behind haproxy (deploy/haproxy.cfg) on one
# MariaDB, as the seed ran its ten servers: aggregate throughput, accept-to-
# durable p99 and rows against accepted events for each N, side by side with
# the same haproxy in front of nginx answering 204 (haproxy's own ceiling on
# this machine) and with nginx alone.
#
#   scripts/with-mariadb.sh bench/scale_out.sh [ROUNDS] [SECONDS] [COUNTS]
#
# COUNTS defaults to "1 2 3". For each N: N instances started with the same
# command line (no --instance: each leases its number from the database), one
# table, --durability process, one IO thread each; haproxy runs the deploy
# file with one server line per instance; ROUNDS alternating `wrk -t1 -c64
# -dSECONDS` rounds against haproxy -> nginx and haproxy -> kiroku x N; then
# every instance stops gracefully and the table is counted. Prints a Markdown
# table; with BENCH_JSON=FILE also writes the figures as JSON. Exits 1 if rows
# differ from accepted events or any answer through haproxy was not 2xx.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/lib.sh
rounds="${1:-3}"
secs="${2:-5}"
counts="${3:-1 2 3}"
[[ -n "${KIROKU_TEST_MYSQL_URL:-}" ]] || bench_die "run under scripts/with-mariadb.sh"
command -v haproxy >/dev/null || bench_die "haproxy is missing (scripts/setup.sh installs it)"
sink="$KIROKU_TEST_MYSQL_URL"

work=$(mktemp -d /tmp/kiroku-scale-XXXXXX)
trap 'bench_cleanup; rm -rf "$work"' EXIT

# start_haproxy NAME CHECK ADDR...: deploy/haproxy.cfg with its server lines
# replaced by one per ADDR (health-checked on /readyz if CHECK is 1; nginx
# answers 204 there, so the reference runs without checks). Sets lb_port, lb_pid.
start_haproxy() {
  local name="$1" check="$2" n=0 a
  shift 2
  lb_port=$(free_port)
  grep -v '^ *server k[0-9]' deploy/haproxy.cfg > "$work/$name.cfg"
  for a in "$@"; do
    n=$((n + 1))
    echo "    server k$n $a$([[ $check == 1 ]] && echo ' check')" >> "$work/$name.cfg"
  done
  KIROKU_LB_LISTEN="127.0.0.1:$lb_port" haproxy -f "$work/$name.cfg" -db > "$work/$name.log" 2>&1 &
  lb_pid=$!
  bench_pids+=("$lb_pid")
  wait_http "http://127.0.0.1:$lb_port/readyz"
}

stop_pid() {
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  forget_pid "$1"
}

# wrk_round URL: requests/s, completed, non-2xx answers, socket errors.
wrk_round() { wrk -t1 -c64 -d"${secs}s" "$1" | tee -a "$work/wrk.txt" | wrk_summary; }

start_nginx "$work/nginx"
nginx_addr="127.0.0.1:$nginx_port"
start_haproxy ref 0 "$nginx_addr"
ref_port=$lb_port
ref_lb_pid=$lb_pid

# nginx alone and haproxy -> nginx: what haproxy itself costs here.
direct=(); via=()
for _ in $(seq 1 "$rounds"); do
  read -r rps _ _ _ < <(wrk_round "http://$nginx_addr/?name=bench&value=1"); direct+=("$rps")
  read -r rps _ _ _ < <(wrk_round "http://127.0.0.1:$ref_port/?name=bench&value=1"); via+=("$rps")
done
echo "direct ${direct[*]}" > "$work/reference.txt"
echo "via ${via[*]}" >> "$work/reference.txt"

: > "$work/runs.txt"
for n in $counts; do
  table="bench_scale_$n"
  pids=(); ports=(); addrs=()
  for i in $(seq 1 "$n"); do
    start_kiroku "$work/k$n-$i" "$sink" process "$table"
    pids+=("$kiroku_pid"); ports+=("$kiroku_port"); addrs+=("127.0.0.1:$kiroku_port")
  done
  start_haproxy "lb$n" 1 "${addrs[@]}"
  sleep 1.5  # every server seen healthy (rise 2 x inter 500 ms)
  k_rps=(); r_rps=(); non2xx=0; errors=0; k_cpu=0; k_wall=0; lb_cpu=0
  for _ in $(seq 1 "$rounds"); do
    read -r rps _ _ _ < <(wrk_round "http://127.0.0.1:$ref_port/?name=bench&value=1"); r_rps+=("$rps")
    c0=0; for p in "${pids[@]}"; do c0=$(awk -v a="$c0" -v b="$(cpu_seconds "$p")" 'BEGIN {print a + b}'); done
    l0=$(cpu_seconds "$lb_pid"); t0=$(now)
    read -r rps _ bad errs < <(wrk_round "http://127.0.0.1:$lb_port/?name=bench&value=1")
    c1=0; for p in "${pids[@]}"; do c1=$(awk -v a="$c1" -v b="$(cpu_seconds "$p")" 'BEGIN {print a + b}'); done
    k_cpu=$(awk -v s="$k_cpu" -v a="$c0" -v b="$c1" 'BEGIN {print s + b - a}')
    lb_cpu=$(awk -v s="$lb_cpu" -v a="$l0" -v b="$(cpu_seconds "$lb_pid")" 'BEGIN {print s + b - a}')
    k_wall=$(awk -v s="$k_wall" -v a="$t0" -v b="$(now)" 'BEGIN {print s + b - a}')
    k_rps+=("$rps"); non2xx=$((non2xx + bad)); errors=$((errors + errs))
  done
  stop_pid "$lb_pid"
  accepted=0; p99s=()
  for i in "${!pids[@]}"; do
    port=${ports[$i]}
    # Wait for the instance's backlog, then read its figures.
    for _ in $(seq 1 300); do
      q=$(curl -fs "http://127.0.0.1:$port/metrics" | awk '$1 == "kiroku_queue_events" && !n++ {print $2}')
      [[ "${q:-1}" == 0 ]] && break
      sleep 0.1
    done
    curl -fs "http://127.0.0.1:$port/stats" > "$work/stats-$n-$i.json"
    a=$(python3 -c 'import json, sys; s = json.load(open(sys.argv[1]))
print(int(s["kiroku_events_accepted_total"]["series"][0]["value"]),
      s["kiroku_accept_to_durable_seconds"]["series"][0]["p99"] * 1000)' "$work/stats-$n-$i.json")
    accepted=$((accepted + ${a%% *})); p99s+=("${a##* }")
  done
  for p in "${pids[@]}"; do
    kiroku_pid=$p
    stop_kiroku
  done
  rows=$(count_rows "$sink" "$table")
  db=${sink##*/}
  db=${db%%\?*}
  instances=$("$KIROKU_TEST_MYSQL_CTL" sql \
    "SELECT COUNT(DISTINCT instance) FROM \`$db\`.kiroku_instances WHERE tbl = '$table'" 2>/dev/null || echo 0)
  echo "$n|${k_rps[*]}|${r_rps[*]}|$non2xx|$errors|$accepted|$rows|${p99s[*]}|$k_cpu|$lb_cpu|$k_wall|$instances" \
    >> "$work/runs.txt"
done
stop_pid "$ref_lb_pid"
stop_nginx

python3 - "$rounds" "$secs" "$work/reference.txt" "$work/runs.txt" "${BENCH_JSON:-}" <<'PY'
import json, sys
rounds, secs, ref_path, runs_path, json_path = sys.argv[1:]
mean = lambda xs: sum(xs) / len(xs) if xs else 0.0
ref = {l.split()[0]: [float(x) for x in l.split()[1:]] for l in open(ref_path)}
runs = []
for line in open(runs_path):
    n, k, r, non2xx, errors, accepted, rows, p99s, k_cpu, lb_cpu, wall, leased = line.rstrip("\n").split("|")
    k = [float(x) for x in k.split()]; r = [float(x) for x in r.split()]
    p99 = [float(x) for x in p99s.split()]
    wall = float(wall) or 1.0
    runs.append({
        "instances": int(n), "kiroku_rps": k, "ref_rps": r, "kiroku_mean": mean(k), "ref_mean": mean(r),
        "ratio": mean(k) / mean(r) if mean(r) else None,
        "a2d_p99_ms_by_instance": p99, "a2d_p99_ms": max(p99) if p99 else None,
        "non2xx": int(non2xx), "socket_errors": int(errors), "accepted": int(accepted), "rows": int(rows),
        "kiroku_cpu_cores": float(k_cpu) / wall, "haproxy_cpu_cores": float(lb_cpu) / wall,
        "instance_numbers_leased": int(leased or 0),
    })
r = {"rounds": int(rounds), "seconds": float(secs), "nginx_rps": ref["direct"], "haproxy_nginx_rps": ref["via"],
     "nginx_mean": mean(ref["direct"]), "haproxy_nginx_mean": mean(ref["via"]), "runs": runs}
r["ok"] = all(x["rows"] == x["accepted"] and x["non2xx"] == 0 for x in runs)
print(f"nginx alone {r['nginx_mean']:.0f} req/s; haproxy -> nginx {r['haproxy_nginx_mean']:.0f} req/s "
      f"({r['haproxy_nginx_mean'] / r['nginx_mean']:.2f})")
print("| instances | haproxy -> nginx (req/s) | haproxy -> kiroku (req/s) | ratio | accept->durable p99 (ms, worst instance) "
      "| kiroku CPU (cores) | haproxy CPU (cores) | accepted | rows | rows = accepted |")
print("|---|---|---|---|---|---|---|---|---|---|")
for x in runs:
    print(f"| {x['instances']} | {x['ref_mean']:.0f} | {x['kiroku_mean']:.0f} | {x['ratio']:.2f} | {x['a2d_p99_ms']:.1f} "
          f"| {x['kiroku_cpu_cores']:.2f} | {x['haproxy_cpu_cores']:.2f} | {x['accepted']} | {x['rows']} "
          f"| {'yes' if x['rows'] == x['accepted'] else 'NO'} |")
if json_path:
    json.dump(r, open(json_path, "w"), indent=1)
sys.exit(0 if r["ok"] else 1)
PY
