#!/bin/bash
# interop/soak.sh: the fault soak (issue 11 item 9). Each hanfs node runs in its own network
# namespace (lib/nodens.sh: storage nodes 1 and 2, witness 3, VIP 10.99.0.100 announced on the
# active's eth0), each node's state directory on its own tmpfs (STATE_FS_MIB). Two kernel-client
# guests mount VIP:/export and run, until the end: the writer (records with sequence numbers and
# checksums, unstable writes then fsync = COMMIT, each acknowledged record logged) and the locker
# (fcntl write lock contended by both guests around a counter and a holder marker), both
# suites/soak.c; guest A also appends a timestamp line every 0.2 s (the stall). A load client in
# the harness namespace runs hanfs-bench (creates, setattrs, renames, removes, lookups, readdir)
# in a loop. A seeded schedule (--seed) injects --faults faults, one every --gap-min..--gap-max
# seconds (start to start, at least SETTLE_SECONDS after the previous one's recovery):
#   kill       kill -9 of the active, restarted once the other serves;
#   stop       SIGSTOP of the active for 5 s, then SIGCONT;
#   partition  nft drops the active's traffic to and from its peers (clients still reach it),
#              healed once the other serves;
#   power-off  the active's link down, then kill -9; link up and restart once the other serves;
#   witness    kill -9 of the witness, restarted 10 s later: no failover expected;
#   disk-full  the active's state filesystem filled with a file: it must step down; the file is
#              removed once the other serves.
# After each, the failed node is back and caught up. Checks (lib/soakreport.sh): acknowledged
# records all on the export (host) and in the guests' O_DIRECT read-backs (0 lost); no ESTALE and
# no other failed call in the guests; the lock counter equals both guests' critical sections and
# no guest saw the other's marker inside the lock (no two holders); every failover inside the
# window of a fault that causes one, and one per such fault (0 false, 0 missed); no new data
# from a node to a client after another node's promotion, and no FIN or reset from the VIP once
# a node had to stop serving (tcpdump on the nodes' links).
# Prints a stall table per fault kind (p50, p99, max) and the summary. Exit 0 when every fault
# ran and every check holds; 1 otherwise; 2 harness error.
set -euo pipefail

INTEROP=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$INTEROP")
CACHE=$INTEROP/.cache
source "$INTEROP/lib/harness.sh"

usage() {
    cat <<USAGE
usage: interop/soak.sh [--faults N] [--seed N] [--gap-min S] [--gap-max S] [--kinds LIST] [--no-tickle]
                       [--stall-max S] [--hanfs-bin PATH] [--keep]
  --faults N          faults injected, default 100 (the first ones cover every kind once)
  --seed N            seed of the schedule (kinds and gaps), default 1
  --gap-min/max S     seconds from one fault's start to the next's, default 10 and 20
  --kinds LIST        comma-separated subset of kill,stop,partition,power-off,witness,disk-full
  --no-tickle         nodes send no tickle ACKs (HANFS_NO_TICKLE=1)
  --stall-max S       largest acceptable stall, default 60 (seconds; the table reports them)
  --hanfs-bin PATH    use this hanfs-server binary (default: target/release, rebuilt if stale)
  --keep              keep the run directory under interop/.cache/runs/
USAGE
}

FAULTS=100 SEED=1 GAP_MIN=10 GAP_MAX=20 KINDS_ARG= NO_TICKLE=0 STALL_MAX=60 HANFS_BIN_ARG= KEEP=
while [ $# -gt 0 ]; do
    case "$1" in
    --faults) FAULTS=${2:-}; shift 2 ;;
    --seed) SEED=${2:-}; shift 2 ;;
    --gap-min) GAP_MIN=${2:-}; shift 2 ;;
    --gap-max) GAP_MAX=${2:-}; shift 2 ;;
    --kinds) KINDS_ARG=${2:-}; shift 2 ;;
    --no-tickle) NO_TICKLE=1; shift ;;
    --stall-max) STALL_MAX=${2:-}; shift 2 ;;
    *) common_opt "$@"; shift "$OPT_SHIFT" ;;
    esac
done
int_in "$FAULTS" 1 500 && int_in "$SEED" 0 32767 && int_in "$GAP_MIN" 1 600 && int_in "$GAP_MAX" "$GAP_MIN" 600 &&
    int_in "$STALL_MAX" 1 600 || { usage >&2; exit 2; }
need_root interop/soak.sh

source "$INTEROP/lib/prepare.sh"
source "$INTEROP/lib/net.sh"
source "$INTEROP/lib/guests.sh"
source "$INTEROP/lib/failover.sh"
source "$INTEROP/lib/nodens.sh"
source "$INTEROP/lib/soak.sh"
source "$INTEROP/lib/soakreport.sh"

KINDS=("${SOAK_KINDS[@]}")
if [ -n "$KINDS_ARG" ]; then
    IFS=, read -r -a KINDS <<< "$KINDS_ARG"
    for k in "${KINDS[@]}"; do
        [[ " ${SOAK_KINDS[*]} " == *" $k "* ]] || { echo "unknown fault kind: $k" >&2; usage >&2; exit 2; }
    done
