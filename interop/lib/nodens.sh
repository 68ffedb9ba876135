# interop/lib/nodens.sh: sourced (after lib/failover.sh) by powerfail.sh and soak.sh. Owns the
# one-namespace-per-node network: each hanfs node runs in its own namespace $NS-nN, joined to the
# harness namespace's bridge br0 by a veth (pfvN on br0, eth0 in the node's namespace,
# 10.99.0.1N/24). Sets lib/failover.sh's NODE_NS, NODE_ADDRS (peers at the nodes' own addresses)
# and VIP_INTERFACE (the VIP is announced on each storage node's eth0), so its configs, node_start
# and hanfs_cli work unchanged. A node's link can be cut (`node_link ID down`: a power-off) without
# touching the others.

NODE_ADDRS=(10.99.0.11 10.99.0.12 10.99.0.13)
VIP_INTERFACE=eth0

# node_net_up: one namespace per node, veth pfvN (in $NS, on br0) <-> eth0 (in the node's).
node_net_up() {
    local id
    for id in 1 2 3; do
        NODE_NS[$id]="$NS-n$id"
        ip netns add "${NODE_NS[$id]}"
        ip -n "$NS" link add "pfv$id" type veth peer name eth0 netns "${NODE_NS[$id]}"
        ip -n "$NS" link set "pfv$id" master br0
        ip -n "$NS" link set "pfv$id" up
        ip -n "${NODE_NS[$id]}" addr add "${NODE_ADDRS[$((id - 1))]}/24" dev eth0
        ip -n "${NODE_NS[$id]}" link set eth0 up
        ip -n "${NODE_NS[$id]}" link set lo up
    done
    log "node namespaces: ${NODE_NS[1]} ${NODE_NS[2]} ${NODE_NS[3]} (eth0 ${NODE_ADDRS[*]})"
}

node_net_down() {
    local id
    for id in 1 2 3; do
        [ -n "${NODE_NS[$id]:-}" ] && ip netns delete "${NODE_NS[$id]}" 2>/dev/null || true
    done
}

# node_link ID up|down: node ID's eth0 (down: nothing it sends reaches anyone, as at a power cut).
node_link() { ip -n "${NODE_NS[$1]}" link set eth0 "$2"; }
