#!/bin/bash
# Discovery-driven connect-all, idle CPU and memory of the target, SIGKILL and
# restart with flushed writes intact, and SIGTERM while fio runs.
source "$(dirname "$0")/lib.sh"

start_target --subsystem "$NQN" --namespace "$NVME_DEV" --allow-host "$HOSTNQN" --p2pmem off

# CPU ticks (user+sys) of the target over 5 s with no host connected.
idle_cpu_ok() {
    local hz before after used
    hz=$(getconf CLK_TCK)
    before=$(awk '{print $14 + $15}' "/proc/$TARGET_PID/stat")
    sleep 5
    after=$(awk '{print $14 + $15}' "/proc/$TARGET_PID/stat")
    used=$((after - before))
    say "idle target used $used ticks of $((5 * hz)) in 5 s; RSS $(awk '/VmRSS/ {print $2, $3}' "/proc/$TARGET_PID/status")"
    ((used * 100 < 2 * 5 * hz))
}
check "idle target uses < 2% CPU" idle_cpu_ok

check "nvme connect-all through discovery" nvme connect-all -t rdma -a "$RXE_ADDR" -s "$SERVICE" -q "$HOSTNQN"
DEV_A=$(connect_wait "$NQN") || true
check "connect-all created the namespace" test -b "${DEV_A:-/nonexistent}"
check "fio verify after connect-all" fio_verify "$DEV_A" 16M
nvme disconnect -n "$NQN" >&2 || true

# SIGKILL after acknowledged, flushed writes; restart; the host reconnects by itself
# (reconnect_delay) and every flushed byte is there.
DEV=$(connect "$NQN" --ctrl-loss-tmo=60 --reconnect-delay=1)
python3 -c "import os, sys; sys.stdout.buffer.write(os.urandom(8 << 20))" > "$WORK/flushed"
check "write 8 MiB + flush" bash -c "dd if=$WORK/flushed of=$DEV bs=1M seek=300 oflag=direct status=none && nvme flush $DEV"
kill -KILL "$TARGET_PID"
wait "$TARGET_PID" 2>/dev/null || true
TARGET_PID=
start_target --subsystem "$NQN" --namespace "$NVME_DEV" --allow-host "$HOSTNQN" --p2pmem off
# Wait for the kernel host's reconnect: the restarted target (fresh log) creates a
# controller for it and the host's controller is live again.
reconnected() {
    local tries=300 ctrl
    ctrl=$(basename "$DEV" | sed -E 's/n[0-9]+$//')
    until grep -q "controller created" "$TARGET_LOG" && [[ $(cat /sys/class/nvme/$ctrl/state 2>/dev/null) == live ]]; do
        ((tries-- > 0)) || return 1
        sleep 0.1
    done
}
check "kernel host reconnects by itself after SIGKILL + restart" reconnected
check "every flushed byte survived the kill" bash -c "cmp <(dd if=$DEV bs=1M skip=300 count=8 iflag=direct status=none) $WORK/flushed"
disconnect "$NQN"

# SIGTERM while fio runs: the target exits 0 and the host sees errors, not a hang.
DEV=$(connect "$NQN" --ctrl-loss-tmo=2 --reconnect-delay=1)
fio --name=busy --filename="$DEV" --direct=1 --ioengine=libaio --iodepth=16 --rw=randread --bs=4k --time_based --runtime=20 --output="$WORK/busy.txt" &
FIO=$!
sleep 3
check "SIGTERM during fio exits 0" stop_target
wait "$FIO" || true
nvme disconnect -n "$NQN" >/dev/null 2>&1 || true
finish
