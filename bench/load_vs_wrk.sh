#!/usr/bin/env bash
# load_vs_wrk.sh - checks `kiroku load` against wrk: both drive the same
# target as fast as it answers (`kiroku load --rate 0`, its closed-loop
# mode), in alternating rounds, with the same shape (one thread, 64
# connections), on two targets:
#   - server-bound: kiroku with --durability sink (SQLite), where every
#     answer waits for its batch's commit, so the server sets the pace and
#     both tools must see the same throughput (the goal: within 10 %);
#   - client-bound: nginx answering 204 (one worker), which answers faster
#     than one client thread can ask, so each tool's throughput is its own
#     cost per request (reported with the CPU each tool used).
#
#   bench/load_vs_wrk.sh [ROUNDS] [SECONDS]
#
# Prints a Markdown table per target; with BENCH_JSON=FILE also writes the
# figures as JSON. Exits 1 if either tool saw an error or a non-2xx answer,
# or on the server-bound target (with rounds of 5 s or more) their
# throughputs differ by more than 10 %.
# Needs wrk, nginx, curl, python3, sqlite3 (scripts/setup.sh) and build/kiroku.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/lib.sh
rounds="${1:-3}"
secs="${2:-5}"

work=$(mktemp -d /tmp/kiroku-bench-XXXXXX)
trap 'bench_cleanup; rm -rf "$work"' EXIT

start_nginx "$work/nginx"
start_kiroku "$work/kiroku" "sqlite://$work/events.db" sink bench_loadcheck

# One round of each tool against URL: "WRK_RPS WRK_CPU LOAD_RPS LOAD_CPU BAD",
# CPU in seconds of the tool's process.
round() {
  local url="$1" out rps errs bad=0 t0 tck wrk_cpu load_cpu
  tck=$(getconf CLK_TCK)
  out=$( { /usr/bin/time -f 'CPU %U %S' wrk -t1 -c64 -d"${secs}s" "$url"; } 2>&1)
  echo "$out" >> "$work/wrk.txt"
  read -r rps errs wrk_cpu < <(echo "$out" | awk '
    /Requests\/sec/ {rps = $2}
    /Non-2xx/ {bad += $NF}
    /Socket errors/ {gsub(",", ""); bad += $4 + $6 + $8 + $10}
    /^CPU / {cpu = $2 + $3}
    END {printf "%s %d %s\n", rps, bad, cpu}')
  bad=$((bad + errs))
  echo -n "$rps $wrk_cpu "
  out=$( { /usr/bin/time -f 'CPU %U %S' "$KIROKU_BIN" load --url "$url" --rate 0 --duration "${secs}s" \
    --connections 64 --threads 1 --quiet --json > "$work/load.json"; } 2>&1)
  load_cpu=$(echo "$out" | awk '/^CPU / {print $2 + $3}')
  read -r rps errs < <(python3 -c 'import json, sys
r = json.load(open(sys.argv[1]))
print(r["throughput_rps"], r["errors"]["total"] + r["requests"]["answered"] - r["status"]["2xx"])' \
    "$work/load.json")
  bad=$((bad + errs))
  echo "$rps $load_cpu $bad"
}

: > "$work/rounds.txt"
for target in server client; do
  if [[ $target == server ]]; then url="http://127.0.0.1:$kiroku_port/?name=bench&value=1"
  else url="http://127.0.0.1:$nginx_port/?name=bench&value=1"; fi
  for _ in $(seq 1 "$rounds"); do echo "$target $(round "$url")" >> "$work/rounds.txt"; done
done
stop_kiroku
stop_nginx

python3 - "$work/rounds.txt" "$secs" "${BENCH_JSON:-}" <<'PY'
import json, sys
rounds_path, secs, json_path = sys.argv[1:]
names = {"server": "kiroku `--durability sink` (server-bound)", "client": "nginx 204 (client-bound)"}
out = {"seconds": float(secs), "targets": {}}
ok = True
for target in ("server", "client"):
    rows = [l.split() for l in open(rounds_path) if l.split()[0] == target]
    w = [float(r[1]) for r in rows]; wc = [float(r[2]) for r in rows]
    k = [float(r[3]) for r in rows]; kc = [float(r[4]) for r in rows]
    bad = sum(int(r[5]) for r in rows)
    wm, km = sum(w) / len(w), sum(k) / len(k)
    secs_f = float(secs)
    # CPU microseconds per request: the tool's CPU over the requests it made.
    w_us = 1e6 * sum(wc) / (sum(w) * secs_f)
    k_us = 1e6 * sum(kc) / (sum(k) * secs_f)
    within = abs(km / wm - 1) <= 0.10
    print(f"{names[target]}:")
    print("| round | wrk (req/s) | kiroku load (req/s) | ratio |")
    print("|---|---|---|---|")
    for i, (a, b) in enumerate(zip(w, k)):
        print(f"| {i + 1} | {a:.0f} | {b:.0f} | {b / a:.2f} |")
    print(f"| mean | {wm:.0f} | {km:.0f} | {km / wm:.2f} |")
    print(f"CPU per request: wrk {w_us:.1f} us, kiroku load {k_us:.1f} us; within 10 %: "
          f"{'yes' if within else 'NO'}; errors and non-2xx answers: {bad}")
    out["targets"][target] = {"wrk_rps": w, "load_rps": k, "wrk_mean": wm, "load_mean": km, "ratio": km / wm,
                              "wrk_cpu_us": w_us, "load_cpu_us": k_us, "bad": bad, "within_10pct": within}
    # Rounds of a second or two (the quick mode) are too short to hold to 10 %.
    ok = ok and bad == 0 and (within or target == "client" or secs_f < 5)
out["rounds"] = len(w)
out["ok"] = ok
if json_path:
    json.dump(out, open(json_path, "w"), indent=1)
sys.exit(0 if ok else 1)
PY
