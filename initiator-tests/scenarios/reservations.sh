#!/bin/bash
# Persistent reservations between two kernel hosts with their own Host Identifiers:
# host A is this guest, host B the initiator guest of `vm/run --remote` (another
# kernel, across the virtual link). nvme-cli sends the reservation commands, dd and
# fio the I/O. Checks: the conflicts of each reservation type, Report, the notices in
# log 80h, Preempt and Abort fencing B while its fio writes, Persist Through Power Loss
# across a restart of the target (and its absence), bad commands, and neither host's
# kernel log telling of a timeout, reset or reconnect.
# Sub-command used on the initiator: host-side TARGET_ADDR STEP [ARGS...].
source "$(dirname "$0")/lib.sh"

HOST_B=nqn.2014-08.org.nvmexpress:uuid:0b0b0b0b-0000-4000-8000-00000000000b
HOST_Z=nqn.2014-08.org.nvmexpress:uuid:0c0c0c0c-0000-4000-8000-00000000000c
ID_A=aaaaaaaa-0000-4000-8000-00000000000a
ID_B=bbbbbbbb-0000-4000-8000-00000000000b
ID_ZERO=00000000-0000-0000-0000-000000000000
STATE=$WORK/reservations.json
TROUBLE='timeout|error recovery|reconnect|Reconnecting|resetting'

nvme_trouble() { dmesg | grep -i nvme | grep -Ei "$TROUBLE" || true; }

# refused TEXT CMD...: CMD fails and what it prints names the status TEXT.
refused() {
    local text=$1 out
    shift
    if out=$("$@" 2>&1); then
        say "unexpectedly succeeded: $*"
        return 1
    fi
    grep -qi "$text" <<< "$out" || { say "$*: $out"; return 1; }
}

dd_write() { dd if=/dev/urandom of="$1" bs=4k count=1 seek="${2:-0}" oflag=direct status=none; }
dd_read() { dd if="$1" of=/dev/null bs=4k count=1 iflag=direct status=none; }

# The types of the unread entries of log 80h, oldest first ("" when none).
notices() {
    local types=() entry
    for _ in 1 2 3 4 5 6 7 8; do
        entry=$(nvme get-log "$1" --log-id=0x80 --log-len=64 -b | python3 -c '
import sys
log = sys.stdin.buffer.read()
print(int.from_bytes(log[0:8], "little"), log[8])')
        [[ ${entry% *} == 0 ]] && break
        types+=("${entry#* }")
    done
    echo "${types[*]}"
}

# Reservation Report (extended): "type=T" then each registrant as "ID:holds", ID the
# Host Identifier's first 8 hex digits.
report() {
    nvme resv-report "$1" --namespace-id=1 --eds --numd=1023 -b | python3 -c '
import sys
data = sys.stdin.buffer.read()
entries = [data[64 + 64 * i:128 + 64 * i] for i in range(int.from_bytes(data[5:7], "little"))]
print(" ".join([f"type={data[4]}"] + [f"{e[16:20].hex()}:{e[2] & 1}" for e in entries]))'
}

# report_is DEV EXPECTED: the report reads EXPECTED.
report_is() {
    local got
    got=$(report "$1")
    [[ $got == "$2" ]] || { say "report: $got (expected $2)"; return 1; }
}

resv() { local verb=$1 dev=$2; shift 2; nvme "resv-$verb" "$dev" --namespace-id=1 "$@" > /dev/null; }
not() { ! "$@"; }

# On the initiator guest, as host B: `connect [nvme connect options]`, `trouble`, or
# a command whose @DEV is replaced by B's namespace device.
host_side() {
    RXE_ADDR=$1
    HOSTNQN=${B_NQN:-$HOST_B}
    shift
    case $1 in
        connect)
            shift
            dmesg --clear
            connect "$NQN" "$@" > /dev/null
            ;;
        trouble) nvme_trouble ;;
        *)
            local dev
            dev=$(connected_namespace "$NQN") || { say "B is not connected"; return 1; }
            "${@//@DEV/$dev}"
            ;;
    esac
}

if [[ ${1:-} == host-side ]]; then
    trap - EXIT
    shift
    host_side "$@"
    exit
fi

