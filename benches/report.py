#!/usr/bin/env python3
"""Turns build/bench/results.json into a Markdown table (results.md) and an SVG chart
(chart.svg) of each mode's ratio to the kernel target, measured in the same boot. Exits 1,
after writing them, if any job of any mode failed or is missing: a cell is never left
blank in silence."""

import json
import os
import statistics
import sys
from pathlib import Path

OUT = Path(os.environ.get("BENCH_OUT") or Path(__file__).resolve().parent.parent / "build" / "bench")
MODES = ["local", "kernel-target", "p2ptgt-host", "p2ptgt-cmb"]
COLORS = {"local": "#999999", "kernel-target": "#4c72b0", "p2ptgt-host": "#55a868", "p2ptgt-cmb": "#dd8452"}


def value(row):
    metric = row["metric"]
    if metric == "lat":
        return row["lat_p99_us"]
    return row[metric]


def describe(row):
    metric = row["metric"]
    if metric == "lat":
        return f"{row['lat_p50_us']:.0f}/{row['lat_p99_us']:.0f} us"
    if metric == "iops":
        return f"{row['iops']:.0f} IOPS"
    return f"{row['mbps']:.1f} MB/s"


def ratio(row, base):
    """> 1 is better than the kernel target (latency: kernel / ours)."""
    if base is None or value(base) == 0 or value(row) == 0:
        return None
    if row["metric"] == "lat":
        return value(base) / value(row)
    return value(row) / value(base)


def median_ratio(row, base):
    """The same ratio over the median of the repeated runs instead of the best."""
    if base is None or len(row.get("samples", [])) < 2:
        return None
    ours, theirs = statistics.median(row["samples"]), statistics.median(base["samples"])
    if ours == 0 or theirs == 0:
        return None
    return theirs / ours if row["metric"] == "lat" else ours / theirs


