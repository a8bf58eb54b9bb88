#!/usr/bin/env python3
"""Runs inside the test-bed guest (benches/run boots it): the same fio jobs, in one
boot, interleaved, against the local SSD, the kernel target (nvmet-rdma via configfs), p2ptgt with
host buffers and p2ptgt with CMB buffers. Writes build/bench/results.json.

In the remote layout (`vm/run --remote`, BENCH_REMOTE=1 for benches/run) the NVMe host
side (nvme connect, fio) runs on the initiator guest through `rxe-remote`, so the
target guest does only the target's work. `guest.py connect NQN PORT QUEUES`, run there,
connects and prints the block device.

A job that fails on some mode (fio's error, a target that would not come up) is
recorded as a failed cell and the others run on; the script then exits 1, and
report.py fails too. BENCH_BINARY (default this build's) is the p2ptgt to run, BENCH_OUT (default build/bench) is where results go, BENCH_SIZE
(default 512M) fio's span of the device."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = Path(os.environ.get("BENCH_OUT") or REPO / "build" / "bench")
P2PTGT = Path(os.environ.get("BENCH_BINARY") or REPO / "build" / "cargo" / "release" / "p2ptgt")
NVME_DEV = os.environ.get("NVME_DEV", "")
# The target's address: on the initiator guest, RXE_ADDR is the initiator's own.
ADDR = os.environ.get("RXE_TARGET_ADDR") or os.environ.get("RXE_ADDR", "")
# The target guest of the remote layout (the initiator guest has RXE_TARGET_ADDR).
REMOTE = os.environ.get("P2PTGT_VM_MODE") == "remote" and "RXE_TARGET_ADDR" not in os.environ
NQN = "nqn.2026-11.io.p2ptgt:bench"
HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:b3b3b3b3-0000-4000-8000-000000000001"
RUNTIME = int(os.environ.get("BENCH_RUNTIME", "10"))
REPEAT = int(os.environ.get("BENCH_REPEAT", "1"))
FIO_CPUS = os.environ.get("BENCH_FIO_CPUS", "")
SIZE = os.environ.get("BENCH_SIZE") or "512M"
IO_QUEUES = int(os.environ.get("BENCH_IO_QUEUES") or 2)
NVMET = Path("/sys/kernel/config/nvmet")

JOBS = [
    # name, fio options, metric
    ("randread-4k-qd1", ["--rw=randread", "--bs=4k", "--iodepth=1"], "lat"),
    ("randwrite-4k-qd1", ["--rw=randwrite", "--bs=4k", "--iodepth=1"], "lat"),
    ("randread-4k-qd16", ["--rw=randread", "--bs=4k", "--iodepth=16"], "iops"),
    ("randwrite-4k-qd16", ["--rw=randwrite", "--bs=4k", "--iodepth=16"], "iops"),
    ("randrw70-4k-qd16", ["--rw=randrw", "--rwmixread=70", "--bs=4k", "--iodepth=16"], "iops"),
    ("randread-4k-qd16-2jobs", ["--rw=randread", "--bs=4k", "--iodepth=16", "--numjobs=2"], "iops"),
    ("read-128k-qd4", ["--rw=read", "--bs=128k", "--iodepth=4"], "mbps"),
    ("write-128k-qd4", ["--rw=write", "--bs=128k", "--iodepth=4"], "mbps"),
]
if os.environ.get("BENCH_JOBS"):
    JOBS = [job for job in JOBS if job[0] in os.environ["BENCH_JOBS"].split(",")]


def sh(*args, check=True, **kwargs):
    result = subprocess.run(list(map(str, args)), text=True, capture_output=True, **kwargs)
    if check and result.returncode != 0:
        sys.stderr.write(result.stderr[-4000:])
        result.check_returncode()
    return result


def on_host(*args, check=True):
    """Runs a command of the NVMe host side: here, or on the initiator guest in the
    remote layout."""
    return sh(*(["rxe-remote"] if REMOTE else []), *args, check=check)


def cpu_ticks(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def context_switches(pid):
    """Voluntary context switches (sleeps) of all threads of pid."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches"):
                total += int(line.split()[1])
    return total


