#!/bin/bash
# Native multipath over two ports on two RDMA devices, with ANA: p2ptgt serves one
# subsystem on port 1 (rxe0, $RXE_ADDR) and port 2 (rxe1, $RXE_ADDR2, a second
# --listen); each device gets its own protection domain and registrations. The kernel
# host connects through both and gets one namespace head with two paths. While fio
# verify runs on the head:
#  - port 1's ANA group goes inaccessible (the host moves its I/O to port 2), then
#    optimized again (the host uses both, round-robin);
#  - port 2's link goes down for a few seconds, a flap (I/O goes on through port 1),
#    then up again: the target logs rxe1's port events and keeps rxe0's queues (a port
#    going down closes nothing by itself);
#  - port 2 is removed outright through the control API (I/O goes on through port 1).
# fio verifies clean; the head logs no I/O error, and port 1's controller no timeout
# or reset: only port 2's own recovery is expected.
#
# It runs in the single guest (the host shares rxe1 with the target, so the flap
# breaks the host's side of that path too) and under `vm/run --remote` (the host on
# the initiator guest, port 2's link a link of its own between the guests). The
# path's return is not checked: once a flap has broken its QPs, the kernel host's
# reconnects through that rxe device time out in the CM for minutes, with nvmet as
# with p2ptgt. Under --remote, before fio starts, a 1 s flap of port 2's idle link
# must cost nothing: no error recovery on the host, every queue kept on the target
# (nvmet rides it out the same way). The flap is shorter than the host's RC retries
# last (in a 3 s flap, a keep-alive SEND posted as the link went down failed after
# 2.1 s of retries and the host went into error recovery), so any SEND of the flap
# is retried past it and only the target's reaction to the port going down can cost
# a reconnect.
source "$(dirname "$0")/lib.sh"

SIZE=${MULTIPATH_SIZE:-256M}
PORT1=$RXE_ADDR
PORT2=$RXE_ADDR2
CONNECT_OPTS=(--reconnect-delay=10 --ctrl-loss-tmo=120)

# --- Host side (here, or on the initiator guest under --remote) ---

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
only_second_moves() { ! moved "$1" && moved "$2"; }

# The controller through address $1 is live and has not gone through error recovery.
untroubled() {
    local ctrl
    ctrl=$(ctrl_of "$1") || return 1
    [[ $(cat "/sys/class/nvme/$ctrl/state") == live ]] && ! dmesg | grep -E "\b$ctrl\b.*(error recovery|Reconnecting)" >&2
}

# connect_both: connect through both ports, set round-robin; print the head device.
connect_both() {
    local address dev tries=100 policy
    dmesg --clear
    for address in "$PORT1" "$PORT2"; do
        nvme connect -t rdma -a "$address" -s "$SERVICE" -n "$NQN" -q "$HOSTNQN" "${CONNECT_OPTS[@]}" >&2 || return 1
    done
    until dev=$(connected_namespace "$NQN") && [[ -b $dev ]]; do
        ((tries-- > 0)) || return 1
        sleep 0.1
    done
    for policy in /sys/class/nvme-subsystem/nvme-subsys*/iopolicy; do
        [[ $(cat "$(dirname "$policy")/subsysnqn") == "$NQN" ]] && echo round-robin > "$policy"
    done
    say "paths: $PORT1=$(path_of "$PORT1") $PORT2=$(path_of "$PORT2"), head $dev; $(nvme list-subsys "$dev" 2>/dev/null | grep -c rdma) controllers in list-subsys" >&2
    echo "$dev"
}

discovers_port2() { nvme discover -t rdma -a "$PORT2" -s "$SERVICE" -q "$HOSTNQN" | grep -B6 -A6 "subnqn: *$NQN" | grep -q "traddr: *$PORT2"; }

# trouble HEAD CTRL1: I/O errors of the head and timeouts or resets of port 1's
# controller since the connect.
trouble() {
    say "kernel log of the NVMe devices:" >&2
    dmesg | grep -E "nvme|rxe" | tail -n 30 >&2
    dmesg | grep -E "(\b$1\b.*I/O error|I/O error.*\b$1\b)|\b$2\b.*(timeout|reset|reconnect)" || true
}

if [[ ${1:-} == host-side ]]; then
    trap - EXIT
    PORT1=$2 PORT2=$3
    shift 3
    "$@"
    exit
fi

if [[ ${P2PTGT_VM_MODE:-single} == remote ]]; then
    REMOTE=1
    host() { rxe-remote "$(readlink -f "$0")" host-side "$PORT1" "$PORT2" "$@"; }
else
    REMOTE=0
    host() { "$@"; }
fi

# --- Target side ---

