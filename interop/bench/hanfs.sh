# interop/bench/hanfs.sh: sourced by run.sh. Owns the hanfs setups inside the bench's network
# namespace $NS, all serving $EXPORT_DIR on $SERVER_IP with the default ports (portmap 111, NFS
# 2049, MOUNT 20048):
#   hanfs       one node (no [cluster]), export option `async`
#   hanfs-sync  one node, export option `sync` (knfsd's default: metadata flushed before replies)
#   cluster     three nodes, `async`: storage 1, storage 2 and a witness, Raft peers on
#               127.0.0.2/.3/.4 inside the namespace (CLUSTER_PEER_IPS), `init` on node 1, then
#               the active serves $SERVER_IP (the same setup cluster.sh builds on the host's loopback)
# Every node runs under `ip netns exec` (which execs the server: the PID is the server's) and is
# stopped by hanfs_stop by its PID. Needs: HANFS_BIN, NS, RUN, LOGDIR, SERVER_IP, log, die.

# Raft peer addresses of the cluster's nodes 1, 2, 3 (3 is the witness), inside the namespace.
CLUSTER_PEER_IPS=(127.0.0.2 127.0.0.3 127.0.0.4)
CLUSTER_PEER_PORT=7100
HANFS_READY_POLLS_MAX=300 HANFS_POLL_S=0.2 HANFS_STOP_POLLS_MAX=50
HANFS_PIDS=()

# hanfs_config KIND NODE_ID: the TOML of one node.
hanfs_config() {
    local kind=$1 id=$2 option=async i role
    [ "$kind" = hanfs-sync ] && option=sync
    printf '[server]\nlisten = "%s"\nstate_dir = "%s"\n\n' "$SERVER_IP" "$RUN/server-state/node$id"
    printf '[[export]]\nname = "/export"\ndir = "%s"\nid = 1\nclients = "*(rw,no_root_squash,insecure,%s)"\n\n' \
        "$EXPORT_DIR" "$option"
    [ "$kind" = cluster ] || return 0
    printf '[cluster]\nname = "bench"\nnode_id = %s\nsecret_file = "%s"\n\n' "$id" "$RUN/cluster.secret"
    for i in 1 2 3; do
        role=storage; [ $i = 3 ] && role=witness
        printf '[[cluster.peer]]\nid = %s\naddr = "%s:%s"\nrole = "%s"\n\n' \
            $i "${CLUSTER_PEER_IPS[$((i - 1))]}" "$CLUSTER_PEER_PORT" $role
    done
}

# hanfs_wait_tcp ADDR PORT: bounded wait until something listens there (inside the namespace).
hanfs_wait_tcp() {
    local i
    for ((i = 0; i < HANFS_READY_POLLS_MAX; i++)); do
        ip netns exec "$NS" timeout 1 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null && return 0
        sleep $HANFS_POLL_S
    done
    return 1
}

# hanfs_start KIND: starts the setup; returns once the active serves portmap, MOUNT and NFS.
hanfs_start() {
    local kind=$1 id ids=1 i
    EXPORT_DIR="$RUN/export"
    mkdir -p "$EXPORT_DIR"
    chmod 1777 "$EXPORT_DIR"
    if [ "$kind" = cluster ]; then
        ids="1 2 3"
        head -c 32 /dev/urandom | base64 > "$RUN/cluster.secret"
        chmod 600 "$RUN/cluster.secret"
    fi
    for id in $ids; do
        mkdir -p "$RUN/server-state/node$id"
        hanfs_config "$kind" "$id" > "$RUN/node$id.toml"
        RUST_LOG=${RUST_LOG:-warn,hanfs_server=info,hanfs_raft=info} ip netns exec "$NS" "$HANFS_BIN" run --config "$RUN/node$id.toml" \
            > "$LOGDIR/node$id.log" 2>&1 < /dev/null &
        HANFS_PIDS+=($!)
    done
    if [ "$kind" = cluster ]; then
        for id in $ids; do
            for ((i = 0; i < HANFS_READY_POLLS_MAX; i++)); do
                [ -S "$RUN/server-state/node$id/admin.sock" ] && break
                sleep $HANFS_POLL_S
            done
            [ -S "$RUN/server-state/node$id/admin.sock" ] || { tail -n 20 "$LOGDIR/node$id.log" >&2; die "node $id: no admin socket"; }
        done
        ip netns exec "$NS" "$HANFS_BIN" init --config "$RUN/node1.toml" > "$LOGDIR/init.log" 2>&1 \
            || { cat "$LOGDIR/init.log" >&2; die "hanfs-server init failed"; }
    fi
    for port in 111 20048 2049; do
        hanfs_wait_tcp "$SERVER_IP" $port || { tail -n 20 "$LOGDIR"/node*.log >&2; die "$kind: nothing on $SERVER_IP:$port"; }
    done
    log "$kind up (pids ${HANFS_PIDS[*]})"
}

# hanfs_stop: TERM every node, wait (bounded), then KILL.
hanfs_stop() {
    local p i
    for p in "${HANFS_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${HANFS_PIDS[@]}"; do
        for ((i = 0; i < HANFS_STOP_POLLS_MAX; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    HANFS_PIDS=()
}
