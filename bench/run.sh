#!/bin/sh
# Entry point of the benchmark suite: `make bench`, `strata bench` and
# `sh bench/run.sh BUILDDIR [--quick] [options]` all end up here.
# The orchestration is Python (stdlib only); see bench/README.md.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
# Prefer the system interpreter: the suite needs nothing beyond the stdlib,
# and a per-user interpreter shim may not exist for root.
py=/usr/bin/python3
[ -x "$py" ] || py=$(command -v python3 || true)
if [ -z "$py" ]; then
	echo "bench: python3 is required; run 'make setup' (it installs python3) and retry" >&2
	exit 1
fi
exec "$py" "$here/bench.py" "$@"