# The number of the target's queues on RDMA device $1.
queue_count() {
    stats | python3 -c 'import json, sys; print(sum(x["device"] == sys.argv[1] for x in json.load(sys.stdin)["queues"]))' "$1"
}
# The target has as many queues on rxe0 and rxe1 as before.
same_queues() {
    local rxe0 rxe1
    rxe0=$(queue_count rxe0) rxe1=$(queue_count rxe1)
    say "queues: rxe0 $RXE0_QUEUES before, $rxe0 after; rxe1 $RXE1_QUEUES before, $rxe1 after" >&2
    ((rxe0 == RXE0_QUEUES && rxe1 == RXE1_QUEUES))
}
idle_flap_costs_nothing() { host untroubled "$PORT2" && same_queues; }

# The target saw rxe1's port go down and come back, and kept rxe0's queues.
kept_rxe0_queues() {
    local rxe0 rxe1
    rxe0=$(queue_count rxe0) rxe1=$(queue_count rxe1)
    say "queues: rxe0 $RXE0_QUEUES before, $rxe0 after; rxe1 $RXE1_QUEUES before, $rxe1 after" >&2
    grep -q "port down device=rxe1" "$TARGET_LOG" && grep -q "port active device=rxe1" "$TARGET_LOG" && ((rxe0 == RXE0_QUEUES))
}
# Both RDMA devices are open, each with its own registration.
two_devices() {
    stats | python3 -c 'import json, sys; d = json.load(sys.stdin)["devices"]; print("devices:", d, file=sys.stderr); sys.exit(0 if sorted(d) == ["rxe0", "rxe1"] else 1)'
}
both_optimized() { host wait_ana "$PORT1" optimized && host wait_ana "$PORT2" optimized; }
both_move() { host moved "$PORT1" && host moved "$PORT2"; }
no_trouble() { test -z "$(host trouble "$(basename "$DEV")" "$CTRL1" | tee /dev/stderr)"; }

start_target --listen "$PORT2:$SERVICE" --subsystem "$NQN" --namespace "$NVME_DEV" --allow-host "$HOSTNQN" --p2pmem auto
check "discovery through port 2 lists the subsystem at port 2's address" host discovers_port2
DEV=$(host connect_both)
check "one namespace head with a path through each device, both optimized" both_optimized
check "the target has each device open with its own registration" two_devices
CTRL1=$(host ctrl_of "$PORT1")

if ((REMOTE)); then
    RXE0_QUEUES=$(queue_count rxe0) RXE1_QUEUES=$(queue_count rxe1)
    say "port 2's idle link down for 1 s"
    ip link set dev "$RXE_NETDEV2" down
    sleep 1
    ip link set dev "$RXE_NETDEV2" up
    sleep 6
    check "a 1 s flap of port 2's idle link costs nothing" idle_flap_costs_nothing
fi

host fio_verify "$DEV" "$SIZE" --iodepth=8 --bsrange=4k-64k > "$WORK/fio.out" 2>&1 & FIO=$!
sleep 2
check "round-robin: both paths carry I/O" both_move
"$P2PTGT" port ana 1 1 inaccessible --control "$CONTROL"
check "port 1's group inaccessible: the host sees it" host wait_ana "$PORT1" inaccessible
check "and its I/O goes through port 2 only" host only_second_moves "$PORT1" "$PORT2"
"$P2PTGT" port ana 1 1 optimized --control "$CONTROL"
check "optimized again: the host sees it" host wait_ana "$PORT1" optimized
check "and uses port 1 again" host moved "$PORT1"

RXE0_QUEUES=$(queue_count rxe0) RXE1_QUEUES=$(queue_count rxe1)
say "taking port 2's link ($RXE_NETDEV2) down"
DOWN_AT=$SECONDS
ip link set dev "$RXE_NETDEV2" down
check "port 2's link down: I/O goes on through port 1" host moved "$PORT1"
ip link set dev "$RXE_NETDEV2" up
say "port 2's link up again after $((SECONDS - DOWN_AT)) s"
sleep 1
check "the target logged rxe1's port down and up and kept rxe0's queues" kept_rxe0_queues

check "port 2 removed outright" "$P2PTGT" port remove 2 --control "$CONTROL"
check "I/O goes on through port 1" host moved "$PORT1"
FIO_STATUS=0
wait "$FIO" || FIO_STATUS=$?
cat "$WORK/fio.out"
check "fio verify of $SIZE on the multipath head is clean" test "$FIO_STATUS" -eq 0
check "the head logged no I/O error, port 1's controller no timeout or reset" no_trouble
host nvme disconnect -n "$NQN" >&2
check "SIGTERM exits 0" stop_target
finish
