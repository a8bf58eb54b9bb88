#!/bin/bash
# Live reconfiguration under a connected kernel host whose fio verify runs on namespace 1
# (the SSD, over the CMB when it has one) the whole time:
#  1. `p2ptgt namespace add` of a file: the host shows it within 5 s without a reconnect,
#     and fio verifies on it; grown and `namespace resize`d: the block device follows;
#     `namespace read-only on|off`: the block device turns read-only and back;
#     `namespace remove` under fio load: it disappears, the load ends.
#  2. A persistent discovery controller (`nvme discover --persistent`) hears of a new
#     subsystem through a Discovery Log Page Change event and a raised generation counter.
#  3. `p2ptgt restore` of a file that differs in one namespace, and SIGHUP after the
#     --config file changed, touch nothing else.
#  4. Bad requests get errors that name the problem; a non-root user is refused.
#  5. Prometheus metrics (--metrics) count namespace 1's commands and the queues' latency.
#  6. `p2ptgt save`, stop, `serve --config` of the saved file: the same state.
#  7. `p2ptgt port add` of a second port: discovery there lists the subsystem, the host
#     connects a second path and fio verifies; `port remove`: nothing answers there.
# dmesg must show no nvme timeout, reset or reconnect while the host stays connected.
source "$(dirname "$0")/lib.sh"

SECOND=$NQN-second
dmesg --clear

# The configuration the target starts from, in nvmetcli JSON; SIGHUP reloads it.
write_config() {
    local extra_namespace=$1
    python3 - "$WORK/config.json" "$NQN" "$HOSTNQN" "$RXE_ADDR" "$NVME_DEV" "$extra_namespace" <<'EOF'
import json, sys
path, nqn, host, address, device, extra = sys.argv[1:]
namespaces = [{"nsid": 1, "enable": 1, "device": {"path": device}}]
if extra:
    namespaces.append({"nsid": 3, "enable": 1, "device": {"path": extra}})
config = {
    "hosts": [{"nqn": host}],
    "ports": [{"portid": 1, "addr": {"trtype": "rdma", "adrfam": "ipv4", "traddr": address, "trsvcid": "4420"},
               "subsystems": [nqn]}],
    "subsystems": [{"nqn": nqn, "allowed_hosts": [host], "attr": {"allow_any_host": "0"}, "namespaces": namespaces}],
}
json.dump(config, open(path, "w"), indent=2)
EOF
}

# Wait up to 5 s for CONDITION (a command) to hold; print how long it took.
within_5s() {
    local start=$SECONDS
    for _ in $(seq 50); do
        if "$@"; then
            say "took $((SECONDS - start)) s: $*"
            return 0
        fi
        sleep 0.1
    done
    return 1
}

has_namespace() { namespace_device "$NQN" "$1" > /dev/null; }
lacks_namespace() { ! has_namespace "$1"; }

truncate -s 64M "$WORK/ns2.img"
truncate -s 32M "$WORK/ns3.img"
write_config ""
start_target --config "$WORK/config.json" --metrics 9464
DEV1=$(connect "$NQN")
say "namespace 1: $DEV1"

# fio verify on namespace 1 for the whole scenario, in rounds until told to stop.
(
    round=0
    while [[ ! -e $WORK/stop-fio ]]; do
        round=$((round + 1))
        fio --name=ns1 --filename="$DEV1" --direct=1 --ioengine=libaio --iodepth=16 --rw=randwrite --bsrange=4k-128k \
            --size=48M --verify=crc32c --verify_fatal=1 --do_verify=1 --verify_state_save=0 --randrepeat=0 \
            --output="$WORK/fio-ns1-$round.txt" || { echo "round $round failed" > "$WORK/fio-ns1-failed"; break; }
    done
    echo "$round" > "$WORK/fio-ns1-rounds"
) &
FIO_PID=$!

say "step 1: add, grow and remove namespace 2 while fio runs on namespace 1"
check "p2ptgt namespace add says which NSID it took" \
    bash -c "'$P2PTGT' --control '$CONTROL' namespace add --subsystem '$NQN' --path '$WORK/ns2.img' | grep -q 'added namespace 2'"
