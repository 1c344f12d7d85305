#!/usr/bin/env python
"""Throughput and memory of relufrob against its references.

f = ||relu(X W) - Y||_F^2 with its gradients dW, dX, dY, computed by

  relufrob         relufrob.grads(X, W, Y), the fused extension op
  relufrob wrt=W   relufrob.grads(X, W, Y, wrt=("W",)), loss and dW only
  autograd         relufrob.reference.autograd_grads, torch.autograd
  eager formulas   relufrob.reference.formula_grads, closed form, eager
  torch.compile    torch.compile(formula_grads, dynamic=False), per size
  floor: 3 GEMMs   X@W, Xᵀ@G, G@Wᵀ with a preallocated M×N G: the cost of
                   the three matrix products every implementation needs

Usage:
  python bench/throughput.py                          # default sizes, CPU, float32
  python bench/throughput.py --sizes 10x4x4 1024x256x256
  python bench/throughput.py --device cuda --dtype bfloat16
  python bench/throughput.py --threads 1 --json out.json --plot out.png
  python bench/throughput.py --quick                  # tiny smoke run
  make bench BENCH_ARGS="--sizes 4096x512x512"

Method. For each size the inputs are built once (fixed seed, randn), every
implementation is warmed up (torch.compile compiles for that size first, and
its compile time is recorded), then the implementations are timed
interleaved, round after round in one process, so that drift of the machine
hits all of them alike. A sample is one call, or for fast calls a batch of
calls lasting at least ~200 µs divided by the batch length; the table shows
the median sample. The number of rounds adapts to the size (about half a
second per implementation and size) unless --repeat fixes it. Each
implementation's results are checked against autograd's before timing; a
mismatch is reported on stderr and in the JSON.

Columns: median time per call; speedup over autograd (autograd time / this
time); ratio to the floor (this time / floor time); GFLOP/s counting the
three GEMMs, 6·M·K·N flops, for every implementation; and the peak memory
beyond inputs and outputs. Memory is measured after timing, in a fresh
process per implementation and size: on CPU from the process's resident
high-water mark (VmHWM, reset through /proc/self/clear_refs, glibc told by
MALLOC_MMAP_THRESHOLD_ to return big freed blocks to the OS); on CUDA from
torch.cuda.max_memory_allocated. The probe warms up on small problems,
measures a first call at the real size (it includes buffers BLAS allocates
once and keeps; in the JSON) and then a second, steady-state call, which
the table shows (torch.compile compiles in its first call, so only its
second is measured). The outputs (loss and gradients, or the three
products for the floor) are subtracted, and the figure is also shown as a
percentage of the outputs' size. By default only sizes with
M·K·N >= 1024·256·256 are probed (smaller ones are noise, shown as "-");
"n/a" means the probe failed or timed out (the reason goes to stderr and
the JSON).

Progress goes to stderr, the tables (markdown) to stdout.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

try:
    import relufrob
except ImportError:  # running from a checkout that is not on sys.path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import relufrob
from relufrob import reference

Size = Tuple[int, int, int]

IMPLS: Dict[str, str] = {  # key (command line, JSON) -> label (table, plot)
    "relufrob": "relufrob",
    "relufrob_dW": "relufrob wrt=W",
    "autograd": "autograd",
    "formulas": "eager formulas",
    "compiled": "torch.compile",
    "floor": "floor: 3 GEMMs",
}
BASELINE = "autograd"   # the "vs autograd" column, and the agreement check
FLOOR = "floor"

DEFAULT_SIZES: List[Size] = [(10, 4, 4), (128, 64, 64), (1024, 256, 256),
                             (4096, 512, 512), (8192, 512, 512)]
QUICK_SIZES: List[Size] = [(10, 4, 4), (64, 32, 32)]
MEMORY_MIN_MKN = 1024 * 256 * 256   # smaller sizes are not probed by default
# The probe's warm-up sizes: a tiny one, and one past the point where kernels
# switch to their blocked, multithreaded paths (thread pools, per-thread heaps).
PROBE_WARMUP_SIZES: Tuple[Size, ...] = ((64, 32, 32), (256, 256, 256))
SEED = 0

MIN_SAMPLE_S = 200e-6     # a sample lasts at least this long (batching)
MAX_BATCH = 1000
WARMUP_CALLS = 3
TIME_BUDGET_S = 0.5       # per implementation and size, when adapting
MIN_REPEAT, MAX_REPEAT = 5, 100
NOISY_SPREAD = 1.5        # q3/q1 of the samples above which stderr warns
QUICK_REPEAT = 5
QUICK_MEMORY_IMPLS = ("relufrob", "autograd")   # --quick probes only these
PROBE_TIMEOUT_S = 300
PROBE_ENV = {
    "MALLOC_MMAP_THRESHOLD_": "65536",      # big freed blocks go back to the OS
    "TORCHINDUCTOR_COMPILE_THREADS": "1",   # no compile-worker pool in the probe
}
TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-3,
             torch.float16: 3e-2, torch.bfloat16: 6e-2}
DTYPES = {"float32": torch.float32, "float64": torch.float64,
          "float16": torch.float16, "bfloat16": torch.bfloat16}
MiB = 1 << 20


# ----------------------------------------------------------------------------
# Small utilities

def log(msg: str) -> None:
    """Progress line on stderr."""
    print(msg, file=sys.stderr, flush=True)


def parse_size(text: str) -> Size:
    """'1024x256x256' -> (1024, 256, 256); argparse type."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) <= 0:
        raise argparse.ArgumentTypeError(
            f"size must be MxKxN with positive integers, e.g. 1024x256x256, got {text!r}")
    return dims  # type: ignore[return-value]


