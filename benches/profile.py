#!/usr/bin/env python3
"""Runs inside the test-bed guest: where the guest's CPU time goes per I/O, for the
kernel target and p2ptgt with host buffers (or the MODEs named: kernel-target,
p2ptgt-host, p2ptgt-cmb, and p2ptgt-alt... as benches/run takes them), on one fio job,
in one boot.

    rxe-setup/vm/run -- python3 benches/profile.py [JOB] [ROUNDS] [MODE...]

JOB is one of benches/guest.py's jobs (default randread-4k-qd16). Each round samples
the whole guest with `perf record -e cpu-clock` during the job on each target and prints
microseconds per I/O by thread class (the target's own threads, rxe's workers, fio,
idle), then the top symbols of the target's threads and of rxe's workers. Needs perf (Debian's linux-perf)."""

import collections
import os
import re
import subprocess
import sys

import guest

FREQUENCY = 1000


def thread_class(comm):
    """Which part of the stack a thread's samples belong to."""
    if comm.startswith("p2ptgt"):
        return "target"
    if comm.startswith("kworker"):
        # Workqueue names are cut to 15 characters: rxe_wq shows as "-rx" or "+rx";
        # nvmet-rdma completes in ib_cq ("ib") and submits bios through kblockd ("kb").
        suffix = comm[-3:]
        if suffix in ("-rx", "+rx"):
            return "rxe"
        if suffix in ("-ib", "+ib", "-kb", "+kb"):
            return "target"
        return "other kworkers"
    if comm == "swapper":
        return "idle"
    if comm.startswith("ksoftirqd"):
        return "softirq"
    return comm if comm == "fio" else "other"


SWITCH_SYMBOLS = re.compile(r"\b(switch_mm\w*|__switch_to\w*|finish_task_switch\S*|__schedule|native_write_cr3)$")


def report(data, *args):
    command = ["perf", "report", "-i", data, "--stdio", "-n", "--no-children", "-g", "none", *args]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def samples(text):
    """(samples, key) for each row of a `perf report -n` table."""
    for line in text.splitlines():
        match = re.match(r"\s+[\d.]+%\s+(\d+)\s+(.*\S)\s*$", line)
        if match:
            yield int(match[1]), match[2]


def profile(mode, device, options, data):
    recorder = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", str(FREQUENCY), "-a", "-o", data],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result = guest.fio(device, "profile", options)
    recorder.send_signal(2)
    recorder.wait()
    # perf also samples fio's ramp-up second; scale the I/O count to the same span.
    ios = result["ios"] * (guest.RUNTIME + 1) / guest.RUNTIME
    per_class = collections.Counter()
    comms = collections.defaultdict(set)
    for count, comm in samples(report(data, "--sort", "comm")):
        per_class[thread_class(comm)] += count
        comms[thread_class(comm)].add(comm)
    us_per_io = lambda count: count * 1e6 / FREQUENCY / ios
    print(f"{mode}: {result['iops']:.0f} IOPS; µs of guest CPU per I/O: "
          + ", ".join(f"{name} {us_per_io(count):.1f}" for name, count in per_class.most_common()), flush=True)
    for name in ("target", "rxe"):
        if not comms[name]:
            continue
        print(f"  {name} threads' top symbols, µs per I/O:")
        table = report(data, "--comms", ",".join(sorted(comms[name])), "--sort", "sym", "--percent-limit", "0.3")
        for count, symbol in list(samples(table))[:12]:
            print(f"    {us_per_io(count):5.1f}  {symbol}")
    # Context switches, in every thread: loading another address space (a user-space
    # target's threads have their own; kernel threads borrow the loaded one) is costly
    # under TCG, which drops its software TLB there.
    switches = [(count, symbol) for count, symbol in samples(report(data, "--sort", "sym"))
                if SWITCH_SYMBOLS.search(symbol)]
    if switches:
        print("  context-switch symbols, all threads, µs per I/O: "
              + ", ".join(f"{symbol.split()[-1]} {us_per_io(count):.1f}" for count, symbol in switches))


def main():
    job = sys.argv[1] if len(sys.argv) > 1 else "randread-4k-qd16"
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    options = next((options for name, options, _ in guest.JOBS if name == job), None)
    if options is None:
        sys.exit(f"unknown job {job}; one of {', '.join(name for name, _, _ in guest.JOBS)}")
    guest.OUT.mkdir(parents=True, exist_ok=True)
    for setting, value in [("kptr_restrict", "0"), ("perf_event_paranoid", "-1")]:
        with open(f"/proc/sys/kernel/{setting}", "w") as knob:
            knob.write(value)
    modes = sys.argv[3:] or ["kernel-target", "p2ptgt-host"]
    known = ("kernel-target", "p2ptgt-host", "p2ptgt-cmb", "p2ptgt-alt")
    unknown = [mode for mode in modes if mode not in known and not mode.startswith("p2ptgt-alt")]
    if unknown:
        sys.exit(f"unknown mode {unknown[0]}; one of {', '.join(known)}")
    devices, processes = {}, {}
    try:
        for mode in modes:
            devices[mode], processes[mode] = guest.target_up(mode)
        for _ in range(rounds):
            for mode, device in devices.items():
                profile(mode, device, options, f"/tmp/{mode}.perf")
    finally:
        for mode in modes:
            guest.target_down(mode, processes.get(mode))


if __name__ == "__main__":
    main()
