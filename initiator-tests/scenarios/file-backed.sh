#!/bin/bash
# A file-backed namespace with --p2pmem auto: the file cannot reach the CMB, so its
# payload uses host buffers with one clear log line, and fio verify still passes.
source "$(dirname "$0")/lib.sh"

truncate -s 256M "$WORK/namespace.img"
start_target --subsystem "$NQN" --namespace "$WORK/namespace.img" --allow-any-host --p2pmem auto
check "one log line says the file uses host buffers" bash -c "grep -c 'uses host memory buffers: it is backed by a file' $TARGET_LOG | grep -qx 1"
DEV=$(connect "$NQN")
check "fio write+verify 32 MiB on a file namespace" fio_verify "$DEV" 32M
check "payload went through host memory" bash -c '(( $(target_stat payload_bytes_host) > 0 && $(target_stat payload_bytes_cmb) == 0 ))'
disconnect "$NQN"
check "SIGTERM exits 0" stop_target
check "the file holds the data" fio_verify "$WORK/namespace.img" 32M --verify_only --direct=0
finish
