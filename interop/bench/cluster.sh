#!/bin/bash
# interop/bench/cluster.sh: the cost of replication. In one run, on loopback, starts a single
# hanfs node (a one-voter cluster: a config without [cluster]), runs hanfs-bench's create
# workload against it, stops it; then starts a three-node cluster (storage 1, storage 2, witness;
# Raft peers on 127.0.0.1), `init`s it, waits for the active to serve, runs the same workload
# against the active, stops the cluster. Prints both CREATE median latencies (and p90/p99) and
# the ratio three/single. Each round alternates which setup goes first; the reported number is
# the median over rounds of each round's median.
# Traffic: only 127.0.0.0/8. Every process started here is stopped by the exit trap.
# Exit status: 0 both measured, 1 a bench run failed, 2 harness error.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$(dirname "$BENCH_DIR")")

usage() {
    cat <<USAGE
usage: interop/bench/cluster.sh [--creates N] [--rounds N] [--no-build] [--hanfs-bin PATH]
  --creates N      CREATEs per measurement (default 1000, at most 100000)
  --rounds N       measure each setup N times, alternating the order (default 3, at most 20)
  --no-build       use target/release/{hanfs-server,hanfs-bench} as they are
  --hanfs-bin PATH the server binary (default target/release/hanfs-server)
USAGE
}

CREATES=1000 ROUNDS=3 BUILD=1 HANFS_BIN=$REPO/target/release/hanfs-server
while [ $# -gt 0 ]; do
    case "$1" in
    --creates) CREATES=${2:-}; shift 2 ;;
    --rounds) ROUNDS=${2:-}; shift 2 ;;
    --no-build) BUILD=; shift ;;
    --hanfs-bin) HANFS_BIN=${2:-}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done
CREATES_MAX=100000 ROUNDS_MAX=20
[[ $CREATES =~ ^[0-9]+$ ]] && [ "$CREATES" -ge 1 ] && [ "$CREATES" -le $CREATES_MAX ] || { usage >&2; exit 2; }
[[ $ROUNDS =~ ^[0-9]+$ ]] && [ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le $ROUNDS_MAX ] || { usage >&2; exit 2; }
BENCH_BIN=$REPO/target/release/hanfs-bench
SERVE_POLLS_MAX=300 POLL_S=0.1 STOP_POLLS_MAX=50 BENCH_TIMEOUT_S=600
SINGLE_ADDR=127.88.0.1 CLUSTER_ADDR=127.88.0.2

if [ -n "$BUILD" ]; then
    (cd "$REPO" && cargo build --release -q -p hanfs-cli -p hanfs-bench) || exit 2
fi
[ -x "$HANFS_BIN" ] && [ -x "$BENCH_BIN" ] || { echo "missing $HANFS_BIN or $BENCH_BIN" >&2; exit 2; }

WORK=$(mktemp -d /tmp/hanfs-bench-cluster.XXXXXX)
PIDS=()

stop_all() {
    local p i
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        for ((i = 0; i < STOP_POLLS_MAX; i++)); do kill -0 "$p" 2>/dev/null || break; sleep $POLL_S; done
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    PIDS=()
}
cleanup() {
    stop_all
    rm -rf "$WORK"
}
trap cleanup EXIT

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

# server_section ADDR STATE_DIR EXPORT PORTMAP NFS MOUNT
server_section() {
    printf '[server]\nlisten = "%s"\nstate_dir = "%s"\n\n' "$1" "$2"
    printf '[ports]\nportmap = %s\nnfs = %s\nmount = %s\n\n' "$4" "$5" "$6"
    printf '[[export]]\nname = "/export"\ndir = "%s"\nid = 1\nclients = "*(rw,no_root_squash,insecure)"\n\n' "$3"
}

start_node() { # CONFIG LOG
    RUST_LOG=warn "$HANFS_BIN" run --config "$1" >"$2" 2>&1 &
    PIDS+=($!)
}

wait_port() { # ADDR PORT
    local i
    for ((i = 0; i < SERVE_POLLS_MAX; i++)); do
        if timeout 1 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; then return 0; fi
        sleep $POLL_S
    done
    echo "nothing listens on $1:$2" >&2
    return 1
}

wait_admin() { # STATE_DIR
    local i
    for ((i = 0; i < SERVE_POLLS_MAX; i++)); do
        [ -S "$1/admin.sock" ] && return 0
        sleep $POLL_S
    done
    echo "no admin socket in $1" >&2
    return 1
}

