#!/bin/bash
# The CMB data path: p2ptgt --p2pmem auto on the guest's SSD. Host writes are RDMA-READ
# into the SSD's CMB and written from there; reads land in the CMB and are RDMA-WRITTEN
# from it. Checks payload byte counters, not only completion status, and reads the
# backing device directly afterwards. Run with a small CMB (vm/run --cmb-mb 2) it also
# checks that commands wait for buffers instead of failing (EXPECT_BUFFER_WAITS=1,
# FIO_EXTRA='--bsrange=128k-128k --iodepth=128'). Needs vm/run --dma-trace: the SSD's
# own DMA trace must agree with the counters.
source "$(dirname "$0")/lib.sh"
SIZE=${CMB_TEST_SIZE:-96M}

start_target --subsystem "$NQN" --namespace "$NVME_DEV" --allow-host "$HOSTNQN" --p2pmem auto
check "start-up line names the p2pmem of $P2P_BDF" grep -q "data buffers: p2pmem of $P2P_BDF" "$TARGET_LOG"
say "registration: $(target_stat registration)"
check "CMB registered (pinned or ODP)" bash -c '[[ $(target_stat registration) == odp || $(target_stat registration) == pinned ]]'

MARK=$(dma_mark)
DEV=$(connect "$NQN" --nr-io-queues=2)
check "connect" test -b "$DEV"
# FIO_EXTRA (e.g. --bsrange=128k-128k --iodepth=128) overrides the job's shape.
check "fio write+verify $SIZE ${FIO_EXTRA:-4k-128k QD16} through the CMB" fio_verify "$DEV" "$SIZE" ${FIO_EXTRA:-}
check "fio write+verify at QD1 through the CMB" fio_verify "$DEV" 8M --iodepth=1 --offset=512M
check "QD1 reads and writes completed by polling the SSD" polled_more_than 100
# fio wrote SIZE and read it back to verify (and 8M more at QD1).
BYTES=$(numfmt --from=iec "$SIZE")
say "payload_bytes_host=$(target_stat payload_bytes_host) payload_bytes_cmb=$(target_stat payload_bytes_cmb) (fio moved $((2 * BYTES)))"
check "no payload byte went through host memory" bash -c '(( $(target_stat payload_bytes_host) == 0 ))'
check "payload bytes through the CMB >= what fio moved" bash -c "(( \$(target_stat payload_bytes_cmb) >= 2 * $BYTES ))"
check "the SSD's own DMA trace: payload through its CMB only" ssd_dma_cmb_only "$MARK" p2ptgt-nvme0 "$((2 * BYTES))"
stats > "$WORK/stats.json"
WAITS=$(python3 -c "import json; print(json.load(open('$WORK/stats.json'))['buffer_waits'])")
HIGH=$(python3 -c "import json; print(json.load(open('$WORK/stats.json'))['cmb_pool']['high_water_bytes'])")
say "cmb pool high water ${HIGH} bytes, buffer waits ${WAITS}"
if [[ ${EXPECT_BUFFER_WAITS:-0} == 1 ]]; then
    check "a small CMB makes commands wait for buffers" test "$WAITS" -gt 0
fi
disconnect "$NQN"
check "SIGTERM exits 0" stop_target
check "data is on the SSD: fio verify-only against the backing device" fio_verify "$NVME_DEV" "$SIZE" ${FIO_EXTRA:-} --verify_only
finish
