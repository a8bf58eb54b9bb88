#!/bin/bash
# Differential conformance: the kernel target (nvmet-rdma, configured through configfs)
# and p2ptgt each serve one 64 MiB loop-device namespace to the same host NQN. The kernel
# host and nvme-cli ask both the same questions (Identify, log pages, features,
# properties, discovery, and a table of malformed commands); the `conformance` binary
# compares the answers field by field and fails on any difference that
# initiator-tests/conformance/differences.tsv does not list with a reason. The dmesg
# lines of each connect are compared too.
source "$(dirname "$0")/lib.sh"

COMPARER=${CONFORMANCE:-$REPO/build/cargo/release/conformance}
TABLE=${CONFORMANCE_TABLE:-$REPO/initiator-tests/conformance/differences.tsv}
# The answers stay on the host side of the bed for reading after the run.
OUT=${CONFORMANCE_OUT:-$REPO/build/conformance}
NVMET_NQN=$NQN-nvmet
P2PTGT_NQN=$NQN-p2ptgt
NVMET_SERVICE=4421
CFS=/sys/kernel/config/nvmet
DISCOVERY_NQN=nqn.2014-08.org.nvmexpress.discovery
# nvmet's I/O queues per controller, set to p2ptgt's --max-io-queues default so that
# Number of Queues compares behavior rather than two defaults.
QID_MAX=8
NVMET_NGUID=0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0
# Identify and log-page dumps use a page-sized buffer unless a log is known to be smaller.
PAGE=4096

# Loop devices over two files of the guest's tmpfs, 512-byte sectors: a file namespace
# would get nvmet's 4 KiB blocks (tmpfs inode block size) against p2ptgt's 512.
make_backing() {
    modprobe loop
    truncate -s 64M "$WORK/nvmet.img" "$WORK/p2ptgt.img"
    NVMET_BACKING=$(losetup --find --show --sector-size 512 "$WORK/nvmet.img")
    P2PTGT_BACKING=$(losetup --find --show --sector-size 512 "$WORK/p2ptgt.img")
}

# Configure nvmet: subsystem, namespace 1 on the loop device, the host allowed, port 1.
nvmet_up() {
    modprobe nvmet_rdma
    local subsystem=$CFS/subsystems/$NVMET_NQN port=$CFS/ports/1
    mkdir -p "$CFS/hosts/$HOSTNQN" "$subsystem/namespaces/1" "$port"
    echo 0 > "$subsystem/attr_allow_any_host"
    echo "$QID_MAX" > "$subsystem/attr_qid_max"
    ln -s "$CFS/hosts/$HOSTNQN" "$subsystem/allowed_hosts/"
    echo "$NVMET_BACKING" > "$subsystem/namespaces/1/device_path"
    # nvmet reports an NGUID only when given one; p2ptgt always makes one up.
    echo "$NVMET_NGUID" > "$subsystem/namespaces/1/device_nguid"
    # Reservations are off by default in nvmet and on in p2ptgt: compare them served.
    echo 1 > "$subsystem/namespaces/1/resv_enable"
    echo 1 > "$subsystem/namespaces/1/enable"
    echo rdma > "$port/addr_trtype"
    echo ipv4 > "$port/addr_adrfam"
    echo "$RXE_ADDR" > "$port/addr_traddr"
    echo "$NVMET_SERVICE" > "$port/addr_trsvcid"
    ln -s "$subsystem" "$port/subsystems/"
}

# Undo nvmet_up in reverse order (each step may already be gone after a failure).
nvmet_down() {
    local subsystem=$CFS/subsystems/$NVMET_NQN port=$CFS/ports/1
    rm -f "$port/subsystems/$NVMET_NQN" 2>/dev/null || true
    rmdir "$port" 2>/dev/null || true
    echo 0 > "$subsystem/namespaces/1/enable" 2>/dev/null || true
    rmdir "$subsystem/namespaces/1" 2>/dev/null || true
    rm -f "$subsystem/allowed_hosts/$HOSTNQN" 2>/dev/null || true
    rmdir "$subsystem" "$CFS/hosts/$HOSTNQN" 2>/dev/null || true
}

