# interop/lib/harness.sh: sourced by run.sh, failover.sh, killloop.sh and lockfailover.sh. Owns the
# pieces of their prologue and epilogue that are the same in each: option value checks, the root
# check, the hanfs-server binary (--hanfs-bin or target/release), the run-bound watchdog and the
# copy of a run's logs and guest outputs to $LOGDIR_FINAL. Needs lib/prepare.sh (log, die,
# prepare_hanfs) before any of these is called.

# int_in VALUE MIN MAX: VALUE is a decimal integer within [MIN, MAX].
int_in() { [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -ge "$2" ] && [ "$1" -le "$3" ]; }

# need_root SCRIPT: exits 2 unless running as root.
need_root() {
    [ "$(id -u)" = 0 ] || { echo "$1 must run as root (namespaces, taps)" >&2; exit 2; }
}

# use_hanfs_bin ARG: HANFS_BIN is ARG (resolved; must be executable) or, when ARG is empty,
# target/release/hanfs-server (rebuilt if stale).
use_hanfs_bin() {
    if [ -n "$1" ]; then
        HANFS_BIN=$(realpath "$1")
        [ -x "$HANFS_BIN" ] || die "--hanfs-bin $1 is not executable"
    else
        prepare_hanfs
    fi
}

# need_cluster_bin: the binary has the cluster commands (init).
need_cluster_bin() {
    "$HANFS_BIN" init --help > /dev/null 2>&1 || die "$HANFS_BIN has no cluster commands (init)"
}

# start_watchdog SECONDS SIGNAL: sends SIGNAL to this script after SECONDS (the run bound).
# No stdout/stderr: a pipe reader (`script.sh | tail`) must not wait for the watchdog's sleep.
start_watchdog() {
    ( sleep "$1"; kill -"$2" $$ ) > /dev/null 2>&1 &
    WATCHDOG=$!
}

# stop_watchdog: the run-bound subshell and its sleep.
stop_watchdog() {
    [ -n "${WATCHDOG:-}" ] || return 0
    pkill -P "$WATCHDOG" 2>/dev/null || true
    kill "$WATCHDOG" 2>/dev/null || true
    WATCHDOG=
}

# save_logs GUEST_IDX...: copies $RUN/logs and each listed guest's out/ (as gN-out/) to
# $LOGDIR_FINAL, when the run got as far as making its logs directory. Returns 1 when it did not
# (callers copy their own extra files only after a 0).
save_logs() {
    local i
    [ -d "$RUN/logs" ] || return 1
    mkdir -p "$LOGDIR_FINAL"
    cp -a "$RUN/logs/." "$LOGDIR_FINAL/" 2>/dev/null || true
    for i in "$@"; do
        [ -d "$RUN/g$i/out" ] && cp -a "$RUN/g$i/out/." "$LOGDIR_FINAL/g$i-out/" 2>/dev/null
    done
    return 0
}

# common_opt ARGS...: the `*)` arm of each script's option loop, for the options every script takes:
# --hanfs-bin PATH (HANFS_BIN_ARG), --keep (KEEP), -h/--help (usage, exit 0); anything else is
# usage on stderr, exit 2. Sets OPT_SHIFT, the number of arguments it used (the caller shifts).
common_opt() {
    case "$1" in
    --hanfs-bin) HANFS_BIN_ARG=${2:-}; OPT_SHIFT=2 ;;
    --keep) KEEP=1; OPT_SHIFT=1 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
}

# set_traps: the script's cleanup on EXIT; "interrupted" (exit 130) on INT and TERM; the run-bound
# message (exit 2) on USR1, which `start_watchdog SECONDS USR1` sends. cleanup starts with
# `trap - EXIT INT TERM USR1`.
set_traps() {
    trap cleanup EXIT
    trap 'log "interrupted"; exit 130' INT TERM
    trap 'log "ERROR: the run bound of ${RUN_SECONDS_MAX}s passed"; exit 2' USR1
}

# run_dirs NAME: RUN_ID (UTC start time, NAME, this script's pid); RUN, the run directory under
# .cache/runs; LOGDIR, its logs/ (the servers and QEMU write there); LOGDIR_FINAL under .cache/logs,
# where cleanup copies LOGDIR (save_logs).
run_dirs() {
    RUN_ID="$(date -u +%Y%m%d-%H%M%S)-$1-$$"
    RUN=$CACHE/runs/$RUN_ID
    LOGDIR_FINAL=$CACHE/logs/$RUN_ID
    LOGDIR=$RUN/logs
}

# end_run RC: the last step of cleanup: removes the run directory unless --keep, names the logs
# directory, exits RC.
end_run() {
    [ -z "$KEEP" ] && rm -rf "$RUN"
    log "logs: $LOGDIR_FINAL"
    exit "$1"
}
