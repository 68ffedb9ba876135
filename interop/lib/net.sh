# interop/lib/net.sh: sourced by run.sh. Owns the private network: a uniquely named namespace
# holding bridge br0 (10.99.0.1/24) and one tap per guest, plus /etc/netns/$NS/hosts.
# No traffic ever leaves the namespace; net_down removes all of it.

SERVER_IP=10.99.0.1
GUEST_IPS=(10.99.0.2 10.99.0.3)
GUEST_NAMES=(guesta guestb)

net_up() {
    NS="hanfs-interop-$$-$RANDOM"
    ip netns add "$NS"
    NS_CREATED=1
    mkdir -p "/etc/netns/$NS"
    printf '127.0.0.1 localhost\n%s server\n%s %s\n%s %s\n' "$SERVER_IP" \
        "${GUEST_IPS[0]}" "${GUEST_NAMES[0]}" "${GUEST_IPS[1]}" "${GUEST_NAMES[1]}" > "/etc/netns/$NS/hosts"
    ip -n "$NS" link set lo up
    ip -n "$NS" link add br0 type bridge
    ip -n "$NS" addr add "$SERVER_IP/24" dev br0
    ip -n "$NS" link set br0 up
    local i
    for i in 0 1; do
        ip -n "$NS" tuntap add dev "tap$i" mode tap
        ip -n "$NS" link set "tap$i" master br0
        ip -n "$NS" link set "tap$i" up
    done
    log "namespace $NS: br0 $SERVER_IP/24, tap0 tap1"
}

net_down() {
    [ -n "${NS_CREATED:-}" ] || return 0
    ip netns delete "$NS" 2>/dev/null || true
    rm -rf "/etc/netns/$NS"
    NS_CREATED=
}
