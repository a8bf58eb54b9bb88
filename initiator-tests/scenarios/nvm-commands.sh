#!/bin/bash
# The NVM commands beyond Read and Write, on the SSD with its CMB: two hosts race a fused
# Compare and Write on one block FUSED_ROUNDS times (initiator-tests/src/bin/fused.rs,
# raw NVMe/RDMA: the kernel host cannot fuse), then the kernel host and nvme-cli send
# Compare, Verify, Copy and Write Zeroes with DEAC and read back what they left.
source "$(dirname "$0")/lib.sh"

FUSED=${FUSED:-$REPO/build/cargo/release/fused}
ROUNDS=${FUSED_ROUNDS:-1000}
dmesg --clear
start_target --subsystem "$NQN" --namespace "$NVME_DEV" --allow-any-host

check "two hosts racing fused Compare and Write: one winner per round, never torn" \
    "$FUSED" "$RXE_ADDR" "$NQN" "$ROUNDS" 4096

DEV=$(connect "$NQN")
CTRL=/dev/$(basename "$DEV" | sed -E 's/n[0-9]+$//')
say "namespace $DEV, controller $CTRL"
LBA_BYTES=$(blockdev --getss "$DEV")
check "ONCS advertises Compare, Verify and Copy; FUSES Compare and Write" \
    bash -c "nvme id-ctrl $CTRL -o json | python3 -c 'import json,sys; c=json.load(sys.stdin); sys.exit(not (c[\"oncs\"] & 0x181 == 0x181 and c[\"fuses\"] & 1))'"

head -c $((8 * LBA_BYTES)) /dev/urandom > "$WORK/a"
head -c $((8 * LBA_BYTES)) /dev/urandom > "$WORK/b"
check "write 8 blocks at 1000" nvme write "$DEV" --start-block=1000 --block-count=7 --data-size=$((8 * LBA_BYTES)) --data="$WORK/a"
check "Compare with the same data succeeds" nvme compare "$DEV" --start-block=1000 --block-count=7 --data-size=$((8 * LBA_BYTES)) --data="$WORK/a"
check "Compare with other data fails with Compare Failure" \
    bash -c "nvme compare $DEV --start-block=1000 --block-count=7 --data-size=$((8 * LBA_BYTES)) --data=$WORK/b 2>&1 | grep -qi 'compare'; ! nvme compare $DEV --start-block=1000 --block-count=7 --data-size=$((8 * LBA_BYTES)) --data=$WORK/b >/dev/null 2>&1"
check "Verify of written blocks succeeds" nvme verify "$DEV" --start-block=1000 --block-count=7
check "Copy two ranges to 5000" nvme copy "$DEV" --sdlba=5000 --slbs=1004,1000 --blocks=3,3
nvme read "$DEV" --start-block=5000 --block-count=7 --data-size=$((8 * LBA_BYTES)) --data="$WORK/copied" >/dev/null 2>&1
check "the copy holds the ranges in order" \
    bash -c "cmp <(tail -c $((4 * LBA_BYTES)) $WORK/a; head -c $((4 * LBA_BYTES)) $WORK/a) $WORK/copied"
check "Write Zeroes with DEAC reads back zeroes" \
    bash -c "nvme write-zeroes $DEV --start-block=1000 --block-count=7 --deac && nvme read $DEV --start-block=1000 --block-count=7 --data-size=$((8 * LBA_BYTES)) --data=$WORK/zeroes >/dev/null 2>&1 && cmp -n $((8 * LBA_BYTES)) $WORK/zeroes /dev/zero"
check "Copy beyond the namespace: LBA Out of Range" \
    bash -c "! nvme copy $DEV --sdlba=\$(( \$(blockdev --getsz $DEV) * 512 / $LBA_BYTES - 2 )) --slbs=0 --blocks=7 >/dev/null 2>&1"
check "Dataset Management deallocate (blkdiscard) through the target" blkdiscard --offset 0 --length $((1 << 20)) "$DEV"
disconnect "$NQN"
check "SIGTERM exits 0" stop_target

# MDTS 1 MiB: advertised, taken by the host, and moved by 1 MiB commands.
start_target --subsystem "$NQN" --namespace "$NVME_DEV" --allow-any-host --mdts-kib 1024
DEV=$(connect "$NQN")
check "MDTS 8 (1 MiB) with --mdts-kib 1024" bash -c "nvme id-ctrl $CTRL -o json | python3 -c 'import json,sys; sys.exit(json.load(sys.stdin)[\"mdts\"] != 8)'"
check "the host takes 1 MiB commands" test "$(cat "/sys/block/${DEV#/dev/}/queue/max_hw_sectors_kb")" -ge 1024
check "fio verify with 1 MiB blocks" fio_verify "$DEV" 32M --bsrange=1m-1m --iodepth=8
disconnect "$NQN"
TROUBLE=$(dmesg | grep -i nvme | grep -Ei 'timeout|error recovery|reconnect|reset' || true)
check "no nvme timeout, error recovery or reconnect in dmesg" test -z "$TROUBLE"
check "SIGTERM exits 0" stop_target
finish