def all_cpu_ticks():
    """The aggregate "cpu" line of /proc/stat: user, nice, system, idle, iowait, irq, softirq..."""
    return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]


def busy_ticks():
    """Non-idle ticks of all CPUs: the whole guest's work (target, NIC, host side, fio)."""
    fields = all_cpu_ticks()
    return sum(fields) - fields[3] - fields[4]


def system_ticks():
    """system + irq + softirq ticks of all CPUs (the kernel target's work)."""
    fields = all_cpu_ticks()
    return fields[2] + fields[5] + fields[6]


def rxe_counters():
    """rxe's hardware counters, summed over devices and ports: packets, and the
    retransmissions, RNR NAKs and sequence errors that would show a transport problem."""
    totals = {}
    for counter in Path("/sys/class/infiniband").glob("*/ports/*/hw_counters/*"):
        try:
            totals[counter.name] = totals.get(counter.name, 0) + int(counter.read_text())
        except (OSError, ValueError):
            pass
    return totals


# rxe counters that stay at zero on a healthy link; any other value is printed.
RXE_TROUBLE = ("rcvd_rnr_err", "send_rnr_err", "retry_exceeded_err", "retry_rnr_exceeded_err",
               "rcvd_seq_err", "duplicate_request", "out_of_sequence", "completer_retry_err",
               "send_err", "rdma_sends_err", "link_downed")


def fio(device, name, options, local=False):
    """fio on `device`: the local SSD, or a target's namespace on the NVMe host side."""
    args = ["fio", f"--name={name}", f"--filename={device}", "--direct=1", "--ioengine=libaio",
            "--time_based", f"--runtime={RUNTIME}", "--ramp_time=1", "--group_reporting",
            "--randrepeat=0", "--norandommap", f"--size={SIZE}", "--output-format=json"] + options
    if FIO_CPUS:
        args.append(f"--cpus_allowed={FIO_CPUS}")
    result = json.loads((sh if local else on_host)(*args).stdout)
    job = result["jobs"][0]
    ios = job["read"]["total_ios"] + job["write"]["total_ios"]
    iops = job["read"]["iops"] + job["write"]["iops"]
    bw = (job["read"]["bw_bytes"] + job["write"]["bw_bytes"]) / 1e6
    side = job["read"] if job["read"]["total_ios"] >= job["write"]["total_ios"] else job["write"]
    pct = side["clat_ns"].get("percentile", {})
    return {
        "iops": iops,
        "mbps": bw,
        "ios": ios,
        "bytes": job["read"]["io_bytes"] + job["write"]["io_bytes"],
        "lat_p50_us": pct.get("50.000000", 0) / 1000,
        "lat_p90_us": pct.get("90.000000", 0) / 1000,
        "lat_p99_us": pct.get("99.000000", 0) / 1000,
        "lat_p999_us": pct.get("99.900000", 0) / 1000,
    }


def connected_device(nqn):
    """/dev/nvmeXnY of the namespace the kernel host connected for subsystem nqn."""
    for ctrl in Path("/sys/class/nvme").iterdir():
        try:
            if (ctrl / "subsysnqn").read_text().strip() != nqn:
                continue
        except OSError:
            continue
        for entry in ctrl.iterdir():
            match = re.fullmatch(r"(nvme\d+)(?:c\d+)?(n\d+)", entry.name)
            if match and Path(f"/dev/{match[1]}{match[2]}").exists():
                return f"/dev/{match[1]}{match[2]}"
    return None


def connect(nqn, port, queues=IO_QUEUES):
    if REMOTE:
        return on_host("python3", __file__, "connect", nqn, port, queues).stdout.strip()
    sh("nvme", "connect", "-t", "rdma", "-a", ADDR, "-s", port, "-n", nqn, "-q", HOSTNQN, f"--nr-io-queues={queues}")
    for _ in range(100):
        device = connected_device(nqn)
        if device:
            return device
        time.sleep(0.1)
    raise RuntimeError(f"no namespace after connecting {nqn}")


