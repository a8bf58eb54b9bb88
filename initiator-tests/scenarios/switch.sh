#!/bin/bash
# Several SSDs behind one PCIe switch (vm/run --switch 3 --switch-cmb 2 --outside
# --dma-trace): sw0 and sw1 have no CMB, sw2 has one, and "out" sits on its own root
# port. One subsystem serves a namespace on each.
#  1. A provider the kernel refuses (sw2's CMB named for the SSD outside the switch) stops
#     the target at start-up, naming the refusal.
#  2. Under --p2pmem auto the three SSDs behind the switch share sw2's CMB; the one
#     outside uses host buffers and one log line says why. sw1's namespace starts
#     disabled and is enabled under the connected host: it chooses the same way.
#  3. fio verify on all four namespaces at once through the fabric: zero host payload
#     bytes for the three behind the switch, in p2ptgt's counters and in the SSDs' own
#     DMA trace (QEMU's pci_nvme_map_addr events, summed by vm/dma-summary).
#  4. p2ptgt copy of 64 MiB from sw0's namespace to sw1's through sw2's CMB: reads back
#     equal, no byte through host memory; the same copy through host memory for speed.
source "$(dirname "$0")/lib.sh"
COPY_MIB=64
SUMMARY=$REPO/rxe-setup/vm/dma-summary

# SSD serial -> "DEVICE BDF" from the bed's list.
declare -A SSD
for entry in $P2PTGT_SSDS; do
    IFS=, read -r serial device bdf _ <<< "$entry"
    SSD[$serial]="$device $bdf"
done
device_of() { set -- ${SSD[$1]}; echo "$1"; }
bdf_of() { set -- ${SSD[$1]}; echo "$2"; }
SERIALS=(p2ptgt-sw0 p2ptgt-sw1 p2ptgt-sw2 p2ptgt-out)
CMB_BDF=$(bdf_of p2ptgt-sw2)
say "SSDs: $P2PTGT_SSDS"

# Write the configuration: NSID i+1 on SERIALS[i]; $1 is the outside SSD's p2pmem,
# $2 whether namespace 2 is enabled (1 or 0).
write_config() {
    python3 - "$WORK/config.json" "$NQN" "$RXE_ADDR" "$1" "$2" $(for s in "${SERIALS[@]}"; do device_of "$s"; done) <<'EOF'
import json, sys
path, nqn, address, outside, second, *devices = sys.argv[1:]
namespaces = [{"nsid": i + 1, "enable": 1, "device": {"path": d}} for i, d in enumerate(devices)]
namespaces[-1]["p2pmem"] = outside
namespaces[1]["enable"] = int(second)
config = {
    "hosts": [],
    "ports": [{"portid": 1, "addr": {"trtype": "rdma", "adrfam": "ipv4", "traddr": address, "trsvcid": "4420"},
               "subsystems": [nqn]}],
    "subsystems": [{"nqn": nqn, "allowed_hosts": [], "attr": {"allow_any_host": "1"}, "namespaces": namespaces}],
}
json.dump(config, open(path, "w"), indent=2)
EOF
}

# One field of namespace NSID $1's stats.
namespace_stat() {
    stats | python3 -c "import json,sys; n=[n for s in json.load(sys.stdin)['subsystems'] for n in s['namespaces'] if n['nsid']==$1][0]; print(n['$2'])"
}

export -f namespace_stat ssd_dma_cmb_only namespace_device

say "step 1: a provider the kernel refuses is refused at start-up"
write_config "$CMB_BDF" 1
status=0
timeout 60 "$P2PTGT" serve --listen "$RXE_ADDR:$SERVICE" --control "$CONTROL" --config "$WORK/config.json" > "$WORK/refused.log" 2>&1 || status=$?
say "exit status $status: $(grep -o 'cannot use the memory.*' "$WORK/refused.log" | head -n 1)"
check "the target exits at start-up (status 1, not killed)" test "$status" = 1
check "its error names the refusal and the provider" grep -q "$(device_of p2ptgt-out).*cannot use the memory of $CMB_BDF.*the kernel refused peer DMA" "$WORK/refused.log"

say "step 2: auto: three SSDs share sw2's CMB, the outside one uses host memory"
write_config auto 0
start_target --config "$WORK/config.json"
check "the start-up line names sw2's p2pmem, and only it" grep -Eq "data buffers: p2pmem of $CMB_BDF \([0-9]+ [KM]iB\), [A-Za-z]+ registration" "$TARGET_LOG"
check "one line says why the outside SSD's namespace uses host memory" \
    bash -c "grep 'uses host memory buffers: no provider could take its payload (.*the kernel refused peer DMA' '$TARGET_LOG' | grep -c 'nsid=4' | grep -qx 1"
