#!/bin/bash
# interop/scale.sh: hanfs's scale run (issue 10). As root, on loopback only:
#  1. builds target/release/{hanfs-server,hanfs-scale};
#  2. creates N empty files directly on the disk in a fresh export tree under
#     interop/.cache/scale/export (1000 to a subdirectory; hanfs-scale checks
#     free inodes and space first and refuses if there are not enough);
#  3. starts a three-node cluster on 127.89.0.1 (storage 1, storage 2,
#     witness), `init`s it and waits for the active to serve;
#  4. walks the whole tree once with READDIRPLUS over NFS, saving every
#     returned handle and fileid (entries, seconds, entries/s);
#  5. samples the active's VmRSS/VmHWM during and right after the walk;
#  6. kill -9 of the active, waits for the other storage node to serve, then
#     GETATTRs a random sample of the saved handles there (OK/STALE/other);
#  7. `debug snapshot` on the new leader: the snapshot file's size and each
#     node's state directory size;
#  8. wipes the killed node's state directory, restarts it and times until
#     its applied index reaches the leader's;
#  9. prints one summary block with the targets (RSS <= 512 MiB, snapshot
#     <= 64 MiB, catch-up <= 60 s, 0 STALE) and PASS/FAIL for each; removes
#     the export tree and the run directory (unless --keep).
# Every process started here is stopped by PID in the exit trap.
# Exit status: 0 every target met, 1 a target missed or a step failed,
# 2 harness error (bad arguments, not root, build, cluster start).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
    cat <<USAGE
usage: interop/scale.sh [--files N] [--sample N] [--per-dir N] [--tasks N]
                        [--walk-limit-s S] [--drop-caches] [--keep] [--no-build] [--bin-dir DIR]
  --files N        files created on the disk (default 10000000, at most 50000000)
  --sample N       handles GETATTRed after the failover (default 10000, at most 1000000)
  --per-dir N      files per subdirectory (default 1000)
  --tasks N        concurrent NFS sessions of the walk (default 4)
  --walk-limit-s S bound on the walk (default 14400); a cut walk is a FAIL
  --drop-caches    sync and drop the kernel's page, dentry and inode caches before the walk
                   (a cold walk; affects the whole machine, so off by default: the walk
                   then reads a tree the populate step has just put in the caches)
  --keep           keep the export tree and the run directory afterwards
  --no-build       use target/release/{hanfs-server,hanfs-scale} as they are
  --bin-dir DIR    take both binaries from DIR instead (implies --no-build)
USAGE
}

FILES=10000000 SAMPLE=10000 PER_DIR=1000 TASKS=4 WALK_LIMIT_S=14400 DROP_CACHES= KEEP= BUILD=1 BIN_DIR=$REPO/target/release
while [ $# -gt 0 ]; do
    case "$1" in
    --files) FILES=${2:-}; shift 2 ;;
    --sample) SAMPLE=${2:-}; shift 2 ;;
    --per-dir) PER_DIR=${2:-}; shift 2 ;;
    --tasks) TASKS=${2:-}; shift 2 ;;
    --walk-limit-s) WALK_LIMIT_S=${2:-}; shift 2 ;;
    --drop-caches) DROP_CACHES=1; shift ;;
    --keep) KEEP=1; shift ;;
    --no-build) BUILD=; shift ;;
    --bin-dir) BIN_DIR=${2:-}; BUILD=; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done
num() { [[ $1 =~ ^[0-9]+$ ]] && [ "$1" -ge "$2" ] && [ "$1" -le "$3" ]; }
num "$FILES" 1 50000000 && num "$SAMPLE" 1 1000000 && num "$PER_DIR" 1 100000 && num "$TASKS" 1 64 &&
    num "$WALK_LIMIT_S" 1 86400 || { usage >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "scale.sh: run as root (hanfs resolves handles with open_by_handle_at)" >&2; exit 2; }

