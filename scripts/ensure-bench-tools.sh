#!/usr/bin/env bash
# wrk (Debian's package) generates the HTTP load for `make bench`; without it the bench falls back to its
# own, slower Python generator and says so in the report.
set -euo pipefail
if command -v wrk >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "wrk is missing; install it with: sudo apt-get install -y wrk (the bench uses its Python generator meanwhile)" >&2
  exit 0
fi
echo "installing Debian's wrk for the benchmarks"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