teardown() {
    nvme disconnect -n "$NVMET_NQN" >/dev/null 2>&1 || true
    nvme disconnect -n "$P2PTGT_NQN" >/dev/null 2>&1 || true
    nvmet_down
    [[ -n $TARGET_PID ]] && kill -KILL "$TARGET_PID" 2>/dev/null
    [[ -n ${NVMET_BACKING:-} ]] && losetup -d "$NVMET_BACKING" 2>/dev/null
    [[ -n ${P2PTGT_BACKING:-} ]] && losetup -d "$P2PTGT_BACKING" 2>/dev/null
    return 0
}
trap 'teardown; cleanup' EXIT

# Print the controller name (nvmeN) of the rdma controller of subsystem $1 on port $2.
controller_of() {
    local ctrl
    for ctrl in /sys/class/nvme/nvme*; do
        [[ $(cat "$ctrl/transport") == rdma && $(cat "$ctrl/subsysnqn") == "$1" ]] || continue
        grep -q "trsvcid=$2\b" "$ctrl/address" && { basename "$ctrl"; return; }
    done
    return 1
}

# Print the kernel log since the last clear, without timestamps, with controller and
# namespace names, NQNs and ports made the same for both targets.
dmesg_normalized() {
    dmesg --level=emerg,alert,crit,err,warn,notice,info --decode --notime \
        | sed -E "s/\bnvme[0-9]+(c[0-9]+)?(n[0-9]+)?\b/nvmeX\2/g; s/$NVMET_NQN|$P2PTGT_NQN/<subsystem>/g; \
                  s/:($NVMET_SERVICE|$SERVICE)\b/:<port>/g; s/controller [0-9]+ /controller <cntlid> /g" \
        | grep -vE '^kern *:info *: *(nvmet|nvmet_rdma):' || true
}

# Connect to subsystem $2 on port $3 with the kernel log cleared before; the log of
# the connect goes to $1/dmesg-connect.txt. Sets CTRL and NS (/dev/ names).
connect_logged() {
    local dir=$1 nqn=$2 port=$3 tries=100 name
    dmesg --clear
    nvme connect -t rdma -a "$RXE_ADDR" -s "$port" -n "$nqn" -q "$HOSTNQN" >&2 || return 1
    until name=$(controller_of "$nqn" "$port") && NS=$(connected_namespace "$nqn") && [[ -b $NS ]]; do
        ((tries-- > 0)) || return 1
        sleep 0.1
    done
    CTRL=/dev/$name
    # The namespace scan logs after the block device appears (e.g. the FDP query).
    sleep 1
    dmesg_normalized > "$dir/dmesg-connect.txt"
}

# Run nvme-cli for item $2 of result directory $1: stdout, stderr and exit status
# go to $1/$2.{out,err,rc}. The comparer parses them by the item's name.
ask() {
    local dir=$1 item=$2 rc=0
    shift 2
    nvme "$@" > "$dir/$item.out" 2> "$dir/$item.err" || rc=$?
    echo "$rc" > "$dir/$item.rc"
}

# Print the LIDs log page 00h in file $1 marks supported (LSUPP), as hex.
supported_logs() {
    od -An -tu4 -v -w4 "$1" 2>/dev/null | awk '$1 % 2 == 1 { printf "0x%02x\n", NR - 1 }'
}

# Bytes to ask for log page $1: its size where the spec fixes one, else a page.
log_length() {
    case $1 in
        0x02|0x03) echo 512 ;;
        0x06) echo 564 ;;
        0x12|0x13) echo 1024 ;;
        0x80) echo 64 ;;
        *) echo "$PAGE" ;;
    esac
}

