"""What the benchmark prints and writes: progress on stderr, tables on stdout, JSON.

A column is a derived figure (add_derived_figures) plus a cell in
render_table, with a line in LEGEND.
"""

import json
import sys
from typing import Optional

from bench.impls import BASELINE, FLOORS, IMPLS

LEGEND = (
    "vs autograd: autograd time / this time (higher is faster). "
    "vs floor: this time / the faster floor (three bare GEMMs on torch.mm or on brgemm "
    "tiles). GFLOP/s counts 6·M·K·N. % peak: GFLOP/s as a share of the best rate one "
    "large GEMM reaches on this machine. "
    "extra mem: peak of a (second, steady-state) call beyond inputs and outputs, "
    "and as % of the outputs' size "
    '("-": not probed, "n/a": probe skipped or failed).'
)
BUSY_LEGEND = (
    "busy slowdown: median time with {n} spinning process(es) competing for the CPU / "
    "median time on the quiet machine, measured in the same run."
)


def log(msg: str) -> None:
    """Progress line on stderr."""
    print(msg, file=sys.stderr, flush=True)


def add_derived_figures(record: dict, peak_gflops: Optional[float] = None) -> None:
    """Speedup over autograd, ratio to the floor, GFLOP/s, % of the GEMM peak
    and, where busy timings exist, the slowdown under load; in place."""
    impls = record["impls"]

    def median(key):
        return impls.get(key, {}).get("median_s")

    base = median(BASELINE)
    floors = [median(k) for k in FLOORS if median(k)]
    floor = min(floors) if floors else None
    record["floor_s"] = floor
    for fig in impls.values():
        t = fig.get("median_s")
        if t is None:
            continue
        fig["speedup_vs_autograd"] = base / t if base else None
        fig["ratio_to_floor"] = t / floor if floor else None
        fig["gflops"] = record["flops"] / t / 1e9
        fig["pct_of_peak"] = 100 * fig["gflops"] / peak_gflops if peak_gflops else None
        busy = fig.get("busy")
        if busy:
            busy["slowdown"] = busy["median_s"] / t


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
    kernels = meta.get("relufrob_cpu_kernels") or {}
    isa = (
        f"ISA {meta['cpu_capability']} (relufrob: {kernels.get('isa')} kernels, "
        f"{kernels.get('gemm')} GEMMs, bf16 GEMMs {kernels.get('bf16_gemm')})"
    )
    return (
        f"torch {meta['torch']} · threads {meta['threads']} · {meta['cpu_model']} · {isa} · "
        f"{meta['dtype']} · {meta['device']} ({meta['device_name']})"
    )


def peak_line(meta: dict) -> str:
    peak = meta.get("gemm_peak")
    if not peak:
        return ""
    return f"GEMM peak: {peak['gflops']:.3g} GFLOP/s ({peak['by']})."


def render_table(record: dict, busy: int = 0) -> str:
    """The markdown table of one size."""
    busy_head = f" busy {busy} slowdown |" if busy else ""
    lines = [
        f"### {record['M']}×{record['K']}×{record['N']} (M×K×N)",
        "",
        f"| impl | median | vs autograd | vs floor | GFLOP/s | % peak | extra mem |{busy_head}",
        "|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if busy else ""),
    ]
    for key, fig in record["impls"].items():
        if "error" in fig:
            lines.append(f"| {IMPLS[key]} | error |" + " - |" * (5 + bool(busy)))
            continue
        mark = "" if fig.get("check") in ("ok", "skipped") else " ⚠"
        gflops, pct = fig.get("gflops"), fig.get("pct_of_peak")
        busy_cell = ""
        if busy:
            busy_cell = f" {format_ratio((fig.get('busy') or {}).get('slowdown'))} |"
        lines.append(
            f"| {IMPLS[key]}{mark} | {format_time(fig.get('median_s'))} | "
            f"{format_ratio(fig.get('speedup_vs_autograd'))} | "
            f"{format_ratio(fig.get('ratio_to_floor'))} | "
            f"{'-' if gflops is None else f'{gflops:.3g}'} | "
            f"{'-' if pct is None else f'{pct:.0f}%'} | "
            f"{format_memory(fig.get('memory'))} |{busy_cell}"
        )
    return "\n".join(lines)


def render_report(meta: dict, records: list[dict]) -> str:
    busy = meta.get("busy") or 0
    parts = [header_line(meta), "", LEGEND]
    if busy:
        parts.append(BUSY_LEGEND.format(n=busy))
    if peak_line(meta):
        parts.append(peak_line(meta))
    for record in records:
        parts += ["", render_table(record, busy)]
    return "\n".join(parts)


def write_json(path: str, meta: dict, records: list[dict]) -> None:
    with open(path, "w") as f:
        json.dump({"meta": meta, "results": records}, f, indent=1, allow_nan=False)
        f.write("\n")
