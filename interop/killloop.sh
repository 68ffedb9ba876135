#!/bin/bash
# interop/killloop.sh: the kernel client's basic and special suites under repeated kill -9 of the
# active hanfs node (issue 11 item 0). In the harness's private namespace: the three-node cluster
# of lib/failover.sh (storage nodes 1 and 2, witness 3, VIP 10.99.0.100); guest A mounts
# VIP:/export with a plain `mount -t nfs` (hard) and runs basic then special in a loop, iteration
# N in its own directory kN of the export, until the host says stop. The host kills the active
# with SIGKILL every --interval seconds (default 15), waits for the other storage node to serve,
# restarts the killed one and waits for its catch-up; after --kills kills (default 20) it tells
# the guest to finish its current iteration and stop.
# Report: every suite run PASS/FAIL with its failing case lines (each with when the host saw it
# relative to the last kill), the kills with their takeover times, the total "N passed, N failed"
# over suite runs. Exit 0 when every suite run and every kill cycle passed, 1 otherwise, 2 on a
# harness error (setup, boot, mount, the run-bound watchdog).
set -euo pipefail

INTEROP=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$INTEROP")
CACHE=$INTEROP/.cache
export LC_ALL=C   # EPOCHREALTIME and awk with a '.' decimal point
source "$INTEROP/lib/harness.sh"

usage() {
    cat <<USAGE
usage: interop/killloop.sh [--kills N] [--interval S] [--case-timeout N] [--hanfs-bin PATH] [--keep]
  --kills N           kill -9 of the active, N times (default 20; 1..100)
  --interval S        seconds from one kill to the next (default 15; 5..300); the first kill comes
                      S seconds after the guest has mounted
  --case-timeout N    bound of each case inside the guest (default 60 s; 10..600)
  --hanfs-bin PATH    use this hanfs-server binary (default: target/release, rebuilt if stale)
  --keep              keep the run directory (export, shares) under interop/.cache/runs/
USAGE
}

KILLS=20 INTERVAL=15 CASE_TIMEOUT=60 HANFS_BIN_ARG= KEEP=
while [ $# -gt 0 ]; do
    case "$1" in
    --kills) KILLS=${2:-}; shift 2 ;;
    --interval) INTERVAL=${2:-}; shift 2 ;;
    --case-timeout) CASE_TIMEOUT=${2:-}; shift 2 ;;
    *) common_opt "$@"; shift "$OPT_SHIFT" ;;
    esac
done
int_in "$KILLS" 1 100 || { usage >&2; exit 2; }
int_in "$INTERVAL" 5 300 || { usage >&2; exit 2; }
int_in "$CASE_TIMEOUT" 10 600 || { usage >&2; exit 2; }
need_root interop/killloop.sh

source "$INTEROP/lib/prepare.sh"
source "$INTEROP/lib/net.sh"
source "$INTEROP/lib/guests.sh"
source "$INTEROP/lib/failover.sh"
source "$INTEROP/lib/results.sh"
source "$INTEROP/lib/killloop.sh"

SHELL_MODE=
# Bounds (seconds). A suite run normally takes 10-30 s under TCG; after its first timed-out case
# the rest of that run fails at once, so a step needs at most one case bound plus its normal time.
BOOT_SECONDS_MAX=90
MOUNT_WAIT_SECONDS_MAX=$(( JOB_MOUNT_SECONDS_MAX + 10 ))
BASIC_STEP_SECONDS=$(( CASE_TIMEOUT + 120 ))
SPECIAL_STEP_SECONDS=$(( CASE_TIMEOUT + 150 ))
ITERATION_SECONDS_MAX=$(( BASIC_STEP_SECONDS + SPECIAL_STEP_SECONDS ))
KILL_CYCLE_SECONDS_MAX=$(( INTERVAL + 2 * SERVE_WAIT_SECONDS_MAX + CATCHUP_WAIT_SECONDS_MAX + ADMIN_WAIT_SECONDS_MAX + 10 ))
GUEST_STOP_SECONDS_MAX=$(( ITERATION_SECONDS_MAX + 30 ))
# The guest starts no iteration after this much of its uptime from the mount (the host's stop
# comes before it unless a kill cycle hung to its bounds).
LOOP_SECONDS_MAX=$(( KILLS * KILL_CYCLE_SECONDS_MAX + 60 ))
RUN_SECONDS_MAX=$(( BOOT_SECONDS_MAX + MOUNT_WAIT_SECONDS_MAX + LOOP_SECONDS_MAX + GUEST_STOP_SECONDS_MAX + 60 ))

run_dirs "killloop"
MONITOR=