# Identify, log pages 00h (the rest once both are known), features, properties.
collect_identity() {
    local dir=$1 ctrl=$2 cns fid sel
    ask "$dir" id-ctrl id-ctrl "$ctrl" -o json
    ask "$dir" id-ns id-ns "$ctrl" --namespace-id=1 -o json
    # CNS: 00h NS, 01h controller, 02h active NSIDs, 03h NS descriptors, 05h NVM NS,
    # 06h NVM controller, 07h active NSIDs of CSI 0, 08h I/O-command-set-independent NS.
    for cns in 00:1 01:0 02:0 03:1 05:1 06:0 07:0 08:1; do
        ask "$dir" "identify-cns${cns%:*}" admin-passthru "$ctrl" --opcode=0x06 --cdw10=$((16#${cns%:*})) \
            --cdw11=0 --namespace-id="${cns#*:}" --data-len=$PAGE --read --raw-binary
    done
    ask "$dir" log-0x00 get-log "$ctrl" --log-id=0 --log-len=1024 --raw-binary
    for fid in $(seq 1 32) $(seq 128 131); do
        for sel in 0 1 2 3; do
            ask "$dir" "$(printf 'feature-0x%02x-sel%d' "$fid" "$sel")" get-feature "$ctrl" --feature-id="$fid" --sel="$sel"
        done
    done
    # CAP, VS, CC, CSTS, NSSR, CRTO; then offsets a fabrics controller has no property at.
    for property in 0x00 0x08 0x14 0x1c 0x20 0x68 0x0c 0x24 0x38 0x04 0x1000; do
        ask "$dir" "property-$property" get-property "$ctrl" --offset="$property"
    done
}

# Log pages: every LID either target's log 00h marks supported ($3...). The error log
# is read as its newest entry, right after a Get Features of reserved FID 00h, so that
# the entry describes a known error rather than the history of each controller.
collect_logs() {
    local dir=$1 ctrl=$2 lid extra
    shift 2
    for lid in "$@"; do
        extra=()
        [[ $lid == 0x09 ]] && extra=(--lsi=1)
        if [[ $lid == 0x01 ]]; then
            nvme admin-passthru "$ctrl" --opcode=0x0a --cdw10=0 >/dev/null 2>&1 || true
            ask "$dir" "log-$lid" get-log "$ctrl" --log-id="$lid" --log-len=64 --raw-binary
            continue
        fi
        ask "$dir" "log-$lid" get-log "$ctrl" --log-id="$lid" --log-len="$(log_length "$lid")" "${extra[@]}" --raw-binary
    done
}

# Print $1 as $2 little-endian bytes.
le_bytes() {
    local value=$1 count=$2 index
    for ((index = 0; index < count; index++)); do
        printf '\\x%02x' $(((value >> (8 * index)) & 255))
    done
}

# Print one 16-byte Dataset Management range: context attributes 0, $1 blocks from LBA $2.
dsm_range() {
    printf "$(le_bytes 0 4)$(le_bytes "$1" 4)$(le_bytes "$2" 8)"
}

# Malformed and edge-case commands: only their status (and data, if any) is compared.
# The kernel host refuses some before they reach the wire; that refusal is recorded
# as the answer and compares equal.
collect_bad_commands() {
    local dir=$1 ctrl=$2 ns=$3 nsze=$4
    local admin=(admin-passthru "$ctrl") io=(io-passthru "$ns" --namespace-id=1)
    dsm_range 8 0 > "$WORK/one-range"
    dsm_range 8 "$nsze" > "$WORK/beyond-range"
    head -c 512 /dev/zero > "$WORK/block"
    head -c 16 /dev/zero > "$WORK/two-keys"
    head -c 8 /dev/zero > "$WORK/one-key"
    local bad=(
        "identify-reserved-cdw10|${admin[*]} --opcode=0x06 --cdw10=0xff01 --data-len=$PAGE --read --raw-binary"
        "identify-ns-nsid-0|${admin[*]} --opcode=0x06 --cdw10=0 --namespace-id=0 --data-len=$PAGE --read --raw-binary"
        "identify-ns-nsid-2|${admin[*]} --opcode=0x06 --cdw10=0 --namespace-id=2 --data-len=$PAGE --read --raw-binary"
        "identify-ns-nsid-all|${admin[*]} --opcode=0x06 --cdw10=0 --namespace-id=0xffffffff --data-len=$PAGE --read --raw-binary"
        "identify-descriptors-nsid-all|${admin[*]} --opcode=0x06 --cdw10=3 --namespace-id=0xffffffff --data-len=$PAGE --read --raw-binary"
        "identify-ctrl-512-bytes|${admin[*]} --opcode=0x06 --cdw10=1 --data-len=512 --read --raw-binary"
        "identify-cns-0x77|${admin[*]} --opcode=0x06 --cdw10=0x77 --data-len=$PAGE --read --raw-binary"
        "identify-nvm-ns-csi-2|${admin[*]} --opcode=0x06 --cdw10=5 --cdw11=0x02000000 --namespace-id=1 --data-len=$PAGE --read --raw-binary"
        "identify-nvm-ctrl-csi-2|${admin[*]} --opcode=0x06 --cdw10=6 --cdw11=0x02000000 --data-len=$PAGE --read --raw-binary"
        "get-log-unsupported-0xbe|get-log $ctrl --log-id=0xbe --log-len=512 --raw-binary"
        "get-log-smart-offset-beyond|get-log $ctrl --log-id=2 --log-len=512 --lpo=4096 --raw-binary"
        "get-log-smart-offset-unaligned|get-log $ctrl --log-id=2 --log-len=508 --lpo=2 --raw-binary"
        "get-log-smart-longer-than-log|get-log $ctrl --log-id=2 --log-len=8192 --raw-binary"
        "get-log-smart-nsid-2|get-log $ctrl --log-id=2 --log-len=512 --namespace-id=2 --raw-binary"
        "get-log-smart-nsid-1|get-log $ctrl --log-id=2 --log-len=512 --namespace-id=1 --raw-binary"
        "admin-opcode-create-sq|${admin[*]} --opcode=0x01"
        "admin-opcode-0x03|${admin[*]} --opcode=0x03"
        "admin-opcode-firmware-commit|${admin[*]} --opcode=0x10"
        "admin-opcode-vendor-0xc1|${admin[*]} --opcode=0xc1"
        "admin-keep-alive|${admin[*]} --opcode=0x18"
        "admin-abort-unknown-cid|${admin[*]} --opcode=0x08 --cdw10=0xfffe0000"
        "get-feature-fid-0|${admin[*]} --opcode=0x0a --cdw10=0"
        "get-feature-fid-0x7f|${admin[*]} --opcode=0x0a --cdw10=0x7f"
        "get-feature-fid-vendor-0xc0|${admin[*]} --opcode=0x0a --cdw10=0xc0"
        "get-feature-sel-4|${admin[*]} --opcode=0x0a --cdw10=0x407"
        "get-feature-reserved-cdw10|${admin[*]} --opcode=0x0a --cdw10=0xff000007"
        "set-feature-number-of-queues-live|${admin[*]} --opcode=0x09 --cdw10=7 --cdw11=0x00010001"
        "set-feature-number-of-queues-0xffff|${admin[*]} --opcode=0x09 --cdw10=7 --cdw11=0xffffffff"
        "set-feature-async-event-save|${admin[*]} --opcode=0x09 --cdw10=0x8000000b --cdw11=0x100"
        "set-feature-async-event-unsupported-bits|${admin[*]} --opcode=0x09 --cdw10=0x0b --cdw11=0xffffffff"
        "set-feature-unknown-fid-0x7f|${admin[*]} --opcode=0x09 --cdw10=0x7f"
        "set-feature-keep-alive-timer-save|${admin[*]} --opcode=0x09 --cdw10=0x8000000f --cdw11=5000"
        "io-flush|${io[*]} --opcode=0x00"
        "io-read-lba-beyond-end|${io[*]} --opcode=0x02 --cdw10=$nsze --data-len=512 --read --raw-binary"
        "io-read-straddles-end|${io[*]} --opcode=0x02 --cdw10=$((nsze - 1)) --cdw12=1 --data-len=1024 --read --raw-binary"
        "io-read-length-mismatch|${io[*]} --opcode=0x02 --cdw12=7 --data-len=512 --read --raw-binary"
        "io-read-reserved-cdw12|${io[*]} --opcode=0x02 --cdw12=0x000f0000 --data-len=512 --read --raw-binary"
        "io-read-over-mdts-2mib|${io[*]} --opcode=0x02 --cdw12=4095 --data-len=2097152 --read --raw-binary"
        "io-write-lba-beyond-end|${io[*]} --opcode=0x01 --cdw10=$nsze --data-len=512 --write --input-file=$WORK/block"
        "io-write-zeroes-beyond-end|${io[*]} --opcode=0x08 --cdw10=$nsze"
        "io-write-zeroes-straddles-end|${io[*]} --opcode=0x08 --cdw10=$((nsze - 1)) --cdw12=1"
        "io-dsm-too-few-ranges|${io[*]} --opcode=0x09 --cdw10=3 --cdw11=4 --data-len=16 --write --input-file=$WORK/one-range"
        "io-dsm-range-beyond-end|${io[*]} --opcode=0x09 --cdw10=0 --cdw11=4 --data-len=16 --write --input-file=$WORK/beyond-range"
        "io-opcode-compare|${io[*]} --opcode=0x05 --data-len=512 --write --input-file=$WORK/block"
        "io-opcode-0x7e|${io[*]} --opcode=0x7e"
        "io-opcode-vendor-0x81|${io[*]} --opcode=0x81"
        "io-fused-first-without-second|${io[*]} --opcode=0x02 --flags=1 --data-len=512 --read --raw-binary"
        "io-resv-report|${io[*]} --opcode=0x0e --cdw10=1023 --cdw11=1 --data-len=$PAGE --read --raw-binary"
        "io-resv-report-without-eds|${io[*]} --opcode=0x0e --cdw10=1023 --data-len=$PAGE --read --raw-binary"
        "io-resv-register-short-data|${io[*]} --opcode=0x0d --data-len=8 --write --input-file=$WORK/one-key"
        "io-resv-register-action-3|${io[*]} --opcode=0x0d --cdw10=3 --data-len=16 --write --input-file=$WORK/two-keys"
        "io-resv-acquire-type-7|${io[*]} --opcode=0x11 --cdw10=0x700 --data-len=16 --write --input-file=$WORK/two-keys"
        "io-resv-acquire-iekey|${io[*]} --opcode=0x11 --cdw10=0x108 --data-len=16 --write --input-file=$WORK/two-keys"
        "io-resv-release-not-registered|${io[*]} --opcode=0x15 --cdw10=0x100 --data-len=8 --write --input-file=$WORK/one-key"
    )
    local entry
    for entry in "${bad[@]}"; do
        # shellcheck disable=SC2086  # the command is a word list on purpose
        ask "$dir" "cmd-${entry%%|*}" ${entry#*|}
    done
    # Put back the Async Event Configuration the host set at connect.
    local aec
    aec=$(grep -o 'value:0x[0-9a-f]*' "$dir/feature-0x0b-sel0.out" | cut -d: -f2) || true
    [[ -n $aec ]] && nvme admin-passthru "$ctrl" --opcode=0x09 --cdw10=0x0b --cdw11="$aec" >/dev/null 2>&1
    # The kernel host keeps some commands from the wire: any flags (fused) and transfers
    # beyond its max_hw_sectors (EINVAL), Set Features Number of Queues (EPERM). Those
    # items record the refusal on both sides.
    local err
    for err in "$dir"/cmd-*.err; do
        grep -q 'NVMe status' "$err" || [[ $(cat "${err%.err}.rc") == 0 ]] \
            || say "$(basename "$dir"): not sent, the host refused it: $(basename "${err%.err}") ($(head -n 1 "$err"))"
    done
}

# Discovery: the log from `nvme discover`, with its kernel log, and Identify of a
# persistent discovery controller.
collect_discovery() {
    local dir=$1 port=$2 name tries=100
    dmesg --clear
    ask "$dir" discover discover -t rdma -a "$RXE_ADDR" -s "$port" -q "$HOSTNQN" -o json
    dmesg_normalized > "$dir/dmesg-discover.txt"
    nvme connect -t rdma -a "$RXE_ADDR" -s "$port" -n "$DISCOVERY_NQN" -q "$HOSTNQN" >/dev/null 2>&1 || return 0
    until name=$(controller_of "$DISCOVERY_NQN" "$port"); do
        ((tries-- > 0)) || return 0
        sleep 0.1
    done
    ask "$dir" discovery-id-ctrl id-ctrl "/dev/$name" -o json
    ask "$dir" discovery-log-0x70 get-log "/dev/$name" --log-id=0x70 --log-len=$PAGE --raw-binary
    ask "$dir" discovery-property-0x00 get-property "/dev/$name" --offset=0
    nvme disconnect -d "$name" >/dev/null 2>&1 || true
}

# Connect to one target and collect everything but the log pages.
first_pass() {
    local dir=$OUT/$1 nqn=$2 port=$3
    rm -rf "$dir"
    mkdir -p "$dir"
    connect_logged "$dir" "$nqn" "$port" || return 1
    eval "${1^^}_CTRL=$CTRL ${1^^}_NS=$NS"
    collect_identity "$dir" "$CTRL"
}

make_backing
nvmet_up
start_target --subsystem "$P2PTGT_NQN" --namespace "$P2PTGT_BACKING" --allow-host "$HOSTNQN" --p2pmem off
mkdir -p "$OUT"
check "connect to nvmet and collect" first_pass nvmet "$NVMET_NQN" "$NVMET_SERVICE"
check "connect to p2ptgt and collect" first_pass p2ptgt "$P2PTGT_NQN" "$SERVICE"
check "id-ctrl -H: traffic based keep alive supported, FDP not" \
    bash -c "nvme id-ctrl $P2PTGT_CTRL -H > $OUT/p2ptgt/id-ctrl-H.txt && grep -q 'Traffic Based Keep Alive Supported' $OUT/p2ptgt/id-ctrl-H.txt && grep -q 'Flexible Data Placement Not Supported' $OUT/p2ptgt/id-ctrl-H.txt"
check "id-ns -H: the namespace is multipath capable (shared)" bash -c "nvme id-ns $P2PTGT_NS -H | grep -q 'Namespace Multipath Capable'"
mapfile -t LIDS < <(supported_logs "$OUT/nvmet/log-0x00.out"; supported_logs "$OUT/p2ptgt/log-0x00.out")
mapfile -t LIDS < <(printf '%s\n' "${LIDS[@]}" | grep -v '^0x00$' | sort -u)
say "log pages either target supports: ${LIDS[*]}"
NSZE=$(($(blockdev --getsize64 "$NVMET_BACKING") / 512))
for target in nvmet p2ptgt; do
    ctrl=${target^^}_CTRL ns=${target^^}_NS
    collect_logs "$OUT/$target" "${!ctrl}" "${LIDS[@]}"
    collect_bad_commands "$OUT/$target" "${!ctrl}" "${!ns}" "$NSZE"
done
nvme disconnect -n "$NVMET_NQN" >&2
nvme disconnect -n "$P2PTGT_NQN" >&2
collect_discovery "$OUT/nvmet" "$NVMET_SERVICE"
collect_discovery "$OUT/p2ptgt" "$SERVICE"

check "connecting to p2ptgt logs no FDP line" bash -c "! grep -i FDP $OUT/p2ptgt/dmesg-connect.txt"
# Warnings and errors only (dmesg --decode prints the level first).
check "connecting to p2ptgt logs no host warning that nvmet's connect did not" \
    bash -c "! grep -E '^kern *:(warn|err|crit|alert|emerg)' $OUT/p2ptgt/dmesg-connect.txt | grep -vxFf $OUT/nvmet/dmesg-connect.txt"
check "p2ptgt answers as nvmet does, apart from the listed differences" \
    "$COMPARER" --reference "$OUT/nvmet" --subject "$OUT/p2ptgt" --table "$TABLE" \
    --reference-nqn "$NVMET_NQN" --subject-nqn "$P2PTGT_NQN" --write-differences "$OUT/differences-found.tsv"
check "SIGTERM exits 0" stop_target
finish
