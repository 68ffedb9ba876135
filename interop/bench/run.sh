#!/bin/bash
# interop/bench/run.sh: builds hanfs-bench and hanfs-server (release), then, in ONE run and for
# each round (the order alternates between rounds), measures each setup alone in a private
# network namespace of its own with a fresh export on this machine's disk:
#   hanfs       hanfs single node, `async` export        (interop/bench/hanfs.sh)
#   hanfs-sync  hanfs single node, `sync` export         (interop/bench/hanfs.sh)
#   cluster     hanfs three nodes (2 storage + witness), `async` export (interop/bench/hanfs.sh)
#   ganesha     nfs-ganesha, VFS FSAL                    (interop/lib/servers.sh)
# Per setup: `dd conv=fdatasync` of a file as large as the bench's on the empty export (the disk's
# own rate), start, hanfs-bench inside the namespace against $SERVER_IP, stop. Per round also
# `hanfs-bench probe` (fs syscalls, 4 KiB append + fdatasync on the same filesystem, TCP round
# trip between the cluster's peer addresses) for the physical budget. Prints one table: every
# metric per setup (median over rounds) and the ratios hanfs/ganesha, hanfs-sync/ganesha and
# cluster/hanfs. See interop/bench/README.md. Needs root.
# Exit status: 0 every run complete, 1 a workload failed, 2 harness error.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
INTEROP=$(dirname "$BENCH_DIR")
REPO=$(dirname "$INTEROP")
CACHE=$INTEROP/.cache

usage() {
    cat <<USAGE
usage: interop/bench/run.sh [--servers hanfs,hanfs-sync,cluster,ganesha] [--rounds N] [--keep] [-- HANFS_BENCH_ARGS...]
  --servers LIST   which setups to measure (default: all four; a missing one shows "-")
  --rounds N       measure each server N times, alternating the order each round; the table
                   shows the median over rounds (default 3, at most 20)
  --keep           keep the exports and logs under interop/.cache/bench/RUN_ID
  -- ARGS          passed to hanfs-bench (e.g. -- --creates 500 --file-mib 16, or -- --only locks
                   for the NLM lock/unlock workload alone); see hanfs-bench --help
USAGE
}

SERVERS=hanfs,hanfs-sync,cluster,ganesha ROUNDS=3 KEEP= BENCH_ARGS=()
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
    case "$s" in hanfs|hanfs-sync|cluster|ganesha) ;; *) usage >&2; exit 2 ;; esac
done
[ "${#SERVER_LIST[@]}" -gt 0 ] || { usage >&2; exit 2; }
# Bound on --rounds.
ROUNDS_MAX=20
[[ "$ROUNDS" =~ ^[0-9]+$ ]] && [ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le "$ROUNDS_MAX" ] || { usage >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "interop/bench/run.sh must run as root (namespaces)" >&2; exit 2; }

source "$INTEROP/lib/prepare.sh"   # log, die, need_packages, prepare_hanfs, GANESHA_PACKAGES
source "$INTEROP/lib/net.sh"       # net_up, net_down, SERVER_IP
source "$INTEROP/lib/servers.sh"   # server_start, server_stop (ganesha)
source "$BENCH_DIR/hanfs.sh"         # hanfs_start, hanfs_stop, CLUSTER_PEER_IPS