def disconnect(nqn):
    on_host("nvme", "disconnect", "-n", nqn, check=False)


def nvmet_up():
    sh("modprobe", "nvmet_rdma", check=False)
    subsystem = NVMET / "subsystems" / NQN
    (subsystem / "namespaces" / "1").mkdir(parents=True, exist_ok=True)
    (subsystem / "attr_allow_any_host").write_text("1")
    (subsystem / "namespaces" / "1" / "device_path").write_text(NVME_DEV)
    (subsystem / "namespaces" / "1" / "enable").write_text("1")
    port = NVMET / "ports" / "1"
    port.mkdir(exist_ok=True)
    for key, value in [("addr_trtype", "rdma"), ("addr_adrfam", "ipv4"), ("addr_traddr", ADDR), ("addr_trsvcid", "4420")]:
        (port / key).write_text(value)
    link = port / "subsystems" / NQN
    if not link.exists():
        link.symlink_to(subsystem)


def nvmet_down():
    link = NVMET / "ports" / "1" / "subsystems" / NQN
    if link.is_symlink():
        link.unlink()
    (NVMET / "ports" / "1").rmdir()
    subsystem = NVMET / "subsystems" / NQN
    (subsystem / "namespaces" / "1" / "enable").write_text("0")
    (subsystem / "namespaces" / "1").rmdir()
    subsystem.rmdir()


def p2ptgt_endpoint(mode):
    """Subsystem NQN and port of a p2ptgt mode: host buffers on 4421, CMB buffers on
    4422, the A/B alternatives from 4423."""
    port = {"p2ptgt-host": "4421", "p2ptgt-cmb": "4422"}.get(mode) or str(4423 + int(mode.removeprefix("p2ptgt-alt") or 0))
    return f"{NQN}-{mode}", port


def p2ptgt_up(mode):
    nqn, port = p2ptgt_endpoint(mode)
    p2pmem = "auto" if mode.startswith("p2ptgt-cmb") else "off"
    log = open(OUT / f"{mode}.log", "w")
    control = f"/run/{mode}.sock"
    # Modes "p2ptgt-alt", "p2ptgt-alt2"... run another build (P2PTGT_ALT, P2PTGT_ALT2...,
    # default this one) with host buffers and their own arguments (P2PTGT_ALT_ARGS...),
    # and environment (P2PTGT_ALT_ENV="NAME=VALUE ..."), for A/B runs.
    if mode.startswith("p2ptgt-alt"):
        key = "P2PTGT_" + mode.removeprefix("p2ptgt-").upper()
        binary, extra = os.environ.get(key) or str(P2PTGT), os.environ.get(key + "_ARGS", "").split()
        env = dict(setting.split("=", 1) for setting in os.environ.get(key + "_ENV", "").split())
    else:
        binary, extra, env = str(P2PTGT), os.environ.get("P2PTGT_ARGS", "").split(), {}
    process = subprocess.Popen([binary, "serve", "--listen", f"{ADDR}:{port}", "--subsystem", nqn,
                                "--namespace", NVME_DEV, "--allow-any-host", "--p2pmem", p2pmem,
                                "--control", control] + extra,
                               stderr=log, env={**os.environ, "RUST_LOG": "warn", **env})
    for _ in range(200):
        if Path(control).exists():
            return process
        time.sleep(0.05)
    raise RuntimeError(f"{mode} did not start")


def target_up(mode):
    """Brings up the kernel target or p2ptgt `mode` and connects the host to it:
    (block device, the p2ptgt process or None)."""
    if mode == "kernel-target":
        nvmet_up()
        return connect(NQN, "4420"), None
    process = p2ptgt_up(mode)
    return connect(*p2ptgt_endpoint(mode)), process


def target_down(mode, process=None):
    """Disconnects the host from a target that `target_up` brought up, and stops it."""
    if mode == "kernel-target":
        disconnect(NQN)
        nvmet_down()
        return
    disconnect(p2ptgt_endpoint(mode)[0])
    if process:
        process.terminate()
        process.wait(timeout=30)


