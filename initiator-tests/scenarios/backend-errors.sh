#!/bin/bash
# Backend failures come back as NVMe statuses, not hangs: a device-mapper "error"
# segment in the middle of the SSD, and a file namespace on a full file system.
source "$(dirname "$0")/lib.sh"

modprobe dm_mod
SECTORS=$(blockdev --getsz "$NVME_DEV")
# 512 MiB good, 64 MiB of I/O errors, the rest good (512-byte sectors).
dmsetup create --noudevsync p2ptgt-flaky <<TABLE
0 1048576 linear $NVME_DEV 0
1048576 131072 error
1179648 $((SECTORS - 1179648)) linear $NVME_DEV 1179648
TABLE
# No udev in the guest: make the /dev/mapper node ourselves.
dmsetup mknodes p2ptgt-flaky
mkdir -p "$WORK/small"
mount -t tmpfs -o size=8m tmpfs "$WORK/small"
truncate -s 64M "$WORK/small/namespace.img"
teardown() {
    nvme disconnect -n "$NQN" >/dev/null 2>&1 || true
    nvme disconnect -n "$NQN-file" >/dev/null 2>&1 || true
    [[ -n $TARGET_PID ]] && kill -KILL "$TARGET_PID" 2>/dev/null
    sleep 0.5
    dmsetup remove --noudevsync p2ptgt-flaky 2>/dev/null || true
    umount "$WORK/small" 2>/dev/null || true
}
trap 'teardown; cleanup' EXIT

cat > "$WORK/nvmet.json" <<JSON
{"ports": [{"portid": 1, "addr": {"trtype": "rdma", "adrfam": "ipv4", "traddr": "$RXE_ADDR", "trsvcid": "4420"},
            "subsystems": ["$NQN", "$NQN-file"]}],
 "subsystems": [
   {"nqn": "$NQN", "attr": {"allow_any_host": "1"}, "namespaces": [{"nsid": 1, "device": {"path": "/dev/mapper/p2ptgt-flaky"}}]},
   {"nqn": "$NQN-file", "attr": {"allow_any_host": "1"}, "namespaces": [{"nsid": 1, "device": {"path": "$WORK/small/namespace.img"}}]}]}
JSON
start_target --config "$WORK/nvmet.json"

DEV=$(connect "$NQN")
check "read inside the error segment: Unrecovered Read Error" bash -c "nvme read $DEV --start-block=1048600 --block-count=7 --data-size=4096 --data=/dev/null 2>&1 | grep -qi 'read error\|UNRECOVERED\|0x281\|0x2281'"
check "write inside the error segment: Write Fault" bash -c "head -c 4096 /dev/zero > $WORK/zero && nvme write $DEV --start-block=1048600 --block-count=7 --data-size=4096 --data=$WORK/zero 2>&1 | grep -qi 'write fault\|WRITE_FAULT\|0x280\|0x2280'"
check "the controller still serves good blocks" dd if="$DEV" of=/dev/null bs=1M count=4 iflag=direct status=none
disconnect "$NQN"

FILE_DEV=$(connect "$NQN-file")
# The kernel host maps Capacity Exceeded to ENOSPC ("No space left on device").
check "writing past the file system's space: Capacity Exceeded" bash -c "dd if=/dev/urandom of=$FILE_DEV bs=1M count=16 oflag=direct 2>&1 | grep -q 'No space left'"
check "the file namespace still reads" dd if="$FILE_DEV" of=/dev/null bs=4096 count=16 iflag=direct status=none
disconnect "$NQN-file"
check "SIGTERM exits 0" stop_target
finish
