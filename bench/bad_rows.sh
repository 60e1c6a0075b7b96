#!/usr/bin/env bash
# bad_rows.sh - what refused rows cost: kiroku (MariaDB sink, --durability
# process, one IO thread) at full `wrk -t1 -c64` load on a table whose `name`
# is VARCHAR(5), with no bad events and with one in EVERY (default 1000, i.e.
# 0.1 %) named too long for it, which the database refuses and kiroku
# dead-letters.
#
#   scripts/with-mariadb.sh bench/bad_rows.sh [ROUNDS] [SECONDS] [EVERY]
#
# ROUNDS alternating rounds, each against a fresh kiroku and table: throughput,
# sink transactions per batch, accept-to-durable p99, the time the backlog
# takes to drain after the load, and rows + dead-lettered against accepted
# after a graceful stop. The same wrk Lua script makes every request in both
# cases, so the load generator costs the same. Prints a Markdown table; with
# BENCH_JSON=FILE also writes JSON. Exits 1 if rows + dead-lettered differ
# from accepted, a good event was dead-lettered, or an answer was not 2xx.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/lib.sh
rounds="${1:-3}"
secs="${2:-5}"
every="${3:-1000}"
[[ -n "${KIROKU_TEST_MYSQL_URL:-}" && -n "${KIROKU_TEST_MYSQL_CTL:-}" ]] ||
  bench_die "run under scripts/with-mariadb.sh"
sink="$KIROKU_TEST_MYSQL_URL"
db=${sink##*/}
db=${db%%\?*}
sql() { "$KIROKU_TEST_MYSQL_CTL" sql "$1"; }

work=$(mktemp -d /tmp/kiroku-badrows-XXXXXX)
trap 'bench_cleanup; rm -rf "$work"' EXIT

# One request in EVERY (0: none) carries a name the table refuses.
cat > "$work/requests.lua" <<'LUA'
local n = 0
local every = tonumber(os.getenv("BAD_EVERY"))
request = function()
  n = n + 1
  if every > 0 and n % every == 0 then
    return wrk.format(nil, "/?name=toolongname&value=" .. n)
  end
  return wrk.format(nil, "/?name=ok&value=" .. n)
end
LUA

# one_run EVERY TAG: a fresh table and kiroku, one wrk round, drain, stop, count.
one_run() {
  local bad_every="$1" tag="$2" table="bench_bad_$2"
  sql "DROP TABLE IF EXISTS \`$db\`.\`$table\`"
  sql "CREATE TABLE \`$db\`.\`$table\` (id BIGINT UNSIGNED NOT NULL PRIMARY KEY, received_at BIGINT NOT NULL,
       at BIGINT NOT NULL, name VARCHAR(5) NOT NULL, value BIGINT NOT NULL, client_id VARCHAR(255) NULL,
       UNIQUE KEY client_id (client_id))"
  start_kiroku "$work/$tag" "$sink" process "$table"
  local out rps bad errs t_end drained q c0 c1 t0
  c0=$(cpu_seconds "$kiroku_pid"); t0=$(now)
  out=$(BAD_EVERY="$bad_every" wrk -t1 -c64 -d"${secs}s" -s "$work/requests.lua" "http://127.0.0.1:$kiroku_port")
  t_end=$(now)
  echo "$out" >> "$work/wrk.txt"
  read -r rps _ bad errs < <(echo "$out" | wrk_summary)
  drained=""
  for _ in $(seq 1 600); do
    q=$(curl -fs "http://127.0.0.1:$kiroku_port/metrics" | awk '$1 == "kiroku_queue_events" && !n++ {print $2}')
    if [[ "${q:-1}" == 0 ]]; then drained=$(awk -v a="$(now)" -v b="$t_end" 'BEGIN {printf "%.2f", a - b}'); break; fi
    sleep 0.05
  done
  c1=$(cpu_seconds "$kiroku_pid")
  curl -fs "http://127.0.0.1:$kiroku_port/metrics" > "$work/$tag.metrics"
  curl -fs "http://127.0.0.1:$kiroku_port/stats" > "$work/$tag.stats"
  stop_kiroku
  local rows dead dead_good
  rows=$(count_rows "$sink" "$table")
  dead=0; dead_good=0
  if [[ -f "$work/$tag/spool/dead-letter.ndjson" ]]; then
    dead=$(wc -l < "$work/$tag/spool/dead-letter.ndjson")
    dead_good=$(grep -vc '"name":"toolongname"' "$work/$tag/spool/dead-letter.ndjson" || true)
  fi
  python3 - "$work/$tag.metrics" "$work/$tag.stats" "$bad_every" "$rps" "$bad" "$errs" "$rows" "$dead" \
    "$dead_good" "${drained:-}" "$c0" "$c1" "$t0" "$(now)" >> "$work/runs.jsonl" <<'PY'
import json, sys
metrics, stats, every, rps, non2xx, errs, rows, dead, dead_good, drained, c0, c1, t0, t1 = sys.argv[1:]
m = {}
for line in open(metrics):
    if line and not line.startswith("#"):
        k, _, v = line.rpartition(" ")
        m[k] = float(v)
s = json.load(open(stats))
a2d = s["kiroku_accept_to_durable_seconds"]["series"][0]
print(json.dumps({
    "every": int(every), "rps": float(rps), "non2xx": int(non2xx), "socket_errors": int(errs),
    "accepted": int(m.get("kiroku_events_accepted_total", 0)), "rows": int(rows), "dead_lettered": int(dead),
    "dead_lettered_good": int(dead_good),
    "batches": int(m.get("kiroku_batch_events_count", 0)),
    "sink_writes": int(m.get("kiroku_sink_writes_total", 0)),
    "a2d_p99_ms": a2d["p99"] * 1000, "drain_s": float(drained) if drained else None,
    "cpu_cores": (float(c1) - float(c0)) / (float(t1) - float(t0)),
}))
PY
}

