#!/bin/bash
# interop/powerfail.sh: power-offs and crashes back to back with the Linux kernel client (issue 11
# item 3). Like failover.sh, but each hanfs node runs in its OWN network namespace (lib/nodens.sh), joined to the
# harness namespace's bridge br0 by a veth (node side eth0, 10.99.0.1N/24); the VIP 10.99.0.100
# lives on each storage node's TUN device and is announced on its eth0.
# Rounds alternate: odd rounds power off the active (`ip link set eth0 down` in its namespace, then
# kill -9: its connections' resets never reach the client), even rounds crash it (kill -9 only).
# The killed node is restarted (link up again) and caught up at once, so in the next round it
# takes over within a minute of its own kill: the quick failback that stalled for 182 s when its
# kernel still held the client's old connection. Guest A appends a line every 0.2 s through the
# VIP; each round's stall is the largest gap between lines around it.
# --no-tickle sets HANFS_NO_TICKLE=1 for every node: no tickle ACKs, to measure the power-off
# stall without them. Exit 0 when every round happened, no guest error or ESTALE and the max
# stall is within --stall-max; 1 otherwise; 2 harness error.
set -euo pipefail

INTEROP=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$INTEROP")
CACHE=$INTEROP/.cache
source "$INTEROP/lib/harness.sh"

usage() {
    cat <<USAGE
usage: interop/powerfail.sh [--rounds N] [--stall-max SECONDS] [--no-tickle] [--hanfs-bin PATH] [--keep]
  --rounds N          failovers, alternating power-off and crash, default 10
  --stall-max S       largest acceptable stall, default 2 (seconds)
  --no-tickle         nodes send no tickle ACKs (HANFS_NO_TICKLE=1)
  --hanfs-bin PATH    use this hanfs-server binary (default: target/release, rebuilt if stale)
  --keep              keep the run directory under interop/.cache/runs/
USAGE
}

ROUNDS=10 STALL_MAX=2 HANFS_BIN_ARG= KEEP= NO_TICKLE=0
while [ $# -gt 0 ]; do
    case "$1" in
    --rounds) ROUNDS=${2:-}; shift 2 ;;
    --stall-max) STALL_MAX=${2:-}; shift 2 ;;
    --no-tickle) NO_TICKLE=1; shift ;;
    *) common_opt "$@"; shift "$OPT_SHIFT" ;;
    esac
done
int_in "$ROUNDS" 1 50 || { usage >&2; exit 2; }
need_root interop/powerfail.sh

source "$INTEROP/lib/prepare.sh"
source "$INTEROP/lib/net.sh"
source "$INTEROP/lib/guests.sh"
source "$INTEROP/lib/failover.sh"
source "$INTEROP/lib/nodens.sh"

SHELL_MODE=
BOOT_SECONDS_MAX=90
MOUNT_WAIT_SECONDS_MAX=120
GUEST_STOP_SECONDS_MAX=60
RUN_SECONDS_MAX=$(( BOOT_SECONDS_MAX + MOUNT_WAIT_SECONDS_MAX + ROUNDS * (SERVE_WAIT_SECONDS_MAX + RESUME_WAIT_SECONDS_MAX + CATCHUP_WAIT_SECONDS_MAX) ))
RESUME_LINES=5
CLUSTER_NAME=interop-powerfail

run_dirs "powerfail"