HANFS_BIN=$BIN_DIR/hanfs-server SCALE_BIN=$BIN_DIR/hanfs-scale
ADDR=127.89.0.1
SERVE_POLLS_MAX=1200 POLL_S=0.1 STOP_POLLS_MAX=100 CATCHUP_POLLS_MAX=6000
RSS_TARGET_MIB=512 SNAPSHOT_TARGET_MIB=64 CATCHUP_TARGET_S=60
CACHE=$REPO/interop/.cache/scale
EXPORT=$CACHE/export RUN=$CACHE/run

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

if [ -n "$BUILD" ]; then
    log "building hanfs-server and hanfs-scale (release)"
    (cd "$REPO" && cargo build --release -q -p hanfs-cli -p hanfs-scale) || exit 2
fi
[ -x "$HANFS_BIN" ] && [ -x "$SCALE_BIN" ] || { echo "missing $HANFS_BIN or $SCALE_BIN" >&2; exit 2; }

declare -A NODE_PID=()

stop_node() { # ID
    local p=${NODE_PID[$1]:-} i
    [ -n "$p" ] || return 0
    kill -TERM "$p" 2>/dev/null || true
    for ((i = 0; i < STOP_POLLS_MAX; i++)); do kill -0 "$p" 2>/dev/null || break; sleep $POLL_S; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
    unset "NODE_PID[$1]"
}
cleanup() {
    local id
    for id in "${!NODE_PID[@]}"; do stop_node "$id"; done
    if [ -z "$KEEP" ]; then
        log "removing $EXPORT and $RUN"
        rm -rf "$EXPORT" "$RUN"
    fi
}
trap cleanup EXIT
# A signal ends the script through `exit`, so the EXIT trap stops the nodes and cleans up.
trap 'exit 130' INT
trap 'exit 143' TERM

fail() { # MESSAGE: show the node logs' tails, exit 1
    local f
    echo "scale.sh: $*" >&2
    for f in "$RUN"/node*/node.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -15 "$f" >&2; }; done
    exit 1
}

# A port free for TCP and UDP right now.
free_port() {
    python3 - <<'PY'
import socket
for _ in range(64):
    t = socket.socket(); t.bind(("0.0.0.0", 0)); p = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("0.0.0.0", p)); print(p); break
    except OSError:
        pass
    finally:
        u.close(); t.close()
PY
}

# A `key=value` field of a hanfs-scale output line.
field() { tr ' ' '\n' <<<"$2" | awk -F= -v k="$1" '$1 == k { print substr($0, length(k) + 2) }'; }
# A `key: value` line of `hanfs-server status`.
status_of() { # ID KEY
    { "$HANFS_BIN" status --config "$RUN/node$1/hanfs.toml" 2>/dev/null || true; } |
        awk -v k="$2" -F': ' '$1 == k { print $2 }'
}
applied() { status_of "$1" applied_index; }

start_node() { # ID
    HANFS_TEST_FAULTS=1 RUST_LOG=warn "$HANFS_BIN" run --config "$RUN/node$1/hanfs.toml" \
        >>"$RUN/node$1/node.log" 2>&1 &
    NODE_PID[$1]=$!
}

wait_admin() { # ID
    local i
    for ((i = 0; i < SERVE_POLLS_MAX; i++)); do
        [ -S "$RUN/node$1/state/admin.sock" ] && return 0
        sleep $POLL_S
    done
    return 1
}

wait_port() { # PORT
    local i
    for ((i = 0; i < SERVE_POLLS_MAX; i++)); do
        timeout 1 bash -c "exec 3<>/dev/tcp/$ADDR/$1" 2>/dev/null && return 0
        sleep $POLL_S
    done
    return 1
}

# Wait until one of the storage nodes IDS leads and serves; prints its id.
wait_serving() { # IDS...
    local i id
    for ((i = 0; i < SERVE_POLLS_MAX; i++)); do
        for id in "$@"; do
            [ -n "${NODE_PID[$id]:-}" ] || continue
            if [ "$(status_of "$id" serving_here)" = yes ] && [ "$(status_of "$id" leader)" = "$id" ]; then
                wait_port "$NFS_PORT" && wait_port "$MOUNT_PORT" && { echo "$id"; return 0; }
            fi
        done
        sleep $POLL_S
    done
    return 1
}

