# interop/lib/failover.sh: sourced by failover.sh, killloop.sh, lockfailover.sh, powerfail.sh and
# soak.sh. Owns the three-node hanfs cluster (configs, start, init, status, kill -9 of the active
# and the takeover wait, restart, catch-up wait), failover.sh's guest job that appends timestamp
# lines through the VIP, and the stall analysis of that file. By default every node runs in the
# test namespace with its peer port on the bridge address; lib/nodens.sh (sourced after this
# file) gives each node its own namespace and address instead (NODE_NS, NODE_ADDRS,
# VIP_INTERFACE).

VIP=10.99.0.100
VIP_PREFIX=24
PEER_PORTS=(7101 7102 7103)          # node 1, 2 (storage), 3 (witness), on the bridge address
NODE_ROLES=(storage storage witness)
declare -A NODE_PID=()
# Per node (index id-1): the address its Raft peer port listens on. lib/nodens.sh replaces these.
NODE_ADDRS=("$SERVER_IP" "$SERVER_IP" "$SERVER_IP")
# The interface each storage node announces the VIP on, and the cluster's name in the configs.
VIP_INTERFACE=br0
CLUSTER_NAME=interop-failover
# HANFS_NO_TICKLE for every node (1: no tickle ACKs; powerfail.sh and soak.sh --no-tickle).
NO_TICKLE=${NO_TICKLE:-0}
declare -A NODE_NS=()
# Bounds (seconds) of every wait below.
ADMIN_WAIT_SECONDS_MAX=30
SERVE_WAIT_SECONDS_MAX=60
CATCHUP_WAIT_SECONDS_MAX=60
RESUME_WAIT_SECONDS_MAX=60
CLI_SECONDS_MAX=20
# Polls (0.1 s) for the new active's `serving` log line after its VIP answers.
SERVING_LINE_POLLS_MAX=50
# Guest side: append period and a bound on the number of lines (the job stops itself).
APPEND_PERIOD=0.2
APPEND_LINES_MAX=20000

node_dir() { echo "$RUN/node$1"; }
node_config() { echo "$RUN/node$1/hanfs.toml"; }

# node_netns ID: the network namespace node ID runs in (its own one under lib/nodens.sh).
node_netns() { echo "${NODE_NS[$1]:-$NS}"; }

# write_cluster_configs EXPORT_DIR: one config per node, shared export, secret 0600; peers at
# NODE_ADDRS, the VIP announced on VIP_INTERFACE.
write_cluster_configs() {
    local export_dir=$1 id i
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$RUN/secret"
    chmod 600 "$RUN/secret"
    for id in 1 2 3; do
        mkdir -p "$(node_dir "$id")/state"
        {
            printf '[server]\nlisten = "%s"\nstate_dir = "%s"\n\n' "$VIP" "$(node_dir "$id")/state"
            printf '[[export]]\nname = "/export"\ndir = "%s"\nid = 1\nclients = "*(rw,no_root_squash,insecure)"\n\n' "$export_dir"
            printf '[cluster]\nname = "%s"\nnode_id = %s\nsecret_file = "%s"\n\n' "$CLUSTER_NAME" "$id" "$RUN/secret"
            for i in 0 1 2; do
                printf '[[cluster.peer]]\nid = %s\naddr = "%s:%s"\nrole = "%s"\n\n' $((i + 1)) "${NODE_ADDRS[$i]}" "${PEER_PORTS[$i]}" "${NODE_ROLES[$i]}"
            done
            # Both storage nodes may share a namespace, so each needs its own VIP device name.
            printf '[vip]\ninterface = "%s"\naddr = "%s"\nprefix = %s\ndevice = "hanfs-vip%s"\n' "$VIP_INTERFACE" "$VIP" "$VIP_PREFIX" "$id"
        } > "$(node_config "$id")"
    done
}

# hanfs_cli ID ARGS...: runs `hanfs-server ARGS --config <node ID's config>` in the namespace, bounded.
hanfs_cli() {
    local id=$1
    shift
    timeout -s KILL "$CLI_SECONDS_MAX" ip netns exec "$NS" "$HANFS_BIN" "$@" --config "$(node_config "$id")"
}

# node_start ID: `hanfs-server run` in the node's namespace (ip netns exec execs, so $! is the
# server).
node_start() {
    local id=$1 sock i
    ip netns exec "$(node_netns "$id")" env RUST_LOG="${RUST_LOG:-info}" HANFS_TEST_FAULTS=1 HANFS_NO_TICKLE="$NO_TICKLE" \
        "$HANFS_BIN" run --config "$(node_config "$id")" >> "$LOGDIR/node$id.log" 2>&1 < /dev/null &
    NODE_PID[$id]=$!
    sock="$(node_dir "$id")/state/admin.sock"
    for ((i = 0; i < ADMIN_WAIT_SECONDS_MAX * 10; i++)); do
        [ -S "$sock" ] && return 0
        kill -0 "${NODE_PID[$id]}" 2>/dev/null || { tail -n 20 "$LOGDIR/node$id.log" >&2; die "node $id exited at start"; }
        sleep 0.1
    done
    die "node $id: no admin socket after ${ADMIN_WAIT_SECONDS_MAX}s"
}

