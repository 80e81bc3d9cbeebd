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
# Mount everything in a private mount namespace: a namespace someone else
# creates meanwhile would otherwise get a copy of our FUSE mounts and keep
# their daemons connected after we unmount them (and nobody else sees our
# scratch mounts either).
if [ "$(id -u)" = 0 ] && [ -z "${STRATA_BENCH_NO_UNSHARE:-}" ] &&
	command -v unshare >/dev/null 2>&1 && unshare --mount --propagation private true 2>/dev/null; then
	exec unshare --mount --propagation private "$py" "$here/bench.py" "$@"
fi
exec "$py" "$here/bench.py" "$@"