mem_of() { # PID KEY -> KiB
    awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null || true
}
mib() { awk -v k="${1:-0}" 'BEGIN { printf "%.1f", k / 1024 }'; }
bytes_mib() { awk -v b="${1:-0}" 'BEGIN { printf "%.2f", b / 1048576 }'; }

# ---- 2. the export tree
mkdir -p "$CACHE"
if [ -e "$EXPORT" ] || [ -e "$RUN" ]; then
    log "removing the previous run's $EXPORT and $RUN"
    rm -rf "$EXPORT" "$RUN"
fi
mkdir -p "$EXPORT" "$RUN"
log "creating $FILES files ($PER_DIR per directory) in $EXPORT"
POP=$("$SCALE_BIN" populate --dir "$EXPORT" --files "$FILES" --per-dir "$PER_DIR") || exit 1
log "populate: $POP"

# ---- 3. the cluster
PORTMAP_PORT=$(free_port) NFS_PORT=$(free_port) MOUNT_PORT=$(free_port)
PEER_PORTS=("" "$(free_port)" "$(free_port)" "$(free_port)")
head -c 32 /dev/urandom | base64 >"$RUN/secret"; chmod 600 "$RUN/secret"
for id in 1 2 3; do
    mkdir -p "$RUN/node$id/state"
    {
        printf '[server]\nlisten = "%s"\nstate_dir = "%s"\n\n' $ADDR "$RUN/node$id/state"
        printf '[ports]\nportmap = %s\nnfs = %s\nmount = %s\n\n' "$PORTMAP_PORT" "$NFS_PORT" "$MOUNT_PORT"
        printf '[[export]]\nname = "/export"\ndir = "%s"\nid = 1\nclients = "*(rw,no_root_squash,insecure)"\n\n' "$EXPORT"
        printf '[cluster]\nname = "scale"\nnode_id = %s\nsecret_file = "%s"\n\n' $id "$RUN/secret"
        for i in 1 2 3; do
            role=storage; [ $i = 3 ] && role=witness
            printf '[[cluster.peer]]\nid = %s\naddr = "127.0.0.1:%s"\nrole = "%s"\n\n' $i "${PEER_PORTS[$i]}" $role
        done
    } >"$RUN/node$id/hanfs.toml"
    start_node $id
done
for id in 1 2 3; do wait_admin $id || fail "node $id: no admin socket"; done
"$HANFS_BIN" init --config "$RUN/node1/hanfs.toml" >/dev/null || fail "init failed"
ACTIVE=$(wait_serving 1 2) || fail "no storage node serves after init"
ACTIVE_PID=${NODE_PID[$ACTIVE]}
log "node $ACTIVE (pid $ACTIVE_PID) serves on $ADDR: nfs $NFS_PORT, mount $MOUNT_PORT"
TARGET=(--server $ADDR --portmap-port "$PORTMAP_PORT" --mount-port "$MOUNT_PORT" --nfs-port "$NFS_PORT" --export /export)

# ---- 4, 5. the walk, with the active's memory
CACHES="warm (just created)"
if [ -n "$DROP_CACHES" ]; then
    log "dropping the kernel's caches"
    sync; echo 3 >/proc/sys/vm/drop_caches; CACHES="cold (dropped)"
fi
RSS_BEFORE=$(mem_of "$ACTIVE_PID" VmRSS) APPLIED_BEFORE=$(applied "$ACTIVE")
log "READDIRPLUS walk of the whole tree ($TASKS sessions)"
WALK=$("$SCALE_BIN" walk "${TARGET[@]}" --out "$RUN/handles.bin" --tasks "$TASKS" \
    --time-limit-s "$WALK_LIMIT_S" --watch-pid "$ACTIVE_PID") || fail "the walk failed"
RSS_AFTER=$(mem_of "$ACTIVE_PID" VmRSS) HWM_AFTER=$(mem_of "$ACTIVE_PID" VmHWM) APPLIED_AFTER=$(applied "$ACTIVE")
log "walk: $WALK"
ENTRIES=$(field entries "$WALK")