def main():
    results = json.loads((OUT / "results.json").read_text())
    rows = results["rows"]
    jobs = results.get("jobs") or list(dict.fromkeys(r["job"] for r in rows))
    ran = results.get("modes") or [r["mode"] for r in rows]
    modes = [m for m in MODES if m in ran] + [m for m in dict.fromkeys(ran) if m not in MODES]
    table = {(r["job"], r["mode"]): r for r in rows}
    failed = {(f["job"], f["mode"]): f["error"] for f in results.get("failures", [])}
    for job in jobs:
        for mode in modes:
            if (job, mode) not in table and (job, mode) not in failed:
                failed[(job, mode)] = "no result"
    layout = ("NVMe host (fio) on a second guest over a virtual link. " if results.get("layout") == "remote"
              else "NVMe host (fio) in the target's guest. ")
    clock = ("Virtual time (guest time advances by instructions executed). " if results.get("clock") == "virtual"
             else "Real time. ")
    lines = [clock + f"Kernel {results['kernel']}, {results['runtime_s']} s per job, best of {results['repeat']}. " + layout +
             "Latency cells are p50/p99; ratios are to the kernel target (> 1.00 is better; for latency, kernel p99 / ours), "
             "of the best runs and, in parentheses, of the median runs."]
    arguments = {mode: args for mode, args in results.get("arguments", {}).items() if args}
    if arguments:
        lines.append("Arguments: " + "; ".join(f"{mode}: `{args}`" for mode, args in arguments.items()) + ".")
    lines.append("")
    lines.append("| job | " + " | ".join(modes) + " | " + " | ".join(f"{m} ÷ kernel" for m in modes if m.startswith("p2ptgt")) + " |")
    lines.append("|---" * (1 + len(modes) + sum(m.startswith("p2ptgt") for m in modes)) + "|")
    for job in jobs:
        cells = [describe(table[(job, m)]) if (job, m) in table else "FAILED" for m in modes]
        base = table.get((job, "kernel-target"))
        ratios = []
        for m in modes:
            if m.startswith("p2ptgt"):
                r = ratio(table[(job, m)], base) if (job, m) in table else None
                median = median_ratio(table[(job, m)], base) if (job, m) in table else None
                ratios.append((f"{r:.2f}×" if r else "") + (f" ({median:.2f}×)" if median else ""))
        lines.append(f"| {job} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    p2ptgt_modes = [m for m in modes if m.startswith("p2ptgt")]
    for key, title, shown in [("cpu_s_per_million_ios", "CPU seconds per million I/Os (p2ptgt: its user+sys; kernel target and local: system+irq+softirq of the guest)", modes),
                              ("guest_cpu_s_per_million_ios", "Whole-guest CPU seconds per million I/Os (target, rxe, kernel host, fio: all non-idle time)", modes),
                              ("host_payload_bytes_per_io", "Payload bytes per I/O through host memory (the kernel target's all are)", p2ptgt_modes)]:
        if not any(key in row for row in table.values()):
            continue
        lines += ["", f"{title}:", ""]
        lines.append("| job | " + " | ".join(shown) + " |")
        lines.append("|---" * (1 + len(shown)) + "|")
        for job in jobs:
            lines.append(f"| {job} | " + " | ".join(f"{table[(job, m)][key]:.0f}" if key in table.get((job, m), {}) else "" for m in shown) + " |")
    if results.get("p2ptgt"):
        lines += ["", "| p2ptgt mode | registration | payload bytes via host memory | via CMB | SSD I/Os completed by polling | peak RSS |", "|---|---|---|---|---|---|"]
        for mode, info in results["p2ptgt"].items():
            lines.append(f"| {mode} | {info['registration']} | {info['payload_bytes_host']} | {info['payload_bytes_cmb']} | {info.get('polled_ios', 'n/a')} | {info['peak_rss_kib'] // 1024} MiB |")
    (OUT / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    chart(jobs, modes, table)
    if failed:
        for (job, mode), error in failed.items():
            print(f"FAILED: {job} on {mode}: {error}", file=sys.stderr)
        return 1
    return 0


def chart(jobs, modes, table):
    # The local SSD is the ceiling (up to 15x the targets here); plotting it would flatten the rest.
    shown = [m for m in modes if m not in ("kernel-target", "local") and m in COLORS]
    width, row_height, left = 760, 22 * len(shown) + 14, 190
    height = 60 + row_height * len(jobs)
    scale_max = max([ratio(table[(j, m)], table.get((j, "kernel-target"))) or 0 for j in jobs for m in shown if (j, m) in table] + [1.2])
    x = lambda r: left + (width - left - 40) * r / scale_max
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="18" font-size="14">Ratio to the kernel target (nvmet-rdma), same guest boot; &gt; 1 is better</text>']
    for index, mode in enumerate(shown):
        svg.append(f'<rect x="{left + index * 150}" y="28" width="12" height="12" fill="{COLORS[mode]}"/><text x="{left + 16 + index * 150}" y="39">{mode}</text>')
    top = 50
    for j, job in enumerate(jobs):
        y0 = top + j * row_height
        svg.append(f'<text x="{left - 8}" y="{y0 + row_height / 2 + 4}" text-anchor="end">{job}</text>')
        for i, mode in enumerate(shown):
            r = ratio(table[(job, mode)], table.get((job, "kernel-target"))) if (job, mode) in table else None
            if r is None:
                continue
            y = y0 + 4 + i * 22
            svg.append(f'<rect x="{left}" y="{y}" width="{x(r) - left:.1f}" height="18" fill="{COLORS[mode]}"/>')
            svg.append(f'<text x="{x(r) + 4:.1f}" y="{y + 13}">{r:.2f}</text>')
    svg.append(f'<line x1="{x(1):.1f}" y1="{top}" x2="{x(1):.1f}" y2="{height - 6}" stroke="black" stroke-dasharray="4 3"/>')
    svg.append("</svg>")
    (OUT / "chart.svg").write_text("\n".join(svg) + "\n")
    print(f"wrote {OUT / 'results.md'}, {OUT / 'chart.svg'}")


if __name__ == "__main__":
    sys.exit(main())
