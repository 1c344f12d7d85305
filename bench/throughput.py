#!/usr/bin/env python
"""Throughput and memory of relufrob against its references.

f = ||relu(X W) - Y||_F^2 with its gradients dW, dX, dY, computed by each
implementation of bench/impls.py: relufrob (all gradients, and dW only),
autograd, the eager closed-form formulas, torch.compile of those, and the
floors of three bare GEMMs (torch.mm, and brgemm tiles on CPU float32).

Usage:
  python bench/throughput.py                          # default sizes, CPU, float32
  python bench/throughput.py --sizes 10x4x4 1024x256x256
  python bench/throughput.py --device cuda --dtype bfloat16
  python bench/throughput.py --threads 1 --json out.json --plot out.png
  python bench/throughput.py --quick                  # tiny smoke run
  python bench/throughput.py --busy 1                 # also time under a competing load
  make bench BENCH_ARGS="--sizes 4096x512x512"

Method. For each size the inputs are built once (fixed seed, randn), every
implementation is warmed up (torch.compile compiles for that size first, and
its compile time is recorded), then the implementations are timed
interleaved, round after round in one process, so that drift of the machine
hits all of them alike (bench/timing.py). A sample is one call, or for fast
calls a batch of calls lasting at least ~200 µs divided by the batch length;
the table shows the median sample. The number of rounds adapts to the size
(about a second per implementation and size, and at least 11 rounds) unless
--repeat fixes it.
Each implementation's results are checked against autograd's before timing;
a mismatch is reported on stderr and in the JSON.

The header names the CPU capability torch runs at (torch.backends.cpu.
get_cpu_capability(), which ATEN_CPU_CAPABILITY forces) and the kernels and
GEMM backend relufrob chose for it.

Columns: median time per call; speedup over autograd (autograd time / this
time); ratio to the floor (this time / the faster floor's time); GFLOP/s
counting the three GEMMs, 6·M·K·N flops, for every implementation; that rate
as a share of the machine's GEMM peak (bench/peak.py: the best rate of one
large GEMM); and the peak memory beyond inputs and outputs. Memory is
measured after timing, in a fresh process per implementation and size
(bench/memory.py): first a call at the real size (it includes buffers BLAS
allocates once and keeps; in the JSON), then a second, steady-state call,
which the table shows. The outputs are subtracted, and the figure is also
shown as a percentage of the outputs' size. By default only sizes with M·K·N
>= 1024·256·256 are probed (smaller ones are noise, shown as "-"); "n/a"
means the probe failed or timed out (the reason goes to stderr and the
JSON).

With --busy N, each size is timed twice: on the quiet machine, then again
while N processes spin on the CPU (bench/timing.py), with the same batches
and rounds; the extra column is the ratio of the two medians.

Progress goes to stderr, the tables (markdown) to stdout.
"""

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # Run as a script: sys.path[0] is bench/, whose module names (timing,
    # memory, ...) must not shadow others'. The checkout, last on the path,
    # provides `bench`, and relufrob where it is not installed.
    sys.path.pop(0)
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import torch

import relufrob
from bench import memory, timing
from bench.impls import (
    BASELINE,
    IMPLS,
    PER_SAMPLE,
    applies,
    check_against,
    make_impl,
    own_reference,
    size_applies,
)
from bench.peak import measure_gemm_peak, raise_to_floors
from bench.plot import write_plot
from bench.report import (
    add_derived_figures,
    header_line,
    log,
    peak_line,
    render_report,
    write_json,
)
from bench.sizes import DEFAULT_SIZES, QUICK_SIZES, Size, gemm_flops, parse_size, size_str
from relufrob.testing import FLOAT_DTYPES, make_inputs

SEED = 0
QUICK_REPEAT = 5


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
# One size


