#!/usr/bin/env bash
# tsan.sh - builds the unit tests with ThreadSanitizer (build dir build-tsan,
# benchmarks off) and runs the tests of the parts that share data between
# threads: the HTTP engine, the spool, the part pool and its transfer
# threads, the file store, the metrics registry, the load generator, and the
# batching path (collector, batch writer) and database pools when they have
# unit tests. The first data race fails the run (halt_on_error=1).
#
#   scripts/tsan.sh                        the concurrent unit tests
#   scripts/tsan.sh 'Spool*:Http*'         a gtest filter of your own
#   scripts/tsan.sh --integration [FILTER] also the real binary, built with
#       TSan, under the integration tests that need neither MariaDB nor S3
#       (or under FILTER; the collector, batch writer and file API run only
#       there); races are written to build-tsan/tsan-reports/ and printed
#
# CC/CXX choose the compiler (default: the system's, gcc); JOBS sets the
# build's parallelism.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

build=build-tsan
# Suites that run threads of their own or call into code that does. Patterns
# that match nothing (yet) are harmless.
default_filter='Spool*:StorePartPool*:StoreFileStore*:PartEngine*:MetricsRegistry*:Http*:*AllocTest*'
default_filter+=':LoadRun*:FuzzRegressions.Http:Collector*:BatchWriter*:Batch*:*Pool*:Mysql*'
integration=0
if [[ "${1:-}" == "--integration" ]]; then
  integration=1
  shift
fi
# Integration tests without MariaDB, s3rver or RGW. Left out: the S3 variants,
# the memory bounds (TSan's shadow memory breaks them) and the CPU profile
# (the profiler's SIGPROF handler is not instrumented).
int_filter='Ingest*:Files*:Stores/Files*:Fault*:Hostile*:Ops*:Reload*'
int_filter+=':-*/s3:*/rgw:Ingest.IdleConnectionsReleaseTheirBuffersAndStillServe:Hostile.SlowReadersOfALargeDownload'
int_filter+=':Stores/Files.RoundTripsAroundThePartSizeAndOf100MiB/*:Ops.CpuProfile*'
filter="$default_filter"
if [[ $integration -eq 1 ]]; then
  int_filter="${1:-$int_filter}"
else
  filter="${1:-$default_filter}"
fi

echo "== building the unit tests with ThreadSanitizer ($build)"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKIROKU_TSAN=ON \
  -DKIROKU_WERROR=ON -DKIROKU_BENCH=OFF >/dev/null
targets=(kiroku_unit_tests)
if [[ $integration -eq 1 ]]; then targets+=(kiroku kiroku_integration_tests); fi
cmake --build "$build" -j "${JOBS:-$(nproc)}" --target "${targets[@]}"

echo "== unit tests under ThreadSanitizer: $filter"
tests="$("$build/test/kiroku_unit_tests" --gtest_list_tests --gtest_filter="$filter" | grep -c '^  ' || true)"
echo "($tests tests)"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:history_size=4${TSAN_OPTIONS:+:$TSAN_OPTIONS}"
# The test binary runs every selected test in one process, so that threads
# left behind by one test are seen by the next; bounded in time.
status=0
timeout --signal=KILL 1800 "$build/test/kiroku_unit_tests" --gtest_filter="$filter" --gtest_brief=1 ||
  status=1

if [[ $integration -eq 1 ]]; then
  echo "== integration tests against the binary built with ThreadSanitizer: $int_filter"
  reports="$PWD/$build/tsan-reports"
  rm -rf "$reports"
  mkdir -p "$reports"
  # The test binary and every kiroku it starts write races to reports/tsan.PID.
  TSAN_OPTIONS="$TSAN_OPTIONS:log_path=$reports/tsan" timeout --signal=KILL 1800 \
    "$build/test/kiroku_integration_tests" --gtest_filter="$int_filter" --gtest_brief=1 || status=1
  for r in "$reports"/tsan.*; do
    [[ -f "$r" ]] || continue
    status=1
    echo "-- $r"
    cat "$r"
  done
fi
exit $status
