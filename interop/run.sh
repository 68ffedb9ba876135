#!/bin/bash
# interop/run.sh: runs our Connectathon-style suites in QEMU (TCG) guests with the Debian 6.1
# kernel NFS client against hanfs or nfs-ganesha, all inside a private network namespace.
# See interop/README.md. Exit status: 0 all passed, 1 a case failed, 2 harness error.
set -euo pipefail

INTEROP=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$INTEROP")
CACHE=$INTEROP/.cache
source "$INTEROP/lib/harness.sh"

usage() {
    cat <<USAGE
usage: interop/run.sh --server hanfs|ganesha --suite basic|special|subdir|lock|all[,...] [options]
  --server S              server under test: hanfs (target/release/hanfs-server) or ganesha
  --suite LIST            basic, special, subdir, lock or all; a comma list runs several in one boot
  --guests 1|2            guests to boot (default: 2 when the lock suite runs, else 1);
                          with 1 the lock suite runs only its one-guest cases
  --kill-server-after N   SIGKILL the server N seconds after the guests start (failure-path test)
  --case-timeout N        per-case bound inside the guest (default 120 s)
  --hanfs-bin PATH        use this hanfs-server binary as is (default: build target/release if stale)
  --keep                  keep the export and the guests' shares under interop/.cache/runs/
  --shell                 boot guest A with the server running and give a shell on this terminal
USAGE
}

SERVER_KIND= SUITES= GUESTS= KEEP= SHELL_MODE= KILL_AFTER= CASE_TIMEOUT=120 HANFS_BIN_ARG=
while [ $# -gt 0 ]; do
    case "$1" in
    --server) SERVER_KIND=${2:-}; shift 2 ;;
    --suite) SUITES=${2:-}; shift 2 ;;
    --guests) GUESTS=${2:-}; shift 2 ;;
    --kill-server-after) KILL_AFTER=${2:-}; shift 2 ;;
    --case-timeout) CASE_TIMEOUT=${2:-}; shift 2 ;;
    --shell) SHELL_MODE=1; shift ;;
    *) common_opt "$@"; shift "$OPT_SHIFT" ;;
    esac
done
case "$SERVER_KIND" in hanfs|ganesha) ;; *) usage >&2; exit 2 ;; esac
[ -n "$SUITES" ] || [ -n "$SHELL_MODE" ] || { usage >&2; exit 2; }
[ "$SUITES" = all ] && SUITES=basic,special,subdir,lock
ASKED=()
IFS=, read -r -a ASKED <<< "${SUITES:-}"
HAS_LOCK=
for s in "${ASKED[@]}"; do
    case "$s" in basic|special|subdir) ;; lock) HAS_LOCK=1 ;; *) usage >&2; exit 2 ;; esac
done
# Always run in this order: basic's first case is the plain mount.
SUITE_LIST=()
for s in basic special subdir lock; do
    [[ ",${SUITES:-}," == *",$s,"* ]] && SUITE_LIST+=("$s")
done
[ -n "$GUESTS" ] || { if [ -n "$HAS_LOCK" ]; then GUESTS=2; else GUESTS=1; fi; }
case "$GUESTS" in 1|2) ;; *) usage >&2; exit 2 ;; esac
need_root interop/run.sh

source "$INTEROP/lib/prepare.sh"
source "$INTEROP/lib/net.sh"
source "$INTEROP/lib/servers.sh"
source "$INTEROP/lib/guests.sh"
source "$INTEROP/lib/results.sh"

# Bounds (seconds). The guest-side timeouts sit inside the host-side ones.
BOOT_SECONDS_MAX=90
declare -A SUITE_SECONDS_MAX=([basic]=300 [special]=420 [subdir]=240 [lock]=360 [lock2]=480)
RUN_SECONDS_MAX=1800
REBOOT_WAIT_SECONDS_MAX=600

run_dirs "$SERVER_KIND"

cleanup() {
    local rc=$?
    trap - EXIT INT TERM USR1
    local i
    for i in 0 1; do guest_kill "$i"; done
    server_stop
    net_down
    save_logs 0 1 || true
    end_run "$rc"
}
set_traps

mkdir -p "$CACHE"
need_packages $HOST_PACKAGES
[ "$SERVER_KIND" = ganesha ] && need_packages $GANESHA_PACKAGES
prepare_kernel
prepare_initramfs
prepare_suites
if [ "$SERVER_KIND" = hanfs ]; then use_hanfs_bin "$HANFS_BIN_ARG"; fi

mkdir -p "$RUN/logs" "$RUN/sync" "$LOGDIR_FINAL"
for i in 0 1; do
    mkdir -p "$RUN/g$i/out" "$RUN/g$i/nfs-state/sm" "$RUN/g$i/nfs-state/sm.bak" "$RUN/g$i/bin"
    cp "$SUITE_BIN"/* "$RUN/g$i/bin/"
done

net_up
server_start
if [ -n "$HAS_LOCK" ] && ! grep -qw nlockmgr "$LOGDIR/rpcinfo.txt" 2>/dev/null; then
    log "WARNING: $SERVER_KIND registers no nlockmgr (100021) on its portmapper: every lock case will fail at its bound (--case-timeout $CASE_TIMEOUT s)"
fi

if [ -n "$SHELL_MODE" ]; then
    log "shell mode: mount with  mount -t nfs $SERVER_IP:/export /mnt ; suites are in /share/bin"
    guest_start 0 shell
    exit 0
fi

# Guest jobs. Guest A runs the suites in order; guest B only the two-guest lock cases.
JOB_A=() JOB_B=()
for s in "${SUITE_LIST[@]}"; do
    JOB_A+=("$s")
    if [ "$s" = lock ] && [ "$GUESTS" = 2 ]; then JOB_A+=(lock2-a1); JOB_B+=(lock2-b); fi
done
write_job 0 "${JOB_A[@]}"
[ "$GUESTS" = 2 ] && write_job 1 "${JOB_B[@]}"

START=$(date +%s)
[ -n "$KILL_AFTER" ] && KILL_SERVER_AT=$((START + KILL_AFTER))
budget=$BOOT_SECONDS_MAX
for s in "${JOB_A[@]}"; do budget=$((budget + ${SUITE_SECONDS_MAX[${s%%-*}]})); done
DEADLINE=$((START + (budget < RUN_SECONDS_MAX ? budget : RUN_SECONDS_MAX)))
guest_start 0 boot1
[ "$GUESTS" = 2 ] && guest_start 1 boot1

guest_wait 0 "$DEADLINE" || true
if [ -f "$RUN/sync/a_poweroff" ]; then
    # Guest A powered off holding a lock (lock2 phase 1). Boot it again: statd sends SM_NOTIFY.
    write_job 0 lock2-a2
    guest_start 0 boot2
    guest_wait 0 "$(( $(date +%s) + REBOOT_WAIT_SECONDS_MAX ))" || true
fi
# If guest A is gone and guest B still waits for it, tell B to stop waiting.
[ "$GUESTS" = 2 ] && [ ! -f "$RUN/sync/b_done" ] && touch "$RUN/sync/a_failed"
[ "$GUESTS" = 2 ] && { guest_wait 1 "$(( $(date +%s) + BOOT_SECONDS_MAX ))" || true; }
log "guests finished after $(( $(date +%s) - START )) s"

set +e
report_results
exit $?
