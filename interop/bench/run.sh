#!/bin/bash
# interop/bench/run.sh: builds hanfs-bench and hanfs-server (release), then, for each server in
# turn (hanfs, then nfs-ganesha), creates a private network namespace, starts the server in it on
# the namespace's address with a fresh temp export, runs hanfs-bench inside the namespace against
# it, and tears everything down. Prints a table: metric, hanfs, ganesha, ratio hanfs/ganesha and
# which direction is better. See interop/bench/README.md.
# Reuses interop/lib (packages, namespace, server start/stop). Needs root.
# Exit status: 0 both runs complete, 1 a workload failed, 2 harness error.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
INTEROP=$(dirname "$BENCH_DIR")
REPO=$(dirname "$INTEROP")
CACHE=$INTEROP/.cache

usage() {
    cat <<USAGE
usage: interop/bench/run.sh [--servers hanfs,ganesha] [--rounds N] [--keep] [-- HANFS_BENCH_ARGS...]
  --servers LIST   which servers to measure (default: hanfs,ganesha)
  --rounds N       measure each server N times, alternating the order each round; the table
                   shows the median over rounds (default 3, at most 20)
  --keep           keep the exports and logs under interop/.cache/bench/RUN_ID
  -- ARGS          passed to hanfs-bench (e.g. -- --creates 500 --file-mib 16, or -- --only locks
                   for the NLM lock/unlock workload alone); see hanfs-bench --help
USAGE
}

SERVERS=hanfs,ganesha ROUNDS=3 KEEP= BENCH_ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
    --servers) SERVERS=${2:-}; shift 2 ;;
    --rounds) ROUNDS=${2:-}; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --) shift; BENCH_ARGS=("$@"); break ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done
SERVER_LIST=()
IFS=, read -r -a SERVER_LIST <<< "$SERVERS"
for s in "${SERVER_LIST[@]}"; do
    case "$s" in hanfs|ganesha) ;; *) usage >&2; exit 2 ;; esac
done
[ "${#SERVER_LIST[@]}" -gt 0 ] || { usage >&2; exit 2; }
# Bound on --rounds.
ROUNDS_MAX=20
[[ "$ROUNDS" =~ ^[0-9]+$ ]] && [ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le "$ROUNDS_MAX" ] || { usage >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "interop/bench/run.sh must run as root (namespaces)" >&2; exit 2; }

source "$INTEROP/lib/prepare.sh"   # log, die, need_packages, prepare_hanfs, GANESHA_PACKAGES
source "$INTEROP/lib/net.sh"       # net_up, net_down, SERVER_IP
source "$INTEROP/lib/servers.sh"   # server_start, server_stop

# Bound on one hanfs-bench run (its own workloads have deadlines too), seconds.
BENCH_SECONDS_MAX=1200
# The table: metric, field, which direction is better.
TABLE_ROWS=(
    "create_latency_us p50 lower"
    "create_latency_us p90 lower"
    "create_latency_us p99 lower"
    "remove_latency_us p50 lower"
    "lookup_latency_us p50 lower"
    "lookup_latency_us p99 lower"
    "readdirplus_listing_us p50 lower"
    "getattr_ops_per_s value higher"
    "getattr_ops_per_s p50_us lower"
    "write_mib_per_s value higher"
    "read_mib_per_s value higher"
    "nlm_pairs_per_s value higher"
    "nlm_pairs_per_s p50_us lower"
    "nlm_pairs_per_s p99_us lower"
    "nlm_pairs_concurrent_per_s value higher"
    "nlm_pairs_concurrent_per_s p50_us lower"
    "nlm_pairs_concurrent_per_s p99_us lower"
)

RUN_ID="$(date -u +%Y%m%d-%H%M%S)-$$"
BASE=$CACHE/bench/$RUN_ID
BENCH_PID=

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$BENCH_PID" ]; then kill -KILL "$BENCH_PID" 2>/dev/null || true; wait "$BENCH_PID" 2>/dev/null || true; fi
    server_stop
    net_down
    if [ -z "$KEEP" ] && [ -d "$BASE" ]; then
        # Keep the metrics and logs, drop the exports (they can hold a 64 MiB file).
        local k
        find "$BASE" -mindepth 3 -maxdepth 3 \( -name export -o -name server-state \) -type d -exec rm -rf {} + 2>/dev/null || true
    fi
    [ -d "$BASE" ] && log "metrics and logs: $BASE"
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

