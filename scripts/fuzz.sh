#!/usr/bin/env bash
# fuzz.sh - builds the libFuzzer targets of test/fuzz (clang, ASan + UBSan,
# build dir build-fuzz) and runs each one for a while on a copy of its seed
# corpus, one target at a time.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]     default 30
#   FUZZ_TARGETS="http query" scripts/fuzz.sh 60     only these targets
#
# Prints, per target, the inputs executed and the crashes found, and exits
# non-zero if any target crashed (or broke an invariant, or hung). Crash
# inputs are kept in build-fuzz/fuzz-artifacts/TARGET/; the inputs a run
# found interesting stay in build-fuzz/fuzz-corpus/TARGET/ (the corpus in
# the repository is never written to). JOBS sets the build's parallelism.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${1:-30}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [[ "$seconds" -lt 1 ]]; then
  echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET]" >&2
  exit 2
fi
build=build-fuzz

# Longest input per target: an HTTP head or two with a small body, a query
# string, a body of a few events, a small form, a few dozen spool records,
# an S3 listing page.
max_len() {
  case "$1" in
    query) echo 1024 ;;
    spool) echo 2048 ;;
    *) echo 4096 ;;
  esac
}

echo "== building the fuzz targets ($build)"
CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DKIROKU_FUZZ=ON -DKIROKU_WERROR=ON -DKIROKU_TESTS=OFF -DKIROKU_BENCH=OFF >/dev/null
targets=()
if [[ -n "${FUZZ_TARGETS:-}" ]]; then
  read -r -a targets <<<"$FUZZ_TARGETS"
else
  for src in test/fuzz/*_fuzz.cpp; do
    name="$(basename "$src" .cpp)"
    targets+=("${name%_fuzz}")
  done
fi
cmake --build "$build" -j "${JOBS:-$(nproc)}" --target "${targets[@]/%/_fuzz}"

# Parsers must not leak, and UBSan findings must stop the run with a stack.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:symbolize=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"

status=0
summary=()
for t in "${targets[@]}"; do
  bin="$build/test/fuzz/${t}_fuzz"
  corpus="$build/fuzz-corpus/$t"
  artifacts="$build/fuzz-artifacts/$t"
  log="$build/fuzz-logs/$t.log"
  scratch="$build/fuzz-tmp/$t"
  rm -rf "$corpus" "$artifacts" "$scratch"
  mkdir -p "$corpus" "$artifacts" "$scratch" "$(dirname "$log")"
  if [[ -d "test/fuzz/corpus/$t" ]]; then
    cp test/fuzz/corpus/"$t"/* "$corpus"/
  fi
  if [[ -d "test/fuzz/regressions/$t" ]]; then
    cp test/fuzz/regressions/"$t"/* "$corpus"/
  fi

  echo "== fuzzing $t for ${seconds}s"
  rc=0
  # TMPDIR: the spool target's segment files go there, not to /tmp.
  TMPDIR="$PWD/$scratch" timeout --signal=KILL "$((seconds + 120))" \
    "$bin" -max_total_time="$seconds" -max_len="$(max_len "$t")" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$artifacts/" "$corpus" >"$log" 2>&1 || rc=$?

  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
  crashes="$(find "$artifacts" -type f | wc -l)"
  if [[ $rc -ne 0 && $crashes -eq 0 ]]; then crashes=1; fi  # killed, or died without an artifact
  line="$(printf '%-12s executions %10s   crashes %s' "$t" "${execs:-?}" "$crashes")"
  summary+=("$line")
  echo "$line"
  if [[ $crashes -ne 0 ]]; then
    status=1
    echo "-- $t failed (exit $rc); what broke, then the end of $log:"
    grep -m 5 -E 'invariant broken|runtime error|ERROR: (Address|Leak)Sanitizer|ERROR: libFuzzer' \
      "$log" || true
    grep -v '^#[0-9]' "$log" | tail -n 40
    for a in "$artifacts"/*; do
      [[ -f "$a" ]] || continue
      echo "-- input: $a  (replay: $bin $a)"
    done
  fi
  rm -rf "$scratch"
done

echo "== fuzz summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
echo "New interesting inputs are in $build/fuzz-corpus/TARGET. To add the useful ones to the"
echo "seed corpus, minimised:"
echo "  $build/test/fuzz/TARGET_fuzz -merge=1 test/fuzz/corpus/TARGET $build/fuzz-corpus/TARGET"
echo "A crash input, once fixed, goes to test/fuzz/regressions/TARGET/ (regressions_test.cpp replays it)."
exit $status