# stop_monitor: asks the monitor to finish its poll (bounded), kills it only if it does not.
stop_monitor() {
    local i
    [ -n "$MONITOR" ] || return 0
    touch "$RUN/monitor_stop" 2>/dev/null || true
    for ((i = 0; i < MONITOR_STOP_POLLS_MAX; i++)); do
        kill -0 "$MONITOR" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$MONITOR" 2>/dev/null; then
        pkill -P "$MONITOR" 2>/dev/null || true
        kill "$MONITOR" 2>/dev/null || true
    fi
    wait "$MONITOR" 2>/dev/null || true
    MONITOR=
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM USR1
    stop_watchdog
    stop_monitor
    guest_kill 0
    nodes_stop_all
    net_down
    if save_logs 0; then
        cp "$RUN/host.txt" "$RUN/case-times.txt" "$LOGDIR_FINAL/" 2>/dev/null || true
    fi
    end_run "$rc"
}
set_traps
start_watchdog "$RUN_SECONDS_MAX" USR1

mkdir -p "$CACHE"
need_packages $HOST_PACKAGES
prepare_kernel
prepare_initramfs
prepare_suites
use_hanfs_bin "$HANFS_BIN_ARG"
need_cluster_bin

EXPORT_DIR=$RUN/export
mkdir -p "$LOGDIR" "$RUN/sync" "$RUN/g0/out" "$RUN/g0/nfs-state/sm" "$RUN/g0/nfs-state/sm.bak" "$RUN/g0/bin" \
    "$EXPORT_DIR" "$LOGDIR_FINAL"
chmod 1777 "$EXPORT_DIR"
cp "$SUITE_BIN"/* "$RUN/g0/bin/"
: > "$RUN/host.txt"
: > "$RUN/case-times.txt"

net_up
write_cluster_configs "$EXPORT_DIR"
for id in 1 2 3; do node_start "$id"; done
hanfs_cli 1 init > "$LOGDIR/init.txt" 2>&1 || { cat "$LOGDIR/init.txt" >&2; die "init failed"; }
active=$(wait_serving 0)
log "cluster up: node $active active on $VIP; $KILLS kills, one every $INTERVAL s"

write_killloop_job
START=$EPOCHSECONDS
guest_start 0 boot1
deadline=$(( EPOCHSECONDS + BOOT_SECONDS_MAX + MOUNT_WAIT_SECONDS_MAX ))
until [ -f "$RUN/sync/mounted" ]; do
    [ "$EPOCHSECONDS" -lt "$deadline" ] || die "guest did not mount $VIP:/export in time (console: $LOGDIR_FINAL/guesta-boot1.console)"
    guest_running 0 || die "guest exited before mounting: $(cat "$RUN/g0/out/mount.txt" 2>/dev/null | head -n 3) (console: $LOGDIR_FINAL/guesta-boot1.console)"
    sleep 0.2
done
log "guest mounted $VIP:/export after $(( EPOCHSECONDS - START )) s; suites looping"
monitor_case_lines &
MONITOR=$!

declare -a KILL_AT=() KILL_NODE=() KILL_NEW=() KILL_TAKEOVER=() KILL_CATCHUP=()
KILLS_DONE=0
next=$(awk -v t="$EPOCHREALTIME" -v i="$INTERVAL" 'BEGIN { printf "%.6f", t + i }')
for ((k = 1; k <= KILLS; k++)); do
    while awk -v t="$EPOCHREALTIME" -v n="$next" 'BEGIN { exit !(t < n) }'; do
        guest_running 0 || break 2
        sleep 0.2
    done
    if ! guest_running 0; then break; fi
    kill_cycle "$k" || { log "kill $k failed: no more kills"; break; }
    KILLS_DONE=$k
    log "kill $k: node ${KILL_NODE[$k]} caught up ${KILL_CATCHUP[$k]} s after the kill"
    next=$(awk -v t="${KILL_AT[$k]}" -v i="$INTERVAL" 'BEGIN { printf "%.6f", t + i }')
done
guest_running 0 || host_line "killloop_guest_alive: FAIL (the guest powered off during the kill loop, after $KILLS_DONE kills)"

log "$KILLS_DONE kills done: telling the guest to finish its iteration"
touch "$RUN/sync/stop"
guest_wait 0 $(( EPOCHSECONDS + GUEST_STOP_SECONDS_MAX )) || host_line "killloop_guest_stop: FAIL (the guest did not finish its iteration within ${GUEST_STOP_SECONDS_MAX}s of the stop; QEMU killed)"
stop_monitor
stop_watchdog
log "guest finished after $(( EPOCHSECONDS - START )) s"

set +e
report_killloop
exit $?