def size_str(size: Size) -> str:
    return "x".join(str(d) for d in size)


def gemm_flops(size: Size) -> int:
    """Flops of the three GEMMs X W, Xᵀ G, G Wᵀ: 3 · 2·M·K·N."""
    M, K, N = size
    return 6 * M * K * N


def make_sync(device: torch.device) -> Callable[[], None]:
    """A function that waits for queued device work (no-op on CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def make_inputs(size: Size, dtype: torch.dtype, device: torch.device):
    """X (M,K), W (K,N), Y (M,N) and the floor's G (M,N), seeded randn."""
    M, K, N = size
    gen = torch.Generator().manual_seed(SEED)
    X, W, Y, G = (torch.randn(shape, generator=gen, dtype=torch.float32)
                  .to(device=device, dtype=dtype)
                  for shape in ((M, K), (K, N), (M, N), (M, N)))
    return X, W, Y, G


def output_tensors(result) -> List[torch.Tensor]:
    """The tensors an implementation returned (Grads fields that are not None)."""
    return [t for t in result if isinstance(t, torch.Tensor)]


def output_bytes(result) -> int:
    return sum(t.numel() * t.element_size() for t in output_tensors(result))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


# ----------------------------------------------------------------------------
# The implementations

def new_compiled_formulas():
    """A fresh torch.compile of the closed-form formulas (static shapes).

    Dynamo's caches are reset first so that one compiled graph per size never
    runs into the recompile limit however many sizes are benchmarked.
    """
    torch._dynamo.reset()
    return torch.compile(reference.formula_grads, dynamic=False)


def make_impl(key: str, X, W, Y, G) -> Callable[[], tuple]:
    """A zero-argument callable running implementation `key` on these inputs."""
    if key == "relufrob":
        return lambda: relufrob.grads(X, W, Y)
    if key == "relufrob_dW":
        return lambda: relufrob.grads(X, W, Y, wrt=("W",))
    if key == "autograd":
        return lambda: reference.autograd_grads(X, W, Y)
    if key == "formulas":
        return lambda: reference.formula_grads(X, W, Y)
    if key == "compiled":
        compiled = new_compiled_formulas()
        return lambda: compiled(X, W, Y)
    if key == "floor":
        Wt, Xt = W.t(), X.t()
        return lambda: (torch.mm(X, W), torch.mm(Xt, G), torch.mm(G, Wt))
    raise ValueError(f"unknown implementation {key!r}; choose from {', '.join(IMPLS)}")


# ----------------------------------------------------------------------------
# Timing

