#!/bin/bash
# p2ptgt with host-memory buffers on the guest's SSD: the kernel host discovers,
# connects (1 and 2 I/O queues), runs nvme-cli admin commands and fio verify, reads
# beyond the end, and the data persists on the backing device; then fio verify with
# the queues run by a busy-polling poll group (--poll-groups) on its shared receive
# queue, then on one too small for the host's commands.
source "$(dirname "$0")/lib.sh"

# RNR NAKs the target's RDMA device has sent: receives that found no slot posted.
rnr_naks_sent() { cat /sys/class/infiniband/rxe0/ports/1/hw_counters/send_rnr_err; }
rnr_naks_more_than() {
    say "RNR NAKs sent: $(rnr_naks_sent)"
    (( $(rnr_naks_sent) > $1 ))
}
# The queues on a shared receive queue closed without waiting out the flush timeout for
# the device to report their last receive (and so lost no slot to the group).
last_receives_reported() { ! grep "last shared receive done in time" "$TARGET_LOG"; }
# 4 KiB random writes with checksums at depth 16 from 2 jobs (data in the capsules),
# then whatever $2... asks (--do_verify=0: no read-back; --verify_only: only that).
fio_in_capsule() {
    local dev=$1
    shift
    fio --name=in-capsule --filename="$dev" --direct=1 --ioengine=libaio --iodepth=16 --rw=randwrite --bs=4k \
        --size=4M --numjobs=2 --offset=768M --offset_increment=8M --verify=crc32c --verify_fatal=1 --verify_state_save=0 \
        --randrepeat=1 --output="$WORK/fio.txt" "$@" && say "fio: $(grep -E 'WRITE:|READ:' "$WORK/fio.txt" | tr -s ' ' | head -2 | tr '\n' ' ')"
}
# Each live queue's receives: "q<id>:own" or "q<id>:shared", by queue id.
receive_queues() {
    stats | python3 -c 'import json, sys
queues = sorted(json.load(sys.stdin)["queues"], key=lambda q: q["queue_id"])
print(" ".join("q%d:%s" % (q["queue_id"], "shared" if q["shared_receive_queue"] else "own") for q in queues))'
}

start_target --subsystem "$NQN" --namespace "$NVME_DEV" --allow-host "$HOSTNQN" --p2pmem off --cpus 1,0

check "discover lists the subsystem" bash -c "nvme discover -t rdma -a $RXE_ADDR -s $SERVICE -q $HOSTNQN | grep -q 'subnqn: *$NQN'"
check "discover from another host lists nothing of ours" bash -c "! nvme discover -t rdma -a $RXE_ADDR -s $SERVICE -q nqn.2014-08.org.nvmexpress:uuid:stranger | grep -q '$NQN'"
check "connect from a host not allowed fails" bash -c "! nvme connect -t rdma -a $RXE_ADDR -s $SERVICE -n $NQN -q nqn.2014-08.org.nvmexpress:uuid:stranger 2>/dev/null"

DEV=$(connect "$NQN" --nr-io-queues=1)
check "connect gives a block device" test -b "$DEV"
CTRL=/dev/$(basename "$DEV" | sed -E 's/n[0-9]+$//')
check "id-ctrl shows our model" bash -c "nvme id-ctrl $CTRL | grep -q 'mn *: p2ptgt'"
check "id-ns size matches the SSD" bash -c "[[ \$(blockdev --getsize64 $DEV) == \$(blockdev --getsize64 $NVME_DEV) ]]"
check "smart-log answers" nvme smart-log "$CTRL"
check "get-feature number of queues" nvme get-feature "$CTRL" -f 7
check "list-subsys shows rdma" bash -c "nvme list-subsys | grep -q rdma"
check "fio write+verify 64 MiB, 4k-128k" fio_verify "$DEV" 64M
check "fio write+verify at QD1, 4k-128k" fio_verify "$DEV" 8M --iodepth=1 --offset=512M
check "QD1 reads and writes completed by polling the SSD" polled_more_than 100
check "I/O queues use io_uring fixed buffers" grep -q "data buffers registered as io_uring fixed buffers queue=1" "$TARGET_LOG"
check "nvme read past the last LBA gets an error status" bash -c "! nvme read $DEV --start-block=\$((\$(blockdev --getsize64 $DEV) / 512)) --block-count=0 --data-size=512 --data=/dev/null 2>/dev/null"
check "controller still serves after the error" dd if="$DEV" of=/dev/null bs=4096 count=16 iflag=direct status=none
# Pattern, flush, write zeroes, deallocate.
python3 -c "import sys; sys.stdout.buffer.write(bytes(range(256)) * 4096)" > "$WORK/pattern"
check "pattern write + flush" bash -c "dd if=$WORK/pattern of=$DEV bs=1M seek=200 oflag=direct conv=fsync status=none && nvme flush $DEV"
check "write-zeroes reads back zeros" bash -c "nvme write-zeroes $DEV --start-block=$((200 * 2048)) --block-count=7 && [[ \$(dd if=$DEV bs=512 skip=$((200 * 2048)) count=8 iflag=direct status=none | tr -d '\\0' | wc -c) == 0 ]]"
check "deallocate succeeds" nvme dsm "$DEV" --ad --slbs=$((200 * 2048 + 8)) --blocks=8
disconnect "$NQN"
check "data persisted on the backing device" bash -c "cmp <(dd if=$NVME_DEV bs=1M skip=200 count=1 iflag=direct status=none | tail -c +$((16 * 512 + 1))) <(tail -c +$((16 * 512 + 1)) $WORK/pattern)"