# bench ADDR NFS MOUNT -> prints "p50 p90 p99" of create_latency_us
bench() {
    local out line
    out=$(timeout -s KILL $BENCH_TIMEOUT_S "$BENCH_BIN" --server "$1" --nfs-port "$2" --mount-port "$3" \
        --export /export --only create --inflight 0 --creates "$CREATES" 2>"$WORK/bench.err") || {
        echo "hanfs-bench failed:" >&2; tail -5 "$WORK/bench.err" >&2; return 1; }
    line=$(grep '^metric=create_latency_us ' <<<"$out") || { echo "no create line: $out" >&2; return 1; }
    if grep -q 'error=' <<<"$line"; then echo "bench error: $line" >&2; return 1; fi
    awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } print v["p50"], v["p90"], v["p99"] }' <<<"$line"
}

measure_single() {
    local d=$WORK/single nfs mount pm
    rm -rf "$d"; mkdir -p "$d/state" "$d/export"
    pm=$(free_port) nfs=$(free_port) mount=$(free_port)
    server_section $SINGLE_ADDR "$d/state" "$d/export" "$pm" "$nfs" "$mount" >"$d/hanfs.toml"
    start_node "$d/hanfs.toml" "$d/node.log"
    wait_port $SINGLE_ADDR "$nfs" && wait_port $SINGLE_ADDR "$mount" || { tail -20 "$d/node.log" >&2; stop_all; return 2; }
    bench $SINGLE_ADDR "$nfs" "$mount" || { stop_all; return 1; }
    stop_all
}

measure_cluster() {
    local d=$WORK/cluster nfs mount pm id role i port
    rm -rf "$d"; mkdir -p "$d/export"
    pm=$(free_port) nfs=$(free_port) mount=$(free_port)
    local ports=("" "$(free_port)" "$(free_port)" "$(free_port)")
    head -c 32 /dev/urandom | base64 >"$d/secret"; chmod 600 "$d/secret"
    for id in 1 2 3; do
        mkdir -p "$d/node$id/state"
        {
            server_section $CLUSTER_ADDR "$d/node$id/state" "$d/export" "$pm" "$nfs" "$mount"
            printf '[cluster]\nname = "bench"\nnode_id = %s\nsecret_file = "%s"\n\n' $id "$d/secret"
            for i in 1 2 3; do
                role=storage; [ $i = 3 ] && role=witness
                port=${ports[$i]}
                printf '[[cluster.peer]]\nid = %s\naddr = "127.0.0.1:%s"\nrole = "%s"\n\n' $i "$port" $role
            done
        } >"$d/node$id/hanfs.toml"
        start_node "$d/node$id/hanfs.toml" "$d/node$id/node.log"
    done
    for id in 1 2 3; do wait_admin "$d/node$id/state" || { stop_all; return 2; }; done
    "$HANFS_BIN" init --config "$d/node1/hanfs.toml" >/dev/null || { stop_all; return 2; }
    wait_port $CLUSTER_ADDR "$nfs" && wait_port $CLUSTER_ADDR "$mount" || { tail -20 "$d"/node*/node.log >&2; stop_all; return 2; }
    bench $CLUSTER_ADDR "$nfs" "$mount" || { stop_all; return 1; }
    stop_all
}

median() { sort -n | awk '{ a[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

: >"$WORK/single.txt"; : >"$WORK/cluster.txt"
for ((r = 1; r <= ROUNDS; r++)); do
    if [ $((r % 2)) = 1 ]; then order="single cluster"; else order="cluster single"; fi
    for setup in $order; do
        echo "round $r: $setup ($CREATES creates)..." >&2
        # Not in $(...): the started servers must stay in this shell's PIDS for the trap.
        rc=0; measure_$setup >"$WORK/res.txt" || rc=$?
        [ $rc = 0 ] || { echo "round $r $setup failed" >&2; exit $rc; }
        cat "$WORK/res.txt" >>"$WORK/$setup.txt"
        echo "  $setup p50/p90/p99 us: $(cat "$WORK/res.txt")" >&2
    done
done

col() { awk -v c="$1" '{ print $c }' "$WORK/$2.txt" | median; }
s50=$(col 1 single) s90=$(col 2 single) s99=$(col 3 single)
c50=$(col 1 cluster) c90=$(col 2 cluster) c99=$(col 3 cluster)
printf 'CREATE latency (us), loopback, %s creates x %s rounds, median over rounds\n' "$CREATES" "$ROUNDS"
printf '%-22s %10s %10s %10s\n' setup p50 p90 p99
printf '%-22s %10s %10s %10s\n' "single node" "$s50" "$s90" "$s99"
printf '%-22s %10s %10s %10s\n' "three nodes (raft)" "$c50" "$c90" "$c99"
awk -v s="$s50" -v c="$c50" 'BEGIN { if (s > 0) printf "ratio three/single (p50): %.2f\n", c / s }'