node_kill9() {
    local id=$1
    [ -n "${NODE_PID[$id]:-}" ] || return 0
    kill -KILL "${NODE_PID[$id]}" 2>/dev/null || true
    wait "${NODE_PID[$id]}" 2>/dev/null || true
    NODE_PID[$id]=
}

nodes_stop_all() {
    local id
    for id in 1 2 3; do node_kill9 "$id"; done
}

# status_value ID KEY: the value of `KEY:` in node ID's status (first match), empty if none.
status_value() {
    hanfs_cli "$1" status 2>/dev/null | awk -v k="$2" -F': *' 'tolower($1) == k { print $2; exit }'
}

# first number in a string ("2", "node 2 (storage)"); empty (and status 0) if none.
first_number() { grep -oE '[0-9]+' <<< "$1" | head -n1 || true; }

# These never fail (an unanswered status is an empty value), so callers under set -e go on polling.
leader_of() { first_number "$(status_value "$1" leader || true)"; }

applied_of() {
    local v k
    for k in applied_index applied last_applied; do
        v=$(status_value "$1" "$k" || true)
        if [ -n "$v" ]; then
            first_number "$v"
            return 0
        fi
    done
    return 0
}

# serving_since ID: epoch seconds (with fraction) of node ID's last "serving" log line, or empty.
serving_since() {
    local ts
    ts=$(grep -a 'node::lifecycle: serving' "$LOGDIR/node$1.log" 2>/dev/null | tail -n1 | cut -d' ' -f1 || true)
    [ -n "$ts" ] && date -d "$ts" +%s.%N 2>/dev/null || true
}

# vip_answers: does VIP:2049 accept a TCP connection inside the namespace?
vip_answers() { ip netns exec "$NS" timeout 2 bash -c "exec 3<>/dev/tcp/$VIP/2049" 2>/dev/null; }

# wait_serving EXCLUDE: echoes the storage node (not EXCLUDE) that is leader by its own status
# while the VIP accepts NFS connections; dies after the bound.
wait_serving() {
    local exclude=${1:-0} deadline id
    deadline=$(( $(date +%s) + SERVE_WAIT_SECONDS_MAX ))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        for id in 1 2; do
            [ "$id" = "$exclude" ] && continue
            [ -n "${NODE_PID[$id]:-}" ] || continue
            if [ "$(leader_of "$id")" = "$id" ] && vip_answers; then
                echo "$id"
                return 0
            fi
        done
        sleep 0.1
    done
    die "no storage node serving on $VIP within ${SERVE_WAIT_SECONDS_MAX}s"
}

# kill_active_and_wait ACTIVE: the failover step failover.sh, killloop.sh and lockfailover.sh share.
# kill -9 of node ACTIVE, then waits for the other storage node to serve on the VIP and (bounded)
# for its `serving` log line of this takeover, not its previous one: the listeners open before the
# gratuitous ARP and that line. The VIP lives on the killed node's own TUN device (hanfs-vipN),
# which the kernel destroys with the process: a client's reconnect SYNs go unanswered (not
# refused) until the new active has claimed the VIP and sent its gratuitous ARP.
# Sets KILLED_AT (epoch seconds with fraction), NEW_ACTIVE and TAKEOVER_SECONDS (kill to that
# line, "?" when it did not come within the polls). Returns 1 (NEW_ACTIVE empty, wait_serving's
# message on stderr) when no node served within SERVE_WAIT_SECONDS_MAX.
kill_active_and_wait() {
    local active=$1 ready= i
    NEW_ACTIVE= TAKEOVER_SECONDS=?
    KILLED_AT=$(date +%s.%N)
    node_kill9 "$active"
    NEW_ACTIVE=$(wait_serving "$active") || { NEW_ACTIVE=; return 1; }
    for ((i = 0; i < SERVING_LINE_POLLS_MAX; i++)); do
        ready=$(serving_since "$NEW_ACTIVE")
        awk -v a="$KILLED_AT" -v b="${ready:-0}" 'BEGIN { exit !(b > a) }' && break
        sleep 0.1
    done
    TAKEOVER_SECONDS=$(awk -v a="$KILLED_AT" -v b="${ready:-0}" 'BEGIN { if (b > a) printf "%.2f", b - a; else print "?" }')
}

