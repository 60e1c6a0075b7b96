#!/usr/bin/env bash
# ingest.sh - the ingestion part of the suite for one sink: for each
# durability mode, maximum throughput against nginx (http_vs_nginx.sh) and
# the constant rate (constant_rate.sh); with MariaDB also the sink's bulk
# insert rate (build/bench/mysql_bulk_bench --method sink).
#
#   bench/ingest.sh RESULTS_DIR sqlite
#   scripts/with-mariadb.sh bench/ingest.sh RESULTS_DIR mariadb
#
# bench/run.sh sets the parameters in the environment: BENCH_ROUNDS and
# BENCH_SECS (wrk rounds), BENCH_RATE, BENCH_DURATION and BENCH_SEGMENT (the
# constant rate), BENCH_BULK_ARGS, BENCH_MODES (default: none process fsync
# sink). Each step writes RESULTS_DIR/<step>.json and <step>.log; a failed
# step is listed in RESULTS_DIR/failed and the others still run. Exits 1 if
# any step failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
results="$1"; kind="$2"
mkdir -p "$results"

case "$kind" in
  sqlite) sink="" ;;
  mariadb)
    [[ -n "${KIROKU_TEST_MYSQL_URL:-}" ]] || { echo "ingest.sh mariadb: run it under scripts/with-mariadb.sh" >&2; exit 2; }
    sink="$KIROKU_TEST_MYSQL_URL"
    ;;
  *) echo "usage: $0 RESULTS_DIR sqlite|mariadb" >&2; exit 2 ;;
esac

status=0
# step NAME CMD...: runs CMD with BENCH_JSON=RESULTS/NAME.json, output to the
# terminal and RESULTS/NAME.log.
step() {
  local name="$1"
  shift
  echo "== $name: $*"
  if BENCH_JSON="$results/$name.json" "$@" 2>&1 | tee "$results/$name.log"; then
    return 0
  fi
  echo "FAILED: $name" | tee -a "$results/failed"
  status=1
}

rate="${BENCH_RATE:-30000}"
for durability in ${BENCH_MODES:-none process fsync sink}; do
  step "wrk-$kind-$durability" bench/http_vs_nginx.sh "${BENCH_ROUNDS:-3}" "${BENCH_SECS:-10}" "$durability" ${sink:+"$sink"}
  # With `sink` every answer waits for its commit (up to --flush-interval and
  # the transaction), so the rate needs that much more concurrency.
  connections=64
  [[ "$durability" == sink ]] && connections=$(( rate / 6 > 64 ? rate / 6 : 64 ))
  step "rate-$kind-$durability" env BENCH_CONNECTIONS="$connections" BENCH_SEGMENT="${BENCH_SEGMENT:-5s}" \
    bench/constant_rate.sh "$rate" "${BENCH_DURATION:-60s}" "$durability" ${sink:+"$sink"}
done

if [[ "$kind" == mariadb ]]; then
  # shellcheck disable=SC2086  # the arguments are split on purpose
  step "bulk-mariadb" build/bench/mysql_bulk_bench --method sink ${BENCH_BULK_ARGS:---rows 100000 --rounds 3}
fi
exit "$status"