def time_batch(fn: Callable[[], tuple], batch: int, sync: Callable[[], None]) -> float:
    """Seconds per call, averaged over `batch` back-to-back calls."""
    sync()
    t0 = time.perf_counter()
    for _ in range(batch):
        fn()
    sync()
    return (time.perf_counter() - t0) / batch


def warm_up(fn, sync, calls: int = WARMUP_CALLS) -> Tuple[float, tuple]:
    """Run `calls` calls; return the duration of the first (compile included)
    and the results of the last, for the agreement check."""
    sync()
    t0 = time.perf_counter()
    result = fn()
    sync()
    first = time.perf_counter() - t0
    for _ in range(calls - 1):
        del result
        result = fn()
    sync()
    return first, result


def choose_batch(fn, sync) -> Tuple[int, float]:
    """(calls per sample so a sample lasts >= MIN_SAMPLE_S, estimated s/call).

    Like timeit's autorange: grow the batch until it lasts long enough,
    taking the best of three tries at each length against noise (one try
    when a single call is long anyway).
    """
    batch = 1
    while True:
        per_call = time_batch(fn, batch, sync)
        if batch * per_call < 10 * MIN_SAMPLE_S:
            per_call = min(per_call, *(time_batch(fn, batch, sync) for _ in range(2)))
        if batch * per_call >= MIN_SAMPLE_S or batch >= MAX_BATCH:
            break
        batch = min(MAX_BATCH, max(2 * batch, math.ceil(MIN_SAMPLE_S / max(per_call, 1e-9))))
    return batch, per_call


def choose_repeat(sample_seconds: Sequence[float], budget: float) -> int:
    """Rounds so the slowest implementation spends about `budget` seconds."""
    slowest = max(sample_seconds)
    return int(min(MAX_REPEAT, max(MIN_REPEAT, round(budget / max(slowest, 1e-9)))))


def run_rounds(fns: Dict[str, Callable], batches: Dict[str, int], repeat: int,
               sync) -> Dict[str, List[float]]:
    """Interleaved timing: every round times every implementation once.

    The order rotates from round to round so that no implementation always
    follows the same neighbour. The garbage collector is off while timing.
    """
    keys = list(fns)
    samples: Dict[str, List[float]] = {k: [] for k in keys}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(repeat):
            shift = r % len(keys)
            for key in keys[shift:] + keys[:shift]:
                samples[key].append(time_batch(fns[key], batches[key], sync))
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


def summarize_samples(samples: Sequence[float]) -> dict:
    q = statistics.quantiles(samples, n=4) if len(samples) >= 2 else [samples[0]] * 3
    return {"median_s": statistics.median(samples), "min_s": min(samples),
            "q1_s": q[0], "q3_s": q[2], "spread": q[2] / q[0] if q[0] > 0 else None,
            "samples_s": list(samples)}


def warn_if_noisy(size: Size, info: Dict[str, dict]) -> None:
    """Say on stderr when the samples of a size scatter widely (busy machine)."""
    noisy = [f"{IMPLS[k]} q3/q1 {f['spread']:.2f}" for k, f in info.items()
             if len(f.get("samples_s", ())) >= 8 and f["spread"] and f["spread"] > NOISY_SPREAD]
    if noisy:
        log(f"  ! noisy timings at {size_str(size)} ({', '.join(noisy)}): is the machine "
            f"busy? Medians are robust to some of it; --threads 1 or more --repeat help")


# ----------------------------------------------------------------------------
# Agreement check (a benchmark of wrong answers is worthless)

def max_relative_error(got, want) -> float:
    """Largest max|got - want| / max|want| over the fields both computed."""
    worst = 0.0
    for g, w in zip(got, want):
        if g is None or w is None:
            continue
        g, w = g.detach().double().cpu(), w.detach().double().cpu()
        scale = max(w.abs().max().item() if w.numel() else 0.0, 1e-30)
        err = (g - w).abs().max().item() if w.numel() else 0.0
        worst = max(worst, err / scale)
    return worst


def check_against(key: str, result, want, dtype) -> str:
    if key == FLOOR or want is None:
        return "skipped"
    err = max_relative_error(result, want)
    if err <= TOLERANCE.get(dtype, 1e-3) and math.isfinite(err):
        return "ok"
    return f"MISMATCH: max relative error {err:.3g} against {BASELINE}"