# Bound on one hanfs-bench run (its own workloads have deadlines too), seconds.
BENCH_SECONDS_MAX=1200
# The workloads run.sh selects unless the arguments after -- say otherwise (later wins).
DEFAULT_ONLY=create,lookup,readdirplus,getattr,io
# The table: metric, field, which direction is better, the probe's budget field (or -).
TABLE_ROWS=(
    "create_latency_us p50 lower create"
    "create_latency_us p99 lower -"
    "remove_latency_us p50 lower remove"
    "remove_latency_us p99 lower -"
    "rename_latency_us p50 lower rename"
    "rename_latency_us p99 lower -"
    "setattr_latency_us p50 lower -"
    "setattr_latency_us p99 lower -"
    "lookup_latency_us p50 lower -"
    "lookup_latency_us p99 lower -"
    "getattr_latency_us p50 lower -"
    "getattr_latency_us p99 lower -"
    "readdirplus_latency_us p50 lower -"
    "readdirplus_latency_us p99 lower -"
    "readdirplus_listing_us p50 lower -"
    "create_ops_per_s value higher -"
    "create_ops_per_s p50_us lower -"
    "create_ops_per_s p99_us lower -"
    "remove_ops_per_s value higher -"
    "remove_ops_per_s p50_us lower -"
    "remove_ops_per_s p99_us lower -"
    "rename_ops_per_s value higher -"
    "rename_ops_per_s p50_us lower -"
    "rename_ops_per_s p99_us lower -"
    "setattr_ops_per_s value higher -"
    "setattr_ops_per_s p50_us lower -"
    "setattr_ops_per_s p99_us lower -"
    "lookup_ops_per_s value higher -"
    "lookup_ops_per_s p50_us lower -"
    "lookup_ops_per_s p99_us lower -"
    "getattr_ops_per_s value higher -"
    "getattr_ops_per_s p50_us lower -"
    "getattr_ops_per_s p99_us lower -"
    "readdirplus_ops_per_s value higher -"
    "readdirplus_ops_per_s p50_us lower -"
    "readdirplus_ops_per_s p99_us lower -"
    "write_mib_per_s value higher -"
    "disk_dd_mib_per_s value higher -"
    "write_vs_disk value higher -"
    "read_mib_per_s value higher -"
    "read_cold_mib_per_s value higher -"
    "write_inflight_mib_per_s value higher -"
    "write_inflight_vs_disk value higher -"
    "read_inflight_mib_per_s value higher -"
    "read_cold_inflight_mib_per_s value higher -"
    "nlm_pairs_per_s value higher -"
    "nlm_pairs_per_s p50_us lower -"
    "nlm_pairs_concurrent_per_s value higher -"
    "nlm_pairs_concurrent_per_s p50_us lower -"
)
# The probe's lines, printed under the table: metric, field.
PROBE_ROWS=(
    "fs_syscall_us create" "fs_syscall_us remove" "fs_syscall_us rename"
    "fdatasync_4k_us p50" "fdatasync_4k_us p99" "peer_rtt_us p50" "peer_rtt_us p99"
    "budget_us create" "budget_us remove" "budget_us rename"
)

RUN_ID="$(date -u +%Y%m%d-%H%M%S)-$$"
BASE=$CACHE/bench/$RUN_ID
BENCH_PID=

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$BENCH_PID" ]; then kill -KILL "$BENCH_PID" 2>/dev/null || true; wait "$BENCH_PID" 2>/dev/null || true; fi
    server_stop
    hanfs_stop
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
if printf '%s\n' "${SERVER_LIST[@]}" | grep -qv '^ganesha$'; then
    log "building hanfs-server without test features (cargo build --release -p hanfs-cli)"
    (cd "$REPO" && cargo build --release -q --locked -p hanfs-cli) || die "cargo build of hanfs-server failed"
    HANFS_BIN="$REPO/target/release/hanfs-server"
fi
log "building hanfs-bench (cargo build --release -p hanfs-bench)"
(cd "$REPO" && cargo build --release -q -p hanfs-bench) || die "cargo build of hanfs-bench failed"
BENCH_BIN=$REPO/target/release/hanfs-bench
[ -x "$BENCH_BIN" ] || die "$BENCH_BIN missing after build"