fi
make_schedule "$SEED" "$FAULTS" "$GAP_MIN" "$GAP_MAX" "${KINDS[@]}"

SHELL_MODE=
CLUSTER_NAME=interop-soak
BOOT_SECONDS_MAX=90
MOUNT_WAIT_SECONDS_MAX=120
GUEST_STOP_SECONDS_MAX=90
RESUME_LINES=5
# Per fault at most: its gap, the stop or witness downtime, serve + resume + catch-up twice
# (a rejoin may restart the node once).
FAULT_SECONDS_MAX=$(( GAP_MAX + WITNESS_DOWN_SECONDS + SERVE_WAIT_SECONDS_MAX + RESUME_WAIT_SECONDS_MAX + 2 * CATCHUP_WAIT_SECONDS_MAX + 2 * ADMIN_WAIT_SECONDS_MAX ))
RUN_SECONDS_MAX=$(( BOOT_SECONDS_MAX + MOUNT_WAIT_SECONDS_MAX + FAULTS * FAULT_SECONDS_MAX + GUEST_STOP_SECONDS_MAX ))

run_dirs "soak"

cleanup() {
    local rc=$?
    trap - EXIT INT TERM USR1
    stop_watchdog
    touch "$RUN/load_stop" 2>/dev/null || true
    [ -n "${LOAD_PID:-}" ] && { pkill -P "$LOAD_PID" 2>/dev/null || true; kill "$LOAD_PID" 2>/dev/null || true; wait "$LOAD_PID" 2>/dev/null || true; }
    guest_kill 0
    guest_kill 1
    capture_stop
    for id in 1 2 3; do [ -n "${NODE_PID[$id]:-}" ] && kill -CONT "${NODE_PID[$id]}" 2>/dev/null || true; done
    nodes_stop_all
    node_net_down
    net_down
    if save_logs 0 1; then
        cp "$RUN/faults.txt" "$RUN/schedule.txt" "$LOGDIR_FINAL/" 2>/dev/null || true
        [ -f "$EXPORT_DIR/held/log.txt" ] && cp "$EXPORT_DIR/held/log.txt" "$LOGDIR_FINAL/appended.txt" 2>/dev/null
    fi
    state_fs_down
    end_run "$rc"
}
set_traps
start_watchdog "$RUN_SECONDS_MAX" USR1

mkdir -p "$CACHE"
need_packages $HOST_PACKAGES tcpdump nftables
prepare_kernel
prepare_initramfs
prepare_suites
use_hanfs_bin "$HANFS_BIN_ARG"
need_cluster_bin
BENCH_BIN=$(dirname "$HANFS_BIN")/hanfs-bench
if [ ! -x "$BENCH_BIN" ] || [ -n "$(find "$REPO/interop/bench/src" -newer "$BENCH_BIN" -name '*.rs' -print -quit)" ]; then
    log "building hanfs-bench (cargo build --release -p hanfs-bench)"
    (cd "$REPO" && cargo build --release -q -p hanfs-bench) || die "cargo build -p hanfs-bench failed"
    BENCH_BIN=$REPO/target/release/hanfs-bench
fi

EXPORT_DIR=$RUN/export
mkdir -p "$LOGDIR" "$RUN/sync" "$EXPORT_DIR/soak" "$LOGDIR_FINAL"
chmod 1777 "$EXPORT_DIR" "$EXPORT_DIR/soak"
# The locker's counter file: "COUNTER HOLDER", padded to one O_DIRECT block.
printf '0 -' > "$EXPORT_DIR/soak/soak-lock.dat"
truncate -s 4096 "$EXPORT_DIR/soak/soak-lock.dat"
chmod 666 "$EXPORT_DIR/soak/soak-lock.dat"
for i in 0 1; do
    mkdir -p "$RUN/g$i/out" "$RUN/g$i/nfs-state/sm" "$RUN/g$i/nfs-state/sm.bak" "$RUN/g$i/bin"
    cp "$SUITE_BIN/soak" "$RUN/g$i/bin/"
    write_soak_job "$i"
done
: > "$RUN/faults.txt"
for ((i = 1; i <= FAULTS; i++)); do echo "$i ${SCHED_KIND[$i]} ${SCHED_GAP[$i]}"; done > "$RUN/schedule.txt"
log "schedule (seed $SEED): $(awk '{ printf "%s%s", (NR > 1 ? " " : ""), $2 }' "$RUN/schedule.txt")"

net_up
node_net_up
state_fs_up
write_cluster_configs "$EXPORT_DIR"
for id in 1 2 3; do node_start "$id"; done
hanfs_cli 1 init > "$LOGDIR/init.txt" 2>&1 || { cat "$LOGDIR/init.txt" >&2; die "init failed"; }
active=$(wait_serving 0)
log "cluster up: node $active active on $VIP (tickles $([ "$NO_TICKLE" = 1 ] && echo off || echo on))"
capture_start