cleanup() {
    local rc=$?
    trap - EXIT INT TERM USR1
    stop_watchdog
    guest_kill 0
    nodes_stop_all
    node_net_down
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
node_net_up
write_cluster_configs "$EXPORT_DIR"
for id in 1 2 3; do node_start "$id"; done
hanfs_cli 1 init > "$LOGDIR/init.txt" 2>&1 || { cat "$LOGDIR/init.txt" >&2; die "init failed"; }
active=$(wait_serving 0)
log "cluster up: node $active active on $VIP (tickles $([ "$NO_TICKLE" = 1 ] && echo off || echo on))"

write_failover_job
guest_start 0 boot1
wait_guest_flag mounted $(( BOOT_SECONDS_MAX + MOUNT_WAIT_SECONDS_MAX )) 0
wait_lines 10 || die "guest is not appending"
log "guest mounted and appending"

STALLS=() KINDS=() TAKEOVERS=()
DONE=0
for ((round = 1; round <= ROUNDS; round++)); do
    active=$(wait_serving 0)
    before=$(lines_now)
    kind=crash
    [ $((round % 2)) = 1 ] && kind=power-off
    log "round $round: $kind of node $active (file has $before lines)"
    # Power-off: the link goes first, so nothing the dying process sends reaches the client.
    [ "$kind" = power-off ] && node_link "$active" down
    kill_active_and_wait "$active" || exit 2
    new=$NEW_ACTIVE took=$TAKEOVER_SECONDS
    TAKEOVERS+=("$took") KINDS+=("$kind")
    if ! wait_lines $((before + RESUME_LINES)); then
        log "round $round: the guest did not resume appending within ${RESUME_WAIT_SECONDS_MAX}s"
        break
    fi
    node_link "$active" up
    restart_and_catch_up "$active" "$new" || exit 2
    wait_lines $(( $(lines_now) + RESUME_LINES )) || { log "round $round: guest stopped appending"; break; }
    after=$(lines_now)
    stall=$(stall_of "$((before > 1 ? before - 1 : 1))" "$after")
    STALLS+=("$stall")
    DONE=$round
    log "round $round: $kind; node $new serving ${took} s after the kill; guest stall $stall s"
done

touch "$RUN/sync/stop"
guest_wait 0 $(( $(date +%s) + GUEST_STOP_SECONDS_MAX )) || true
stop_watchdog

errors=missing
[ -f "$RUN/g0/out/errors.txt" ] && errors=$(wc -l < "$RUN/g0/out/errors.txt")
estale=$(cat "$RUN/g0/out/errors.txt" "$LOGDIR/guesta-boot1.console" 2>/dev/null | awk 'tolower($0) ~ /stale/ { n++ } END { print n + 0 }')
finished=$([ -f "$RUN/g0/out/finished.txt" ] && echo yes || echo no)
tickled=$(cat "$LOGDIR"/node*.log 2>/dev/null | grep -ac 'tickle ACKs sent' || true)
echo "=== powerfail: $DONE of $ROUNDS failovers (power-off and crash alternating), tickles $([ "$NO_TICKLE" = 1 ] && echo off || echo on) ==="
for ((i = 0; i < ${#STALLS[@]}; i++)); do
    echo "failover $((i + 1)) (${KINDS[$i]}): stall ${STALLS[$i]} s (new active serving ${TAKEOVERS[$i]} s after the kill)"
done
max=$(printf '%s\n' "${STALLS[@]}" | sort -n | tail -n1)
for k in power-off crash; do
    m=$(for ((i = 0; i < ${#STALLS[@]}; i++)); do [ "${KINDS[$i]}" = "$k" ] && echo "${STALLS[$i]}"; done | sort -n | tail -n1 || true)
    echo "$k stall max: ${m:-nan} s"
done
echo "stall median: $(printf '%s\n' "${STALLS[@]}" | median) s, max: ${max:-nan} s (target <= $STALL_MAX s)"
echo "promotions that sent tickle ACKs: $tickled"
echo "guest error lines: $errors, ESTALE: $estale, guest job finished: $finished"
[ "$errors" != 0 ] && [ -f "$RUN/g0/out/errors.txt" ] && head -n 20 "$RUN/g0/out/errors.txt"
ok=1
[ "$DONE" = "$ROUNDS" ] || ok=
[ "$errors" = 0 ] || ok=
[ "$estale" = 0 ] || ok=
[ "$finished" = yes ] || ok=
awk -v m="${max:-999}" -v t="$STALL_MAX" 'BEGIN { exit !(m <= t) }' || ok=
if [ -n "$ok" ]; then echo "powerfail: PASS"; exit 0; fi
echo "powerfail: FAIL"
exit 1