# The file size hanfs-bench writes (its --file-mib, default 64), for the dd reference.
FILE_MIB=64
for ((i = 0; i < ${#BENCH_ARGS[@]}; i++)); do
    [ "${BENCH_ARGS[$i]}" = --file-mib ] && FILE_MIB=${BENCH_ARGS[$((i + 1))]:-64}
done
[[ "$FILE_MIB" =~ ^[0-9]+$ ]] && [ "$FILE_MIB" -ge 1 ] || die "bad --file-mib $FILE_MIB"

# disk_rate DIR: `metric=disk_dd_mib_per_s` from dd conv=fdatasync of FILE_MIB MiB in DIR.
disk_rate() {
    local out
    out=$(LC_ALL=C dd if=/dev/zero of="$1/ddtest" bs=1M count="$FILE_MIB" conv=fdatasync 2>&1 | tail -n 1) || die "dd failed"
    rm -f "$1/ddtest"
    # "67108864 bytes (67 MB, 64 MiB) copied, 0.292 s, 230 MB/s"
    awk -v s="$out" 'BEGIN { n = split(s, w, " "); for (i = 1; i <= n; i++) if (w[i] == "s,") secs = w[i - 1];
        if (secs > 0) printf "metric=disk_dd_mib_per_s value=%.2f bytes=%d seconds=%s\n", w[1] / 1048576 / secs, w[1], secs;
        else print "metric=disk_dd_mib_per_s error=unparsed" }'
}

# probe_one ROUND: hanfs-bench probe in a namespace of its own, on the exports' filesystem.
probe_one() {
    RUN=$BASE/probe/r$1
    mkdir -p "$RUN/dir"
    net_up
    ip netns exec "$NS" timeout -s KILL 300 "$BENCH_BIN" probe --dir "$RUN/dir" \
        --peer "${CLUSTER_PEER_IPS[0]}" --peer-from "${CLUSTER_PEER_IPS[1]}" > "$RUN/metrics.txt" 2> "$RUN/probe.stderr" \
        || { net_down; cat "$RUN/probe.stderr" >&2; return 1; }
    net_down
    rmdir "$RUN/dir" 2>/dev/null || true
}

# bench_one KIND ROUND: namespace up, dd, server up, bench, server down, namespace down.
# Writes $BASE/KIND/rROUND/metrics.txt; returns hanfs-bench's exit status.
bench_one() {
    SERVER_KIND=$1
    RUN=$BASE/$SERVER_KIND/r$2
    LOGDIR=$RUN/logs
    EXPORT_DIR=$RUN/export
    mkdir -p "$LOGDIR" "$EXPORT_DIR"
    disk_rate "$EXPORT_DIR" > "$RUN/disk.txt"
    net_up
    if [ "$SERVER_KIND" = ganesha ]; then
        server_start
    else
        hanfs_start "$SERVER_KIND"
    fi
    log "round $2: running hanfs-bench against $SERVER_KIND at $SERVER_IP (namespace $NS)"
    local rc=0
    ip netns exec "$NS" timeout -s KILL "$BENCH_SECONDS_MAX" "$BENCH_BIN" --server "$SERVER_IP" \
        --server-dir "$EXPORT_DIR" --only "$DEFAULT_ONLY" "${BENCH_ARGS[@]}" \
        > "$RUN/metrics.txt" 2> "$LOGDIR/bench.stderr" < /dev/null &
    BENCH_PID=$!
    wait "$BENCH_PID" || rc=$?
    BENCH_PID=
    [ "$rc" = 0 ] || { log "hanfs-bench against $SERVER_KIND exited $rc:"; tail -n 5 "$LOGDIR/bench.stderr" >&2; }
    if [ "$SERVER_KIND" = ganesha ]; then server_stop; else hanfs_stop; fi
    net_down
    cat "$RUN/disk.txt" >> "$RUN/metrics.txt"
    # The WRITE+COMMIT rates (one and --inflight in flight) against the disk's own, all from this round.
    awk '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "value") v[$1] = kv[2] } }
         END { d = v["metric=disk_dd_mib_per_s"]; w = v["metric=write_mib_per_s"];
               wi = v["metric=write_inflight_mib_per_s"];
               if (w > 0 && d > 0) printf "metric=write_vs_disk value=%.2f\n", w / d;
               if (wi > 0 && d > 0) printf "metric=write_inflight_vs_disk value=%.2f\n", wi / d }' \
        "$RUN/metrics.txt" >> "$RUN/metrics.txt"
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

# ratio A B BETTER: A/B with two decimals, or "-".
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f\n", a / b }'
}

print_table() {
    local row metric key better budget h s c g
    printf '%-34s %10s %10s %10s %10s %9s %9s %9s  %-6s %s\n' metric hanfs hanfs-sync cluster ganesha \
        hanfs/gan sync/gan clus/hanfs better budget
    for row in "${TABLE_ROWS[@]}"; do
        read -r metric key better budget <<< "$row"
        h=$(field hanfs "$metric" "$key") s=$(field hanfs-sync "$metric" "$key")
        c=$(field cluster "$metric" "$key") g=$(field ganesha "$metric" "$key")
        [ "$h$s$c$g" = "----" ] && continue
        [ "$budget" = - ] || budget=$(field probe budget_us "$budget")
        [ "$budget" = - ] && budget=
        printf '%-34s %10s %10s %10s %10s %9s %9s %9s  %-6s %s\n' "$metric.$key" "$h" "$s" "$c" "$g" \
            "$(ratio "$h" "$g")" "$(ratio "$s" "$g")" "$(ratio "$c" "$h")" "$better" "$budget"
    done
    local f
    for f in "$BASE"/*/r*/metrics.txt; do
        grep -q 'error=' "$f" || continue
        f=${f#"$BASE"/}
        grep 'error=' "$BASE/$f" | sed "s|^|# error in ${f%/metrics.txt}: |"
    done
    echo "# physical budget (hanfs-bench probe, median over rounds, us): budget = fs syscall + fdatasync + rtt + 100"
    for row in "${PROBE_ROWS[@]}"; do
        read -r metric key <<< "$row"
        printf '#   %-30s %10s\n' "$metric.$key" "$(field probe "$metric" "$key")"
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
    probe_one "$round" || STATUS=1
    for s in "${order[@]}"; do
        bench_one "$s" "$round" || STATUS=1
    done
done

{
    echo "# hanfs-bench $(date -u +%FT%TZ), $(nproc) cores, median of $ROUNDS round(s); ratios of the medians; 'better' says which direction wins"
    print_table
    for s in probe "${SERVER_LIST[@]}"; do
        for ((round = 1; round <= ROUNDS; round++)); do
            echo "# $s round $round:"
            sed 's/^/#   /' "$BASE/$s/r$round/metrics.txt" 2>/dev/null || true
        done
    done
} | tee "$BASE/table.txt"
exit "$STATUS"