check "the host shows namespace 2 within 5 s" within_5s has_namespace 2
DEV2=$(namespace_device "$NQN" 2 || echo /dev/missing)
check "fio verify on the new namespace 2 ($DEV2)" fio_verify "$DEV2" 16M
truncate -s 96M "$WORK/ns2.img"
check "p2ptgt namespace resize reports the new size" \
    bash -c "'$P2PTGT' --control '$CONTROL' namespace resize --subsystem '$NQN' --nsid 2 | grep -q '100663296 bytes, was 67108864'"
check "the host's block device reports 96 MiB within 5 s" within_5s bash -c "[[ \$(blockdev --getsize64 $DEV2) == 100663296 ]]"
RO=/sys/block/$(basename "$DEV2")/ro
check "p2ptgt namespace read-only on" "$P2PTGT" --control "$CONTROL" namespace read-only --subsystem "$NQN" --nsid 2 on
check "the host marks namespace 2 read-only within 5 s" within_5s bash -c "[[ \$(cat $RO) == 1 ]]"
check "p2ptgt namespace read-only off: writable again within 5 s" \
    bash -c "'$P2PTGT' --control '$CONTROL' namespace read-only --subsystem '$NQN' --nsid 2 off >/dev/null && for _ in \$(seq 50); do [[ \$(cat $RO) == 0 ]] && exit 0; sleep 0.1; done; exit 1"
# Namespace 2 goes away under load: its commands in flight finish or fail, the load
# ends with errors instead of hanging, namespace 1's verify goes on.
fio --name=ns2-load --filename="$DEV2" --direct=1 --ioengine=libaio --iodepth=16 --rw=randrw --bs=64k \
    --time_based --runtime=60 --output="$WORK/fio-ns2-load.txt" > /dev/null 2>&1 &
LOAD_PID=$!
sleep 2
check "p2ptgt namespace remove while fio runs on it" "$P2PTGT" --control "$CONTROL" namespace remove --subsystem "$NQN" --nsid 2
check "namespace 2 disappears from the host within 5 s" within_5s lacks_namespace 2
check "the load on namespace 2 ends within 10 s (I/O errors, no hang)" \
    bash -c "for _ in \$(seq 100); do kill -0 $LOAD_PID 2>/dev/null || exit 0; sleep 0.1; done; exit 1"
kill -KILL "$LOAD_PID" 2>/dev/null || true
wait "$LOAD_PID" 2>/dev/null || true

say "step 2: a persistent discovery controller hears of a new subsystem"
# The kernel host's nvme_async_event tracepoint: every event it takes from a controller.
TRACING=/sys/kernel/tracing
[[ -e $TRACING/events ]] || mount -t tracefs nodev "$TRACING"
echo > "$TRACING/trace"
echo 1 > "$TRACING/events/nvme/nvme_async_event/enable"
nvme discover --persistent -t rdma -a "$RXE_ADDR" -s "$SERVICE" -q "$HOSTNQN" > /dev/null 2>&1 || true
DISCOVERY_CTRL=
for ctrl in /sys/class/nvme/nvme*; do
    if [[ $(cat "$ctrl/subsysnqn" 2>/dev/null) == nqn.2014-08.org.nvmexpress.discovery && $(cat "$ctrl/transport") == rdma ]]; then
        DISCOVERY_CTRL=$(basename "$ctrl")
    fi
done
say "persistent discovery controller: ${DISCOVERY_CTRL:-none}"
check "nvme discover --persistent keeps a discovery controller" test -n "$DISCOVERY_CTRL"
generation() { nvme discover -d "$DISCOVERY_CTRL" 2>/dev/null | grep -o 'Generation counter [0-9]*' | grep -o '[0-9]*$'; }
GENERATION=$(generation || echo 0)
check "p2ptgt subsystem add" "$P2PTGT" --control "$CONTROL" subsystem add "$SECOND" --allow-host "$HOSTNQN"
check "p2ptgt namespace add to the new subsystem" "$P2PTGT" --control "$CONTROL" namespace add --subsystem "$SECOND" --path "$WORK/ns3.img"
check "the host's discovery controller takes a Discovery Log Page Change event (NVME_AEN=0x70f002) within 5 s" \
    within_5s bash -c "grep 'nvme_async_event: $DISCOVERY_CTRL: NVME_AEN=0x70f002' $TRACING/trace"
