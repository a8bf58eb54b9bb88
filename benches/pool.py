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
    runs = collections.defaultdict(list)
    metric = {}
    jobs = []
    for path in paths:
        with open(path) as handle:
            for row in json.load(handle)["rows"]:
                samples[row["job"], row["mode"]].extend(row["samples"])
                runs[row["job"], row["mode"]].append(row)
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
    if len(paths) > 1:
        spread_table(jobs, metric, runs, modes)


def value(row, key=None):
    """A run's figure for its job: IOPS, MB/s, or (latency jobs) p50 and p99."""
    if row["metric"] == "lat":
        return row[key or "lat_p99_us"]
    return row[row["metric"]]


def spread(values):
    """(max - min) / median, in percent."""
    middle = statistics.median(values)
    return (max(values) - min(values)) / middle * 100 if middle else 0.0


def spread_table(jobs, metric, runs, modes):
    """How far the runs agree, cell by cell and ratio by ratio."""
    every = [BASE] + modes
    print()
    print("Spread across runs, (max - min) / median: each mode's value, then each ratio to the kernel target"
          " (latency jobs: p50 / p99)")
    print("| job | " + " | ".join(every) + " | " + " | ".join(f"{mode} ÷ kernel" for mode in modes) + " |")
    print("|---|" + "---|" * (len(every) + len(modes)))
    for job in jobs:
        keys = ["lat_p50_us", "lat_p99_us"] if metric[job] == "lat" else [None]
        cells = []
        for mode in every:
            rows = runs.get((job, mode), [])
            cells.append(" / ".join(f"{spread([value(r, k) for r in rows]):.1f}%" for k in keys) if len(rows) > 1 else "–")
        base = runs.get((job, BASE), [])
        for mode in modes:
            rows = runs.get((job, mode), [])
            if len(rows) != len(base) or len(rows) < 2:
                cells.append("–")
                continue
            ratios = [[(value(b, k) / value(r, k)) if metric[job] == "lat" else (value(r, k) / value(b, k)) for r, b in zip(rows, base)] for k in keys]
            cells.append(" / ".join(f"{spread(r):.1f}%" for r in ratios))
        print(f"| {job} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
