#!/usr/bin/env python3
"""Turns criterion's results into benches/results/SUMMARY.md and one SVG bar chart per group.

Reads <target>/criterion/**/new/{benchmark,estimates}.json. For every group it lists the median
of each benchmark, its ratio to the floor (the entry whose name contains "floor") and its ratio
to meshwork (the entry whose name starts with "meshwork" and matches best). Standard library only.
"""

import html
import json
import os
import platform
import subprocess
import sys
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path


def load(criterion_dir: Path):
    groups = OrderedDict()
    for bench in sorted(criterion_dir.glob("**/new/benchmark.json")):
        meta = json.loads(bench.read_text())
        est = json.loads((bench.parent / "estimates.json").read_text())
        group = meta["group_id"]
        name = meta["function_id"] or ""
        if meta.get("value_str"):
            name = f"{name} {meta['value_str']}".strip()
        elements = (meta.get("throughput") or {}).get("Elements")
        groups.setdefault(group, []).append((name, est["median"]["point_estimate"], elements))
    return groups


def fmt_ns(ns: float) -> str:
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.1f} ns"


def reference(rows, name):
    """The meshwork row a row compares with: the one with the same numeric suffix (e.g.
    ' 10000') if any, else the row named exactly 'meshwork', else the shortest meshwork row."""
    ours = [r for r in rows if r[0].startswith("meshwork")]
    if not ours:
        return None
    suffix = name.split(" ")[-1] if name.split(" ")[-1].isdigit() else None
    for r in ours:
        if suffix and r[0].endswith(" " + suffix):
            return r
    exact = [r for r in ours if r[0] == "meshwork"]
    return exact[0] if exact else min(ours, key=lambda r: len(r[0]))


def svg(group, rows) -> str:
    width, bar_h, gap, left = 760, 22, 8, 300
    height = 40 + len(rows) * (bar_h + gap)
    top = max(v for _, v in rows) or 1.0
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<text x="10" y="20" font-size="14" font-weight="bold">{html.escape(group)} '
        f"(median, lower is better)</text>",
    ]
    for i, (name, v) in enumerate(rows):
        y = 34 + i * (bar_h + gap)
        w = max(1.0, (width - left - 110) * v / top)
        color = "#2b7bb9" if name.startswith("meshwork") else (
            "#999999" if "floor" in name else "#e08a2c")
        out.append(f'<text x="10" y="{y + 15}">{html.escape(name)}</text>')
        out.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}"/>')
        out.append(f'<text x="{left + w + 6:.1f}" y="{y + 15}">{fmt_ns(v)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        rustc = "rustc (unknown)"
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, {rustc}"


def main() -> int:
    target = Path(os.environ.get("CARGO_TARGET_DIR", "target"))
    criterion_dir = target / "criterion"
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results"
    only = sys.argv[2:]  # optional group prefixes
    if not criterion_dir.is_dir():
        print(f"no criterion results under {criterion_dir}: run the benches first", file=sys.stderr)
        return 1
    groups = load(criterion_dir)
    if only:
        groups = OrderedDict((g, r) for g, r in groups.items() if any(g.startswith(p) for p in only))
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Benchmark summary",
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {machine()}.",
        "Medians from criterion; every row of a group was measured in the same run. The machine",
        "is shared and noisy: read the ratios, not the absolute times.",
        "",
    ]
    for group, rows in groups.items():
        floor = next((v for n, v, _ in rows if "floor" in n), None)
        with_rate = any(e for _, _, e in rows)
        lines += [f"## {group}", "", f"![{group}]({group.replace('/', '_')}.svg)", ""]
        head = "| benchmark | median |" + (" throughput |" if with_rate else "") + " vs floor | vs meshwork |"
        lines += [head, "|---|---:|" + ("---:|" if with_rate else "") + "---:|---:|"]
        for name, v, elements in rows:
            ref = reference(rows, name)
            vs_floor = f"{v / floor:.2f}x" if floor else "-"
            vs_ours = f"{v / ref[1]:.2f}x" if ref and "floor" not in name else "-"
            rate = f" {elements / v * 1e3:.2f} M/s |" if with_rate and elements else (" - |" if with_rate else "")
            lines.append(f"| {name} | {fmt_ns(v)} |{rate} {vs_floor} | {vs_ours} |")
        lines.append("")
        (out_dir / f"{group.replace('/', '_')}.svg").write_text(svg(group, [(n, v) for n, v, _ in rows]))
    probes = [p for p in sorted((target / "meshwork-probes").glob("*.json"))
              if not only or any(json.loads(p.read_text())["group"].startswith(o) for o in only)]
    if probes:
        lines += ["## Latency probes", "",
                  "Fixed-rate runs outside criterion (see the suite's source for the set-up).", "",
                  "| probe | rate (msg/s) | messages | p50 | p99 | max |", "|---|---:|---:|---:|---:|---:|"]
        for probe in probes:
            p = json.loads(probe.read_text())
            lines.append(f"| {p['group']} | {p['rate']:,} | {p['messages']:,} | {fmt_ns(p['p50_ns'])} "
                         f"| {fmt_ns(p['p99_ns'])} | {fmt_ns(p['max_ns'])} |")
        lines.append("")
    (out_dir / "SUMMARY.md").write_text("\n".join(lines))
    print(f"wrote {out_dir / 'SUMMARY.md'} ({len(groups)} groups)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
