#!/bin/bash
# Shared helpers for scenarios that run inside the test-bed guest (rxe-setup/vm/run):
# start and stop p2ptgt, connect the kernel host with nvme-cli, run fio, read stats.
# Each scenario sources this file, calls `check NAME CMD...` per assertion and ends
# with `finish`, which prints "N passed, M failed" and sets the exit status.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
P2PTGT=${P2PTGT:-$REPO/build/cargo/release/p2ptgt}
WORK=$(mktemp -d /tmp/p2ptgt-e2e.XXXXXX)
CONTROL=$WORK/control.sock
TARGET_LOG=$WORK/target.log
NQN=${NQN:-nqn.2026-11.io.p2ptgt:e2e}
HOSTNQN=${HOSTNQN:-nqn.2014-08.org.nvmexpress:uuid:0f0e0d0c-0b0a-0908-0706-050403020100}
SERVICE=4420
PASSED=0
FAILED=0
TARGET_PID=

# Print a step.
say() { echo "[$(date +%T)] $*"; }

# Run one assertion: check NAME CMD... (prints PASS/FAIL, counts it).
check() {
    local name=$1
    shift
    if "$@"; then
        PASSED=$((PASSED + 1))
        say "PASS $name"
    else
        FAILED=$((FAILED + 1))
        say "FAIL $name"
    fi
}

# Start p2ptgt serve with ARGS and wait for its start-up line.
start_target() {
    : > "$TARGET_LOG"
    RUST_LOG=${RUST_LOG:-info} "$P2PTGT" serve --listen "$RXE_ADDR:$SERVICE" --control "$CONTROL" "$@" 2>>"$TARGET_LOG" &
    TARGET_PID=$!
    local tries=200
    until grep -q "p2ptgt serving" "$TARGET_LOG"; do
        if ! kill -0 "$TARGET_PID" 2>/dev/null || ((tries-- == 0)); then
            say "target did not start:"
            cat "$TARGET_LOG"
            return 1
        fi
        sleep 0.05
    done
    say "target: $(grep -o 'p2ptgt serving.*' "$TARGET_LOG" | head -n 1)"
}

# Send SIGTERM and return the target's exit status.
stop_target() {
    [[ -n $TARGET_PID ]] || return 0
    kill -TERM "$TARGET_PID" 2>/dev/null || true
    local status=0
    wait "$TARGET_PID" || status=$?
    TARGET_PID=
    return "$status"
}

# Print the target's stats JSON.
stats() { "$P2PTGT" stats --control "$CONTROL"; }