guest_start 0 boot1
guest_start 1 boot1
wait_guest_flag mounted-guesta $(( BOOT_SECONDS_MAX + MOUNT_WAIT_SECONDS_MAX )) 0 1
wait_guest_flag mounted-guestb $(( BOOT_SECONDS_MAX + MOUNT_WAIT_SECONDS_MAX )) 0 1
touch "$RUN/sync/go"
wait_lines 10 || die "guest A is not appending"
load_loop &
LOAD_PID=$!
log "guests mounted, workloads and load client running"

DONE=0 FAILED_FAULTS=0
next_at=$(( $(date +%s) + GAP_MIN ))
for ((i = 1; i <= FAULTS; i++)); do
    while [ "$(date +%s)" -lt "$next_at" ]; do sleep 0.2; done
    kind=${SCHED_KIND[$i]}
    active=$(wait_serving 0)
    before=$(lines_now)
    F_NEW=? F_NOTE=
    start=$(date +%s.%N)
    next_at=$(( ${start%.*} + SCHED_GAP[i] ))
    log "fault $i/$FAULTS: $kind (active node $active, appender at line $before)"
    ok=0
    "fault_$kind" "$active" || ok=1
    resume_wait
    end=$(date +%s.%N)
    after=$(lines_now)
    stall=$(stall_of "$((before > 1 ? before - 1 : 1))" "$after")
    [ "$ok" = 0 ] || FAILED_FAULTS=$((FAILED_FAULTS + 1))
    echo "$i $kind $active ${F_NEW:-?} $start $end $stall ${F_NOTE:-ok}" >> "$RUN/faults.txt"
    log "fault $i: $kind of node $active -> node $F_NEW active, stall $stall s${F_NOTE:+ ($F_NOTE)}"
    DONE=$i
    min_next=$(( $(date +%s) + SETTLE_SECONDS ))
    [ "$next_at" -ge "$min_next" ] || next_at=$min_next
    guest_running 0 && guest_running 1 || { log "a guest powered off during the faults"; break; }
done

STATE_USED=$(state_fs_used)
touch "$RUN/sync/stop" "$RUN/load_stop"
guest_wait 0 $(( $(date +%s) + GUEST_STOP_SECONDS_MAX )) || true
guest_wait 1 $(( $(date +%s) + GUEST_STOP_SECONDS_MAX )) || true
wait "$LOAD_PID" 2>/dev/null || true
LOAD_PID=
capture_stop
stop_watchdog

set +e
echo "=== soak: $DONE of $FAULTS faults (seed $SEED, gaps ${GAP_MIN}-${GAP_MAX} s, tickles $([ "$NO_TICKLE" = 1 ] && echo off || echo on)) ==="
echo "stall per fault kind (guest A's largest gap between appended lines around each fault):"
stall_table
echo "failovers:"
check_failovers
echo "replies after lease end:"
check_replies_after_lease
echo "closes after a node had to stop serving:"
check_closes_after_lease
echo "acknowledged writes:"
check_writes
echo "locks:"
check_locks
echo "guest errors:"
check_errors
finished=0
for i in 0 1; do [ -f "$RUN/g$i/out/finished.txt" ] && finished=$((finished + 1)); done
load_runs=$(wc -l < "$LOGDIR/load-runs.txt" 2>/dev/null || echo 0)
load_ok=$(awk '$2 == 0' "$LOGDIR/load-runs.txt" 2>/dev/null | wc -l)
read -r p50 p99 pmax <<< "$(awk '$7 != "-" { print $7 }' "$RUN/faults.txt" | percentiles)"
echo "=== summary ==="
echo "faults: $DONE of $FAULTS ($FAILED_FAULTS where the cluster misbehaved)"
grep -v ' ok$' "$RUN/faults.txt" | sed 's/^/  fault /' | head -n 20
echo "stall p50/p99/max: $p50 / $p99 / $pmax s"
echo "failovers: $FAILOVERS, false failovers: $FALSE_FAILOVERS, missed failovers: $MISSED_FAILOVERS"
echo "lost acknowledged writes: $LOST"
echo "ESTALE: $ESTALE, other guest errors: $OTHER_ERRORS"
echo "conflicting lock holders: $CONFLICTS"
echo "replies after lease end: $LATE_REPLIES"
echo "FIN or reset from the VIP after a node had to stop serving: $EARLY_CLOSES"
echo "load client: $load_runs hanfs-bench runs, $load_ok without an error line (a run a failover interrupts reports its broken connection)"
echo "guests finished: $finished of 2"
echo "state filesystems (${STATE_FS_MIB} MiB each) used at the end: $STATE_USED"
ok=1
[ "$DONE" = "$FAULTS" ] && [ "$FAILED_FAULTS" = 0 ] || ok=
for v in "$FALSE_FAILOVERS" "$MISSED_FAILOVERS" "$LOST" "$ESTALE" "$OTHER_ERRORS" "$CONFLICTS" "$LATE_REPLIES" "$EARLY_CLOSES"; do
    [ "$v" = 0 ] || ok=
done
[ "$finished" = 2 ] || ok=
awk -v m="${pmax:-999}" -v t="$STALL_MAX" 'BEGIN { exit !(m != "-" && m <= t) }' || ok=
if [ -n "$ok" ]; then echo "soak: PASS"; exit 0; fi
echo "soak: FAIL"
exit 1
