#!/bin/bash
# Fairness of the data-buffer pool across queues. Run with a small CMB (vm/run --cmb-mb 2:
# 14 buffers of 128 KiB) as the pool: the kernel host connects with two I/O queues and runs
# two fio verify jobs at once on disjoint ranges, a deep one (128 KiB random writes at QD128,
# pinned to CPU 0) that keeps the pool empty, and a shallow one (128 KiB at QD1, pinned to
# CPU 1, so on the other I/O queue) whose commands have to wait for buffers that the deep
# queue releases. A waiting command must be woken by any queue's release, not only
# its own queue's: a shallow command left waiting is never answered, and the host times it
# out (30 s), starts error recovery and reconnects. Besides fio's verify, the check is that
# the kernel log gained no such line. With FAIRNESS_REMOTE=1 (vm/run --remote) the kernel
# host on the second guest runs a QD1 verify job of its own at the same time, and its kernel
# log is checked too.
# Sub-command used on the initiator: host-side TARGET_ADDR.
source "$(dirname "$0")/lib.sh"

HOST_B=nqn.2014-08.org.nvmexpress:uuid:0b0b0b0b-0000-4000-8000-00000000000b
DEEP_SIZE=${FAIRNESS_DEEP_SIZE:-48M}
DEEP_DEPTH=${FAIRNESS_DEEP_DEPTH:-128}
SHALLOW_SIZE=${FAIRNESS_SHALLOW_SIZE:-8M}
REMOTE_SIZE=${FAIRNESS_REMOTE_SIZE:-8M}
REMOTE=${FAIRNESS_REMOTE:-0}
# What the kernel NVMe host logs when a command timed out and it tears the queues down.
TROUBLE='timeout|error recovery|reconnect|Reconnecting|resetting'
# Keep a failing run short: give up on the controller after 60 s of reconnecting.
CONNECT_OPTS=(--reconnect-delay=2 --ctrl-loss-tmo=60)

# Print the nvme lines of the kernel log (since `dmesg --clear`) that tell of a timeout or a reset.
nvme_trouble() { dmesg | grep -i nvme | grep -Ei "$TROUBLE" || true; }

# fio write then verify, 128 KiB random writes: fio_job NAME DEV CPUS SIZE OFFSET IODEPTH [fio options].
# CPUS may be empty (not pinned). Prints a summary line; returns fio's status.
fio_job() {
    local name=$1 dev=$2 cpus=$3 size=$4 offset=$5 depth=$6 status=0 start=$SECONDS
    shift 6
    fio --name="$name" --filename="$dev" --direct=1 --ioengine=libaio --rw=randwrite --bs=128k \
        --iodepth="$depth" --size="$size" --offset="$offset" ${cpus:+--cpus_allowed=$cpus} \
        --verify=crc32c --verify_fatal=1 --do_verify=1 --verify_state_save=0 --randrepeat=1 \
        --output="$WORK/fio-$name.txt" "$@" || status=$?
    say "fio $name ($size at $offset, QD$depth${cpus:+, CPU $cpus}): status $status after $((SECONDS - start)) s;" \
        "$(grep -E 'WRITE:|READ:' "$WORK/fio-$name.txt" | tr -s ' ' | head -2 | tr '\n' ' ')"
    ((status == 0)) || grep -iE 'verify|error|err=' "$WORK/fio-$name.txt" | head -5 || true
    return "$status"
}

# On the initiator guest: connect, one QD1 verify job at 768 MiB, disconnect; report the
# job's status and the kernel log's trouble lines, each on a line of its own.
host_side() {
    RXE_ADDR=$1
    HOSTNQN=$HOST_B
    local dev status=0
    dmesg --clear
    dev=$(connect "$NQN" "${CONNECT_OPTS[@]}") || { say "connect failed"; return 1; }
    say "remote host connected $dev"
    fio_job remote "$dev" "" "$REMOTE_SIZE" 768M 1 || status=$?
    echo "remote fio status: $status"
    disconnect "$NQN"
    nvme_trouble | sed 's/^/remote kernel: /'
}

if [[ ${1:-} == host-side ]]; then
    trap - EXIT
    host_side "$2"
    exit
fi

