# interop/lib/servers.sh: sourced by run.sh. Owns the server under test inside the namespace:
# nfs-ganesha (VFS FSAL, NFSv3 + NLM, with its own rpcbind and rpc.statd) or hanfs-server.
# Both run from server-side.sh in a private mount namespace (tmpfs /run, private /var/lib/nfs),
# so nothing touches the host's rpcbind socket or statd state.

SERVER_READY_TIMEOUT_SECONDS=60

write_ganesha_conf() {
    cat > "$RUN/ganesha.conf" <<CONF
NFS_CORE_PARAM {
    Protocols = 3;
    # All addresses of the private namespace (br0 + lo): statd calls ganesha back on localhost.
    Bind_Addr = 0.0.0.0;
    Enable_NLM = true;
    Enable_RQUOTA = false;
    Mount_Path_Pseudo = true;
    NFS_Port = 2049;
    MNT_Port = 20048;
    NLM_Port = 32803;
}
NFSV4 {
    Graceless = true;
    RecoveryBackend = fs;
}
NFS_KRB5 { Active_krb5 = false; }
EXPORT {
    Export_Id = 1;
    Path = "$EXPORT_DIR";
    Pseudo = /export;
    Protocols = 3;
    Transports = TCP, UDP;
    Access_Type = RW;
    Squash = No_Root_Squash;
    SecType = sys;
    FSAL { Name = VFS; }
    ${GANESHA_EXPORT_EXTRA:-}
}
LOG { Default_Log_Level = EVENT; ${GANESHA_LOG_EXTRA:-} }
CONF
}

# Starts the server; sets SERVER_SUPERVISOR_PID. server.pid (the NFS server process) appears in $RUN.
server_start() {
    EXPORT_DIR="$RUN/export"
    mkdir -p "$EXPORT_DIR" "$RUN/server-state/varlibnfs" "$RUN/server-state/hanfs"
    chmod 1777 "$EXPORT_DIR"
    if [ "$SERVER_KIND" = ganesha ]; then write_ganesha_conf; fi
    setsid ip netns exec "$NS" unshare --mount --propagation private \
        bash "$INTEROP/lib/server-side.sh" "$SERVER_KIND" "$RUN" "$EXPORT_DIR" "${HANFS_BIN:-}" "$SERVER_IP" \
        > "$LOGDIR/server-supervisor.log" 2>&1 < /dev/null &
    SERVER_SUPERVISOR_PID=$!
    local i
    for ((i = 0; i < SERVER_READY_TIMEOUT_SECONDS * 2; i++)); do
        if [ -f "$RUN/server.ready" ]; then break; fi
        kill -0 "$SERVER_SUPERVISOR_PID" 2>/dev/null || { tail -n 20 "$LOGDIR"/server*.log >&2; die "server exited during start-up"; }
        sleep 0.5
    done
    [ -f "$RUN/server.ready" ] || die "server not ready after ${SERVER_READY_TIMEOUT_SECONDS}s"
    ip netns exec "$NS" rpcinfo -p "$SERVER_IP" > "$LOGDIR/rpcinfo.txt" 2>&1 || true
    log "server $SERVER_KIND up (pid $(cat "$RUN/server.pid")); rpcinfo -p in ${LOGDIR_FINAL:-$LOGDIR}/rpcinfo.txt"
}

server_kill_hard() {
    local pid
    pid=$(cat "$RUN/server.pid" 2>/dev/null) || return 0
    log "killing the server (pid $pid) with SIGKILL, as requested"
    kill -KILL "$pid" 2>/dev/null || true
}

server_stop() {
    [ -n "${SERVER_SUPERVISOR_PID:-}" ] || return 0
    kill -TERM "$SERVER_SUPERVISOR_PID" 2>/dev/null || true
    local i
    for ((i = 0; i < 20; i++)); do
        kill -0 "$SERVER_SUPERVISOR_PID" 2>/dev/null || break
        sleep 0.5
    done
    kill -KILL "$SERVER_SUPERVISOR_PID" 2>/dev/null || true
    SERVER_SUPERVISOR_PID=
}
