#!/bin/bash
# The main job, for a person to read: p2ptgt serves the guest's CMB-capable SSD over
# soft-RoCE with the CMB data path; the kernel host connects with nvme-cli; fio writes
# and verifies 128 MiB and measures 4 KiB random reads; the target's counters show
# where the payload went.
source "$(dirname "$0")/lib.sh"

echo "== test bed: $(uname -r), RDMA device $(ls /sys/class/infiniband), SSD $NVME_DEV at $P2P_BDF"
echo "== p2pmem of $P2P_BDF: $(cat /sys/bus/pci/devices/$P2P_BDF/p2pmem/size) bytes"
start_target --subsystem "$NQN" --namespace "$NVME_DEV" --allow-host "$HOSTNQN" --p2pmem auto
echo "== nvme discover"
nvme discover -t rdma -a "$RXE_ADDR" -s "$SERVICE" -q "$HOSTNQN" | grep -E "subnqn|traddr|trsvcid" | sed 's/^/   /'
MARK=$(dma_mark)
DEV=$(connect "$NQN")
echo "== nvme connect: $DEV"
nvme list | sed 's/^/   /'
echo "== fio: write + verify 128 MiB, block sizes 4k-128k, QD16"
check "fio write+verify through the CMB" fio_verify "$DEV" 128M
echo "== fio: 4 KiB random reads, QD16, 10 s"
fio --name=randread --filename="$DEV" --direct=1 --ioengine=libaio --iodepth=16 --rw=randread --bs=4k \
    --time_based --runtime=10 --group_reporting | grep -E "IOPS|lat \(usec\).*avg" | head -3 | sed 's/^/   /'
echo "== where the payload went (p2ptgt stats)"
stats | python3 -c "
import json, sys
s = json.load(sys.stdin)
print(f'   registration of the CMB:   {s[\"registration\"]}')
print(f'   payload through the CMB:   {s[\"payload_bytes_cmb\"]:>12} bytes')
print(f'   payload through host DRAM: {s[\"payload_bytes_host\"]:>12} bytes')
print(f'   CMB pool high-water mark:  {s[\"cmb_pool\"][\"high_water_bytes\"] if s[\"cmb_pool\"] else 0:>12} bytes')
"
echo "== where the SSD says it moved data (its DMA trace, rxe-setup/vm/dma-summary)"
"$REPO/rxe-setup/vm/dma-summary" --since "$MARK" | sed 's/^/   /'
check "the SSD's own DMA trace agrees: no payload through host memory" ssd_dma_cmb_only "$MARK" p2ptgt-nvme0 0
check "no payload byte crossed host memory" bash -c '(( $(target_stat payload_bytes_host) == 0 && $(target_stat payload_bytes_cmb) > 0 ))'
disconnect "$NQN"
check "target stops cleanly on SIGTERM" stop_target
finish