def prepare_impls(keys, X, W, Y, sync, dtype) -> tuple[dict, dict]:
    """Build, warm up and check every implementation; drop those that fail."""
    fns, info = {}, {}
    want = None
    ordered = sorted(keys, key=lambda k: k != BASELINE)  # baseline first
    for key in ordered:
        log(f"  warm-up {IMPLS[key]}")
        try:
            fn = make_impl(key, X, W, Y)
            first, result = timing.warm_up(fn, sync)
        except Exception as exc:  # report and go on without it
            log(f"  ! {IMPLS[key]} failed: {type(exc).__name__}: {exc}")
            info[key] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        if key == BASELINE:
            want = tuple(result)
        own = own_reference(key, X, W, Y)
        check = check_against(key, tuple(result), want if own is None else own, dtype)
        if check.startswith("MISMATCH"):
            log(f"  ! {IMPLS[key]}: {check}")
        info[key] = {"first_call_s": first, "check": check}
        if key in ("compiled", "compiled_autotune"):
            info[key]["compile_s"] = first
            log(f"    compiled in {first:.1f} s")
        fns[key] = fn
        del result
    return (
        {k: fns[k] for k in keys if k in fns},  # back in the order asked for
        {k: info[k] for k in keys},
    )


def run_groups(fns, batches, repeat, sync) -> dict:
    """timing.run_rounds, the per-sample implementations in rounds of their
    own: each call writes an M×K×N result (256 MiB at 1024×256×256), which
    would evict the caches of whatever runs after it in a shared round."""
    samples = {}
    for group in ([k for k in fns if k not in PER_SAMPLE], [k for k in fns if k in PER_SAMPLE]):
        if group:
            samples.update(timing.run_rounds({k: fns[k] for k in group}, batches, repeat, sync))
    return samples


def bench_size(size: Size, keys, args, device, dtype, peak_gflops=None) -> dict:
    """Time all implementations on one size; returns the size's JSON record."""
    keys = [k for k in keys if size_applies(k, size)]
    log(f"[{size_str(size)}] building inputs")
    torch.manual_seed(SEED)
    X, W, Y = make_inputs(*size, dtype=dtype, device=device, seed=SEED)
    sync = timing.make_sync(device)
    fns, info = prepare_impls(keys, X, W, Y, sync, dtype)
    record = {
        "size": size_str(size),
        "M": size[0],
        "K": size[1],
        "N": size[2],
        "flops": gemm_flops(size),
        "impls": info,
    }
    if not fns:
        return record
    batches, estimates = {}, {}
    for key, fn in fns.items():
        batches[key], estimates[key] = timing.choose_batch(fn, sync)
    repeat = args.repeat or timing.choose_repeat([batches[k] * estimates[k] for k in fns])
    log(
        f"  timing {len(fns)} implementations x {repeat} rounds "
        f"(batches: {', '.join(f'{IMPLS[k]} {b}' for k, b in batches.items())})"
    )
    samples = run_groups(fns, batches, repeat, sync)
    for key in fns:
        info[key].update(timing.summarize_samples(samples[key]))
        info[key].update({"batch": batches[key], "repeat": repeat})
    if args.busy:
        log(f"  timing again with {args.busy} spinning process(es)")
        with timing.busy_processes(args.busy):
            busy_samples = run_groups(fns, batches, repeat, sync)
        for key in fns:
            info[key]["busy"] = timing.summarize_samples(busy_samples[key])
    noisy = [f"{IMPLS[k]} q3/q1 {f['spread']:.2f}" for k, f in info.items() if timing.is_noisy(f)]
    if noisy:
        log(
            f"  ! noisy timings at {size_str(size)} ({', '.join(noisy)}): is the machine "
            f"busy? Medians are robust to some of it; --threads 1 or more --repeat help"
        )
    add_derived_figures(record, peak_gflops)
    del fns, X, W, Y
    gc.collect()
    return record


