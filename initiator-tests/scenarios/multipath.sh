#!/bin/bash
# Native multipath over two ports with ANA: p2ptgt serves one subsystem on port 1
# (4420) and port 2 (4421, a second --listen); the kernel host connects through both and gets one
# namespace head with two paths. While fio verify runs on the head: port 1's ANA group
# goes inaccessible (the host moves its I/O to port 2), comes back optimized (the
# host uses both again, round-robin), then port 2 is removed outright (I/O goes on
# through port 1). fio verifies clean and the head device logs no I/O error or
# timeout; only the removed path's own reconnect attempts are expected.
source "$(dirname "$0")/lib.sh"

SIZE=${MULTIPATH_SIZE:-128M}
PORT2=4421
CONNECT_OPTS=(--reconnect-delay=1 --ctrl-loss-tmo=30)

# The path (controller) device of the head for the connection to service $1, e.g. nvme1c1n1.
path_of() {
    local ctrl
    for ctrl in /sys/class/nvme/nvme*; do
        [[ $(cat "$ctrl/subsysnqn" 2>/dev/null) == "$NQN" ]] && grep -q "trsvcid=$1\b" "$ctrl/address" 2>/dev/null || continue
        basename "$(ls -d "$ctrl"/nvme*c*n1 2>/dev/null | head -n 1)"
        return
    done
    return 1
}

ana_state_of() { cat "/sys/block/$(path_of "$1")/ana_state" 2>/dev/null; }

# wait_ana SERVICE STATE: the host sees that path's ANA state within 5 s.
wait_ana() {
    local tries=50
    until [[ $(ana_state_of "$1") == "$2" ]]; do
        ((tries-- > 0)) || { say "path $1: ana_state $(ana_state_of "$1"), expected $2"; return 1; }
        sleep 0.1
    done
}

# Sectors read and written through the path to service $1 so far.
sectors_of() { awk '{print $3 + $7}' "/sys/block/$(path_of "$1")/stat"; }

# moved SERVICE: the path to SERVICE carried I/O in the next 2 s.
moved() {
    local before
    before=$(sectors_of "$1")
    sleep 2
    (($(sectors_of "$1") > before)) || { say "path $1 idle"; return 1; }
}
idle() { ! moved "$1"; }

both_optimized() { wait_ana "$SERVICE" optimized && wait_ana "$PORT2" optimized; }
both_move() { moved "$SERVICE" && moved "$PORT2"; }
only_port2_moves() { idle "$SERVICE" && moved "$PORT2"; }
# Block-layer I/O errors and command timeouts of the NVMe devices since `dmesg --clear`.
nvme_errors() { dmesg | grep -i nvme | grep -Ei "I/O error|timeout" || true; }

start_target --listen "$RXE_ADDR:$PORT2" --subsystem "$NQN" --namespace "$NVME_DEV" --allow-host "$HOSTNQN" --p2pmem auto
check "discovery through port 2 lists the subsystem there" bash -c "nvme discover -t rdma -a $RXE_ADDR -s $PORT2 -q $HOSTNQN | grep -B6 -A6 'subnqn: *$NQN' | grep -q 'trsvcid: *$PORT2'"
dmesg --clear
DEV=$(connect "$NQN" "${CONNECT_OPTS[@]}")
nvme connect -t rdma -a "$RXE_ADDR" -s "$PORT2" -n "$NQN" -q "$HOSTNQN" "${CONNECT_OPTS[@]}" >&2
check "one namespace head with a path through each port, both optimized" both_optimized
say "paths: $SERVICE=$(path_of "$SERVICE") $PORT2=$(path_of "$PORT2"), head $DEV; $(nvme list-subsys "$DEV" 2>/dev/null | grep -c rdma) controllers in list-subsys"
for policy in /sys/class/nvme-subsystem/nvme-subsys*/iopolicy; do
    [[ $(cat "$(dirname "$policy")/subsysnqn") == "$NQN" ]] && echo round-robin > "$policy"
done

fio_verify "$DEV" "$SIZE" --iodepth=8 --bsrange=4k-64k > "$WORK/fio.out" 2>&1 & FIO=$!
sleep 2
check "round-robin: both paths carry I/O" both_move
"$P2PTGT" port ana 1 1 inaccessible --control "$CONTROL"
check "port 1's group inaccessible: the host sees it" wait_ana "$SERVICE" inaccessible
check "and its I/O goes through port 2 only" only_port2_moves
"$P2PTGT" port ana 1 1 optimized --control "$CONTROL"
check "optimized again: the host sees it" wait_ana "$SERVICE" optimized
check "and uses port 1 again" moved "$SERVICE"
check "port 2 removed outright" "$P2PTGT" port remove 2 --control "$CONTROL"
check "I/O goes on through port 1" moved "$SERVICE"
FIO_STATUS=0
wait "$FIO" || FIO_STATUS=$?
cat "$WORK/fio.out"
check "fio verify of $SIZE on the multipath head is clean" test "$FIO_STATUS" -eq 0
check "the head device logged no I/O error or timeout" test -z "$(nvme_errors | tee /dev/stderr)"
disconnect "$NQN"
check "SIGTERM exits 0" stop_target
finish
