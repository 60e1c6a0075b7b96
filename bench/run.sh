#!/usr/bin/env bash
# run.sh - the benchmark suite: measures kiroku on this machine against its
# references and rewrites BENCHMARKS.md, its plots (bench/plots/*.png) and the
# figures of README.md's "Capacity planning" section.
#
#   bench/run.sh [full|quick]
#
# full (the default; about 32 minutes on 2 cores; run it on a quiet machine):
#   - for SQLite and for MariaDB (scripts/with-mariadb.sh), in each durability
#     mode: 3 alternating 10-second `wrk -t1 -c64` rounds against nginx
#     answering 204 and against kiroku (bench/http_vs_nginx.sh), and a
#     constant 30,000 requests/s for 60 s with `kiroku load` in 5-second runs
#     (bench/constant_rate.sh); rows stored are checked against events accepted
#   - MariaDB: the sink's bulk insert rate (build/bench/mysql_bulk_bench)
#   - PostgreSQL: the sink's bulk insert rate (scripts/with-postgres.sh
#     build/bench/postgresql_bulk_bench)
#   - ClickHouse: the sink's bulk insert rate on one server and on two shards
#     (scripts/with-clickhouse.sh build/bench/clickhouse_bulk_bench)
#   - MariaDB stopped for 20 s under 30,000 requests/s (bench/outage.sh)
#   - 1, 2 and 3 instances behind haproxy on one MariaDB, against haproxy in
#     front of nginx (bench/scale_out.sh)
#   - MariaDB refusing 0.1 % of the events (too long for the table) against
#     none (bench/bad_rows.sh)
#   - bytes per event in the spool (bench/spool_size.sh)
#   - a 1 GiB file up and down through the file API, to the file store and to
#     s3rver (multipart and streamed PUT), against curl to s3rver directly, 3
#     alternating rounds of one upload and 3 downloads each (bench/files.sh)
#   - `kiroku load` in closed loop against wrk, both on nginx (bench/load_vs_wrk.sh)
#   - the component micro benchmarks and the allocation test
# quick: the same steps for a second or two each (2,000 requests/s, 64 MiB),
#   written to a temporary directory instead of the repository; for CI, so
#   the suite cannot rot. About two minutes.
#
# Exits 1 if any step failed (a tool missing, a process failing, rows not
# equal to accepted events, a checksum differing; in quick mode also any
# failed or non-2xx request at the constant rate); the report is written
# anyway and lists the failed steps. Parts can be left out for a trial run
# (BENCH_SINKS="sqlite mariadb", BENCH_MODES="none process fsync sink",
# BENCH_PARTS="ingest pgbulk chbulk outage scale badrows spool files loadcheck components"); a restricted run never
# writes into the repository. KIROKU_BENCH_BUILD=0 skips `cmake --build build`;
# KIROKU_BIN picks another kiroku binary; BENCH_OUT another output file.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mode="${1:-full}"

case "$mode" in
  full)
    export BENCH_ROUNDS=3 BENCH_SECS=10 BENCH_RATE=30000 BENCH_DURATION=60s BENCH_SEGMENT=5s
    export BENCH_BULK_ARGS="--rows 100000 --rounds 3"
    files_mib=1024; export BENCH_FILE_ROUNDS=3 BENCH_FILE_GETS=3; spool_events=300000; micro_min_time=0.5; outage="30000 10 20 10"
    ;;
  quick)
    export BENCH_ROUNDS=1 BENCH_SECS=1 BENCH_RATE=2000 BENCH_DURATION=2s BENCH_SEGMENT=1s
    export BENCH_STRICT=1  # at this rate any failed request is a fault
    export BENCH_BULK_ARGS="--rows 2000 --rounds 1"
    files_mib=64; spool_events=5000; micro_min_time=0.01; outage="2000 2 3 2"
    ;;
  *) echo "usage: $0 [full|quick]" >&2; exit 2 ;;
esac
sinks="${BENCH_SINKS:-sqlite mariadb}"
parts="${BENCH_PARTS:-ingest pgbulk chbulk outage scale badrows spool files loadcheck components}"
restricted=0
[[ -n "${BENCH_SINKS:-}${BENCH_MODES:-}${BENCH_PARTS:-}" ]] && restricted=1
export KIROKU_BIN="${KIROKU_BIN:-build/kiroku}"

tmp=$(mktemp -d /tmp/kiroku-suite-XXXXXX)
results="$tmp/results"
mkdir -p "$results"
if [[ "$mode" == full && $restricted -eq 0 && -z "${BENCH_OUT:-}" ]]; then
  out=BENCHMARKS.md; readme=README.md
else
  out="${BENCH_OUT:-$tmp/BENCHMARKS.md}"
  # The README's figures are updated in a copy, so that the code doing it runs too.
  readme="$tmp/README.md"; cp README.md "$readme"
fi
plots="$(dirname "$out")/bench/plots"
[[ "$out" == BENCHMARKS.md ]] || plots="$(dirname "$out")/plots"

