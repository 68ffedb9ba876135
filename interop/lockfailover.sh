#!/bin/bash
# interop/lockfailover.sh: NLM locks of the real Linux kernel client across kill -9 of the active
# hanfs node (issue 9). In the harness's private namespace: the three-node cluster of
# lib/failover.sh (VIP 10.99.0.100), guests A (guesta) and B (guestb) mounting VIP:/export with a
# plain `mount -t nfs` (locking on). Checks:
#   a. A holds a write lock; B's F_SETLK is refused; the active is killed -9 (asked for by B through
#      a flag file on the 9p sync share); after the new active serves, B's F_SETLK is still
#      refused and F_GETLK reports A's range; B's F_SETLKW blocks; A unlocks; B is granted through
#      the server's GRANTED callback (B's lockd debug log) within a bound (suites/lockfo.c);
#   b. guest A's one-guest lock suite (suites/lock.c) with a kill -9 of the active inside test 7,
#      while the parent holds its lock and keeps sending NLM TESTs;
#   c. DENIED_GRACE_PERIOD in the node logs (and grace replies seen by the guests' lockd): must be 0.
# --classic writes [nlm] lock_recovery = "notify", grace_seconds = 15 into every node's config
# (grace period + SM_NOTIFY on promotion): check a then requires A's kernel to reclaim its lock
# after the SM_NOTIFY, and check c only reports. --server ganesha runs the same guest programs
# against one nfs-ganesha with no failover (the failover points are passed through), to prove them.
# Exit 0 when every case passed, 1 when one failed, 2 on a harness error.
set -euo pipefail

INTEROP=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$INTEROP")
CACHE=$INTEROP/.cache
source "$INTEROP/lib/harness.sh"

usage() {
    cat <<USAGE
usage: interop/lockfailover.sh [--classic] [--case-timeout N] [--server hanfs|ganesha] [--hanfs-bin PATH] [--keep]
  --classic           [nlm] lock_recovery = "notify", grace_seconds = 15 on every node (the server must accept it)
  --case-timeout N    bound of each lock step inside the guests (default 60 s)
  --server S          hanfs (default: the three-node cluster, two kill -9) or ganesha (one server, no kill)
  --hanfs-bin PATH    use this hanfs-server binary (default: target/release, rebuilt if stale)
  --keep              keep the run directory under interop/.cache/runs/
USAGE
}

SERVER_KIND=hanfs MODE=transparent CASE_TIMEOUT=60 HANFS_BIN_ARG= KEEP=
while [ $# -gt 0 ]; do
    case "$1" in
    --classic) MODE=classic; shift ;;
    --case-timeout) CASE_TIMEOUT=${2:-}; shift 2 ;;
    --server) SERVER_KIND=${2:-}; shift 2 ;;
    *) common_opt "$@"; shift "$OPT_SHIFT" ;;
    esac
done
case "$SERVER_KIND" in hanfs|ganesha) ;; *) usage >&2; exit 2 ;; esac
int_in "$CASE_TIMEOUT" 5 600 || { usage >&2; exit 2; }
[ "$MODE" = classic ] && [ "$SERVER_KIND" = ganesha ] && { echo "--classic needs --server hanfs" >&2; exit 2; }
need_root interop/lockfailover.sh

source "$INTEROP/lib/prepare.sh"
source "$INTEROP/lib/net.sh"
source "$INTEROP/lib/guests.sh"
source "$INTEROP/lib/servers.sh"
source "$INTEROP/lib/failover.sh"
source "$INTEROP/lib/results.sh"
source "$INTEROP/lib/lockfailover.sh"

SHELL_MODE=
# Bounds (seconds). Guest steps: lockfo waits at most for its peer (180), the failover (150), the
# grant (90) and a few lock steps; the lock suite at most 3 case bounds (after one timeout the
# rest fail at once) plus the failover wait in test 7.
BOOT_SECONDS_MAX=90
LOCKFO_STEP_SECONDS=$(( 180 + 150 + 90 + 6 * CASE_TIMEOUT + 60 ))
LOCK_STEP_SECONDS=$(( 3 * CASE_TIMEOUT + 150 + 60 ))
GUEST_STOP_SECONDS_MAX=60
RUN_SECONDS_MAX=$(( BOOT_SECONDS_MAX + LOCKFO_STEP_SECONDS + LOCK_STEP_SECONDS + 2 * (SERVE_WAIT_SECONDS_MAX + CATCHUP_WAIT_SECONDS_MAX) + GUEST_STOP_SECONDS_MAX ))
# The NLM implementation logs every reply status at debug level (check c greps those lines).
export RUST_LOG=${RUST_LOG:-info,hanfs_server=debug}

