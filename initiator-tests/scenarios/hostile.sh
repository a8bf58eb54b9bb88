#!/bin/bash
# A hostile host (initiator-tests/src/bin/hostile.rs, raw NVMe/RDMA over RDMA CM and
# verbs) sends what the kernel host never would, while the kernel host runs fio verify
# on the same target. Every case must get the right reject, status or a clean close of
# its own connection; afterwards the target's fds and memory are back to baseline, and
# 200 connect/disconnect cycles leave them flat.
# Then the churn (hostile ... churn $CHURN): admin + I/O queue connects, each followed by a
# burst of in-capsule writes and a close of the I/O queue while they execute (short
# capsule, oversized SEND or disconnect), while the kernel host keeps running fio verify;
# once every host is gone the buffer pools hold nothing and the target never panicked.
source "$(dirname "$0")/lib.sh"
HOSTILE=${HOSTILE:-$REPO/build/cargo/release/hostile}
EVIL=nqn.2014-08.org.nvmexpress:uuid:e0e0e0e0-0000-4000-8000-00000000000e
CHURN=${CHURN:-1000}
CHURN_BURST=${CHURN_BURST:-16}

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

# fio verify rounds on the kernel host's device until the churn is over.
fio_rounds() {
    local round=0
    until [[ -e $WORK/churn.done ]]; do
        round=$((round + 1))
        fio --name=bystander --filename="$DEV" --direct=1 --ioengine=libaio --iodepth=8 --rw=randwrite --bsrange=4k-64k \
            --size=16M --verify=crc32c --verify_fatal=1 --do_verify=1 --verify_state_save=0 \
            --output="$WORK/bystander-$round.txt" || { say "fio verify round $round failed"; return 1; }
    done
    say "fio verify: $round rounds passed during the churn"
}
# True once the buffer pools hold nothing (asks up to 4 times, a second apart).
pools_drained() {
    local tries=3
    until stats | python3 -c '
import json, sys
s = json.load(sys.stdin)
host = s["host_pool"]["in_use_bytes"]
control = s["control_pool"]["in_use_bytes"]
cmb = s.get("cmb_pool")
cmb = None if cmb is None else cmb["in_use_bytes"]
print(f"control_pool.in_use_bytes={control} host_pool.in_use_bytes={host} cmb_pool.in_use_bytes={cmb}", file=sys.stderr)
sys.exit(0 if host == 0 and control == 0 and cmb in (None, 0) else 1)'; do
        ((tries-- > 0)) || return 1
        sleep 1
    done
}
no_panic() { ! grep -m 3 -E 'panicked|released twice' "$TARGET_LOG"; }
fio_rounds &
ROUNDS=$!
CHURN_START=$SECONDS
check "churn: $CHURN cycles of in-capsule writes closed mid-flight" "$HOSTILE" "$RXE_ADDR" "$NQN" "$EVIL" churn "$CHURN" "$CHURN_BURST"
say "churn took $((SECONDS - CHURN_START)) s"
touch "$WORK/churn.done"
ROUNDS_STATUS=0
wait "$ROUNDS" || ROUNDS_STATUS=$?
check "the kernel host's fio verify passed during the churn" test "$ROUNDS_STATUS" -eq 0
check "the target is still running after the churn" kill -0 "$TARGET_PID"
disconnect "$NQN" || true
sleep 1
check "buffer pools back to 0 bytes in use once every host is gone" pools_drained
check "no panic in the target log" no_panic
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
