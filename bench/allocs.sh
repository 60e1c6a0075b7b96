#!/usr/bin/env bash
# allocs.sh - heap allocation calls per ingested request, counted by heaptrack
# over the whole process (every thread, start-up and stop included).
#
#   bench/allocs.sh [SECONDS] [SINKS]
#
# For each sink (SINKS: "sqlite", "mariadb" or "sqlite mariadb"; MariaDB needs
# scripts/with-mariadb.sh), each durability (none, process, fsync) and 1 and 2
# IO threads: starts `kiroku serve` under heaptrack, runs `wrk -t1 -c64
# -dSECONDS` on GET /?name=alloc&value=1 (keep-alive), stops kiroku with
# SIGTERM (graceful) and prints heaptrack's count of allocation calls divided
# by the requests wrk completed, and the three call sites that allocate most
# often (heaptrack records no thread: the site tells whose they are). Prints a
# Markdown table. Needs heaptrack, wrk, curl (scripts/setup.sh) and build/kiroku.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/lib.sh
secs="${1:-5}"
sinks="${2:-sqlite}"

work=$(mktemp -d /tmp/kiroku-allocs-XXXXXX)
trap 'bench_cleanup; [[ -n "${KEEP:-}" ]] || rm -rf "$work"' EXIT

printf '| sink | durability | IO threads | requests | allocation calls | calls / request | most calls from |\n'
printf '|---|---|---|---|---|---|---|\n'
for kind in $sinks; do
  for durability in none process fsync; do
    for threads in 1 2; do
      run="$work/$kind-$durability-$threads"
      mkdir -p "$run"
      case "$kind" in
        sqlite) sink="sqlite://$run/events.db" ;;
        mariadb)
          [[ -n "${KIROKU_TEST_MYSQL_URL:-}" ]] || bench_die "mariadb needs scripts/with-mariadb.sh"
          sink="$KIROKU_TEST_MYSQL_URL" ;;
        *) bench_die "unknown sink $kind" ;;
      esac
      port=$(free_port)
      heaptrack -o "$run/heap" "$KIROKU_BIN" serve --listen "127.0.0.1:$port" --threads "$threads" \
        --sink "$sink" --table "allocs_${durability}_$threads" --durability "$durability" \
        --spool-dir "$run/spool" --log-level warn > "$run/heaptrack.log" 2>&1 &
      wrapper=$!
      bench_pids+=("$wrapper")
      up=0
      for _ in $(seq 1 300); do
        if curl -fs -o /dev/null --max-time 1 "http://127.0.0.1:$port/healthz" 2>/dev/null; then up=1; break; fi
        sleep 0.1
      done
      [[ $up -eq 1 ]] || { cat "$run/heaptrack.log" >&2; bench_die "kiroku did not start under heaptrack"; }
      summary=$(wrk -t1 -c64 -d"${secs}s" "http://127.0.0.1:$port/?name=alloc&value=1" | wrk_summary)
      read -r _ done_requests bad errors <<< "$summary"
      [[ "$bad" -eq 0 && "$errors" -eq 0 ]] || bench_die "$kind $durability: $bad non-2xx, $errors socket errors"
      # The server itself (heaptrack's wrapper is its parent), gracefully.
      server=$(pgrep -f -- "--listen 127.0.0.1:$port" | grep -v "^$wrapper\$" | while read -r p; do
        [[ "$(cat "/proc/$p/comm" 2>/dev/null)" == kiroku* ]] && echo "$p"; done | head -n 1)
      [[ -n "$server" ]] || bench_die "no kiroku process on port $port"
      kill -TERM "$server"
      wait "$wrapper" || true
      forget_pid "$wrapper"
      data=$(ls "$run"/heap.* | head -n 1)
      heaptrack_print -f "$data" -n 3 -p 0 -a 1 -T 0 -l 0 -s 0 > "$run/print.txt" 2>/dev/null || true
      calls=$(awk -F': ' '/^calls to allocation functions/ {split($2, a, " "); print a[1]}' "$run/print.txt")
      # The three sites: their call counts and the first frame in kiroku or a library.
      top=$(awk '/^MOST CALLS TO ALLOCATION FUNCTIONS/ {on = 1; next}
               on && /calls to allocation functions with/ {n = $1; getline; site = $0
                 if (site ~ /^0x/) { getline; site = $0 }
                 sub(/^ +(in|at) /, "", site); sub(/\(.*$/, "", site); printf "%s %s; ", n, site; if (++k == 3) exit}' \
            "$run/print.txt" | cut -c1-160)
      awk -v k="$kind" -v d="$durability" -v t="$threads" -v r="$done_requests" -v c="$calls" -v top="$top" '
        BEGIN { printf "| %s | %s | %d | %d | %d | %.3f | %s |\n", k, d, t, r, c, c / r, top }'
    done
  done
done
