#!/bin/bash
# A hostile host (initiator-tests/src/bin/hostile.rs, raw NVMe/RDMA over RDMA CM and
# verbs) sends what the kernel host never would, while the kernel host runs fio verify
# on the same target. Every case must get the right reject, status or a clean close of
# its own connection; afterwards the target's fds and memory are back to baseline, and
# 200 connect/disconnect cycles leave them flat.
source "$(dirname "$0")/lib.sh"
HOSTILE=${HOSTILE:-$REPO/build/cargo/release/hostile}
EVIL=nqn.2014-08.org.nvmexpress:uuid:e0e0e0e0-0000-4000-8000-00000000000e

start_target --subsystem "$NQN" --namespace "$NVME_DEV" --allow-host "$HOSTNQN" --allow-host "$EVIL" --p2pmem "${P2PMEM:-auto}"

fds() { ls "/proc/$TARGET_PID/fd" | wc -l; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$TARGET_PID/status"; }

# Warm up once so lazily created state (device, pools) is in the baseline.
"$HOSTILE" "$RXE_ADDR" "$NQN" "$EVIL" storm 3 > /dev/null
sleep 1
BASE_FDS=$(fds)
BASE_RSS=$(rss_kib)
say "baseline: $BASE_FDS fds, $BASE_RSS KiB RSS"

DEV=$(connect "$NQN" --nr-io-queues=2)
fio --name=victim --filename="$DEV" --direct=1 --ioengine=libaio --iodepth=8 --rw=randwrite --bsrange=4k-64k \
    --size=48M --verify=crc32c --verify_fatal=1 --do_verify=1 --verify_state_save=0 --output="$WORK/victim.txt" &
FIO=$!
check "hostile cases get the right answers" "$HOSTILE" "$RXE_ADDR" "$NQN" "$EVIL"
FIO_STATUS=0
wait "$FIO" || FIO_STATUS=$?
check "the well-behaved kernel host's fio verify passed meanwhile" test "$FIO_STATUS" -eq 0
disconnect "$NQN"
check "200 connect/disconnect cycles" "$HOSTILE" "$RXE_ADDR" "$NQN" "$EVIL" storm 200
sleep 2
say "after: $(fds) fds, $(rss_kib) KiB RSS"
check "open fds back to baseline" test "$(fds)" -eq "$BASE_FDS"
check "RSS within 8 MiB of baseline" test "$(rss_kib)" -le $((BASE_RSS + 8192))
check "no controller left behind" bash -c '[[ $(stats | python3 -c "import json,sys; print(len(json.load(sys.stdin)[\"controllers\"]))") == 0 ]]'
# Connect, verify 8 MiB, disconnect.
still_serves() {
    local dev
    dev=$(connect "$NQN") && fio_verify "$dev" 8M && disconnect "$NQN"
}
check "target still serves: connect + fio verify" still_serves
check "SIGTERM exits 0" stop_target
finish