need_packages nfs-common rpcbind
for s in "${SERVER_LIST[@]}"; do [ "$s" = ganesha ] && need_packages $GANESHA_PACKAGES; done
# Always the production build: ./test.sh builds target/release with the test-only
# feature hanfs-state/invariants (a full state walk after every apply), which a
# staleness check cannot see and which makes every commit O(state). Cargo
# rebuilds only what the feature change touches.
if printf '%s\n' "${SERVER_LIST[@]}" | grep -qx hanfs; then
    log "building hanfs-server without test features (cargo build --release -p hanfs-cli)"
    (cd "$REPO" && cargo build --release -q --locked -p hanfs-cli) || die "cargo build of hanfs-server failed"
    HANFS_BIN="$REPO/target/release/hanfs-server"
fi
log "building hanfs-bench (cargo build --release -p hanfs-bench)"
(cd "$REPO" && cargo build --release -q -p hanfs-bench) || die "cargo build of hanfs-bench failed"
BENCH_BIN=$REPO/target/release/hanfs-bench
[ -x "$BENCH_BIN" ] || die "$BENCH_BIN missing after build"

# bench_one KIND ROUND: namespace up, server up, bench, server down, namespace down.
# Writes $BASE/KIND/rROUND/metrics.txt; returns hanfs-bench's exit status.
bench_one() {
    SERVER_KIND=$1
    RUN=$BASE/$SERVER_KIND/r$2
    LOGDIR=$RUN/logs
    mkdir -p "$LOGDIR"
    net_up
    RUST_LOG=${RUST_LOG:-warn} server_start
    log "round $2: running hanfs-bench against $SERVER_KIND at $SERVER_IP (namespace $NS)"
    local rc=0
    ip netns exec "$NS" timeout -s KILL "$BENCH_SECONDS_MAX" "$BENCH_BIN" --server "$SERVER_IP" "${BENCH_ARGS[@]}" \
        > "$RUN/metrics.txt" 2> "$LOGDIR/bench.stderr" < /dev/null &
    BENCH_PID=$!
    wait "$BENCH_PID" || rc=$?
    BENCH_PID=
    [ "$rc" = 0 ] || { log "hanfs-bench against $SERVER_KIND exited $rc:"; tail -n 5 "$LOGDIR/bench.stderr" >&2; }
    server_stop
    net_down
    return "$rc"
}

# field KIND METRIC KEY: the median over rounds of KEY on METRIC's line, or "-" if no round has it.
field() {
    local f
    for f in "$BASE/$1"/r*/metrics.txt; do
        [ -f "$f" ] || continue
        awk -v m="metric=$2" -v k="$3" '
            $1 == m { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) { print kv[2]; exit } } }' "$f"
    done | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else print v[int((NR + 1) / 2)] }'
}

print_table() {
    local row metric key better hv gv ratio winner
    printf '%-34s %12s %12s %8s  %-7s %s\n' metric hanfs ganesha ratio better winner
    for row in "${TABLE_ROWS[@]}"; do
        read -r metric key better <<< "$row"
        hv=$(field hanfs "$metric" "$key")
        gv=$(field ganesha "$metric" "$key")
        read -r ratio winner < <(awk -v a="$hv" -v b="$gv" -v dir="$better" 'BEGIN {
            if (a == "-" || b == "-" || b + 0 == 0) { print "- -"; exit }
            r = a / b
            w = (dir == "lower") ? (r < 1 ? "hanfs" : "ganesha") : (r > 1 ? "hanfs" : "ganesha")
            if (r == 1) w = "tie"
            printf "%.2f %s\n", r, w }')
        printf '%-34s %12s %12s %8s  %-7s %s\n' "$metric.$key" "$hv" "$gv" "$ratio" "$better" "$winner"
    done
}

STATUS=0
for ((round = 1; round <= ROUNDS; round++)); do
    # Alternate the order so neither server always runs on the warmer (or busier) machine.
    order=("${SERVER_LIST[@]}")
    if [ $((round % 2)) = 0 ]; then
        order=()
        for ((i = ${#SERVER_LIST[@]} - 1; i >= 0; i--)); do order+=("${SERVER_LIST[$i]}"); done
    fi
    for s in "${order[@]}"; do
        bench_one "$s" "$round" || STATUS=1
    done
done

{
    echo "# hanfs-bench $(date -u +%FT%TZ), $(nproc) cores, median of $ROUNDS round(s); ratio = hanfs/ganesha; 'better' says which direction wins"
    print_table
    for s in "${SERVER_LIST[@]}"; do
        for ((round = 1; round <= ROUNDS; round++)); do
            echo "# $s round $round:"
            sed 's/^/#   /' "$BASE/$s/r$round/metrics.txt" 2>/dev/null || true
        done
    done
} | tee "$BASE/table.txt"
exit "$STATUS"