# Print one top-level integer field of the stats.
target_stat() { stats | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

# True if the guest's SSD has poll queues (the bed sets nvme.poll_queues) and the
# target completed more than $1 of its reads and writes by polling it.
polled_more_than() {
    say "reads and writes completed by polling the SSD: $(target_stat polled_ios)"
    [[ $(cat "/sys/block/${NVME_DEV#/dev/}/queue/io_poll") == 1 ]] && (( $(target_stat polled_ios) > $1 ))
}

# Print /dev/NAME of the namespace the kernel host connected for subsystem $1.
connected_namespace() {
    local ctrl ns
    for ctrl in /sys/class/nvme/nvme*; do
        [[ -e $ctrl/subsysnqn && $(cat "$ctrl/subsysnqn") == "$1" && $(cat "$ctrl/transport") == rdma ]] || continue
        ns=$(ls "$ctrl" | grep -E '^nvme[0-9]+(c[0-9]+)?n[0-9]+$' | head -n 1) || continue
        [[ -n $ns ]] || continue
        echo "/dev/$(sed -E 's/^(nvme[0-9]+)c[0-9]+(n[0-9]+)$/\1\2/' <<< "$ns")"
        return
    done
    return 1
}

# Print the block device of NSID $2 of the host's controller of subsystem $1, if any
# (device names count namespaces in the order the host found them, not by NSID).
namespace_device() {
    local ctrl entry
    for ctrl in /sys/class/nvme/nvme*; do
        [[ $(cat "$ctrl/subsysnqn" 2>/dev/null) == "$1" && $(cat "$ctrl/transport") == rdma ]] || continue
        for entry in "$ctrl"/nvme*n*; do
            [[ -e $entry/nsid && $(cat "$entry/nsid") == "$2" ]] || continue
            echo "/dev/$(basename "$entry" | sed -E 's/^(nvme[0-9]+)c[0-9]+(n[0-9]+)$/\1\2/')"
            return 0
        done
    done
    return 1
}
# Connect the kernel host to subsystem $1 (extra nvme-cli options after it); print the block device.
connect() {
    local nqn=$1 dev tries=100
    shift
    nvme connect -t rdma -a "$RXE_ADDR" -s "$SERVICE" -n "$nqn" -q "$HOSTNQN" "$@" >&2 || return 1
    until dev=$(connected_namespace "$nqn") && [[ -b $dev ]]; do
        ((tries-- > 0)) || return 1
        sleep 0.1
    done
    echo "$dev"
}

# Wait for subsystem $1's namespace after a connect made elsewhere; print it.
connect_wait() {
    local dev tries=100
    until dev=$(connected_namespace "$1") && [[ -b $dev ]]; do
        ((tries-- > 0)) || return 1
        sleep 0.1
    done
    echo "$dev"
}

# Disconnect every controller of subsystem $1.
disconnect() { nvme disconnect -n "$1" >&2; }

# fio write then verify of SIZE on DEV with mixed block sizes: fio_verify DEV SIZE [fio options].
fio_verify() {
    local dev=$1 size=$2
    shift 2
    fio --name=verify --filename="$dev" --direct=1 --ioengine=libaio --iodepth=16 --rw=randwrite \
        --bsrange=4k-128k --size="$size" --verify=crc32c --verify_fatal=1 --do_verify=1 --verify_state_save=0 \
        --randrepeat=1 --output="$WORK/fio.txt" "$@" && say "fio: $(grep -E 'WRITE:|READ:' "$WORK/fio.txt" | tr -s ' ' | head -2 | tr '\n' ' ')"
}

# The SSDs' DMA trace (vm/run --dma-trace): its length now, to count from.
dma_mark() { wc -l < "$P2PTGT_DMA_TRACE"; }

# Whether, since trace line $1, SSD $2 (serial) moved no payload through host memory
# and more than $3 bytes through the CMB of SSD $4 (default: its own), by its own DMA
# trace (vm/dma-summary).
ssd_dma_cmb_only() {
    "$REPO/rxe-setup/vm/dma-summary" --since "$1" --json | python3 -c '
import json, sys
serial, least, cmb_of = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ssd = json.load(sys.stdin)["ssds"][serial]
host = ssd["host_bytes"]
cmb = ssd["own_cmb_bytes"] if cmb_of == serial else ssd["peer_bar_bytes"].get(cmb_of, 0)
print(f"DMA of {serial}: {host} B through host memory, {cmb} B through the CMB of {cmb_of}", file=sys.stderr)
sys.exit(0 if host == 0 and cmb > least else 1)' "$2" "$3" "${4:-$2}"
}

# Clean up whatever a failed scenario left.
cleanup() {
    nvme disconnect -n "$NQN" >/dev/null 2>&1 || true
    if [[ -n $TARGET_PID ]]; then
        kill -KILL "$TARGET_PID" 2>/dev/null || true
    fi
    if ((FAILED > 0)) && [[ -s $TARGET_LOG ]]; then
        say "target log (last 40 lines):"
        tail -n 40 "$TARGET_LOG"
    fi
}
trap cleanup EXIT

# Print the tally and exit with failure if anything failed.
finish() {
    echo "$PASSED passed, $FAILED failed"
    ((FAILED == 0))
}

# The guest's devtmpfs has no /dev/fd; bash process substitution needs it.
[[ -e /dev/fd ]] || ln -s /proc/self/fd /dev/fd
modprobe nvme_rdma 2>/dev/null || true
export -f target_stat stats say
export P2PTGT CONTROL REPO

# The CPUs each target thread named p2ptgt-$1* may run on, as "NAME:CPUS" (without
# "p2ptgt-"): queue threads "q0:1 q1:0 ...", poll groups "pg1:1".
thread_cpus() {
    local task
    for task in /proc/"$TARGET_PID"/task/*; do
        [[ $(cat "$task/comm") == p2ptgt-"$1"* ]] || continue
        echo "$(sed 's/p2ptgt-//' "$task/comm"):$(awk '/Cpus_allowed_list/ {print $2}' "$task/status")"
    done | sort | paste -sd ' '
}
queue_cpus() { thread_cpus q; }
group_cpus() { thread_cpus pg; }