# ----------------------------------------------------------------------------
# One size

def prepare_impls(keys, X, W, Y, G, sync, dtype) -> Tuple[Dict[str, Callable], Dict[str, dict]]:
    """Build, warm up and check every implementation; drop those that fail."""
    fns: Dict[str, Callable] = {}
    info: Dict[str, dict] = {}
    want = None
    ordered = sorted(keys, key=lambda k: k != BASELINE)   # baseline first
    for key in ordered:
        log(f"  warm-up {IMPLS[key]}")
        try:
            fn = make_impl(key, X, W, Y, G)
            first, result = warm_up(fn, sync)
        except Exception as exc:  # noqa: BLE001 - report and go on without it
            log(f"  ! {IMPLS[key]} failed: {type(exc).__name__}: {exc}")
            info[key] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        if key == BASELINE:
            want = tuple(result)
        check = check_against(key, tuple(result), want, dtype)
        if check.startswith("MISMATCH"):
            log(f"  ! {IMPLS[key]}: {check}")
        info[key] = {"first_call_s": first, "check": check}
        if key == "compiled":
            info[key]["compile_s"] = first
            log(f"    compiled in {first:.1f} s")
        fns[key] = fn
        del result
    return ({k: fns[k] for k in keys if k in fns},   # back in the order asked for
            {k: info[k] for k in keys})


def bench_size(size: Size, keys, args, device, dtype) -> dict:
    """Time all implementations on one size; returns the size's JSON record."""
    log(f"[{size_str(size)}] building inputs")
    torch.manual_seed(SEED)
    X, W, Y, G = make_inputs(size, dtype, device)
    sync = make_sync(device)
    fns, info = prepare_impls(keys, X, W, Y, G, sync, dtype)
    record = {"size": size_str(size), "M": size[0], "K": size[1], "N": size[2],
              "flops": gemm_flops(size), "impls": info}
    if not fns:
        return record
    batches, estimates = {}, {}
    for key, fn in fns.items():
        batches[key], estimates[key] = choose_batch(fn, sync)
    repeat = args.repeat or choose_repeat([batches[k] * estimates[k] for k in fns],
                                          TIME_BUDGET_S)
    log(f"  timing {len(fns)} implementations x {repeat} rounds "
        f"(batches: {', '.join(f'{IMPLS[k]} {b}' for k, b in batches.items())})")
    samples = run_rounds(fns, batches, repeat, sync)
    for key in fns:
        info[key].update(summarize_samples(samples[key]))
        info[key].update({"batch": batches[key], "repeat": repeat})
    warn_if_noisy(size, info)
    add_derived_figures(record)
    del fns, X, W, Y, G
    gc.collect()
    return record


def add_derived_figures(record: dict) -> None:
    """Speedup over autograd, ratio to the floor and GFLOP/s, in place."""
    impls = record["impls"]

    def median(key):
        return impls.get(key, {}).get("median_s")

    base, floor = median(BASELINE), median(FLOOR)
    for key, fig in impls.items():
        t = fig.get("median_s")
        if t is None:
            continue
        fig["speedup_vs_autograd"] = base / t if base else None
        fig["ratio_to_floor"] = t / floor if floor else None
        fig["gflops"] = record["flops"] / t / 1e9


# ----------------------------------------------------------------------------
# Memory: parent side

def probe_sizes(sizes: Sequence[Size], args) -> List[Size]:
    """The sizes whose memory is probed, per --memory (and --quick)."""
    if args.memory == "none":
        return []
    if args.memory == "all":
        return list(sizes)
    if args.quick:   # exercise the probe (QUICK_MEMORY_IMPLS) on the largest size
        return [max(sizes, key=lambda s: s[0] * s[1] * s[2])]
    return [s for s in sizes if s[0] * s[1] * s[2] >= MEMORY_MIN_MKN]


def probe_command(key: str, size: Size, args) -> List[str]:
    cmd = [sys.executable, os.path.abspath(__file__), "--_memory-probe", key,
           size_str(size), "--dtype", args.dtype, "--device", args.device]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    return cmd