DEV=$(connect "$NQN" --nr-io-queues=2)
check "reconnect with 2 I/O queues" test -b "$DEV"
check "data intact after reconnect" bash -c "cmp <(dd if=$DEV bs=1M skip=200 count=1 iflag=direct status=none | tail -c +$((16 * 512 + 1))) <(tail -c +$((16 * 512 + 1)) $WORK/pattern)"
check "fio verify on 2 queues, 2 jobs" fio_verify "$DEV" 32M --numjobs=2 --offset_increment=64M
# --cpus 1,0: queue i runs on the (i mod 2)-th listed CPU.
check "queue threads pinned as --cpus asks" test "$(queue_cpus)" == "q0:1 q1:0 q2:1"
check "payload counted in host memory" bash -c "(( \$(target_stat payload_bytes_host) > 64 * 1024 * 1024 )) && (( \$(target_stat payload_bytes_cmb) == 0 ))"
disconnect "$NQN"
check "SIGTERM exits 0" stop_target

# The data path for dedicated cores: one busy-polling poll group on CPU 1 runs every
# queue; its I/O queues take their receives from the group's shared receive queue.
start_target --subsystem "$NQN" --namespace "$NVME_DEV" --allow-host "$HOSTNQN" --p2pmem off --cpus 1 --poll-groups
dmesg --clear
RNR_BEFORE=$(rnr_naks_sent)
DEV=$(connect "$NQN" --nr-io-queues=2)
check "poll group: fio verify on 2 queues, 2 jobs" fio_verify "$DEV" 32M --numjobs=2 --offset_increment=64M
check "poll group: its one thread, on CPU 1, runs the queues" test "$(group_cpus)" == "pg1:1"
check "poll group: I/O queues take receives from its shared receive queue" test "$(receive_queues)" == "q0:own q1:shared q2:shared"
check "poll group: the shared slots covered the host's commands (no RNR NAK)" test "$(rnr_naks_sent)" == "$RNR_BEFORE"
check "poll group: the SSD's completions found by polling" polled_more_than 1000
disconnect "$NQN"
check "poll group: SIGTERM exits 0" stop_target
check "poll group: each shared queue closed once the device had flushed its last receive" last_receives_reported

# 4 shared slots for 2 queues of 128 commands: the host is told to retry (RNR NAK), and
# its 4 KiB writes, each held in its slot until the SSD has it, must land whole. Writes
# only: on soft-RoCE an RNR NAK while the target moves data to or from that host fails
# the host's queue pair, and the host reconnects.
start_target --subsystem "$NQN" --namespace "$NVME_DEV" --allow-host "$HOSTNQN" --p2pmem off --cpus 1 --poll-groups --srq-entries 4
RNR_BEFORE=$(rnr_naks_sent)
DEV=$(connect "$NQN" --nr-io-queues=2)
check "4 shared slots: in-capsule writes at depth 32 complete" fio_in_capsule "$DEV" --do_verify=0
check "4 shared slots: the host was told to retry" rnr_naks_more_than "$RNR_BEFORE"
check "4 shared slots: a warning names the shortfall" grep -q "raise --srq-entries" "$TARGET_LOG"
disconnect "$NQN"
check "4 shared slots: SIGTERM exits 0" stop_target
check "4 shared slots: each queue closed once the device had flushed its last receive" last_receives_reported
start_target --subsystem "$NQN" --namespace "$NVME_DEV" --allow-host "$HOSTNQN" --p2pmem off
DEV=$(connect "$NQN" --nr-io-queues=2)
check "4 shared slots: every write reads back intact" fio_in_capsule "$DEV" --verify_only
disconnect "$NQN"
check "poll groups: no host timeout, reset or reconnect" test -z "$(dmesg | grep -iE "timeout|reset|reconnect|I/O error" | tee /dev/stderr)"
check "SIGTERM exits 0 at the end" stop_target
finish
