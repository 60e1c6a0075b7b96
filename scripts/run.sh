#!/usr/bin/env bash
# run.sh - sets everything up on a bare Debian 12 machine and runs
# `kiroku serve` on its defaults (127.0.0.1:8080, SQLite in ./kiroku-data).
# Extra arguments go to `kiroku serve`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh build -DKIROKU_TESTS=OFF -DKIROKU_BENCH=OFF
exec build/kiroku serve "$@"
