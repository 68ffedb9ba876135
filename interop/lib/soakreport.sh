# interop/lib/soakreport.sh: sourced by soak.sh. Owns the soak's checks, computed after the run
# from what it left behind: $RUN/faults.txt (one line per fault, written by soak.sh:
# "I KIND NODE NEW START END STALL NOTE..."), the node logs, the packet captures, the guests'
# outputs and the export directory. Each check_* prints its lines and sets one number.

# A promotion or re-promotion ends within this long after its fault's recovery and still counts
# as that fault's (seconds).
WINDOW_SLACK_SECONDS=2
# A node's first sign that it must stop serving (lease lost, an unanswerable call, a storage
# error) opens its no-close window when its `demoted` line follows within this long (seconds).
CLOSE_MARKER_SECONDS=1

# iso_epochs: "ISO-TIMESTAMP REST" lines on stdin -> "EPOCH REST" (UTC, microseconds kept).
iso_epochs() {
    TZ=UTC awk '{ split($1, a, /[-T:Z]/); s = a[6] + 0
        printf "%.6f", mktime(a[1] " " a[2] " " a[3] " " a[4] " " a[5] " " int(s)) + (s - int(s))
        $1 = ""; print $0 }'
}

# promotions: "EPOCH NODE serving|promoted" for every storage node's serving and promoted log
# lines, in time order.
promotions() {
    local id
    for id in 1 2; do
        grep -a -e 'node::lifecycle: serving' -e 'hanfs_raft::lease: promoted' "$LOGDIR/node$id.log" 2>/dev/null |
            awk -v n="$id" '{ print $1, n, (/lifecycle: serving/ ? "serving" : "promoted") }' | iso_epochs
    done | sort -n -k1,1
}