def run_memory_probe(key: str, size: Size, args) -> dict:
    """Run one probe in a fresh process; returns the memory record."""
    env = dict(os.environ, **PROBE_ENV)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(probe_command(key, size, args), env=env, capture_output=True,
                              text=True, timeout=args.probe_timeout)
    except subprocess.TimeoutExpired:
        return {"status": "n/a", "reason": f"probe timed out after {args.probe_timeout} s"}
    elapsed = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"status": "n/a", "reason": f"probe exited {proc.returncode}: {tail}"}
    mem = json.loads(lines[-1])
    mem.update(status="ok", probe_wall_s=elapsed)
    mem["extra_mib"] = mem["peak_extra_bytes"] / MiB
    mem["extra_pct_of_outputs"] = (100.0 * mem["peak_extra_bytes"] / mem["output_bytes"]
                                   if mem["output_bytes"] else None)
    return mem


def measure_memory(records: List[dict], sizes: Sequence[Size], args) -> None:
    """Attach a memory record to every (size, implementation), in place.

    Probes run after all timing, `--probe-jobs` at a time; each is its own
    process, so running them side by side does not change what they measure.
    """
    wanted = set(probe_sizes(sizes, args))
    jobs = []
    for size, record in zip(sizes, records):
        for key, fig in record["impls"].items():
            if "error" in fig:
                fig["memory"] = {"status": "n/a", "reason": "implementation failed"}
            elif size not in wanted:
                fig["memory"] = {"status": "-", "reason": "size not probed"}
            elif args.quick and args.memory == "auto" and key not in QUICK_MEMORY_IMPLS:
                fig["memory"] = {"status": "-", "reason": "not probed in --quick"}
            else:
                jobs.append((size, key, fig))
    if not jobs:
        return
    log(f"memory: {len(jobs)} probes, {args.probe_jobs} at a time")

    def one(job):
        size, key, fig = job
        fig["memory"] = run_memory_probe(key, size, args)
        mem = fig["memory"]
        shown = (f"{mem['extra_mib']:.2f} MiB" if mem["status"] == "ok"
                 else f"n/a ({mem['reason']})")
        log(f"  [{size_str(size)}] {IMPLS[key]}: {shown}")

    with ThreadPoolExecutor(max_workers=max(1, args.probe_jobs)) as pool:
        list(pool.map(one, jobs))


# ----------------------------------------------------------------------------
# Memory: the probe process (hidden option --_memory-probe IMPL MxKxN)

