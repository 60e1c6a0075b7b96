#!/usr/bin/env bash
# spool_size.sh - bytes one event takes in the spool, measured on disk.
#
#   bench/spool_size.sh EVENTS [SINK]
#
# Starts kiroku (`--durability process`) with batches held back
# (`--flush-interval 60s --batch-max 1000000`) so that no segment is deleted
# during the run, sends EVENTS events `GET /?name=m0..m15&value=SEQ` with
# `kiroku load`, then reads the spool's size from the files on disk and from
# kiroku_spool_bytes, stops kiroku gracefully and checks that every event is a
# row. Prints one line; with BENCH_JSON=FILE also writes the figures as JSON.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/lib.sh
events="$1"; sink="${2:-}"

work=$(mktemp -d /tmp/kiroku-spool-XXXXXX)
trap 'bench_cleanup; rm -rf "$work"' EXIT
sink="${sink:-sqlite://$work/events.db}"
table="bench_spool"
start_kiroku "$work/kiroku" "$sink" process "$table" --flush-interval 60s --batch-max 1000000

rate=$(( events < 20000 ? events : 20000 ))
"$KIROKU_BIN" load --url "http://127.0.0.1:$kiroku_port/?name={name}&value={seq}" --rate "$rate" \
  --duration "$(awk -v e="$events" -v r="$rate" 'BEGIN {print e / r}')s" --connections 16 --quiet --json \
  > "$work/load.json"
curl -fs "http://127.0.0.1:$kiroku_port/metrics" > "$work/metrics.txt"
accepted=$(metric "$work/metrics.txt" kiroku_events_accepted_total)
gauge=$(metric "$work/metrics.txt" kiroku_spool_bytes)
segments=$(find "$work/kiroku/spool" -type f | wc -l)
on_disk=$(find "$work/kiroku/spool" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
stop_kiroku
rows=$(count_rows "$sink" "$table")

python3 - "$events" "$accepted" "$gauge" "$segments" "$on_disk" "$rows" "${BENCH_JSON:-}" <<'PY'
import json, sys
events, accepted, gauge, segments, on_disk, rows, json_path = sys.argv[1:]
accepted, rows = int(float(accepted)), int(rows)
r = {"events": int(events), "accepted": accepted, "spool_bytes_metric": int(float(gauge)),
     "segments": int(segments), "spool_bytes_on_disk": int(on_disk), "rows": rows,
     "bytes_per_event": int(on_disk) / accepted if accepted else 0,
     "ok": rows == accepted == int(events)}
print(f"spool: {accepted} events in {r['segments']} segment(s), {r['spool_bytes_on_disk']} bytes on disk "
      f"(kiroku_spool_bytes {r['spool_bytes_metric']}): {r['bytes_per_event']:.1f} bytes/event; "
      f"rows {rows}")
if json_path:
    json.dump(r, open(json_path, "w"), indent=1)
sys.exit(0 if r["ok"] else 1)
PY