# The buffer_waits of the stats JSON in $1, then the live queues' as "id:waits": the total
# is the queues' sum, or the namespaces' if larger (queues that ended no longer report).
buffer_waits() {
    python3 -c "
import json, sys
s = json.load(open(sys.argv[1]))
ns = sum(n.get('stats', {}).get('buffer_waits', 0) for sub in s.get('subsystems', []) for n in sub.get('namespaces', []))
print(max(s.get('buffer_waits', 0), ns), ' '.join(f\"{q['queue_id']}:{q.get('buffer_waits')}\" for q in s.get('queues', [])))" "$1"
}

# The NVMe I/O queue (QID) the kernel host submits on from CPU $2 for block device $1:
# its blk-mq hardware context's number plus one (the path device's, under multipath).
qid_of_cpu() {
    local dev=${1#/dev/} list cpu
    for list in /sys/block/"$dev"/mq/*/cpu_list /sys/block/"${dev%n*}"c*n"${dev##*n}"/mq/*/cpu_list; do
        [[ -f $list ]] || continue
        for cpu in $(tr ',' ' ' < "$list"); do
            if [[ $cpu == "$2" || ($cpu == *-* && $2 -ge ${cpu%-*} && $2 -le ${cpu#*-}) ]]; then
                list=${list%/cpu_list}
                echo $((${list##*/} + 1))
                return
            fi
        done
    done
    echo "?"
}

# The pools' bytes in use: "host_pool=N cmb_pool=N".
pools_in_use() {
    stats | python3 -c "
import json, sys
s = json.load(sys.stdin)
print(' '.join(f'{p}={(s.get(p) or {}).get(\"in_use_bytes\", \"missing\")}' for p in ('host_pool', 'cmb_pool')))"
}

# True once both pools have nothing in use (waits up to 5 s for queues to wind down).
pools_empty() {
    local tries=50 now
    while :; do
        now=$(pools_in_use)
        [[ $now == "host_pool=0 cmb_pool=0" ]] && break
        ((tries-- > 0)) || { say "pools in use: $now"; return 1; }
        sleep 0.1
    done
    say "pools in use: $now"
}

ALLOW=(--allow-host "$HOSTNQN")
((REMOTE)) && ALLOW+=(--allow-host "$HOST_B")
start_target --subsystem "$NQN" --namespace "$NVME_DEV" "${ALLOW[@]}" --p2pmem auto --cpus 0-1
check "start-up line names the p2pmem of $P2P_BDF" grep -q "data buffers: p2pmem of $P2P_BDF" "$TARGET_LOG"
dmesg --clear
START=$SECONDS

if ((REMOTE)); then
    rxe-remote "$(readlink -f "$0")" host-side "$RXE_ADDR" > "$WORK/remote.txt" 2>&1 &
    REMOTE_PID=$!
fi
DEV=$(connect "$NQN" --nr-io-queues=2 "${CONNECT_OPTS[@]}")
check "connect with 2 I/O queues" test -b "$DEV"
Q0=$(qid_of_cpu "$DEV" 0)
Q1=$(qid_of_cpu "$DEV" 1)
say "target queue threads (queue:CPUs): $(queue_cpus); host: CPU 0 submits on QID $Q0, CPU 1 on QID $Q1"
check "CPUs 0 and 1 submit on different I/O queues" test "$Q0" != "$Q1"

# The shallow job starts a second later, when the deep one has the pool empty.
fio_job deep "$DEV" 0 "$DEEP_SIZE" 0 "$DEEP_DEPTH" & DEEP_PID=$!
fio_job shallow "$DEV" 1 "$SHALLOW_SIZE" 256M 1 --startdelay=1 & SHALLOW_PID=$!
DEEP_STATUS=0 SHALLOW_STATUS=0
wait "$DEEP_PID" || DEEP_STATUS=$?
wait "$SHALLOW_PID" || SHALLOW_STATUS=$?
check "deep job (QD$DEEP_DEPTH, CPU 0, QID $Q0): fio write+verify $DEEP_SIZE" test "$DEEP_STATUS" -eq 0
check "shallow job (QD1, CPU 1, QID $Q1): fio write+verify $SHALLOW_SIZE" test "$SHALLOW_STATUS" -eq 0

if ((REMOTE)); then
    REMOTE_STATUS=0
    wait "$REMOTE_PID" || REMOTE_STATUS=$?
    cat "$WORK/remote.txt"
    check "remote host: connect, fio write+verify $REMOTE_SIZE at QD1, disconnect" \
        bash -c "(( $REMOTE_STATUS == 0 )) && grep -qx 'remote fio status: 0' '$WORK/remote.txt'"
    check "remote host's kernel log: no nvme timeout, error recovery or reconnect" \
        bash -c "! grep -q '^remote kernel: ' '$WORK/remote.txt'"
fi
say "jobs done $((SECONDS - START)) s after connecting"

TROUBLE_LINES=$(nvme_trouble)
[[ -z $TROUBLE_LINES ]] || { say "kernel log:"; echo "$TROUBLE_LINES"; }
check "kernel log: no nvme timeout, error recovery or reconnect" test -z "$TROUBLE_LINES"

stats > "$WORK/stats.json"
read -r WAITS PER_QUEUE < <(buffer_waits "$WORK/stats.json")
say "buffer waits $WAITS; live queues (id:waits): $PER_QUEUE"
check "the pool ran dry: commands waited for buffers" test "$WAITS" -gt 0

disconnect "$NQN"
check "after disconnect no host or CMB buffer is in use" pools_empty
check "SIGTERM exits 0" stop_target
finish
