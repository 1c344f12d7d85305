"""What the benchmark prints and writes: progress on stderr, tables on stdout, JSON.

A column is a derived figure (add_derived_figures) plus a cell in
render_table, with a line in LEGEND.
"""

import json
import sys
from typing import Optional

from bench.impls import BASELINE, FLOOR, IMPLS

LEGEND = (
    "vs autograd: autograd time / this time (higher is faster). "
    "vs floor: this time / three bare GEMMs. GFLOP/s counts 6·M·K·N. "
    "extra mem: peak of a (second, steady-state) call beyond inputs and outputs, "
    "and as % of the outputs' size "
    '("-": not probed, "n/a": probe skipped or failed).'
)


def log(msg: str) -> None:
    """Progress line on stderr."""
    print(msg, file=sys.stderr, flush=True)


def add_derived_figures(record: dict) -> None:
    """Speedup over autograd, ratio to the floor and GFLOP/s, in place."""
    impls = record["impls"]

    def median(key):
        return impls.get(key, {}).get("median_s")

    base, floor = median(BASELINE), median(FLOOR)
    for fig in impls.values():
        t = fig.get("median_s")
        if t is None:
            continue
        fig["speedup_vs_autograd"] = base / t if base else None
        fig["ratio_to_floor"] = t / floor if floor else None
        fig["gflops"] = record["flops"] / t / 1e9


def format_time(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def format_ratio(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.2f}×"


def format_memory(mem: Optional[dict]) -> str:
    if not mem or mem.get("status") != "ok":
        return (mem or {}).get("status", "-")
    pct = mem.get("extra_pct_of_outputs")
    pct_text = "" if pct is None else f" ({pct:.0f}%)"
    return f"{mem['extra_mib']:.2f} MiB{pct_text}"


def header_line(meta: dict) -> str:
    return (
        f"torch {meta['torch']} · threads {meta['threads']} · {meta['cpu_model']} · "
        f"{meta['dtype']} · {meta['device']} ({meta['device_name']})"
    )


def render_table(record: dict) -> str:
    """The markdown table of one size."""
    lines = [
        f"### {record['M']}×{record['K']}×{record['N']} (M×K×N)",
        "",
        "| impl | median | vs autograd | vs floor | GFLOP/s | extra mem |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, fig in record["impls"].items():
        if "error" in fig:
            lines.append(f"| {IMPLS[key]} | error | - | - | - | - |")
            continue
        mark = "" if fig.get("check") in ("ok", "skipped") else " ⚠"
        gflops = fig.get("gflops")
        lines.append(
            f"| {IMPLS[key]}{mark} | {format_time(fig.get('median_s'))} | "
            f"{format_ratio(fig.get('speedup_vs_autograd'))} | "
            f"{format_ratio(fig.get('ratio_to_floor'))} | "
            f"{'-' if gflops is None else f'{gflops:.3g}'} | {format_memory(fig.get('memory'))} |"
        )
    return "\n".join(lines)


def render_report(meta: dict, records: list[dict]) -> str:
    parts = [header_line(meta), "", LEGEND]
    for record in records:
        parts += ["", render_table(record)]
    return "\n".join(parts)


def write_json(path: str, meta: dict, records: list[dict]) -> None:
    with open(path, "w") as f:
        json.dump({"meta": meta, "results": records}, f, indent=1, allow_nan=False)
        f.write("\n")