connect "$NQN" --nr-io-queues=2 > /dev/null
"$P2PTGT" --control "$CONTROL" namespace enable --subsystem "$NQN" --nsid 2
check "namespace 2, enabled under the host, appears there" bash -c "for _ in \$(seq 100); do namespace_device '$NQN' 2 > /dev/null && exit 0; sleep 0.1; done; exit 1"
check "three namespaces put their payload in $CMB_BDF's memory" bash -c "(( \$(grep -c 'payload in the memory of $CMB_BDF' '$TARGET_LOG') == 3 ))"

say "step 3: fio verify on all four namespaces at once"
MARK=$(dma_mark)
pids=()
for nsid in 1 2 3 4; do
    fio --name="ns$nsid" --filename="$(namespace_device "$NQN" "$nsid")" --direct=1 --ioengine=libaio --iodepth=8 \
        --rw=randwrite --bsrange=4k-128k --size=16M --verify=crc32c --verify_fatal=1 --do_verify=1 \
        --verify_state_save=0 --randrepeat=1 --output="$WORK/fio-$nsid.txt" &
    pids+=($!)
done
for nsid in 1 2 3 4; do
    check "fio write+verify 16 MiB on namespace $nsid (on ${SERIALS[nsid - 1]})" wait "${pids[nsid - 1]}"
done
"$SUMMARY" --since "$MARK"
for nsid in 1 2 3; do
    say "namespace $nsid: provider $(namespace_stat $nsid provider), host $(namespace_stat $nsid payload_bytes_host) B, p2p $(namespace_stat $nsid payload_bytes_p2p) B"
    check "p2ptgt: namespace $nsid's payload all through $CMB_BDF" \
        bash -c "[[ \$(namespace_stat $nsid provider) == $CMB_BDF ]] && (( \$(namespace_stat $nsid payload_bytes_host) == 0 && \$(namespace_stat $nsid payload_bytes_p2p) >= 32 << 20 ))"
    check "the SSD's trace: ${SERIALS[nsid - 1]} moved payload only through sw2's CMB" ssd_dma_cmb_only "$MARK" "${SERIALS[nsid - 1]}" $((16 << 20)) p2ptgt-sw2
done
check "namespace 4 (outside the switch) used host buffers" \
    bash -c "[[ \$(namespace_stat 4 provider) == None ]] && (( \$(namespace_stat 4 payload_bytes_host) >= 32 << 20 ))"

say "step 4: copy $COPY_MIB MiB from sw0's namespace to sw1's through sw2's CMB"
BLOCKS=$(( (COPY_MIB << 20) / $(cat /sys/block/"$(basename "$(device_of p2ptgt-sw0)")"/queue/logical_block_size) ))
fio --name=fill --filename="$(namespace_device "$NQN" 1)" --direct=1 --ioengine=libaio --iodepth=8 --rw=write \
    --bs=1M --size="${COPY_MIB}M" --output="$WORK/fill.txt"
HOST_BEFORE=$(target_stat payload_bytes_host)
MARK=$(dma_mark)
check "p2ptgt copy through sw2's CMB" bash -c "'$P2PTGT' --control '$CONTROL' copy '$NQN/1' '$NQN/2' --blocks $BLOCKS | tee '$WORK/copy.txt' | grep -q 'through the memory of $CMB_BDF'"
"$SUMMARY" --since "$MARK"
check "the SSDs' trace: sw0 and sw1 moved the copy only through sw2's CMB" \
    bash -c "ssd_dma_cmb_only $MARK p2ptgt-sw0 $(( (COPY_MIB << 20) - 1 )) p2ptgt-sw2 && ssd_dma_cmb_only $MARK p2ptgt-sw1 $(( (COPY_MIB << 20) - 1 )) p2ptgt-sw2"
check "p2ptgt counted no host payload byte for the copy" test "$(target_stat payload_bytes_host)" = "$HOST_BEFORE"
check "the copy reads back equal through the fabric" \
    cmp <(dd if="$(namespace_device "$NQN" 1)" bs=1M count=$COPY_MIB iflag=direct status=none) \
        <(dd if="$(namespace_device "$NQN" 2)" bs=1M count=$COPY_MIB iflag=direct status=none)
check "the same copy through host memory, for comparison" \
    bash -c "'$P2PTGT' --control '$CONTROL' copy '$NQN/1' '$NQN/3/$BLOCKS' --blocks $BLOCKS --via off | tee '$WORK/copy-host.txt' | grep -q 'through host memory'"
say "copy through the CMB: $(cat "$WORK/copy.txt")"
say "copy through host memory: $(cat "$WORK/copy-host.txt")"
check "the host kernel logged no timeout, reset or reconnect" \
    bash -c "! dmesg | grep -E 'nvme[0-9]+: (I/O .*timeout|.*resetting|.*reconnect|.*Reconnecting)'"
disconnect "$NQN"
check "SIGTERM exits 0" stop_target
finish
