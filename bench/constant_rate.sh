#!/usr/bin/env bash
# constant_rate.sh - the seed's test: a constant request rate for a while
# against kiroku, with latency as the client sees it (coordinated omission
# corrected, `kiroku load`), accept-to-durable latency from kiroku's own
# histogram, peak RSS, CPU, and rows stored against events accepted.
#
#   bench/constant_rate.sh RATE DURATION DURABILITY [SINK]
#
# The load runs as back-to-back `kiroku load` runs of BENCH_SEGMENT (default
# 5s) each, so latency percentiles come per segment (over time) as well as
# for the whole run; connections are reopened between segments, nothing else
# pauses. BENCH_CONNECTIONS (default 64) keep-alive connections, LOAD_THREADS
# (default 1) load threads; kiroku runs with one IO thread
# (KIROKU_BENCH_THREADS). SINK defaults to SQLite in a temporary directory;
# for MariaDB run it under scripts/with-mariadb.sh and pass
# "$KIROKU_TEST_MYSQL_URL" (MariaDB's own CPU and RSS are then reported too).
# Prints one Markdown table row; with BENCH_JSON=FILE also writes the figures
# and the per-segment percentiles there. Exits 1 if rows differ from accepted
# events, and with BENCH_STRICT=1 also if any request failed or was answered
# with anything but a 2xx. Needs build/kiroku, curl, python3, sqlite3.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/lib.sh
rate="$1"; duration="$2"; durability="$3"; sink="${4:-}"
segment="${BENCH_SEGMENT:-5s}"
connections="${BENCH_CONNECTIONS:-64}"

work=$(mktemp -d /tmp/kiroku-rate-XXXXXX)
trap 'bench_cleanup; rm -rf "$work"' EXIT
sink="${sink:-sqlite://$work/events.db}"
table="bench_rate_$durability"
start_kiroku "$work/kiroku" "$sink" "$durability" "$table"

