#!/bin/bash
# Native multipath over two ports on two RDMA devices, with ANA: p2ptgt serves one
# subsystem on port 1 (rxe0, $RXE_ADDR) and port 2 (rxe1, $RXE_ADDR2, a second
# --listen); each device gets its own protection domain and registrations. The kernel
# host connects through both and gets one namespace head with two paths. While fio
# verify runs on the head:
#  - port 1's ANA group goes inaccessible (the host moves its I/O to port 2), then
#    optimized again (the host uses both, round-robin);
#  - port 2's link goes down (I/O goes on through port 1; the target closes only
#    rxe1's queues), then up again. In this single guest the kernel host shares
#    rxe1 with the target, and after a bounce of that loopback device its reconnects
#    through rxe1 time out in the CM, with nvmet as with p2ptgt: so the path's
#    return is not checked here;
#  - port 2 is removed outright through the control API (I/O goes on through port 1).
# fio verifies clean; the head logs no I/O error, and port 1's controller no timeout
# or reset: only port 2's own recovery is expected.
source "$(dirname "$0")/lib.sh"

SIZE=${MULTIPATH_SIZE:-256M}
PORT1=$RXE_ADDR
PORT2=$RXE_ADDR2
CONNECT_OPTS=(--reconnect-delay=1 --ctrl-loss-tmo=60)

# The controller (nvmeN) of the connection to address $1.
ctrl_of() {
    local ctrl
    for ctrl in /sys/class/nvme/nvme*; do
        [[ $(cat "$ctrl/subsysnqn" 2>/dev/null) == "$NQN" ]] && grep -q "traddr=$1," "$ctrl/address" 2>/dev/null || continue
        basename "$ctrl"
        return
    done
    return 1
}

# The path device of the head through address $1, e.g. nvme1c1n1.
path_of() {
    local ctrl
    ctrl=$(ctrl_of "$1") || return 1
    basename "$(ls -d "/sys/class/nvme/$ctrl"/nvme*c*n1 2>/dev/null | head -n 1)"
}

ana_state_of() { cat "/sys/block/$(path_of "$1")/ana_state" 2>/dev/null; }

# wait_ana ADDRESS STATE: the host sees that path's ANA state within 5 s.
wait_ana() {
    local tries=50
    until [[ $(ana_state_of "$1") == "$2" ]]; do
        ((tries-- > 0)) || { say "path $1: ana_state $(ana_state_of "$1"), expected $2"; return 1; }
        sleep 0.1
    done
}

# Sectors read and written through the path to address $1 so far.
sectors_of() { awk '{print $3 + $7}' "/sys/block/$(path_of "$1")/stat" 2>/dev/null || echo 0; }

# moved ADDRESS: the path to ADDRESS carried I/O in the next 2 s.
moved() {
    local before
    before=$(sectors_of "$1")
    sleep 2
    (($(sectors_of "$1") > before)) || { say "path $1 idle"; return 1; }
}
idle() { ! moved "$1"; }

# queues_on DEVICE COUNT: the target has COUNT queues on RDMA device DEVICE.
queues_on() {
    stats | python3 -c 'import json, sys; q = [x for x in json.load(sys.stdin)["queues"] if x["device"] == sys.argv[1]]; print(sys.argv[1], "queues:", len(q), file=sys.stderr); sys.exit(0 if len(q) == int(sys.argv[2]) else 1)' "$1" "$2"
}

only_rxe1_closed() { queues_on rxe1 0 && queues_on rxe0 3; }
both_optimized() { wait_ana "$PORT1" optimized && wait_ana "$PORT2" optimized; }
both_move() { moved "$PORT1" && moved "$PORT2"; }
only_port2_moves() { idle "$PORT1" && moved "$PORT2"; }
# Both RDMA devices are open, each with its own registration.
two_devices() {
    stats | python3 -c 'import json, sys; d = json.load(sys.stdin)["devices"]; print("devices:", d, file=sys.stderr); sys.exit(0 if sorted(d) == ["rxe0", "rxe1"] else 1)'
}
# I/O errors of the head, and timeouts or resets of port 1's controller, since `dmesg --clear`.
trouble() {
    local head ctrl1
    head=$(basename "$DEV")
    ctrl1=$CTRL1
    dmesg | grep -E "(\b$head\b.*I/O error|I/O error.*\b$head\b)|\b$ctrl1\b.*(timeout|reset|reconnect)" || true
}

start_target --listen "$PORT2:$SERVICE" --subsystem "$NQN" --namespace "$NVME_DEV" --allow-host "$HOSTNQN" --p2pmem auto
check "discovery through port 2 lists the subsystem at port 2's address" bash -c "nvme discover -t rdma -a $PORT2 -s $SERVICE -q $HOSTNQN | grep -B6 -A6 'subnqn: *$NQN' | grep -q 'traddr: *$PORT2'"
dmesg --clear
DEV=$(connect "$NQN" "${CONNECT_OPTS[@]}")
nvme connect -t rdma -a "$PORT2" -s "$SERVICE" -n "$NQN" -q "$HOSTNQN" "${CONNECT_OPTS[@]}" >&2
check "one namespace head with a path through each device, both optimized" both_optimized
check "the target has each device open with its own registration" two_devices
CTRL1=$(ctrl_of "$PORT1")
say "paths: $PORT1=$(path_of "$PORT1") $PORT2=$(path_of "$PORT2"), head $DEV; $(nvme list-subsys "$DEV" 2>/dev/null | grep -c rdma) controllers in list-subsys"
for policy in /sys/class/nvme-subsystem/nvme-subsys*/iopolicy; do
    [[ $(cat "$(dirname "$policy")/subsysnqn") == "$NQN" ]] && echo round-robin > "$policy"
done

fio_verify "$DEV" "$SIZE" --iodepth=8 --bsrange=4k-64k > "$WORK/fio.out" 2>&1 & FIO=$!
sleep 2
check "round-robin: both paths carry I/O" both_move
"$P2PTGT" port ana 1 1 inaccessible --control "$CONTROL"
check "port 1's group inaccessible: the host sees it" wait_ana "$PORT1" inaccessible
check "and its I/O goes through port 2 only" only_port2_moves
"$P2PTGT" port ana 1 1 optimized --control "$CONTROL"
check "optimized again: the host sees it" wait_ana "$PORT1" optimized
check "and uses port 1 again" moved "$PORT1"

say "taking port 2's link ($RXE_NETDEV2) down"
ip link set dev "$RXE_NETDEV2" down
check "port 2's link down: I/O goes on through port 1" moved "$PORT1"
check "the target closed rxe1's queues only" only_rxe1_closed
ip link set dev "$RXE_NETDEV2" up
say "port 2's link up again"

check "port 2 removed outright" "$P2PTGT" port remove 2 --control "$CONTROL"
check "I/O goes on through port 1" moved "$PORT1"
FIO_STATUS=0
wait "$FIO" || FIO_STATUS=$?
cat "$WORK/fio.out"
check "fio verify of $SIZE on the multipath head is clean" test "$FIO_STATUS" -eq 0
say "kernel log of the NVMe devices:"
dmesg | grep -E "nvme|rxe" | tail -n 40
check "the head logged no I/O error, port 1's controller no timeout or reset" test -z "$(trouble | tee /dev/stderr)"
disconnect "$NQN"
check "SIGTERM exits 0" stop_target
finish