# ----------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--sizes",
        nargs="+",
        type=parse_size,
        metavar="MxKxN",
        help="sizes to run (default: " + " ".join(map(size_str, DEFAULT_SIZES)) + ")",
    )
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:i]")
    p.add_argument("--dtype", default="float32", choices=list(FLOAT_DTYPES))
    p.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: torch's default)"
    )
    p.add_argument(
        "--repeat", type=int, default=None, help="timing rounds per size (default: adaptive)"
    )
    p.add_argument(
        "--impls",
        nargs="+",
        choices=list(IMPLS),
        default=list(IMPLS),
        metavar="IMPL",
        help="implementations to run, among " + ", ".join(IMPLS) + " (default: all)",
    )
    p.add_argument(
        "--memory",
        choices=("auto", "all", "none"),
        default="auto",
        help=f"which sizes get memory probes: auto = M·K·N >= "
        f"{memory.MEMORY_MIN_MKN} (the largest size with --quick), all, none",
    )
    p.add_argument(
        "--probe-jobs", type=int, default=2, help="memory probes run side by side (default 2)"
    )
    p.add_argument(
        "--probe-timeout",
        type=float,
        default=memory.PROBE_TIMEOUT_S,
        help="seconds before a memory probe is given up as n/a",
    )
    p.add_argument(
        "--busy",
        type=int,
        default=0,
        metavar="N",
        help="also time every size while N processes spin on the CPU, and report the "
        "slowdown (default: 0, quiet only)",
    )
    p.add_argument("--json", metavar="PATH", help="write every figure to PATH")
    p.add_argument("--plot", metavar="PATH", help="write a PNG of time and memory vs size")
    p.add_argument("--quick", action="store_true", help="tiny sizes and few rounds: a smoke run")
    p.add_argument(
        "--_memory-probe",
        nargs=2,
        metavar=("IMPL", "MxKxN"),
        dest="memory_probe",
        help=argparse.SUPPRESS,
    )
    return p


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.busy < 0:
        parser.error("--busy must be at least 0")
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
    args.torch_dtype = FLOAT_DTYPES[args.dtype]
    # Drop repeats (keeping the order) and what cannot run on this device and dtype.
    args.impls = [
        k for k in dict.fromkeys(args.impls) if applies(k, args.torch_device, args.torch_dtype)
    ]
    return args


def collect_meta(args) -> dict:
    device = args.torch_device
    return {
        "torch": torch.__version__,
        "relufrob": relufrob.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "relufrob_cpu_kernels": relufrob.cpu_kernels(),
        "device": str(device),
        "device_name": device_name(device),
        "dtype": args.dtype,
        "impls": {k: IMPLS[k] for k in args.impls},
        "sizes": [size_str(s) for s in args.sizes],
        "repeat": args.repeat or "adaptive",
        "memory": args.memory,
        "quick": args.quick,
        "busy": args.busy,
        "argv": sys.argv[1:],
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def separate_compile_cache() -> None:
    """One torch.compile disk cache per CPU capability: the cache does not
    tell them apart, and a run forced to AVX2 reused kernels tiled for
    AVX-512 and computed NaN (torch 2.14.1). Set unconditionally (a
    directory inherited from a process of another capability would be
    reused); the memory probes inherit it."""
    capability = torch.backends.cpu.get_cpu_capability().lower()
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = f"{tempfile.gettempdir()}/inductor_{capability}"


def main(argv=None) -> int:
    separate_compile_cache()
    for stream in (sys.stdout, sys.stderr):  # µ, ×, · on a non-UTF-8 console
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        key, text = args.memory_probe
        mem = memory.probe(key, parse_size(text), args.torch_dtype, args.torch_device)
        print(json.dumps(mem))
        return 0
    t_start = time.perf_counter()
    meta = collect_meta(args)
    log(header_line(meta))
    meta["gemm_peak"] = measure_gemm_peak(args.torch_device, args.torch_dtype, args.quick)
    log(peak_line(meta))
    peak = meta["gemm_peak"]["gflops"]
    records = [
        bench_size(size, args.impls, args, args.torch_device, args.torch_dtype, peak)
        for size in args.sizes
    ]
    meta["gemm_peak"] = raise_to_floors(meta["gemm_peak"], records)
    for record in records:  # the % peak column against the final peak
        add_derived_figures(record, meta["gemm_peak"]["gflops"])
    memory.measure_memory(records, args.sizes, args)
    meta["wall_s"] = time.perf_counter() - t_start
    print(render_report(meta, records), flush=True)
    if args.json:
        write_json(args.json, meta, records)
        log(f"wrote {args.json}")
    if args.plot:
        write_plot(args.plot, meta, records)
        log(f"wrote {args.plot}")
    log(f"done in {meta['wall_s']:.1f} s")
    failed = [
        f"{IMPLS[k]} at {r['size']}"
        for r in records
        for k, f in r["impls"].items()
        if "error" in f or f.get("check", "ok").startswith("MISMATCH")
    ]
    if failed:
        log(f"failed or disagreed with {BASELINE}: {'; '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
