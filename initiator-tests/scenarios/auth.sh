#!/bin/bash
# In-band authentication (DH-HMAC-CHAP) with the kernel host and nvme-cli. The
# target starts from an nvmetcli file whose host entry has a key (`nvme
# gen-dhchap-key`) and a controller key; `p2ptgt restore` of the same file with
# another hash and DH group sets each cell of the matrix:
#  1. every hash (SHA-256, -384, -512) with every DH group (null, ffdhe2048 ... 8192):
#     connect with the host's secret, the host logs the negotiated pair, 1 MiB fio
#     verify; the first and last cells also authenticate the controller;
#  2. refused: a wrong key, no key, another host's key (a second host, which has a
#     key of its own, given the key of the first), and a wrong controller key (the host refuses the target);
#     each connect fails, no controller is left, and the target's log names the host
#     and the reason, never a key;
#  3. re-authentication (the host's secret written again in sysfs) twice while fio
#     verify runs: no reset, no I/O error, fio clean.
source "$(dirname "$0")/lib.sh"

OTHER_HOST=nqn.2014-08.org.nvmexpress:uuid:33333333-3333-4333-8333-333333333333
KEY=$(nvme gen-dhchap-key -n "$HOSTNQN")
CTRL_KEY=$(nvme gen-dhchap-key -m 1 -n "$NQN")
WRONG_KEY=$(nvme gen-dhchap-key -n "$HOSTNQN")
OTHER_KEY=$(nvme gen-dhchap-key -n "$OTHER_HOST")

# write_config HASH GROUP: the target's file, with the host's DH-HMAC-CHAP settings.
write_config() {
    python3 - "$WORK/config.json" "$NQN" "$HOSTNQN" "$OTHER_HOST" "$RXE_ADDR" "$NVME_DEV" "$KEY" "$CTRL_KEY" "$OTHER_KEY" "$1" "$2" <<'PY'
import json, sys
path, nqn, host, other, addr, dev, key, ctrl_key, other_key, hash_, group = sys.argv[1:]
config = {
    "hosts": [{"nqn": host, "dhchap": {"key": key, "ctrl_key": ctrl_key, "hash": hash_, "dhgroup": group}},
              {"nqn": other, "dhchap": {"key": other_key}}],
    "ports": [{"portid": 1, "addr": {"trtype": "rdma", "adrfam": "ipv4", "traddr": addr, "trsvcid": "4420"}, "subsystems": [nqn]}],
    "subsystems": [{"nqn": nqn, "attr": {"allow_any_host": "0"}, "allowed_hosts": [host, other],
                    "namespaces": [{"nsid": 1, "enable": 1, "device": {"path": dev}}]}],
}
json.dump(config, open(path, "w"), indent=2)
PY
}

# Connects as $HOSTNQN (or $AS) with nvme connect options $@; prints the namespace.
connect_with() { HOSTNQN=${AS:-$HOSTNQN} connect "$NQN" "$@"; }

# cell HASH GROUP [CONNECT OPTIONS]: connect, check the pair the host negotiated, verify.
cell() {
    local hash=$1 group=$2 dev
    shift 2
    write_config "hmac($hash)" "$group"
    "$P2PTGT" restore "$WORK/config.json" --control "$CONTROL" > /dev/null || return 1
    dmesg --clear
    dev=$(connect_with --dhchap-secret="$KEY" "$@") || { say "connect failed"; return 1; }
    local logged status=0
    logged=$(dmesg | grep -o "authenticated with hash hmac([a-z0-9]*) dhgroup [a-z0-9]*" | head -n 1)
    [[ $logged == "authenticated with hash hmac($hash) dhgroup $group" ]] || { say "host logged: ${logged:-nothing}"; status=1; }
    fio_verify "$dev" 1M --iodepth=4 --bsrange=4k-64k > /dev/null || status=1
    disconnect "$NQN" > /dev/null 2>&1
    return "$status"
}