for r in $(seq 1 "$rounds"); do
  one_run 0 "clean$r"
  one_run "$every" "bad$r"
done

python3 - "$work/runs.jsonl" "$rounds" "$secs" "$every" "${BENCH_JSON:-}" <<'PY'
import json, sys
path, rounds, secs, every, json_path = sys.argv[1:]
runs = [json.loads(l) for l in open(path)]
clean = [x for x in runs if x["every"] == 0]
bad = [x for x in runs if x["every"] > 0]
mean = lambda xs: sum(xs) / len(xs) if xs else 0.0
def summary(xs):
    return {
        "rps": mean([x["rps"] for x in xs]),
        "writes_per_batch": sum(x["sink_writes"] for x in xs) / max(1, sum(x["batches"] for x in xs)),
        "a2d_p99_ms": max(x["a2d_p99_ms"] for x in xs),
        "drain_s": max((x["drain_s"] or 0) for x in xs),
        "cpu_cores": mean([x["cpu_cores"] for x in xs]),
        "accepted": sum(x["accepted"] for x in xs), "rows": sum(x["rows"] for x in xs),
        "dead_lettered": sum(x["dead_lettered"] for x in xs),
    }
r = {"rounds": int(rounds), "seconds": float(secs), "every": int(every), "runs": runs,
     "clean": summary(clean), "bad": summary(bad)}
r["ratio"] = r["bad"]["rps"] / r["clean"]["rps"] if r["clean"]["rps"] else None
r["ok"] = all(x["rows"] + x["dead_lettered"] == x["accepted"] and x["non2xx"] == 0 and x["dead_lettered_good"] == 0
              and x["drain_s"] is not None for x in runs)
print(f"| refused events | req/s | ratio | sink transactions per batch | accept->durable p99 (ms) "
      f"| drained after the load (s) | kiroku CPU (cores) | accepted | rows | dead-lettered | rows + dead = accepted |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for name, x in (("none", r["clean"]), (f"1 in {every}", r["bad"])):
    print(f"| {name} | {x['rps']:.0f} | {x['rps'] / r['clean']['rps']:.2f} | {x['writes_per_batch']:.2f} "
          f"| {x['a2d_p99_ms']:.1f} | {x['drain_s']:.2f} | {x['cpu_cores']:.2f} | {x['accepted']} | {x['rows']} "
          f"| {x['dead_lettered']} | {'yes' if x['rows'] + x['dead_lettered'] == x['accepted'] else 'NO'} |")
if json_path:
    json.dump(r, open(json_path, "w"), indent=1)
sys.exit(0 if r["ok"] else 1)
PY