# restart_and_catch_up ID LEADER: starts node ID again and waits until it has caught up with
# LEADER. Returns 1 when it did not within CATCHUP_WAIT_SECONDS_MAX (wait_caught_up's message on
# stderr).
restart_and_catch_up() {
    node_start "$1"
    (wait_caught_up "$1" "$2")
}

# wait_caught_up ID LEADER: until ID's applied index reaches the leader's.
wait_caught_up() {
    local id=$1 leader=$2 deadline mine theirs
    deadline=$(( $(date +%s) + CATCHUP_WAIT_SECONDS_MAX ))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        theirs=$(applied_of "$leader")
        mine=$(applied_of "$id")
        if [ -n "$mine" ] && [ -n "$theirs" ] && [ "$mine" -ge "$theirs" ]; then
            log "node $id caught up (applied $mine, leader $leader applied $theirs)"
            return 0
        fi
        sleep 0.2
    done
    die "node $id did not catch up with leader $leader within ${CATCHUP_WAIT_SECONDS_MAX}s (applied ${mine:-?} vs ${theirs:-?})"
}

# write_failover_job: guest A mounts VIP:/export/held (a directory below the export), holds an fd on it,
# appends "<uptime> <n>" every APPEND_PERIOD s until /sync/stop appears; every stderr line
# (an error, ESTALE included) goes to /share/out/errors.txt.
write_failover_job() {
    # The guest mounts the directory itself, below the export (issue 12 item 1): a subdirectory
    # mount through the VIP must survive every failover like the export's own.
    mkdir -p "$EXPORT_DIR/held"
    chmod 1777 "$EXPORT_DIR/held"
    cat > "$RUN/g0/job.sh" <<JOB
#!/bin/sh
# generated by interop/failover.sh
O=/share/out
mkdir -p /mnt
if ! mount -t nfs -o vers=3,proto=tcp,hard,nolock,timeo=10,retrans=3 $VIP:/export/held /mnt 2> \$O/mount.txt; then
    echo "failover: mount of $VIP:/export/held failed"; cat \$O/mount.txt; exit 1
fi
cd /mnt || { echo "failover: cd failed"; exit 1; }
exec 8< /mnt
touch /sync/mounted
n=0
: > \$O/errors.txt
while [ ! -f /sync/stop ] && [ \$n -lt $APPEND_LINES_MAX ]; do
    t=\$(cut -d' ' -f1 /proc/uptime)
    echo "\$t \$n" >> log.txt || echo "append \$n failed at \$t" >&2
    ls . > /dev/null || echo "ls of the held directory failed at \$t" >&2
    n=\$((n + 1))
    sleep $APPEND_PERIOD
done 2>> \$O/errors.txt
echo "failover: \$n lines written, \$(wc -l < \$O/errors.txt) error lines"
echo done > \$O/finished.txt
JOB
    chmod +x "$RUN/g0/job.sh"
}

# wait_guest_flag FLAG SECONDS IDX...: until $RUN/sync/FLAG exists (the guest job writes it, e.g.
# "mounted"); dies after SECONDS or when one of the guests IDX... has powered off.
wait_guest_flag() {
    local flag=$1 deadline=$(( $(date +%s) + $2 )) idx
    shift 2
    until [ -f "$RUN/sync/$flag" ]; do
        [ "$(date +%s)" -lt "$deadline" ] || die "no sync/$flag from the guests in time"
        for idx in "$@"; do
            guest_running "$idx" || die "guest ${GUEST_NAMES[$idx]} exited before sync/$flag (console: $LOGDIR_FINAL/${GUEST_NAMES[$idx]}-boot1.console)"
        done
        sleep 0.5
    done
}

lines_now() { { wc -l < "$EXPORT_DIR/held/log.txt"; } 2>/dev/null || echo 0; }

# wait_lines N: until the file has at least N lines (the guest is appending again).
wait_lines() {
    local want=$1 deadline
    deadline=$(( $(date +%s) + RESUME_WAIT_SECONDS_MAX ))
    while [ "$(lines_now)" -lt "$want" ]; do
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        guest_running 0 || return 1
        sleep 0.1
    done
}

# stall_of FROM TO: largest gap (s) between consecutive lines FROM..TO (1-based, inclusive) of the log.
stall_of() {
    awk -v a="$1" -v b="$2" 'NR >= a && NR <= b { if (seen) { g = $1 - prev; if (g > max) max = g } prev = $1; seen = 1 }
        END { printf "%.2f\n", max + 0 }' "$EXPORT_DIR/held/log.txt"
}

# median of numbers on stdin.
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) { print "nan"; exit } if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