def p2ptgt_stats(mode):
    return json.loads(sh(P2PTGT, "stats", "--control", f"/run/{mode}.sock").stdout)


def p2ptgt_payload(mode):
    """Payload bytes p2ptgt `mode` moved so far: (through host memory, through the CMB)."""
    stats = p2ptgt_stats(mode)
    return stats["payload_bytes_host"], stats["payload_bytes_cmb"]


def measure(mode, device, cpu, name, options, metric, pid=None):
    before, busy_before = cpu(), busy_ticks()
    sleeps = context_switches(pid) if pid else 0
    counters = rxe_counters()
    payload = p2ptgt_payload(mode) if pid else None
    result = fio(device, name, options, local=mode == "local")
    used, busy = cpu() - before, busy_ticks() - busy_before
    counted = rxe_counters()
    if payload:
        # The share of the payload p2ptgt moved through host memory, times fio's bytes per I/O
        # (p2ptgt's counters also count the ramp, which fio leaves out).
        host, cmb = (now - then for now, then in zip(p2ptgt_payload(mode), payload))
        # fio's bytes over I/Os is the block size give or take an I/O at the window's edge.
        block = round(result["bytes"] / max(result["ios"], 1) / 512) * 512
        result["host_payload_bytes_per_io"] = host / max(host + cmb, 1) * block
    delta = {key: value - counters.get(key, 0) for key, value in counted.items()}
    per_million = lambda ticks: ticks / os.sysconf("SC_CLK_TCK") / max(result["ios"], 1) * 1e6
    result["cpu_s_per_million_ios"] = per_million(used)
    result["guest_cpu_s_per_million_ios"] = per_million(busy)
    if pid:
        result["sleeps_per_io"] = (context_switches(pid) - sleeps) / max(result["ios"], 1)
    if "sent_pkts" in delta:
        result["rxe_packets_per_io"] = delta["sent_pkts"] / max(result["ios"], 1)
    result["rxe_trouble"] = {key: value for key, value in delta.items() if key in RXE_TROUBLE and value}
    if result["rxe_trouble"]:
        print(f"  {mode:14} {name:20} rxe counters moved: {result['rxe_trouble']}", flush=True)
    if metric == "lat":
        print(f"  {mode:14} {name:20} p50/90/99/99.9 = {result['lat_p50_us']:.0f}/{result['lat_p90_us']:.0f}/"
              f"{result['lat_p99_us']:.0f}/{result['lat_p999_us']:.0f} us"
              + (f", sleeps/IO {result['sleeps_per_io']:.3f}" if pid else ""), flush=True)
    result.update(mode=mode, job=name, metric=metric)
    return result


def best(samples):
    metric = samples[0]["metric"]
    key = (lambda r: -r["lat_p99_us"]) if metric == "lat" else (lambda r: r[metric])
    chosen = dict(max(samples, key=key))
    chosen["samples"] = [s["lat_p99_us"] if metric == "lat" else s[metric] for s in samples]
    return chosen


def failure(error):
    """One line naming why a step failed."""
    if isinstance(error, subprocess.CalledProcessError):
        detail = (error.stderr or "").strip().splitlines()[-1:] or [f"exit status {error.returncode}"]
        return f"{Path(str(error.cmd[0])).name}: {detail[0]}"
    return f"{type(error).__name__}: {error}"


class Mode:
    """One mode brought up: its block device, its CPU-time probe and, for p2ptgt, its process."""

    def __init__(self, mode):
        self.name = mode
        self.process = None
        if mode == "local":
            self.device, self.cpu = NVME_DEV, system_ticks
            return
        self.device, self.process = target_up(mode)
        self.cpu = (lambda pid: lambda: cpu_ticks(pid))(self.process.pid) if self.process else system_ticks

    def down(self, results):
        """Records what p2ptgt says of its run (summed over the processes of an isolated
        mode) and takes the mode down."""
        if self.process:
            try:
                stats = p2ptgt_stats(self.name)
                status = Path(f"/proc/{self.process.pid}/status").read_text()
                peak = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
                info = results["p2ptgt"].setdefault(self.name, {"payload_bytes_host": 0, "payload_bytes_cmb": 0, "polled_ios": 0, "peak_rss_kib": 0})
                info["registration"] = stats["registration"]
                for key in ("payload_bytes_host", "payload_bytes_cmb", "polled_ios"):
                    info[key] += stats[key]
                info["peak_rss_kib"] = max(info["peak_rss_kib"], peak)
            except (subprocess.SubprocessError, OSError, ValueError, KeyError, StopIteration) as error:
                results["failures"].append({"mode": self.name, "job": "stats", "error": failure(error)})
        if self.name != "local":
            target_down(self.name, self.process)