# A short run name: node sockets live under the run directory, and a Unix
# socket path must stay under 108 bytes wherever the checkout is.
if [ "$SERVER_KIND" = hanfs ]; then run_dirs "lockfo"; else run_dirs "lockfo-$SERVER_KIND"; fi

cleanup() {
    local rc=$?
    trap - EXIT INT TERM USR1
    stop_watchdog
    guest_kill 0
    guest_kill 1
    nodes_stop_all
    server_stop
    net_down
    if save_logs 0 1; then
        cp "$RUN"/host-*.txt "$LOGDIR_FINAL/" 2>/dev/null || true
    fi
    end_run "$rc"
}
set_traps
start_watchdog "$RUN_SECONDS_MAX" USR1

mkdir -p "$CACHE"
need_packages $HOST_PACKAGES
[ "$SERVER_KIND" = ganesha ] && need_packages $GANESHA_PACKAGES
prepare_kernel
prepare_initramfs
prepare_suites
if [ "$SERVER_KIND" = hanfs ]; then
    use_hanfs_bin "$HANFS_BIN_ARG"
    need_cluster_bin
fi

EXPORT_DIR=$RUN/export
mkdir -p "$LOGDIR" "$RUN/sync" "$EXPORT_DIR" "$LOGDIR_FINAL"
chmod 1777 "$EXPORT_DIR"
for i in 0 1; do
    mkdir -p "$RUN/g$i/out" "$RUN/g$i/nfs-state/sm" "$RUN/g$i/nfs-state/sm.bak" "$RUN/g$i/bin"
    cp "$SUITE_BIN"/* "$RUN/g$i/bin/"
done
: > "$RUN/host-a.txt"
: > "$RUN/host-b.txt"

net_up
if [ "$SERVER_KIND" = hanfs ]; then
    write_cluster_configs "$EXPORT_DIR"
    [ "$MODE" = classic ] && write_nlm_classic
    for id in 1 2 3; do node_start "$id"; done
    hanfs_cli 1 init > "$LOGDIR/init.txt" 2>&1 || { cat "$LOGDIR/init.txt" >&2; die "init failed"; }
    active=$(wait_serving 0)
    log "cluster up: node $active active on $VIP ($MODE lock recovery)"
    # What a client's lockd finds on the VIP's portmapper (printed, kept in the logs).
    timeout 10 ip netns exec "$NS" rpcinfo -p "$VIP" > "$LOGDIR/rpcinfo-vip.txt" 2>&1 || true
    sed 's/^/  # rpcinfo -p VIP: /' "$LOGDIR/rpcinfo-vip.txt"
    SPEC=$VIP:/export
else
    server_start
    SPEC=$SERVER_IP:/export
fi

write_lockfo_jobs "$SPEC"
START=$(date +%s)
RUN_DEADLINE=$(( START + RUN_SECONDS_MAX - GUEST_STOP_SECONDS_MAX ))
guest_start 0 boot1
guest_start 1 boot1

# Point 1 is asked for by guest B (check a), point 2 by guest A's lock suite (check b).
CHECK=a
if point 1 1; then
    CHECK=b
    point 2 0 || true
fi
guest_wait 0 "$RUN_DEADLINE" || true
# If guest A is gone and guest B still waits for it, tell B to stop waiting.
[ -f "$RUN/sync/b_done" ] || touch "$RUN/sync/a_failed"
guest_wait 1 "$(( $(date +%s) + GUEST_STOP_SECONDS_MAX ))" || true
stop_watchdog
log "guests finished after $(( $(date +%s) - START )) s"

set +e
report_lockfailover
exit $?
