#!/usr/bin/env bash
# setup.sh - installs what kiroku needs to build, test and benchmark on a bare
# Debian 12 machine (as root), then configures and builds it.
#
#   scripts/setup.sh [BUILD_DIR] [extra cmake args...]
#
# Idempotent: packages already installed are skipped by apt, and the build is
# incremental (Ninja, ccache).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

packages=(
  build-essential cmake ninja-build ccache pkg-config git ca-certificates
  libboost1.81-dev libsimdjson-dev libcli11-dev libtomlplusplus-dev libspdlog-dev libfmt-dev
  nlohmann-json3-dev libsqlite3-dev sqlite3 libmariadb-dev mariadb-server mariadb-client
  libpq-dev postgresql-15
  libcurl4-openssl-dev libssl-dev libpugixml-dev libgoogle-perftools-dev google-perftools
  libgtest-dev libgmock-dev libbenchmark-dev
  curl wrk nginx haproxy python3 procps time chromium clang libclang-rt-14-dev gnuplot-nox
  ceph-mon ceph-osd radosgw awscli clickhouse-server clickhouse-client
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js and npm run the S3 test server; keep a newer one if the machine has it.
if ! command -v node >/dev/null 2>&1; then missing+=(nodejs); fi
if ! command -v npm >/dev/null 2>&1; then missing+=(npm); fi
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # The packaged services are started by the scripts that need them, in
  # temporary directories, not by the package manager.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

build_dir="${1:-build}"
shift || true
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
cmake --build "$build_dir"