remote() { rxe-remote "$(readlink -f "$0")" host-side "$RXE_ADDR" "$@"; }
# notices_are WHO EXPECTED: the unread notices of host A ("a") or B ("b").
notices_are() {
    local got
    if [[ $1 == a ]]; then got=$(notices "$DEV"); else got=$(remote notices @DEV); fi
    [[ $got == "$2" ]] || { say "log 80h of $1: \"$got\" (expected \"$2\")"; return 1; }
}
both_register() { resv register "$DEV" --nrkey=0xa --rrega=0 && remote resv register @DEV --nrkey=0xb --rrega=0; }
# acquire_then_b TYPE STEP...: A acquires TYPE, then each STEP runs on host B.
acquire_then_b() {
    local type=$1 step
    shift
    resv acquire "$DEV" --crkey=0xa --rtype="$type" --racqa=0 || return 1
    for step in "$@"; do
        remote $step || return 1
    done
}
identify_advertises() {
    nvme id-ctrl "$DEV" -o json | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["oncs"] & 32 else 1)' &&
        nvme id-ns "$DEV" -o json | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["rescap"] == 0xff else 1)'
}
stats_show_holder() {
    stats | python3 -c '
import json, sys
r = json.load(sys.stdin)["subsystems"][0]["namespaces"][0]["reservation"]
print(r, file=sys.stderr)
sys.exit(0 if r["type"] == "write-exclusive" and r["holder"].startswith("aaaaaaaa") and "key" not in str(r) else 1)'
}
zero_host_id_refused() {
    B_NQN=$HOST_Z remote connect --hostid="$ID_ZERO" &&
        B_NQN=$HOST_Z remote refused "Command Sequence Error" nvme resv-register @DEV --namespace-id=1 --nrkey=0xc --rrega=0
}
report_of() { nvme resv-report "$DEV" --namespace-id=1 --eds --numd=1023 -b | od -An -tx1 | head -1; }

TARGET_ARGS=(--subsystem "$NQN" --namespace "$NVME_DEV" --allow-host "$HOSTNQN" --allow-host "$HOST_B" --allow-host "$HOST_Z" --p2pmem auto --reservations "$STATE")
start_target "${TARGET_ARGS[@]}"
dmesg --clear
DEV=$(connect "$NQN" --hostid="$ID_A")
check "host A and host B connect with their own Host Identifiers" remote connect --hostid="$ID_B"
check "Identify: ONCS reservations, RESCAP all six types, IEKEY and PTPL" identify_advertises

check "A and B register (keys 0xa, 0xb)" both_register
check "A acquires Write Exclusive" resv acquire "$DEV" --crkey=0xa --rtype=1 --racqa=0
check "Write Exclusive: the holder writes" dd_write "$DEV" 0
check "Write Exclusive: B's write is refused" not remote dd_write @DEV 1
check "Write Exclusive: B reads" remote dd_read @DEV
check "Report (extended): A holds Write Exclusive, B is registered" report_is "$DEV" "type=1 aaaaaaaa:1 bbbbbbbb:0"
check "Report without the extended structure: Host Identifier Inconsistent Format" \
    refused "Host Identifier Inconsistent" nvme resv-report "$DEV" --namespace-id=1 --numd=1023 -b

check "A releases, then acquires Exclusive Access" resv release "$DEV" --crkey=0xa --rtype=1 --rrela=0
resv acquire "$DEV" --crkey=0xa --rtype=2 --racqa=0
check "Exclusive Access: B's read is refused" not remote dd_read @DEV
check "Exclusive Access: A reads" dd_read "$DEV"
resv release "$DEV" --crkey=0xa --rtype=2 --rrela=0
check "Write Exclusive Registrants Only: registrant B writes" acquire_then_b 3 "dd_write @DEV 2"
check "A releases it" resv release "$DEV" --crkey=0xa --rtype=3 --rrela=0
check "B's log 80h has one Reservation Released notice" notices_are b 2
check "A's log 80h is empty" notices_are a ""
check "Exclusive Access All Registrants: B reads and writes" acquire_then_b 6 "dd_write @DEV 3" "dd_read @DEV"
check "Report: both hold an all-registrants reservation" report_is "$DEV" "type=6 aaaaaaaa:1 bbbbbbbb:1"
resv release "$DEV" --crkey=0xa --rtype=6 --rrela=0
remote notices @DEV > /dev/null

# Preempt and Abort while B writes: B is fenced, its fio stops on errors, no timeouts.
resv acquire "$DEV" --crkey=0xa --rtype=3 --racqa=0
remote fio --name=b --filename=@DEV --direct=1 --ioengine=libaio --iodepth=16 --rw=randwrite --bs=4k \
    --size=64M --offset=256M --time_based --runtime=60 --output=/dev/null > "$WORK/fio-b.txt" 2>&1 &