# check_failovers: every `serving` line after the first fault started must fall in the window of
# a fault that causes one (its first such line); the others are false failovers. A disk-full
# fault that failed no write (the node stayed active: NODE = NEW) expects none. Sets FAILOVERS,
# FALSE_FAILOVERS, MISSED_FAILOVERS (faults of a failover kind with no serving line).
check_failovers() {
    local out
    out=$(promotions | awk '$3 == "serving" { print "P", $1, $2 }' | cat - "$RUN/faults.txt" | awk \
        -v slack="$WINDOW_SLACK_SECONDS" -v kinds="$FAILOVER_KINDS" '
        $1 == "P" { pt[++np] = $2; pn[np] = $3; next }
        # A fault whose node stayed active (a disk-full that failed no write) expects no failover.
        { nf++; fk[nf] = $2; fs[nf] = $5; fe[nf] = $6; fn[nf] = $3; hits[nf] = 0
          if ($3 == $4 && $2 == "disk-full") fk[nf] = $2 "-absorbed"
          if (index(kinds, " " fk[nf] " ")) nk++ }
        END {
            first = nf ? fs[1] : 1e99
            for (i = 1; i <= np; i++) {
                if (pt[i] < first) continue
                fo++; found = 0
                for (j = 1; j <= nf; j++) {
                    if (pt[i] < fs[j] || pt[i] > fe[j] + slack) continue
                    found = j; break
                }
                if (found && index(kinds, " " fk[found] " ") && hits[found] == 0) { hits[found]++; continue }
                why = found ? (index(kinds, " " fk[found] " ") ? "a second one in the window of fault " found " (" fk[found] ")" : "in the window of fault " found " (" fk[found] ", expects none)") : "outside every fault window"
                printf "  false failover: node %s serving at %.3f, %s\n", pn[i], pt[i], why
                false_n++
            }
            for (j = 1; j <= nf; j++) if (index(kinds, " " fk[j] " ") && hits[j] == 0) {
                printf "  missed failover: fault %d (%s of node %s) promoted nobody\n", j, fk[j], fn[j]; missed++ }
            printf "  %d failovers after the first fault; faults of a failover kind: %d\n", fo, nk
            printf "RESULT %d %d %d\n", fo, false_n, missed
        }')
    grep -v '^RESULT' <<< "$out" || true
    read -r _ FAILOVERS FALSE_FAILOVERS MISSED_FAILOVERS <<< "$(grep '^RESULT' <<< "$out")"
}

# check_replies_after_lease: from each storage node's capture, every packet carrying new data
# (a TCP segment whose sequence range goes past everything sent earlier on its flow, so kernel
# retransmissions of older replies do not count; any UDP datagram) that it sent to a
# client while the newest promotion (promoted or serving line, any node) was another node's.
# Sets LATE_REPLIES.
check_replies_after_lease() {
    local id
    LATE_REPLIES=0
    for id in 1 2; do
        [ -s "$LOGDIR/pfv$id.pcap" ] || { echo "  node $id: no capture"; LATE_REPLIES=missing; return; }
    done
    local out
    out=$( {
        promotions | awk '{ print $1, "E", $2 }'
        for id in 1 2; do
            tcpdump -tt -n -S -r "$LOGDIR/pfv$id.pcap" 2>/dev/null | awk -v n="$id" '
                $2 != "IP" { next }
                { src = $3; dst = $5; sub(/:$/, "", dst); len = 0; a = ""; b = ""
                  for (i = 6; i <= NF; i++) {
                      if ($i == "seq" && $(i + 1) ~ /^[0-9]+:[0-9]+,?$/) { split($(i + 1), r, /[:,]/); a = r[1]; b = r[2] }
                      if ($i == "length" && len == 0) { len = $(i + 1) + 0 }
                  }
                  tcp = ($0 ~ /Flags \[/)
                  if (tcp && a == "") next
                  print $1, "D", n, src, dst, (tcp ? b : -1) }'
        done
    } | sort -n -k1,1 -s | awk '
        $2 == "E" { owner = $3; next }
        { key = $3 " " $4 " " $5; new = 1
          if ($6 >= 0) { if ((key in top) && $6 <= top[key]) new = 0; else top[key] = $6 }
          if (new) fresh[$3]++
          if (new && owner != $3) { late++; if (late <= 20) printf "  late: node %s sent new data %s > %s at %.6f while node %s held the newest promotion\n", $3, $4, $5, $1, owner } }
        END { printf "  packets with new data to a client: node 1 %d, node 2 %d\n", fresh[1], fresh[2]; printf "RESULT %d\n", late + 0 }')
    grep -v '^RESULT' <<< "$out" || true
    LATE_REPLIES=$(grep '^RESULT' <<< "$out" | cut -d' ' -f2)
}

# check_closes_after_lease: from each storage node's capture, every FIN or reset the node sent
# from the VIP once it had to stop serving, until it is promoted again (a promoting node's own
# cleanup of sockets left on the VIP may send some, to clients long reconnected elsewhere). It
# had to stop at its first `leadership lost`, `call cannot be answered here` or storage-error
# line at most CLOSE_MARKER_SECONDS before one of its `demoted` lines, or at the start of a kill
# -9 or power-off fault. A demotion releases the VIP before it closes the connections, and a
# killed process's VIP device goes before its sockets, so none should leave: a client that saw
# one would reconnect at once into an address nobody holds yet and back off on its SYN (1 s,
# then 2 s). A close answering the client's own FIN (the node's ACK on the flow rose by exactly
# one) is not counted. Sets EARLY_CLOSES.
check_closes_after_lease() {
    local id out
    EARLY_CLOSES=0
    for id in 1 2; do
        [ -s "$LOGDIR/pfv$id.pcap" ] || { echo "  node $id: no capture"; EARLY_CLOSES=missing; return; }
    done
    out=$( {
        for id in 1 2; do
            grep -a -e 'hanfs_raft::lease: promoted' -e 'node::lifecycle: demoted' -e 'leadership lost' \
                -e 'call cannot be answered here' -e 'raft stopped on a storage error' "$LOGDIR/node$id.log" 2>/dev/null |
                awk -v n="$id" '{ print $1, (/lease: promoted/ ? "S" : (/lifecycle: demoted/ ? "D" : "M")), n }' |
                iso_epochs
            tcpdump -tt -n -S -r "$LOGDIR/pfv$id.pcap" "src host $VIP and tcp" 2>/dev/null | awk -v n="$id" '
                { f = $0; sub(/.*Flags /, "", f); sub(/,.*/, "", f); ack = "-"
                  for (i = 6; i < NF; i++) if ($i == "ack") { ack = $(i + 1); sub(/,$/, "", ack) }
                  print $1, "P", n, $3, $5, f, ack }'
        done
        # A kill -9 or power-off takes the node down at once: its window opens at the fault's start.
        awk '$2 == "kill" || $2 == "power-off" { print $5, "D", $3 }' "$RUN/faults.txt"
    } | sort -n -k1,1 -s | awk -v win="$CLOSE_MARKER_SECONDS" '
        function early(n, t, what) { late++; if (late <= 20) printf "  early close: node %s sent %s at %.6f after it had to stop serving\n", n, what, t }
        $2 == "S" { down[$3] = 0; nm[$3] = 0; nc[$3] = 0; next }
        $2 == "M" { if (!down[$3]) mt[$3, ++nm[$3]] = $1; next }
        $2 == "D" { n = $3; if (down[n]) next; down[n] = 1; start = $1
                    for (i = 1; i <= nm[n]; i++) if (mt[n, i] >= $1 - win && mt[n, i] < start) start = mt[n, i]
                    for (i = 1; i <= nc[n]; i++) if (ct[n, i] >= start) early(n, ct[n, i], cw[n, i])
                    nc[n] = 0; next }
        # The node acknowledging exactly one more byte on a flow is the client FIN (RPC data
        # never comes a byte at a time): a close of that flow answers the client.
        $2 == "P" { n = $3; key = n " " $4 " " $5
                    if ($7 != "-") { if ((key in last) && $7 == last[key] + 1) theirs[key] = 1; last[key] = $7 }
                    if ($6 !~ /[FR]/ || (key in theirs)) next
                    what = $4 " " $5 " " $6; if (down[n]) early(n, $1, what); else { ct[n, ++nc[n]] = $1; cw[n, nc[n]] = what } }
        END { printf "RESULT %d\n", late + 0 }')
    grep -v '^RESULT' <<< "$out" || true
    EARLY_CLOSES=$(grep '^RESULT' <<< "$out" | cut -d' ' -f2)
    echo "  FIN or reset from the VIP after a node had to stop serving: $EARLY_CLOSES"
}

# check_writes: the host reads each writer's file on the export and checks every acknowledged
# record (soak verify), and adds what the guests' own O_DIRECT read-backs found. Sets LOST.
check_writes() {
    local idx name line lost guest_lost
    LOST=0
    for idx in 0 1; do
        name=${GUEST_NAMES[$idx]}
        line=$("$SUITE_BIN/soak" verify -f "$EXPORT_DIR/soak/soak-$name.dat" -a "$RUN/g$idx/out/acked-$name.txt" -n "$name" || true)
        echo "  $line"
        lost=$(sed -n 's/.*lost \([0-9]*\),.*/\1/p' <<< "$line")
        [ -n "$lost" ] || { LOST=missing; continue; }
        grep -q 'acked [1-9]' <<< "$line" || { echo "  $name acknowledged no record"; LOST=missing; continue; }
        guest_lost=$(sed -n 's/.*lost in read-backs \([0-9]*\), final read-back lost \([-0-9]*\),.*/\1 \2/p' \
            "$RUN/g$idx/out/summary-writer-$name.txt" 2>/dev/null | awk '{ print $1 + ($2 > 0 ? $2 : 0) }')
        [ -n "$guest_lost" ] || { echo "  $name: no writer summary"; LOST=missing; continue; }
        sed 's/^/  /' "$RUN/g$idx/out/summary-writer-$name.txt"
        [ "$LOST" = missing ] || LOST=$((LOST + lost + guest_lost))
    done
}

# check_locks: the counter on the export equals the sum of both lockers' completed critical
# sections, and no locker saw the other's marker while holding the lock. Sets CONFLICTS (a
# mismatch of the counter counts as one).
check_locks() {
    local idx name s c sum=0 counter
    CONFLICTS=0
    for idx in 0 1; do
        name=${GUEST_NAMES[$idx]}
        read -r _ s _ c <<< "$(cat "$RUN/g$idx/out/locker-$name.txt" 2>/dev/null || echo "x x x x")"
        [[ "$s" =~ ^[0-9]+$ ]] || { echo "  $name: no locker result"; CONFLICTS=missing; return; }
        echo "  $name: $s critical sections, saw a holder marker inside the lock $c times"
        sum=$((sum + s)) CONFLICTS=$((CONFLICTS + c))
    done
    counter=$(head -c 32 "$EXPORT_DIR/soak/soak-lock.dat" | awk '{ print $1 }')
    echo "  counter on the export: $counter, sections of both: $sum"
    [ "$counter" = "$sum" ] || { echo "  counter mismatch"; CONFLICTS=$((CONFLICTS + 1)); }
}

# check_errors: ESTALE and every other failed call in the guests' loops (and ESTALE or "stale" on
# their consoles). Sets ESTALE and OTHER_ERRORS.
check_errors() {
    local files=() f
    for f in "$RUN"/g0/out/errors-*.txt "$RUN"/g1/out/errors-*.txt; do [ -f "$f" ] && files+=("$f"); done
    ESTALE=$(cat "${files[@]}" "$LOGDIR"/guest*-boot1.console /dev/null 2>/dev/null | awk 'tolower($0) ~ /stale/ { n++ } END { print n + 0 }')
    OTHER_ERRORS=$(cat "${files[@]}" /dev/null 2>/dev/null | awk 'tolower($0) !~ /stale/ { n++ } END { print n + 0 }')
    [ "$OTHER_ERRORS" = 0 ] || cat "${files[@]}" | grep -avi stale | head -n 20 | sed 's/^/  error: /'
}

# percentiles: "p50 p99 max" of the numbers on stdin (nearest rank), "- - -" when none.
percentiles() {
    sort -n | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "- - -"; exit }
        i50 = int(0.50 * NR + 0.999999); i99 = int(0.99 * NR + 0.999999)
        printf "%.2f %.2f %.2f\n", v[i50], v[i99], v[NR] }'
}

# stall_table: per fault kind and overall: count, stall p50/p99/max (from faults.txt).
stall_table() {
    local k
    printf '  %-10s %6s %8s %8s %8s\n' kind count p50_s p99_s max_s
    for k in "${SOAK_KINDS[@]}" all; do
        local vals
        vals=$(awk -v k="$k" '(k == "all" || $2 == k) && $7 != "-" { print $7 }' "$RUN/faults.txt")
        [ -n "$vals" ] || [ "$k" = all ] || continue
        printf '  %-10s %6s %8s %8s %8s\n' "$k" "$(grep -c . <<< "$vals" || true)" $(percentiles <<< "$vals")
    done
}
