# interop/lib/guests.sh: sourced by run.sh. Owns the QEMU (TCG) guests: launching one with its
# 9p shares and tap, waiting for it with a bound, and killing it.

GUEST_MEMORY_MB=512
declare -A GUEST_PID=()

# guest_start IDX LABEL: boots guest IDX (0 = guesta, 1 = guestb); its share is $RUN/g$IDX.
guest_start() {
    local idx=$1 label=$2 name=${GUEST_NAMES[$1]} ip=${GUEST_IPS[$1]} serial
    if [ -n "$SHELL_MODE" ]; then serial="mon:stdio"; else serial="file:$LOGDIR/$name-$label.console"; fi
    local cmd=(qemu-system-x86_64 -accel tcg -m "$GUEST_MEMORY_MB" -smp 1 -nodefaults -no-user-config
        -display none -no-reboot -serial "$serial"
        -kernel "$VMLINUX" -initrd "$INITRD"
        -append "console=ttyS0 quiet panic=-1 hanfs.ip=$ip hanfs.host=$name hanfs.server=$SERVER_IP"
        -netdev "tap,id=n0,ifname=tap$idx,script=no,downscript=no"
        -device "virtio-net-pci,netdev=n0,romfile=,mac=52:54:00:99:00:0$((idx + 2))"
        -virtfs "local,path=$RUN/g$idx,mount_tag=share,security_model=none,id=share"
        -virtfs "local,path=$RUN/sync,mount_tag=sync,security_model=none,id=sync")
    if [ -n "$SHELL_MODE" ]; then
        log "guest $name: interactive shell on this terminal (Ctrl-a x quits QEMU)"
        ip netns exec "$NS" "${cmd[@]}"
        return 0
    fi
    ip netns exec "$NS" "${cmd[@]}" > "$LOGDIR/$name-$label.qemu" 2>&1 < /dev/null &
    GUEST_PID[$idx]=$!
    log "guest $name ($label) booting, pid ${GUEST_PID[$idx]}, console $LOGDIR_FINAL/$name-$label.console"
}

guest_running() { [ -n "${GUEST_PID[$1]:-}" ] && kill -0 "${GUEST_PID[$1]}" 2>/dev/null; }

guest_kill() {
    local idx=$1
    [ -n "${GUEST_PID[$idx]:-}" ] || return 0
    kill -KILL "${GUEST_PID[$idx]}" 2>/dev/null || true
    wait "${GUEST_PID[$idx]}" 2>/dev/null || true
    GUEST_PID[$idx]=
}

# guest_wait IDX DEADLINE_EPOCH: waits for the guest to power off; kills it at the deadline.
# Returns 0 if it powered off by itself, 1 if it was killed.
guest_wait() {
    local idx=$1 deadline=$2
    while guest_running "$idx"; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            log "guest ${GUEST_NAMES[$idx]} still running at its deadline: killing QEMU"
            guest_kill "$idx"
            return 1
        fi
        if [ -n "${KILL_SERVER_AT:-}" ] && [ "$(date +%s)" -ge "$KILL_SERVER_AT" ]; then
            server_kill_hard
            KILL_SERVER_AT=
        fi
        sleep 1
    done
    wait "${GUEST_PID[$idx]}" 2>/dev/null || true
    GUEST_PID[$idx]=
    return 0
}
