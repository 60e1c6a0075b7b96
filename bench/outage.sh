#!/usr/bin/env bash
# outage.sh - the database goes away under a constant load: kiroku (MariaDB
# sink, --durability process) takes RATE requests/s from `kiroku load` while
# MariaDB is stopped for OUTAGE seconds in the middle of the run and then
# started again. Reports what the client saw (errors, 2xx, latency), kiroku's
# RSS before, during and after the outage, the spool's peak, how long the
# backlog took to drain once MariaDB was back, and rows against accepted
# events after a graceful stop.
#
#   scripts/with-mariadb.sh bench/outage.sh RATE BEFORE OUTAGE AFTER
#
# BEFORE, OUTAGE and AFTER are seconds. Prints a summary; with BENCH_JSON=FILE
# also writes the figures as JSON. Exits 1 if rows differ from accepted events,
# any request failed or was not answered 2xx, or the backlog did not drain.
# Needs build/kiroku, curl, python3 and the variables of scripts/with-mariadb.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/lib.sh
rate="$1"; before="$2"; outage="$3"; after="$4"
[[ -n "${KIROKU_TEST_MYSQL_URL:-}" && -n "${KIROKU_TEST_MYSQL_CTL:-}" ]] ||
  bench_die "run under scripts/with-mariadb.sh"
ctl="$KIROKU_TEST_MYSQL_CTL"

work=$(mktemp -d /tmp/kiroku-outage-XXXXXX)
trap 'bench_cleanup; [[ -n "${BENCH_KEEP:-}" ]] || rm -rf "$work"' EXIT
sink="$KIROKU_TEST_MYSQL_URL"
table="bench_outage"
start_kiroku "$work/kiroku" "$sink" process "$table"
total=$((before + outage + after))

# RSS in KiB and spool bytes, sampled every 100 ms: "seconds rss spool".
sample() {
  set +e  # a failed sample is skipped, not the end of the sampling
  local t0="$1" spool rss
  while [[ ! -e "$work/stop-sampling" ]]; do
    spool=$(curl -fs --max-time 2 "http://127.0.0.1:$kiroku_port/metrics" |
      awk '$1 == "kiroku_spool_bytes" && !n++ {print $2}') || true
    rss=$(status_kb "$kiroku_pid" VmRSS 2>/dev/null) || true
    [[ -n "$rss" ]] && echo "$(awk -v a="$(now)" -v b="$t0" 'BEGIN {printf "%.2f", a - b}') $rss ${spool:-0}"
    sleep 0.1
  done
}

t0=$(now)
sample "$t0" > "$work/samples.txt" 2> "$work/sampler.err" &
sampler=$!
bench_pids+=("$sampler")
"$KIROKU_BIN" load --url "http://127.0.0.1:$kiroku_port/?name={name}&value={seq}" --rate "$rate" \
  --duration "${total}s" --connections 64 --threads 1 --quiet --json > "$work/load.json" &
load_pid=$!
sleep "$before"
down_at=$(awk -v a="$(now)" -v b="$t0" 'BEGIN {printf "%.2f", a - b}')
"$ctl" stop
sleep "$outage"
"$ctl" start
up_at=$(awk -v a="$(now)" -v b="$t0" 'BEGIN {printf "%.2f", a - b}')
wait "$load_pid"
# The backlog drains: wait (up to 120 s) until nothing accepted is uncommitted.
drained_at=""
for _ in $(seq 1 1200); do
  q=$(curl -fs "http://127.0.0.1:$kiroku_port/metrics" | awk '$1 == "kiroku_queue_events" && !n++ {print $2}')
  if [[ "${q:-1}" == 0 ]]; then
    drained_at=$(awk -v a="$(now)" -v b="$t0" 'BEGIN {printf "%.2f", a - b}')
    break
  fi
  sleep 0.1
done
curl -fs "http://127.0.0.1:$kiroku_port/stats" > "$work/stats.json"
hwm_kb=$(status_kb "$kiroku_pid" VmHWM)
touch "$work/stop-sampling"
wait "$sampler" || true
stop_kiroku
rows=$(count_rows "$sink" "$table")

python3 - "$work/load.json" "$work/stats.json" "$work/samples.txt" "$rate" "$before" "$outage" "$after" \
  "$down_at" "$up_at" "${drained_at:-}" "$hwm_kb" "$rows" "${BENCH_JSON:-}" <<'PY'
import json, sys
(load_path, stats_path, samples_path, rate, before, outage, after, down_at, up_at, drained_at, hwm_kb, rows,
 json_path) = sys.argv[1:]
load = json.load(open(load_path))
stats = json.load(open(stats_path))
samples = [tuple(float(x) for x in line.split()) for line in open(samples_path) if len(line.split()) == 3]
down_at, up_at = float(down_at), float(up_at)
def peak(lo, hi, i):
    vals = [s[i] for s in samples if lo <= s[0] < hi]
    return max(vals) if vals else 0
accepted = int(stats["kiroku_events_accepted_total"]["series"][0]["value"])
a2d = stats["kiroku_accept_to_durable_seconds"]["series"][0]
r = {
    "rate": float(rate), "before_s": int(before), "outage_s": int(outage), "after_s": int(after),
    "down_at_s": down_at, "up_at_s": up_at,
    "drain_s": (float(drained_at) - up_at) if drained_at else None,
    "scheduled": load["requests"]["scheduled"], "answered": load["requests"]["answered"],
    "status_2xx": load["status"]["2xx"], "errors": load["errors"]["total"],
    "p50_ms": load["latency_ms"]["p50"], "p99_ms": load["latency_ms"]["p99"],
    "max_ms": load["latency_ms"]["max"],
    "rss_before_kb": int(peak(0, down_at, 1)), "rss_during_kb": int(peak(down_at, up_at, 1)),
    "rss_after_kb": int(peak(up_at, 1e9, 1)), "peak_rss_kb": int(hwm_kb),
    "spool_peak_bytes": int(peak(0, 1e9, 2)),
    "a2d_max_ms": a2d["max"] * 1000,
    "accepted": accepted, "rows": int(rows),
}
r["ok"] = (r["rows"] == r["accepted"] and r["errors"] == 0 and r["status_2xx"] == r["scheduled"]
           and r["drain_s"] is not None)
mib = lambda kb: kb // 1024
print(f"MariaDB stopped {down_at:.1f} s into a {rate}/s load for {outage} s, started at {up_at:.1f} s")
print(f"client: {r['answered']} answered, {r['status_2xx']} 2xx, {r['errors']} errors; "
      f"latency p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, max {r['max_ms']:.1f} ms")
print(f"kiroku RSS (MiB): before {mib(r['rss_before_kb'])}, during {mib(r['rss_during_kb'])}, "
      f"after {mib(r['rss_after_kb'])}, peak {mib(r['peak_rss_kb'])}; spool peak {r['spool_peak_bytes']} bytes")
print(f"backlog drained {r['drain_s']:.1f} s after the restart" if r["drain_s"] is not None
      else "backlog NOT drained within 120 s")
print(f"rows == accepted: {'yes' if r['rows'] == r['accepted'] else 'NO'} ({r['rows']} rows, {r['accepted']} accepted)")
if json_path:
    json.dump(r, open(json_path, "w"), indent=1)
sys.exit(0 if r["ok"] else 1)
PY