# ---- 6. failover, then GETATTR of a sample of the saved handles
OTHER=$((3 - ACTIVE))
log "kill -9 of node $ACTIVE"
T0=$(now)
{ kill -9 "$ACTIVE_PID"; wait "$ACTIVE_PID" || true; } 2>/dev/null
unset "NODE_PID[$ACTIVE]"
NEW=$(wait_serving "$OTHER") || fail "node $OTHER does not take over"
FAILOVER_S=$(secs "$T0" "$(now)")
log "node $NEW serves after ${FAILOVER_S}s; GETATTR of $SAMPLE saved handles"
SAMP=$("$SCALE_BIN" sample "${TARGET[@]}" --handles "$RUN/handles.bin" --size "$SAMPLE") || fail "the sample failed"
log "sample: $SAMP"

# ---- 7. the state snapshot and the state directories
SNAP=$("$HANFS_BIN" debug snapshot --config "$RUN/node$NEW/hanfs.toml") || fail "debug snapshot: $SNAP"
SNAP_FILE=$RUN/node$NEW/state/raft/raft-snapshot.redb
[ -f "$SNAP_FILE" ] || fail "no $SNAP_FILE after '$SNAP'"
SNAP_BYTES=$(stat -c %s "$SNAP_FILE")
declare -A STATE_BYTES=()
for id in 1 2 3; do STATE_BYTES[$id]=$(du -sb "$RUN/node$id/state" | awk '{ print $1 }'); done
log "$SNAP; snapshot file $SNAP_BYTES bytes"

# ---- 8. a wiped node catches up
log "wiping node $ACTIVE's state directory and restarting it"
rm -rf "$RUN/node$ACTIVE/state"; mkdir -p "$RUN/node$ACTIVE/state"
T0=$(now)
start_node "$ACTIVE"
CAUGHT=
for ((i = 0; i < CATCHUP_POLLS_MAX; i++)); do
    mine=$(applied "$ACTIVE") leader=$(applied "$NEW")
    if [[ $mine =~ ^[0-9]+$ && $leader =~ ^[0-9]+$ ]] && [ "$mine" -ge "$leader" ]; then CAUGHT=1; break; fi
    sleep $POLL_S
done
CATCHUP_S=$(secs "$T0" "$(now)")
WIPED_SNAP_INDEX=$(status_of "$ACTIVE" snapshot_index)
[ -n "$CAUGHT" ] || CATCHUP_S="none (not caught up after ${CATCHUP_S}s: applied ${mine:-?} vs ${leader:-?})"
log "node $ACTIVE caught up: $CATCHUP_S (applied ${mine:-?}, leader ${leader:-?})"

# ---- 9. summary
verdict() { if [ "$1" = 1 ]; then echo PASS; else echo FAIL; fi; }
RSS_PEAK_KIB=$(printf '%s\n' "$(field rss_max_kib "$WALK")" "${RSS_AFTER:-0}" "${HWM_AFTER:-0}" | sort -n | tail -1)
ok_rss=$(awk -v k="$RSS_PEAK_KIB" -v t=$RSS_TARGET_MIB 'BEGIN { print (k / 1024 <= t) ? 1 : 0 }')
ok_snap=$(awk -v b="$SNAP_BYTES" -v t=$SNAPSHOT_TARGET_MIB 'BEGIN { print (b / 1048576 <= t) ? 1 : 0 }')
ok_catch=0; [ -n "$CAUGHT" ] && ok_catch=$(awk -v s="$CATCHUP_S" -v t=$CATCHUP_TARGET_S 'BEGIN { print (s <= t) ? 1 : 0 }')
ok_walk=0; [ "$(field complete "$WALK")" = 1 ] && [ "$ENTRIES" -ge "$FILES" ] && ok_walk=1
ok_stale=0; [ "$(field stale "$SAMP")" = 0 ] && [ "$(field asked "$SAMP")" -gt 0 ] && ok_stale=1
ok_other=0; [ "$(field other "$SAMP")" = 0 ] && [ "$(field wrong_fileid "$SAMP")" = 0 ] && ok_other=1