db_pid=""
if [[ "$sink" == mysql://* && -n "${KIROKU_TEST_MYSQL_CTL:-}" ]]; then db_pid=$("$KIROKU_TEST_MYSQL_CTL" pid); fi
db_cpu0=0; [[ -n "$db_pid" ]] && db_cpu0=$(cpu_seconds "$db_pid")
cpu0=$(cpu_seconds "$kiroku_pid")
t0=$(now)

total=$(seconds "$duration"); seg=$(seconds "$segment")
: > "$work/segments.jsonl"
left="$total"
while awk -v l="$left" 'BEGIN {exit !(l > 0.0005)}'; do
  this=$(awk -v l="$left" -v s="$seg" 'BEGIN {print (l < s ? l : s)}')
  start=$(awk -v a="$(now)" -v b="$t0" 'BEGIN {printf "%.3f", a - b}')
  "$KIROKU_BIN" load --url "http://127.0.0.1:$kiroku_port/?name={name}&value={seq}" --rate "$rate" \
    --duration "${this}s" --connections "$connections" --threads "${LOAD_THREADS:-1}" --quiet --json |
    python3 -c 'import json, sys; d = json.load(sys.stdin); d["start_s"] = float(sys.argv[1]); print(json.dumps(d))' \
      "$start" >> "$work/segments.jsonl"
  left=$(awk -v l="$left" -v s="$this" 'BEGIN {print l - s}')
done
t1=$(now)
cpu1=$(cpu_seconds "$kiroku_pid")
db_cpu1=0; db_rss_kb=0
if [[ -n "$db_pid" ]]; then db_cpu1=$(cpu_seconds "$db_pid"); db_rss_kb=$(status_kb "$db_pid" VmRSS); fi

sleep 1  # let the last batch commit before reading accept-to-durable
curl -fs "http://127.0.0.1:$kiroku_port/stats" > "$work/stats.json"
hwm_kb=$(status_kb "$kiroku_pid" VmHWM)
stop_kiroku
rows=$(count_rows "$sink" "$table")
bytes=$(stored_bytes "$sink" "$table")

python3 - "$work/segments.jsonl" "$work/stats.json" "$rate" "$duration" "$durability" \
  "$(sink_kind "$sink")" "$connections" "$hwm_kb" "$rows" "$bytes" "$t0" "$t1" "$cpu0" "$cpu1" \
  "$db_cpu0" "$db_cpu1" "$db_rss_kb" "${BENCH_JSON:-}" "${BENCH_STRICT:-0}" <<'PY'
import json, sys
(seg_path, stats_path, rate, duration, durability, sink, connections, hwm_kb, rows, stored, t0, t1,
 cpu0, cpu1, db_cpu0, db_cpu1, db_rss_kb, json_path, strict) = sys.argv[1:]
segments = [json.loads(line) for line in open(seg_path)]
stats = json.load(open(stats_path))
wall = float(t1) - float(t0)
total = lambda f: sum(f(s) for s in segments)
answered = total(lambda s: s["requests"]["answered"])
a2d = stats["kiroku_accept_to_durable_seconds"]["series"][0]
accepted = int(stats["kiroku_events_accepted_total"]["series"][0]["value"])
r = {
    "sink": sink, "durability": durability, "rate": float(rate), "duration": duration,
    "connections": int(connections), "wall_s": wall,
    "scheduled": total(lambda s: s["requests"]["scheduled"]), "answered": answered,
    "status_2xx": total(lambda s: s["status"]["2xx"]),
    "errors": total(lambda s: s["errors"]["total"]),
    # Answers over the time the runs took; the gaps between runs apart.
    "throughput_rps": answered / total(lambda s: s["elapsed_s"]),
    "gaps_s": wall - total(lambda s: s["elapsed_s"]),
    # Percentiles of the whole run are not the sum of segments': the median
    # segment's p50, the worst segment's p99, p99.9 and max are reported.
    "p50_ms": sorted(s["latency_ms"]["p50"] for s in segments)[len(segments) // 2],
    "p99_ms": max(s["latency_ms"]["p99"] for s in segments),
    "p99_9_ms": max(s["latency_ms"]["p99_9"] for s in segments),
    "max_ms": max(s["latency_ms"]["max"] for s in segments),
    "a2d_p50_ms": a2d["p50"] * 1000, "a2d_p99_ms": a2d["p99"] * 1000, "a2d_max_ms": a2d["max"] * 1000,
    "peak_rss_kb": int(hwm_kb),
    "kiroku_cpu_cores": (float(cpu1) - float(cpu0)) / wall,
    "db_cpu_cores": (float(db_cpu1) - float(db_cpu0)) / wall, "db_rss_kb": int(db_rss_kb),
    "accepted": accepted, "rows": int(rows), "stored_bytes": int(stored),
    "segments": [{"start_s": s["start_s"], "elapsed_s": s["elapsed_s"], "answered": s["requests"]["answered"],
                  "errors": s["errors"]["total"], **{k: s["latency_ms"][k] for k in
                  ("p50", "p90", "p99", "p99_9", "max")}} for s in segments],
}
r["ok"] = r["rows"] == r["accepted"]
print(f"| {sink} | {durability} | {rate}/s for {duration} | {r['answered']} | {r['throughput_rps']:.0f} | "
      f"{r['errors']} | {r['status_2xx']} | {r['p99_ms']:.1f} | {r['max_ms']:.1f} | {r['a2d_p99_ms']:.1f} | "
      f"{r['a2d_max_ms']:.1f} | {r['peak_rss_kb'] // 1024} | {r['accepted']} | {r['rows']} |")
print(f"rows == accepted: {'yes' if r['ok'] else 'NO'} ({r['rows']} rows, {r['accepted']} events accepted)")
if json_path:
    json.dump(r, open(json_path, "w"), indent=1)
clean = r["errors"] == 0 and r["status_2xx"] == r["scheduled"]
if strict == "1" and not clean:
    print(f"{r['errors']} errors, {r['scheduled'] - r['status_2xx']} requests without a 2xx", file=sys.stderr)
sys.exit(0 if r["ok"] and (clean or strict != "1") else 1)
PY
