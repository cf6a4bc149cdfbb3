#!/usr/bin/env bash
# Runs kmsfs's end-to-end benchmarks (what "make bench" calls). Options go
# to the harness: see "bash tests/bench/run.sh --help"; "--quick" is a
# short run. Needs root; writes docs/PERFORMANCE.md and docs/performance.png.
set -euo pipefail

cd "$(dirname "$0")/../.."
bindir=$(mktemp -d "${TMPDIR:-/tmp}/kmsfs-bench-harness.XXXXXX")
trap 'rm -rf "$bindir"' EXIT
go build -o "$bindir/harness" ./tests/bench/harness

# Run the harness in the background and forward INT/TERM/HUP to it, so
# that it always gets to unmount what it mounted.
"$bindir/harness" "$@" </dev/null &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null || true' INT TERM HUP
status=0
while :; do
	wait "$pid" && status=0 || status=$?
	kill -0 "$pid" 2>/dev/null || break
done
exit "$status"