FIO_B=$!
sleep 4
START=$SECONDS
check "A preempts B and aborts its commands while B's fio writes" resv acquire "$DEV" --crkey=0xa --prkey=0xb --rtype=3 --racqa=2
FIO_B_STATUS=0
wait "$FIO_B" || FIO_B_STATUS=$?
say "B's fio: status $FIO_B_STATUS, $((SECONDS - START)) s after the preempt"
check "B's fio stopped on errors at once (it would run 60 s)" test "$FIO_B_STATUS" -ne 0 -a $((SECONDS - START)) -lt 20
check "B's log 80h: Registration Preempted" notices_are b 1
check "Report: A alone" report_is "$DEV" "type=3 aaaaaaaa:1"
check "B's writes are refused" not remote dd_write @DEV 4
check "B's reads go on" remote dd_read @DEV
check "A: fio verify 16 MiB under its reservation" fio_verify "$DEV" 16M

check "B registers again; A clears: B is told (Reservation Preempted)" remote resv register @DEV --nrkey=0xb --rrega=0
resv release "$DEV" --crkey=0xa --rrela=1
check "B's log 80h: Reservation Preempted" notices_are b 3
check "Report after Clear: no registrants, no reservation" report_is "$DEV" "type=0"

# Bad commands get their status and change nothing.
resv register "$DEV" --nrkey=0xa --rrega=0
resv acquire "$DEV" --crkey=0xa --rtype=1 --racqa=0
BEFORE=$(report_of)
check "wrong key: Reservation Conflict" refused "Reservation Conflict" nvme resv-acquire "$DEV" --namespace-id=1 --crkey=0xbad --rtype=1 --racqa=0
check "type 7: Invalid Field" refused "Invalid Field" nvme resv-acquire "$DEV" --namespace-id=1 --crkey=0xa --rtype=7 --racqa=0
check "new key 0: Invalid Field" refused "Invalid Field" nvme resv-register "$DEV" --namespace-id=1 --nrkey=0 --rrega=2 --crkey=0xa
check "B releases what it does not hold without a registration: Reservation Conflict" \
    remote refused "Reservation Conflict" nvme resv-release @DEV --namespace-id=1 --crkey=0xb --rtype=1 --rrela=0
check "Register with 8 bytes of data: Data SGL Length Invalid" \
    refused "SGL Length Invalid" nvme io-passthru "$DEV" --opcode=0x0d --namespace-id=1 --data-len=8 --write --input-file=/dev/zero
check "nothing changed" test "$(report_of)" == "$BEFORE"
remote disconnect "$NQN"
check "a host with Host Identifier 0 cannot register: Command Sequence Error" zero_host_id_refused
B_NQN=$HOST_Z remote disconnect "$NQN"
check "p2ptgt stats: A's Host Identifier holds Write Exclusive, no key shown" stats_show_holder

# Persist Through Power Loss: with it the state survives a restart, without it not.
resv register "$DEV" --nrkey=0xa --rrega=0 --cptpl=3
remote connect --hostid="$ID_B"
remote resv register @DEV --nrkey=0xb --rrega=0
disconnect "$NQN"
remote disconnect "$NQN"
check "SIGTERM exits 0" stop_target
start_target "${TARGET_ARGS[@]}"
DEV=$(connect "$NQN" --hostid="$ID_A")
remote connect --hostid="$ID_B"
check "with PTPL, after a restart: A holds Write Exclusive, B is registered" report_is "$DEV" "type=1 aaaaaaaa:1 bbbbbbbb:0"
check "and B's write is refused again" not remote dd_write @DEV 1
resv register "$DEV" --nrkey=0xa --rrega=0 --cptpl=2
disconnect "$NQN"
remote disconnect "$NQN"
stop_target
start_target "${TARGET_ARGS[@]}"
DEV=$(connect "$NQN" --hostid="$ID_A")
check "with PTPL cleared, after a restart: no registrants" report_is "$DEV" "type=0"
disconnect "$NQN"

check "host A's kernel: no timeout, reset or reconnect" test -z "$(nvme_trouble | tee /dev/stderr)"
check "host B's kernel: no timeout, reset or reconnect" test -z "$(remote trouble | tee /dev/stderr)"
check "SIGTERM exits 0" stop_target
finish