{
    echo "==== hanfs scale run, $(date -u +%Y-%m-%dT%H:%MZ), $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) CPUs"
    printf 'files created on disk     %s in %s dirs, %ss (%s files/s)\n' "$(field files "$POP")" \
        "$(field dirs "$POP")" "$(field seconds "$POP")" "$(field files_per_s "$POP")"
    printf 'READDIRPLUS walk          %s entries, %ss, %s entries/s, %s sessions, caches %s, complete=%s, handles up to %s bytes  %s\n' \
        "$ENTRIES" "$(field seconds "$WALK")" "$(field entries_per_s "$WALK")" "$TASKS" "$CACHES" \
        "$(field complete "$WALK")" "$(field fh_bytes_max "$WALK")" "$(verdict $ok_walk)"
    printf '  raft applied index      %s before the walk, %s after (%s entries committed during the walk)\n' \
        "${APPLIED_BEFORE:-?}" "${APPLIED_AFTER:-?}" \
        "$(awk -v a="${APPLIED_BEFORE:-x}" -v b="${APPLIED_AFTER:-x}" 'BEGIN { if (a ~ /^[0-9]+$/ && b ~ /^[0-9]+$/) print b - a; else print "?" }')"
    printf 'active RSS (node %s)       before %s MiB, walk max %s MiB, after %s MiB, VmHWM %s MiB\n' "$ACTIVE" \
        "$(mib "$RSS_BEFORE")" "$(mib "$(field rss_max_kib "$WALK")")" "$(mib "$RSS_AFTER")" "$(mib "$HWM_AFTER")"
    printf '  target RSS <= %s MiB    peak %s MiB  %s\n' $RSS_TARGET_MIB "$(mib "$RSS_PEAK_KIB")" "$(verdict "$ok_rss")"
    printf 'kill -9 failover          node %s -> node %s serving after %ss\n' "$ACTIVE" "$NEW" "$FAILOVER_S"
    printf 'GETATTR sample            %s of %s saved: ok %s, STALE %s, other %s, wrong fileid %s (seed %s, %ss)\n' \
        "$(field asked "$SAMP")" "$(field saved "$SAMP")" "$(field ok "$SAMP")" "$(field stale "$SAMP")" \
        "$(field other "$SAMP")" "$(field wrong_fileid "$SAMP")" "$(field seed "$SAMP")" "$(field seconds "$SAMP")"
    printf '  target 0 STALE          %s\n' "$(verdict $ok_stale)"
    printf '  target 0 other          %s%s\n' "$(verdict $ok_other)" \
        "$([ "$(field other "$SAMP")" = 0 ] || echo " (e.g. $(field other_examples "$SAMP"))")"
    printf 'state snapshot            %s on node %s: raft-snapshot.redb %s bytes (%s MiB)\n' "$SNAP" "$NEW" \
        "$SNAP_BYTES" "$(bytes_mib "$SNAP_BYTES")"
    printf '  target <= %s MiB         %s\n' $SNAPSHOT_TARGET_MIB "$(verdict "$ok_snap")"
    printf 'state dirs (before wipe)  node1 %s B, node2 %s B, node3 (witness) %s B\n' \
        "${STATE_BYTES[1]}" "${STATE_BYTES[2]}" "${STATE_BYTES[3]}"
    printf 'wiped node %s catch-up     %s s from its start (applied %s, leader %s; its snapshot_index %s)\n' \
        "$ACTIVE" "$CATCHUP_S" "${mine:-?}" "${leader:-?}" "${WIPED_SNAP_INDEX:-?}"
    printf '  target <= %s s           %s\n' $CATCHUP_TARGET_S "$(verdict "$ok_catch")"
    echo "===="
} >"$RUN/summary.txt"
cat "$RUN/summary.txt"
cp "$RUN/summary.txt" "$CACHE/last-summary.txt"
for ok in "$ok_walk" "$ok_rss" "$ok_stale" "$ok_other" "$ok_snap" "$ok_catch"; do [ "$ok" = 1 ] || exit 1; done
