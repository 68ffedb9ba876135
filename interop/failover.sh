#!/bin/bash
# interop/failover.sh: the real Linux kernel client across hanfs failovers (issue 4 item 9).
# In the harness's private namespace: storage nodes 1 and 2 and witness 3 (peer ports 7101-7103
# on the bridge address, one shared export directory, VIP 10.99.0.100/24 via [vip]: on each
# storage node's own device hanfs-vipN, announced on br0, gone when its process dies).
# Guest A mounts VIP:/export/held (below the export), keeps it open and appends a timestamp line every 0.2 s;
# the active node is killed with SIGKILL --rounds times (default 10), which alternates the
# storage nodes; each killed node is restarted and waited for until it has caught up.
# Report: the stall per failover (largest gap between lines around it), median and max,
# error and ESTALE counts seen by the guest. Exit 0 when every failover happened, the guest saw
# no error and no ESTALE and the max stall is within --stall-max; 1 otherwise; 2 harness error.
set -euo pipefail

INTEROP=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$INTEROP")
CACHE=$INTEROP/.cache
source "$INTEROP/lib/harness.sh"

usage() {
    cat <<USAGE
usage: interop/failover.sh [--rounds N] [--stall-max SECONDS] [--hanfs-bin PATH] [--keep]
  --rounds N          failovers (kill -9 of the active), default 10
  --stall-max S       largest acceptable stall, default 2 (seconds)
  --hanfs-bin PATH    use this hanfs-server binary (default: target/release, rebuilt if stale)
  --keep              keep the run directory under interop/.cache/runs/
USAGE
}

ROUNDS=10 STALL_MAX=2 HANFS_BIN_ARG= KEEP=
while [ $# -gt 0 ]; do
    case "$1" in
    --rounds) ROUNDS=${2:-}; shift 2 ;;
    --stall-max) STALL_MAX=${2:-}; shift 2 ;;
    *) common_opt "$@"; shift "$OPT_SHIFT" ;;
    esac
done
int_in "$ROUNDS" 1 50 || { usage >&2; exit 2; }
need_root interop/failover.sh

source "$INTEROP/lib/prepare.sh"
source "$INTEROP/lib/net.sh"
source "$INTEROP/lib/guests.sh"
source "$INTEROP/lib/failover.sh"

SHELL_MODE=
BOOT_SECONDS_MAX=90
MOUNT_WAIT_SECONDS_MAX=120
GUEST_STOP_SECONDS_MAX=60
# Whole run: boot, then per round at most serve + resume + catch-up waits.
RUN_SECONDS_MAX=$(( BOOT_SECONDS_MAX + MOUNT_WAIT_SECONDS_MAX + ROUNDS * (SERVE_WAIT_SECONDS_MAX + RESUME_WAIT_SECONDS_MAX + CATCHUP_WAIT_SECONDS_MAX) ))
RESUME_LINES=5   # lines the guest must add after a kill before the round counts as resumed

run_dirs "failover"

cleanup() {
    local rc=$?
    trap - EXIT INT TERM USR1
    stop_watchdog
    guest_kill 0
    nodes_stop_all
    net_down
    if save_logs 0; then
        [ -f "$EXPORT_DIR/held/log.txt" ] && cp "$EXPORT_DIR/held/log.txt" "$LOGDIR_FINAL/appended.txt" 2>/dev/null
    fi
    end_run "$rc"
}
set_traps
start_watchdog "$RUN_SECONDS_MAX" TERM

mkdir -p "$CACHE"
need_packages $HOST_PACKAGES
prepare_kernel
prepare_initramfs
use_hanfs_bin "$HANFS_BIN_ARG"
need_cluster_bin

EXPORT_DIR=$RUN/export
mkdir -p "$LOGDIR" "$RUN/sync" "$RUN/g0/out" "$RUN/g0/nfs-state/sm" "$RUN/g0/nfs-state/sm.bak" "$EXPORT_DIR" "$LOGDIR_FINAL"
chmod 1777 "$EXPORT_DIR"