def main():
    """Every target is up at once (kernel target on 4420, p2ptgt with host buffers on
    4421, with CMB buffers on 4422); each job runs on every mode in turn, REPEAT times,
    so drift on this shared machine hits all modes alike. With BENCH_ISOLATE=1 each mode
    is up only for its own runs instead: a target that busy-polls (p2ptgt --poll-groups)
    would otherwise take CPU from the others' runs. Returns the exit status: 1 if any
    cell failed."""
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").unlink(missing_ok=True)
    modes = sys.argv[1:] or ["local", "kernel-target", "p2ptgt-host", "p2ptgt-cmb"]
    isolate = os.environ.get("BENCH_ISOLATE") == "1"
    results = {"runtime_s": RUNTIME, "repeat": REPEAT, "clock": os.environ.get("BENCH_CLOCK") or "real",
               "kernel": os.uname().release, "layout": "remote" if REMOTE else "single", "isolated": isolate,
               "modes": modes, "jobs": [name for name, _, _ in JOBS], "rows": [], "failures": [], "p2ptgt": {},
               "arguments": {mode: os.environ.get("P2PTGT_" + mode.removeprefix("p2ptgt-").upper() + "_ARGS", "")
                             for mode in modes if mode.startswith("p2ptgt-alt")} | {"p2ptgt": os.environ.get("P2PTGT_ARGS", "")}}
    up, down = {}, {}

    def bring_up(mode):
        """Brings `mode` up into `up`; returns why it failed, or None."""
        try:
            up[mode] = Mode(mode)
            return None
        except (subprocess.SubprocessError, OSError, RuntimeError) as error:
            why = f"did not come up: {failure(error)}"
            print(f"{mode:14} FAILED: {why}", file=sys.stderr, flush=True)
            return why

    if not isolate:
        down = {mode: error for mode in modes if (error := bring_up(mode))}
    for name, options, metric in JOBS:
        samples = {mode: [] for mode in modes}
        failed = dict(down)
        for _ in range(REPEAT):
            for mode in modes:
                if isolate and mode not in failed and (error := bring_up(mode)):
                    failed[mode] = error
                if mode in failed:
                    continue
                target = up[mode]
                pid = target.process.pid if target.process else None
                try:
                    samples[mode].append(measure(mode, target.device, target.cpu, name, options, metric, pid))
                except (subprocess.SubprocessError, OSError, ValueError, KeyError) as error:
                    failed[mode] = failure(error)
                    print(f"{mode:14} {name:24} FAILED: {failed[mode]}", file=sys.stderr, flush=True)
                if isolate:
                    up.pop(mode).down(results)
        for mode in modes:
            if mode in failed:
                results["failures"].append({"mode": mode, "job": name, "error": failed[mode]})
                continue
            row = best(samples[mode])
            print(f"{mode:14} {name:24} iops={row['iops']:9.0f} MB/s={row['mbps']:7.1f} "
                  f"p50={row['lat_p50_us']:7.0f}us p99={row['lat_p99_us']:7.0f}us", flush=True)
            results["rows"].append(row)
    for target in up.values():
        target.down(results)
    (OUT / "results.json").write_text(json.dumps(results, indent=1))
    print(f"wrote {OUT / 'results.json'}")
    if results["failures"]:
        print(f"{len(results['failures'])} cell(s) failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["connect"]:
        print(connect(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    else:
        sys.exit(main())
