#!/usr/bin/env python3
"""Pools several runs of benches/run: for each job and mode, the median of every run's
samples together, and its ratio to the kernel target's (> 1 is better; for latency
jobs, of the p99s: kernel / ours). Runs of one machine drift, so one run's ratio can
move by 0.1; pooling several gives the steadier figure.

    python3 benches/pool.py benches/results/results.json OTHER/results.json ...
"""

import collections
import json
import statistics
import sys

BASE = "kernel-target"


def main():
    paths = sys.argv[1:]
    if not paths:
        sys.exit(__doc__)
    samples = collections.defaultdict(list)
    metric = {}
    jobs = []
    for path in paths:
        with open(path) as handle:
            for row in json.load(handle)["rows"]:
                samples[row["job"], row["mode"]].extend(row["samples"])
                metric[row["job"]] = row["metric"]
                if row["job"] not in jobs:
                    jobs.append(row["job"])
    modes = [mode for mode in dict.fromkeys(mode for _, mode in samples) if mode not in (BASE, "local")]
    print(f"{len(paths)} runs pooled; medians of all samples, ratio to {BASE}")
    print("| job | samples per mode | " + " | ".join(f"{mode} ÷ kernel" for mode in modes) + " |")
    print("|---|---|" + "---|" * len(modes))
    for job in jobs:
        base = samples.get((job, BASE))
        if not base:
            continue
        cells = []
        for mode in modes:
            ours = samples.get((job, mode))
            if not ours:
                cells.append("–")
                continue
            ours_median, base_median = statistics.median(ours), statistics.median(base)
            ratio = base_median / ours_median if metric[job] == "lat" else ours_median / base_median
            cells.append(f"{ratio:.2f}×")
        print(f"| {job} | {len(base)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