net_up
write_cluster_configs "$EXPORT_DIR"
for id in 1 2 3; do node_start "$id"; done
hanfs_cli 1 init > "$LOGDIR/init.txt" 2>&1 || { cat "$LOGDIR/init.txt" >&2; die "init failed"; }
active=$(wait_serving 0)
log "cluster up: node $active active on $VIP"

write_failover_job
guest_start 0 boot1
wait_guest_flag mounted $(( BOOT_SECONDS_MAX + MOUNT_WAIT_SECONDS_MAX )) 0
wait_lines 10 || die "guest is not appending"
log "guest mounted and appending"

STALLS=() TAKEOVERS=()
DONE=0
for ((round = 1; round <= ROUNDS; round++)); do
    active=$(wait_serving 0)
    before=$(lines_now)
    log "round $round: kill -9 node $active (file has $before lines)"
    # No node serving after the kill is a harness error (exit 2), as wait_serving's own.
    kill_active_and_wait "$active" || exit 2
    new=$NEW_ACTIVE took=$TAKEOVER_SECONDS
    TAKEOVERS+=("$took")
    if ! wait_lines $((before + RESUME_LINES)); then
        log "round $round: the guest did not resume appending within ${RESUME_WAIT_SECONDS_MAX}s"
        break
    fi
    restart_and_catch_up "$active" "$new" || exit 2
    wait_lines $(( $(lines_now) + RESUME_LINES )) || { log "round $round: guest stopped appending"; break; }
    after=$(lines_now)
    stall=$(stall_of "$((before > 1 ? before - 1 : 1))" "$after")
    STALLS+=("$stall")
    DONE=$round
    log "round $round: node $new serving ${took} s after the kill; guest stall $stall s"
done

touch "$RUN/sync/stop"
guest_wait 0 $(( $(date +%s) + GUEST_STOP_SECONDS_MAX )) || true
stop_watchdog

errors=missing
[ -f "$RUN/g0/out/errors.txt" ] && errors=$(wc -l < "$RUN/g0/out/errors.txt")
estale=$(cat "$RUN/g0/out/errors.txt" "$LOGDIR/guesta-boot1.console" 2>/dev/null | awk 'tolower($0) ~ /stale/ { n++ } END { print n + 0 }')
finished=$([ -f "$RUN/g0/out/finished.txt" ] && echo yes || echo no)
echo "=== failover: $DONE of $ROUNDS kill -9 failovers, kernel client through $VIP ==="
for ((i = 0; i < ${#STALLS[@]}; i++)); do
    echo "failover $((i + 1)): stall ${STALLS[$i]} s (new active serving ${TAKEOVERS[$i]} s after the kill)"
done
med=$(printf '%s\n' "${STALLS[@]}" | median)
max=$(printf '%s\n' "${STALLS[@]}" | sort -n | tail -n1)
tmed=$(printf '%s\n' "${TAKEOVERS[@]}" | { grep -v '?' || true; } | median)
echo "server takeover (kill to serving) median: ${tmed} s"
echo "stall median: ${med} s, max: ${max:-nan} s (target <= $STALL_MAX s; each includes the ${APPEND_PERIOD} s append period)"
echo "guest error lines: $errors, ESTALE: $estale, guest job finished: $finished"
[ "$errors" != 0 ] && [ -f "$RUN/g0/out/errors.txt" ] && head -n 20 "$RUN/g0/out/errors.txt"
ok=1
[ "$DONE" = "$ROUNDS" ] || ok=
[ "$errors" = 0 ] || ok=
[ "$estale" = 0 ] || ok=
[ "$finished" = yes ] || ok=
awk -v m="${max:-999}" -v t="$STALL_MAX" 'BEGIN { exit !(m <= t) }' || ok=
if [ -n "$ok" ]; then echo "failover: PASS"; exit 0; fi
echo "failover: FAIL"
exit 1
