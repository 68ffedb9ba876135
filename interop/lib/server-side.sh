#!/bin/bash
# interop/lib/server-side.sh: runs inside the test namespace and a private mount namespace.
# Owns the server-side processes (rpcbind + rpc.statd + ganesha.nfsd, or hanfs-server), writes
# $RUN/server.pid and $RUN/server.ready, and stops every child it started on TERM/EXIT.
set -uo pipefail
KIND=$1 RUN=$2 EXPORT_DIR=$3 HANFS_BIN=$4 SERVER_IP=$5
LOGDIR=$RUN/logs
PIDS=()
stop_all() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    sleep 1
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    wait 2>/dev/null
}
trap 'stop_all; exit 0' TERM INT
trap stop_all EXIT

mount -t tmpfs tmpfs /run
mount --bind "$RUN/server-state/varlibnfs" /var/lib/nfs
mkdir -p /run/rpcbind /run/ganesha /var/lib/nfs/sm /var/lib/nfs/sm.bak /var/lib/nfs/ganesha

wait_rpc() {   # wait_rpc PROG: bounded wait until PROG is registered with the local portmapper
    local i
    for ((i = 0; i < 60; i++)); do
        rpcinfo -p 127.0.0.1 2>/dev/null | awk '{print $5}' | grep -qx "$1" && return 0
        sleep 0.5
    done
    echo "server-side: $1 not registered after 30 s" >&2
    return 1
}

case "$KIND" in
ganesha)
    chown _rpc /run/rpcbind 2>/dev/null
    rpcbind -f -w > "$LOGDIR/rpcbind.log" 2>&1 < /dev/null &
    PIDS+=($!)
    wait_rpc portmapper || exit 1
    rpc.statd -F -d > "$LOGDIR/statd.log" 2>&1 < /dev/null &
    PIDS+=($!)
    wait_rpc status || exit 1
    ganesha.nfsd -F -f "$RUN/ganesha.conf" -L "$LOGDIR/server.log" -p /run/ganesha/ganesha.pid -N NIV_EVENT \
        > "$LOGDIR/server.stdout" 2>&1 < /dev/null &
    SPID=$!
    PIDS+=($SPID)
    echo "$SPID" > "$RUN/server.pid"
    wait_rpc nlockmgr || exit 1
    wait_rpc mountd || exit 1
    ;;
hanfs)
    RUST_LOG=${RUST_LOG:-info} "$HANFS_BIN" run --export "$EXPORT_DIR" --listen "$SERVER_IP" \
        --state-dir "$RUN/server-state/hanfs" --clients '*(rw,no_root_squash,insecure)' \
        > "$LOGDIR/server.log" 2>&1 < /dev/null &
    SPID=$!
    PIDS+=($SPID)
    echo "$SPID" > "$RUN/server.pid"
    for ((i = 0; i < 60; i++)); do
        (exec 3<>"/dev/tcp/$SERVER_IP/2049") 2>/dev/null && break
        kill -0 "$SPID" 2>/dev/null || { echo "server-side: hanfs-server exited" >&2; exit 1; }
        sleep 0.5
    done
    ;;
*) echo "server-side: unknown server $KIND" >&2; exit 1 ;;
esac
touch "$RUN/server.ready"
# Stay until told to stop; if the server dies the guests see it (that is what --kill-server-after tests).
while :; do sleep 1; done