NEW_GENERATION=$(generation || echo 0)
say "discovery generation counter: $GENERATION, then $NEW_GENERATION"
check "the discovery log's generation counter rose" test "$NEW_GENERATION" -gt "$GENERATION"
check "the discovery log lists the new subsystem" bash -c "nvme discover -d $DISCOVERY_CTRL | grep -q '$SECOND'"
echo 0 > "$TRACING/events/nvme/nvme_async_event/enable"
nvme disconnect -d "$DISCOVERY_CTRL" >/dev/null 2>&1 || true

say "step 3: restore and SIGHUP change only what differs"
"$P2PTGT" --control "$CONTROL" save "$WORK/saved.json"
python3 - "$WORK/saved.json" "$WORK/changed.json" "$SECOND" "$WORK/ns2.img" <<'EOF'
import json, sys
saved, changed, second, path = sys.argv[1:]
config = json.load(open(saved))
for subsystem in config["subsystems"]:
    if subsystem["nqn"] == second:
        subsystem["namespaces"][0]["device"] = {"path": path}
json.dump(config, open(changed, "w"))
EOF
check "p2ptgt restore of a file that differs in one namespace changes only that one" \
    bash -c "'$P2PTGT' --control '$CONTROL' restore '$WORK/changed.json' | tee '$WORK/restore.txt' | grep -qx 'namespaces changed: $SECOND/1'"
check "a second restore of the same file changes nothing" \
    bash -c "'$P2PTGT' --control '$CONTROL' restore '$WORK/changed.json' | grep -qx 'nothing to change'"
write_config "$WORK/ns3.img"
kill -HUP "$TARGET_PID"
check "SIGHUP after the --config file gained namespace 3: the host shows it within 5 s" within_5s has_namespace 3
check "... and SIGHUP took the second subsystem away, as the file says" \
    within_5s bash -c "! '$P2PTGT' --control '$CONTROL' save | grep -q '$SECOND'"

say "step 4: bad requests"
refused() {  # refused EXIT_CODE PATTERN ARGS...: p2ptgt ARGS fails with EXIT_CODE and says PATTERN
    local code=$1 pattern=$2 status=0
    shift 2
    "$P2PTGT" --control "$CONTROL" "$@" > "$WORK/refused.txt" 2>&1 || status=$?
    say "p2ptgt $* -> exit $status: $(head -c 300 "$WORK/refused.txt")"
    [[ $status == "$code" ]] && grep -q -- "$pattern" "$WORK/refused.txt"
}
check "duplicate NSID" refused 1 "already has namespace 1" namespace add --subsystem "$NQN" --nsid 1 --path "$WORK/ns2.img"
check "a path that does not exist" refused 1 "/nonexistent/disk" namespace add --subsystem "$NQN" --path /nonexistent/disk
check "an NQN that is not an NQN" refused 1 "not an NQN" subsystem add testnqn
check "an unknown method" refused 1 "no method" rpc namespace.grow '{}'
check "wrong parameter types" refused 1 "invalid type" rpc namespace.remove '{"subsystem": "x", "nsid": "one"}'
check "no such subsystem" refused 1 "no subsystem" namespace remove --subsystem "$NQN-nope" --nsid 1
NOBODY_STATUS=0
setpriv --reuid=65534 --regid=65534 --clear-groups "$P2PTGT" --control "$CONTROL" stats > "$WORK/nobody.txt" 2>&1 || NOBODY_STATUS=$?
say "stats as uid 65534 -> exit $NOBODY_STATUS: $(head -c 200 "$WORK/nobody.txt")"
check "a non-root user cannot reach the control socket (exit 3)" test "$NOBODY_STATUS" = 3
check "the control socket is mode 0600" test "$(stat -c %a "$CONTROL")" = 600
check "the target still serves" stats > /dev/null

say "step 5: metrics"
curl -fsS http://127.0.0.1:9464/metrics > "$WORK/metrics.txt" || true
say "metrics: $(wc -l < "$WORK/metrics.txt") lines; $(grep -m1 '^p2ptgt_namespace_commands_total{.*nsid="1".*kind="write"' "$WORK/metrics.txt" || echo 'no write counter')"
check "Prometheus metrics on 127.0.0.1:9464: namespace 1's write commands counted" \
    bash -c "grep -E '^p2ptgt_namespace_commands_total\{.*nsid=\"1\".*kind=\"write\".*\} [1-9]' '$WORK/metrics.txt'"
