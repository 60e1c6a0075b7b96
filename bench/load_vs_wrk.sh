#!/usr/bin/env bash
# load_vs_wrk.sh - checks `kiroku load` against wrk: both drive the same
# target (nginx answering 204, one worker) as fast as it answers, in
# alternating rounds, with the same shape (one thread, 64 connections).
#
#   bench/load_vs_wrk.sh [ROUNDS] [SECONDS]
#
# `kiroku load --rate 0` is its closed-loop mode, the one comparable to wrk.
# Prints a Markdown table of requests/s per round and the ratio of the means
# (kiroku load / wrk; the goal is within 10 %); with BENCH_JSON=FILE also
# writes the figures as JSON. Exits 1 if either tool saw an error or a
# non-2xx answer (the ratio itself is reported, not enforced).
# Needs wrk, nginx, python3 (scripts/setup.sh) and build/kiroku.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/lib.sh
rounds="${1:-3}"
secs="${2:-5}"

work=$(mktemp -d /tmp/kiroku-bench-XXXXXX)
trap 'bench_cleanup; rm -rf "$work"' EXIT

start_nginx "$work/nginx"
url="http://127.0.0.1:$nginx_port/?name=bench&value=1"

w_rps=(); l_rps=(); bad=0
for i in $(seq 1 "$rounds"); do
  out=$(wrk -t1 -c64 -d"${secs}s" "$url")
  echo "$out" >> "$work/wrk.txt"
  read -r rps errs < <(echo "$out" | awk '
    /Requests\/sec/ {rps = $2}
    /Non-2xx/ {bad += $NF}
    /Socket errors/ {gsub(",", ""); bad += $4 + $6 + $8 + $10}
    END {printf "%s %d\n", rps, bad}')
  w_rps+=("$rps"); bad=$((bad + errs))
  "$KIROKU_BIN" load --url "$url" --rate 0 --duration "${secs}s" --connections 64 --threads 1 \
    --quiet --json > "$work/load-$i.json"
  read -r rps errs < <(python3 -c 'import json, sys
r = json.load(open(sys.argv[1]))
print(r["throughput_rps"], r["errors"]["total"] + r["requests"]["answered"] - r["status"]["2xx"])' \
    "$work/load-$i.json")
  l_rps+=("$rps"); bad=$((bad + errs))
done
stop_nginx

python3 - "${w_rps[*]}" "${l_rps[*]}" "$bad" "$secs" "${BENCH_JSON:-}" <<'PY'
import json, sys
w_rps, l_rps, bad, secs, json_path = sys.argv[1:]
w = [float(x) for x in w_rps.split()]
k = [float(x) for x in l_rps.split()]
print("| round | wrk (req/s) | kiroku load (req/s) | ratio |")
print("|---|---|---|---|")
for i, (a, b) in enumerate(zip(w, k)):
    print(f"| {i + 1} | {a:.0f} | {b:.0f} | {b / a:.2f} |")
wm, km = sum(w) / len(w), sum(k) / len(k)
ratio = km / wm
print(f"| mean | {wm:.0f} | {km:.0f} | {ratio:.2f} |")
print(f"within 10 %: {'yes' if abs(ratio - 1) <= 0.10 else 'NO'}; errors and non-2xx answers: {bad}")
if json_path:
    json.dump({"rounds": len(w), "seconds": float(secs), "wrk_rps": w, "load_rps": k,
               "wrk_mean": wm, "load_mean": km, "ratio": ratio, "bad": int(bad), "ok": int(bad) == 0},
              open(json_path, "w"), indent=1)
sys.exit(0 if int(bad) == 0 else 1)
PY