missing=()
for tool in wrk nginx haproxy curl python3 sqlite3 gnuplot mariadb node; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[[ ${#missing[@]} -eq 0 ]] || { echo "run.sh: missing ${missing[*]} (scripts/setup.sh installs them)" >&2; exit 1; }
if [[ "${KIROKU_BENCH_BUILD:-1}" != 0 ]]; then cmake --build build; fi
[[ -x "$KIROKU_BIN" ]] || { echo "run.sh: no $KIROKU_BIN (scripts/setup.sh builds it)" >&2; exit 1; }

status=0
step() {
  local name="$1"
  shift
  echo "== $name: $*"
  if BENCH_JSON="$results/$name.json" "$@" 2>&1 | tee "$results/$name.log"; then return 0; fi
  echo "FAILED: $name" | tee -a "$results/failed"
  status=1
}

machine() {
  python3 - "$mode" "$1" "$KIROKU_BIN" > "$results/machine-$1.json" <<'PY'
import json, os, platform, subprocess, sys, time
def run(*cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except Exception:
        return "?"
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal"))
osname = next((l.split("=", 1)[1].strip().strip('"') for l in open("/etc/os-release")
               if l.startswith("PRETTY_NAME")), "?")
build_type = next((l.split("=", 1)[1].strip() for l in open("build/CMakeCache.txt")
                   if l.startswith("CMAKE_BUILD_TYPE:")), "?") if os.path.exists("build/CMakeCache.txt") else "?"
build_type = build_type or "RelWithDebInfo (the project's default)"
commit = run("git", "rev-parse", "--short", "HEAD")
dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], capture_output=True).returncode != 0
print(json.dumps({
    "mode": sys.argv[1], "when": sys.argv[2], "utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    "nproc": os.cpu_count(), "cpu": cpu, "mem_gib": round(mem / 1024 / 1024, 1), "kernel": platform.release(),
    "os": osname, "loadavg": open("/proc/loadavg").read().split()[:3],
    "commit": commit + (" with uncommitted changes" if dirty else ""),
    "kiroku": run(sys.argv[3], "version"), "build": build_type,
    "nginx": run("nginx", "-v"), "wrk": " ".join(run("wrk", "--version").split()[:2]),
    "mariadb": run("mariadbd", "--version"), "sqlite": run("sqlite3", "--version").split()[0],
    "gnuplot": run("gnuplot", "--version"), "curl": " ".join(run("curl", "--version").split()[:2]),
}))
PY
}

python3 -c 'import json, os; print(json.dumps({k: os.environ.get(v, d) for k, v, d in (
  ("rounds", "BENCH_ROUNDS", ""), ("secs", "BENCH_SECS", ""), ("rate", "BENCH_RATE", ""),
  ("duration", "BENCH_DURATION", ""), ("segment", "BENCH_SEGMENT", ""), ("bulk", "BENCH_BULK_ARGS", ""),
  ("threads", "KIROKU_BENCH_THREADS", "1"))}))' > "$results/params.json"
machine start
for part in $parts; do
  case "$part" in
    ingest)
      for sink in $sinks; do
        case "$sink" in
          sqlite) step ingest-sqlite bench/ingest.sh "$results" sqlite ;;
          mariadb) step ingest-mariadb scripts/with-mariadb.sh bench/ingest.sh "$results" mariadb ;;
          *) echo "run.sh: unknown sink $sink" >&2; exit 2 ;;
        esac
      done
      ;;
    pgbulk)
      # shellcheck disable=SC2086  # the arguments are split on purpose
      step bulk-postgresql scripts/with-postgres.sh build/bench/postgresql_bulk_bench $BENCH_BULK_ARGS
      ;;
    chbulk)
      # One server, then both shards; the same rows and rounds as the other sinks.
      # shellcheck disable=SC2016  # expanded by the inner shell
      step bulk-clickhouse scripts/with-clickhouse.sh bash -c 'build/bench/clickhouse_bulk_bench $0 &&
        build/bench/clickhouse_bulk_bench --url "$KIROKU_TEST_CLICKHOUSE_CLUSTER_URL" $0' "$BENCH_BULK_ARGS"
      ;;
    outage)
      # shellcheck disable=SC2086  # RATE BEFORE OUTAGE AFTER
      [[ " $sinks " == *" mariadb "* ]] && step outage scripts/with-mariadb.sh bench/outage.sh $outage
      ;;
    scale)
      [[ " $sinks " == *" mariadb "* ]] &&
        step scale scripts/with-mariadb.sh bench/scale_out.sh "$BENCH_ROUNDS" "$BENCH_SECS"
      ;;
    badrows)
      [[ " $sinks " == *" mariadb "* ]] &&
        step badrows scripts/with-mariadb.sh bench/bad_rows.sh "$BENCH_ROUNDS" "$BENCH_SECS" 1000
      ;;
    spool) step spool bench/spool_size.sh "$spool_events" ;;
    files) step files scripts/with-s3rver.sh bench/files.sh "$files_mib" ;;
    loadcheck) step loadcheck bench/load_vs_wrk.sh "$BENCH_ROUNDS" "$BENCH_SECS" ;;
    components)
      for b in spool_bench metrics_bench multipart_bench; do
        # shellcheck disable=SC2016  # $1 and $2 are bash -c's own arguments
        step "micro-$b" bash -c 'build/bench/"$1" --benchmark_min_time="$2" 2>/dev/null' _ "$b" "$micro_min_time"
      done
      step alloc build/test/kiroku_unit_tests --gtest_filter='*AllocTest*' --gtest_brief=1
      ;;
    *) echo "run.sh: unknown part $part" >&2; exit 2 ;;
  esac
done
machine end

mkdir -p "$plots"
python3 bench/report.py --mode "$mode" --results "$results" --out "$out" --plots "$plots" \
  --readme "$readme" --restricted "$restricted" || status=1
echo
echo "report: $out (plots in $plots; raw results in $results)"
[[ -s "$results/failed" ]] && { echo "failed steps:"; cat "$results/failed"; }
exit "$status"