check "... I/O queue latency histograms with their +Inf bucket" grep -q '^p2ptgt_queue_latency_seconds_bucket{.*le="+Inf"' "$WORK/metrics.txt"
check "... payload bytes by buffer" grep -qE '^p2ptgt_payload_bytes_total\{buffer="(cmb|host)"\} [1-9]' "$WORK/metrics.txt"

touch "$WORK/stop-fio"
wait "$FIO_PID" || true
say "fio on namespace 1: $(cat "$WORK/fio-ns1-rounds" 2>/dev/null || echo '?') rounds of 48 MiB write+verify"
check "fio verify on namespace 1 passed throughout" test ! -e "$WORK/fio-ns1-failed"
pool_in_use() { stats | python3 -c "import json,sys; s=json.load(sys.stdin); print(sum((s[p] or {}).get('in_use_bytes', 0) for p in ('host_pool', 'cmb_pool')))"; }
check "every payload buffer is back in its pool (in use: $(pool_in_use) bytes)" test "$(pool_in_use)" = 0
TROUBLE=$(dmesg | grep -i nvme | grep -Ei 'timeout|error recovery|reconnect|reset' || true)
[[ -z $TROUBLE ]] || say "dmesg: $TROUBLE"
check "no nvme timeout, error recovery, reset or reconnect in dmesg" test -z "$TROUBLE"
disconnect "$NQN"

say "step 6: save, stop, serve --config of the saved file"
"$P2PTGT" --control "$CONTROL" save "$WORK/before.json"
check "SIGTERM exits 0" stop_target
start_target --config "$WORK/before.json"
"$P2PTGT" --control "$CONTROL" save "$WORK/after.json"
check "the restarted target saves the same configuration" cmp "$WORK/before.json" "$WORK/after.json"
DEV1=$(connect "$NQN")
check "namespace 3 is back after the restart" within_5s has_namespace 3

say "step 7: a second port"
check "p2ptgt port add 192.0.2.1:4421" \
    bash -c "'$P2PTGT' --control '$CONTROL' port add $RXE_ADDR:4421 | grep -q 'port 2 listens on $RXE_ADDR:4421'"
check "discovery on port 4421 lists the subsystem there" \
    bash -c "nvme discover -t rdma -a $RXE_ADDR -s 4421 -q $HOSTNQN | tr -s ' ' > $WORK/discover-4421.txt; grep -qx 'subnqn: $NQN' $WORK/discover-4421.txt && ! grep 'trsvcid:' $WORK/discover-4421.txt | grep -vqx 'trsvcid: 4421'"
nvme connect -t rdma -a "$RXE_ADDR" -s 4421 -n "$NQN" -q "$HOSTNQN" >/dev/null 2>&1 || true
controllers_of() { for c in /sys/class/nvme/nvme*; do [[ $(cat "$c/subsysnqn" 2>/dev/null) == "$NQN" && $(cat "$c/address") == *"trsvcid=$1"* ]] && basename "$c"; done; }
SECOND_PATH=$(controllers_of 4421 | head -n 1)
say "controllers of $NQN: port 4420: $(controllers_of 4420 | paste -sd ' '), port 4421: ${SECOND_PATH:-none}"
check "the host connects through port 4421 too: a second path to the subsystem" test -n "$SECOND_PATH"
check "fio verify through both paths" fio_verify "$DEV1" 16M
[[ -z $SECOND_PATH ]] || nvme disconnect -d "$SECOND_PATH" > /dev/null
check "p2ptgt port remove 2" "$P2PTGT" --control "$CONTROL" port remove 2
check "nothing answers on port 4421 any more" bash -c "! nvme discover -t rdma -a $RXE_ADDR -s 4421 -q $HOSTNQN >/dev/null 2>&1"
check "port 4420 still serves" fio_verify "$DEV1" 8M
disconnect "$NQN"
check "SIGTERM exits 0" stop_target
finish