# refused DESCRIPTION [CONNECT OPTIONS]: the connect fails, no controller is left, and
# the target logged an authentication failure naming the host.
refused() {
    local before after
    before=$(grep -c "authentication failed\|ended authentication" "$TARGET_LOG" || true)
    if connect_with "$@" > /dev/null 2>&1; then
        say "connected"
        disconnect "$NQN" > /dev/null 2>&1
        return 1
    fi
    sleep 1
    local controllers
    controllers=$(stats | python3 -c 'import json, sys; print(len(json.load(sys.stdin)["controllers"]))')
    ((controllers == 0)) || { say "$controllers controllers left"; return 1; }
    after=$(grep -c "authentication failed\|ended authentication" "$TARGET_LOG" || true)
    say "target: $(grep -E "authentication failed|ended authentication|wrong response" "$TARGET_LOG" | tail -n 1 | cut -c1-220)"
    ((after > before)) || [[ ${1:-} != --dhchap-secret=* ]]
}

# The second host, with the first one's key.
refused_as_other_host() { AS=$OTHER_HOST refused --dhchap-secret="$KEY"; }

write_config "hmac(sha256)" null
start_target --config "$WORK/config.json"

say "step 1: every hash with every DH group"
for hash in sha256 sha384 sha512; do
    for group in null ffdhe2048 ffdhe3072 ffdhe4096 ffdhe6144 ffdhe8192; do
        options=()
        [[ $hash-$group == sha256-null || $hash-$group == sha512-ffdhe8192 ]] && options=(--dhchap-ctrl-secret="$CTRL_KEY")
        check "$hash with $group${options:+, the controller authenticated too}" cell "$hash" "$group" "${options[@]}"
    done
done

say "step 2: refused"
write_config "hmac(sha256)" ffdhe2048
"$P2PTGT" restore "$WORK/config.json" --control "$CONTROL" > /dev/null
check "a wrong key is refused" refused --dhchap-secret="$WRONG_KEY"
check "no key is refused" refused
check "another host's key is refused" refused_as_other_host
check "a wrong controller key makes the host refuse the target" refused --dhchap-secret="$KEY" --dhchap-ctrl-secret="$(nvme gen-dhchap-key -m 1 -n "$NQN")"
check "the target's log holds no key" bash -c "! grep -F -e '${KEY:10:20}' -e '${CTRL_KEY:10:20}' '$TARGET_LOG'"
check "nor do its stats" bash -c "! $P2PTGT stats --control $CONTROL | grep -F -e '${KEY:10:20}' -e '${CTRL_KEY:10:20}'"

say "step 3: re-authentication under fio verify"
dmesg --clear
DEV=$(connect_with --dhchap-secret="$KEY" --dhchap-ctrl-secret="$CTRL_KEY")
CTRL=$(basename "$(dirname "$(readlink -f "/sys/block/$(basename "$DEV")/device")")" 2>/dev/null || true)
for ctrl in /sys/class/nvme/nvme*; do
    [[ $(cat "$ctrl/subsysnqn" 2>/dev/null) == "$NQN" ]] && CTRL=$(basename "$ctrl")
done
fio_verify "$DEV" 64M --iodepth=8 > "$WORK/fio.out" 2>&1 & FIO=$!
sleep 3
echo "$KEY" > "/sys/class/nvme/$CTRL/dhchap_secret"
sleep 3
echo "$KEY" > "/sys/class/nvme/$CTRL/dhchap_secret"
FIO_STATUS=0
wait "$FIO" || FIO_STATUS=$?
cat "$WORK/fio.out"
AUTHENTICATIONS=$(dmesg | grep -c "qid 0: authenticated with hash" || true)
say "the host authenticated $AUTHENTICATIONS times on the admin queue"
check "the host authenticated again twice" test "$AUTHENTICATIONS" -ge 3
check "fio verify under re-authentication is clean" test "$FIO_STATUS" -eq 0
check "no reset, reconnect, timeout or I/O error" test -z "$(dmesg | grep -iE "reset|reconnect|timeout|I/O error|authentication failed" | tee /dev/stderr)"
disconnect "$NQN"
check "SIGTERM exits 0" stop_target
finish
