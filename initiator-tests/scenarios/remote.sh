#!/bin/bash
# Run in the target guest of `vm/run --remote`: p2ptgt serves the SSD (CMB path when
# available) to two hosts at once: the kernel host on the second guest (192.0.2.2,
# another kernel, across the virtual link) and the local kernel host, each running fio
# verify on its own range.
# Sub-command used on the initiator: host-side TARGET_ADDR.
source "$(dirname "$0")/lib.sh"

HOST_B=nqn.2014-08.org.nvmexpress:uuid:0b0b0b0b-0000-4000-8000-00000000000b

# On the initiator guest: discover, connect, fio verify 32 MiB at 512 MiB, disconnect.
host_side() {
    RXE_ADDR=$1
    HOSTNQN=$HOST_B
    local dev
    nvme discover -t rdma -a "$RXE_ADDR" -s "$SERVICE" -q "$HOSTNQN" | grep -q "subnqn: *$NQN" || { say "discover failed"; return 1; }
    dev=$(connect "$NQN") || { say "connect failed"; return 1; }
    say "remote host connected $dev"
    fio_verify "$dev" 32M --offset=512M || return 1
    disconnect "$NQN"
}

if [[ ${1:-} == host-side ]]; then
    trap - EXIT
    host_side "$2"
    exit
fi

start_target --subsystem "$NQN" --namespace "$NVME_DEV" --allow-host "$HOSTNQN" --allow-host "$HOST_B" --p2pmem auto
rxe-remote "$(readlink -f "$0")" host-side "$RXE_ADDR" > "$WORK/remote.txt" 2>&1 &
REMOTE=$!
DEV=$(connect "$NQN")
check "local host: fio verify 32 MiB while the remote host runs" fio_verify "$DEV" 32M
REMOTE_STATUS=0
wait "$REMOTE" || REMOTE_STATUS=$?
cat "$WORK/remote.txt"
check "remote kernel host: discover, connect, fio verify 32 MiB, disconnect" test "$REMOTE_STATUS" -eq 0
disconnect "$NQN"
check "payload went through the CMB, none through host memory" bash -c '(( $(target_stat payload_bytes_cmb) >= 128 * 1024 * 1024 && $(target_stat payload_bytes_host) == 0 ))'
check "SIGTERM exits 0" stop_target
finish