def proc_status_bytes(field: str) -> int:
    """A 'kB' field of /proc/self/status (VmRSS, VmHWM), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS; False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class CpuMeter:
    """Peak resident memory of this process during a call (VmHWM)."""

    def __init__(self):
        self.can_reset = reset_peak_rss()

    def start(self) -> None:
        if self.can_reset:
            reset_peak_rss()
        self.before = proc_status_bytes("VmRSS")

    def stop(self) -> dict:
        peak = proc_status_bytes("VmHWM")
        return {"method": "VmHWM - VmRSS" + ("" if self.can_reset else " (VmHWM not reset)"),
                "before_bytes": self.before, "peak_bytes": peak}


class CudaMeter:
    """Peak memory allocated by the caching allocator during a call."""

    can_reset = True

    def __init__(self, device):
        self.device = device

    def start(self) -> None:
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.before = torch.cuda.memory_allocated(self.device)

    def stop(self) -> dict:
        torch.cuda.synchronize(self.device)
        return {"method": "torch.cuda.max_memory_allocated", "before_bytes": self.before,
                "peak_bytes": torch.cuda.max_memory_allocated(self.device)}


def measure_call(fn, meter, sync) -> dict:
    """Peak of one call of `fn` beyond what was resident before and its outputs."""
    gc.collect()
    meter.start()
    result = fn()
    sync()
    mem = meter.stop()
    out = output_bytes(result)
    del result
    mem.update(output_bytes=out, peak_extra_bytes=mem["peak_bytes"] - mem["before_bytes"] - out)
    return mem


def memory_probe_main(key: str, size: Size, dtype, device) -> dict:
    """Peak memory of a call of `key` at `size`, beyond inputs and outputs.

    Libraries and thread pools are first initialised by calls on small
    problems. The first call at the real size is measured (it includes
    buffers that BLAS allocates once for the shape and keeps), then a second
    one, the steady state that the table reports. torch.compile compiles in
    its first call at the real size, so only its second call is measured.
    """
    sync = make_sync(device)
    meter = CudaMeter(device) if device.type == "cuda" else CpuMeter()
    X, W, Y, G = make_inputs(size, dtype, device)
    fn = make_impl(key, X, W, Y, G)
    gc.disable()
    if key == "compiled":
        if not meter.can_reset:
            raise RuntimeError("cannot reset VmHWM, and the compile's peak would be counted")
        fn()   # compiles for this very size; a compile is not the call's memory
        sync()
        first = None
    else:
        for warm_size in PROBE_WARMUP_SIZES:
            make_impl(key, *make_inputs(warm_size, dtype, device))()
            sync()
        first = measure_call(fn, meter, sync)
    # Without a resettable high-water mark only the first call can be measured.
    steady = measure_call(fn, meter, sync) if meter.can_reset or first is None else None
    mem = dict(steady or first)
    mem["measured_call"] = "second" if steady else "first"
    mem["first_call_peak_extra_bytes"] = first["peak_extra_bytes"] if first else None
    return mem


# ----------------------------------------------------------------------------
# Reporting

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
    return (f"torch {meta['torch']} · threads {meta['threads']} · {meta['cpu_model']} · "
            f"{meta['dtype']} · {meta['device']} ({meta['device_name']})")


def render_table(record: dict) -> str:
    """The markdown table of one size."""
    lines = [f"### {record['M']}×{record['K']}×{record['N']} (M×K×N)", "",
             "| impl | median | vs autograd | vs floor | GFLOP/s | extra mem |",
             "|---|---:|---:|---:|---:|---:|"]
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
            f"{'-' if gflops is None else f'{gflops:.3g}'} | {format_memory(fig.get('memory'))} |")
    return "\n".join(lines)


def render_report(meta: dict, records: List[dict]) -> str:
    legend = ("vs autograd: autograd time / this time (higher is faster). "
              "vs floor: this time / three bare GEMMs. GFLOP/s counts 6·M·K·N. "
              "extra mem: peak of a (second, steady-state) call beyond inputs and outputs, "
              "and as % of the outputs' size "
              "(\"-\": not probed, \"n/a\": probe skipped or failed).")
    parts = [header_line(meta), "", legend]
    for record in records:
        parts += ["", render_table(record)]
    return "\n".join(parts)


def write_json(path: str, meta: dict, records: List[dict]) -> None:
    with open(path, "w") as f:
        json.dump({"meta": meta, "results": records}, f, indent=1, allow_nan=False)
        f.write("\n")


def write_plot(path: str, meta: dict, records: List[dict]) -> None:
    """PNG with two log-log panels: time per call and extra memory vs size."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r["M"] * r["K"] * r["N"] for r in records]
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 4.8), sharex=True)
    omitted = False
    for key, label in IMPLS.items():
        t_pts, m_pts = [], []
        for x, r in zip(xs, records):
            fig_k = r["impls"].get(key, {})
            if fig_k.get("median_s"):
                t_pts.append((x, fig_k["median_s"]))
            mem = fig_k.get("memory") or {}
            if mem.get("status") == "ok":
                if mem["peak_extra_bytes"] > 0:
                    m_pts.append((x, mem["extra_mib"]))
                else:
                    omitted = True
        if t_pts:
            ax_t.plot(*zip(*t_pts), marker="o", label=label)
        if m_pts:
            ax_m.plot(*zip(*m_pts), marker="o", label=label)
    for ax in (ax_t, ax_m):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(xs)
        ax.set_xticklabels([r["size"] for r in records], rotation=60, ha="right",
                           rotation_mode="anchor", fontsize="small")
        ax.minorticks_off()
        ax.set_xlabel("size M×K×N")
        ax.grid(True, which="both", alpha=0.3)
    ax_t.set_ylabel("median time per call (s)")
    ax_t.set_title("time per call")
    ax_t.legend(fontsize="small")
    ax_m.set_ylabel("peak beyond inputs and outputs (MiB)")
    ax_m.set_title("extra memory" + (" (values ≤ 0 omitted)" if omitted else ""))
    if ax_m.lines:
        ax_m.legend(fontsize="small")
    else:
        ax_m.text(0.5, 0.5, "no memory probed", ha="center", va="center",
                  transform=ax_m.transAxes)
    fig.suptitle(header_line(meta), fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------
# Command line

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", type=parse_size, metavar="MxKxN",
                   help="sizes to run (default: " + " ".join(map(size_str, DEFAULT_SIZES)) + ")")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:i]")
    p.add_argument("--dtype", default="float32", choices=list(DTYPES))
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (default: torch's default)")
    p.add_argument("--repeat", type=int, default=None,
                   help="timing rounds per size (default: adaptive)")
    p.add_argument("--impls", nargs="+", choices=list(IMPLS), default=list(IMPLS),
                   metavar="IMPL", help="implementations to run, among "
                   + ", ".join(IMPLS) + " (default: all)")
    p.add_argument("--memory", choices=("auto", "all", "none"), default="auto",
                   help=f"which sizes get memory probes: auto = M·K·N >= {MEMORY_MIN_MKN} "
                        "(the largest size with --quick), all, none")
    p.add_argument("--probe-jobs", type=int, default=2,
                   help="memory probes run side by side (default 2)")
    p.add_argument("--probe-timeout", type=float, default=PROBE_TIMEOUT_S,
                   help="seconds before a memory probe is given up as n/a")
    p.add_argument("--json", metavar="PATH", help="write every figure to PATH")
    p.add_argument("--plot", metavar="PATH", help="write a PNG of time and memory vs size")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes and few rounds: a smoke run")
    p.add_argument("--_memory-probe", nargs=2, metavar=("IMPL", "MxKxN"),
                   dest="memory_probe", help=argparse.SUPPRESS)
    return p


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.sizes is None:
        args.sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES
    if args.quick and args.repeat is None:
        args.repeat = QUICK_REPEAT
    try:
        args.torch_device = torch.device(args.device)
    except RuntimeError as exc:
        parser.error(f"--device: {exc}")
    if args.torch_device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    args.torch_dtype = DTYPES[args.dtype]
    args.impls = list(dict.fromkeys(args.impls))   # drop repeats, keep the order
    return args


def collect_meta(args) -> dict:
    device = args.torch_device
    return {
        "torch": torch.__version__,
        "relufrob": getattr(relufrob, "__version__", None),
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpu_model": cpu_model(),
        "device": str(device),
        "device_name": device_name(device),
        "dtype": args.dtype,
        "impls": {k: IMPLS[k] for k in args.impls},
        "sizes": [size_str(s) for s in args.sizes],
        "repeat": args.repeat or "adaptive",
        "memory": args.memory,
        "quick": args.quick,
        "argv": sys.argv[1:],
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def main(argv=None) -> int:
    for stream in (sys.stdout, sys.stderr):   # µ, ×, · on a non-UTF-8 console
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        key, text = args.memory_probe
        mem = memory_probe_main(key, parse_size(text), args.torch_dtype, args.torch_device)
        print(json.dumps(mem))
        return 0
    t_start = time.perf_counter()
    meta = collect_meta(args)
    log(header_line(meta))
    records = [bench_size(size, args.impls, args, args.torch_device, args.torch_dtype)
               for size in args.sizes]
    measure_memory(records, args.sizes, args)
    meta["wall_s"] = time.perf_counter() - t_start
    print(render_report(meta, records), flush=True)
    if args.json:
        write_json(args.json, meta, records)
        log(f"wrote {args.json}")
    if args.plot:
        write_plot(args.plot, meta, records)
        log(f"wrote {args.plot}")
    log(f"done in {meta['wall_s']:.1f} s")
    failed = [f"{IMPLS[k]} at {r['size']}" for r in records for k, f in r["impls"].items()
              if "error" in f or f.get("check", "ok").startswith("MISMATCH")]
    if failed:
        log(f"failed or disagreed with {BASELINE}: {'; '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
