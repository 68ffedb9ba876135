#!/bin/bash
# interop/loadflap.sh: no false failover under load, the long version (issue 11 item 1; not CI).
# Runs the cluster test tests/cluster/load.rs for --seconds (default 1800: 30 minutes): three real
# hanfs-server processes on loopback (storage 1 and 2, witness 3), a CPU hog on every core
# (`stress-ng --cpu 4` when installed, else the test's own 4 spinning threads), 4 NFS clients
# creating files and reading their attributes back, snapshots every 500 entries plus a forced one
# every 10 s. Every node stays alive, so every demotion is a false failover.
# Prints the summary line, every demotion with its reason (the nodes' `demoted` and `leadership
# lost` lines), and how close the run came (`lease nearly expired`, slow Raft fsyncs).
# Exit 0 with no demotion, 1 with any, 2 on a harness error. No QEMU, no root needed beyond what
# the cluster tests need (loopback addresses 127.77.x.y).
set -euo pipefail

INTEROP=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$INTEROP")

usage() {
    cat <<USAGE
usage: interop/loadflap.sh [--seconds N] [--release] [--log FILE]
  --seconds N   how long the load runs, default 1800 (1..7200)
  --release     build and run the release profile (default: debug, like CI)
  --log FILE    keep the full test output there (default interop/.cache/loadflap-<time>.log)
USAGE
}

SECONDS_RUN=1800 PROFILE=() LOG=
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) SECONDS_RUN=${2:?}; shift 2 ;;
        --release) PROFILE=(--release); shift ;;
        --log) LOG=${2:?}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done
case "$SECONDS_RUN" in ''|*[!0-9]*) echo "--seconds wants a number" >&2; exit 2 ;; esac
if [ -z "$LOG" ]; then
    mkdir -p "$INTEROP/.cache"
    LOG=$INTEROP/.cache/loadflap-$(date -u +%Y%m%dT%H%M%SZ).log
fi

HOG_PID=
cleanup() {
    if [ -n "$HOG_PID" ]; then kill "$HOG_PID" 2>/dev/null || true; wait "$HOG_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT

export HANFS_LOADFLAP_SECS=$SECONDS_RUN
if command -v stress-ng >/dev/null 2>&1; then
    # Build first, so the hog does not slow the compiler.
    (cd "$REPO" && cargo test "${PROFILE[@]}" -p hanfs-tests --test integration --no-run) >/dev/null 2>&1 || {
        echo "build failed" >&2; exit 2; }
    stress-ng --cpu 4 --timeout "$((SECONDS_RUN + 120))s" --quiet &
    HOG_PID=$!
    export HANFS_LOADFLAP_OWN_HOG=0
    echo "CPU hog: stress-ng --cpu 4 (pid $HOG_PID)"
else
    echo "CPU hog: the test's own 4 spinning threads (stress-ng is not installed)"
fi

echo "running the load for $SECONDS_RUN s; full output in $LOG"
set +e
(cd "$REPO" && cargo test "${PROFILE[@]}" -p hanfs-tests --test integration \
    cluster::load::cluster_keeps_its_active_under_cpu_hog_nfs_load_and_snapshot_builds -- --exact --nocapture) \
    >"$LOG" 2>&1
status=$?
set -e

summary=$(grep -m1 '^load for' "$LOG" || true)
if [ -z "$summary" ]; then
    echo "the test did not get to its summary (exit $status); see $LOG" >&2
    tail -n 40 "$LOG" >&2
    exit 2
fi
echo "$summary"
echo "-- demotions (with reasons):"
grep -E '^node [0-9]+: .*(demoted|leadership lost)' "$LOG" | sort -u || echo "none"
echo "-- near misses:"
echo "lease nearly expired: $(grep -cE '^node [0-9]+: .*lease nearly expired' "$LOG" || true)"
grep -E '^node [0-9]+: .*lease nearly expired' "$LOG" | sed 's/^/  /' | head -n 20 || true
echo "slow raft fsync reports: $(grep -cE '^node [0-9]+: .*slow raft log writes' "$LOG" || true)"
if grep -qE '^node [0-9]+: .*demoted' "$LOG"; then
    exit 1
fi
[ "$status" -eq 0 ] || { echo "the test failed without a demotion (exit $status); see $LOG" >&2; exit 2; }
exit 0
