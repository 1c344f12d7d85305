"""Peak memory beyond inputs and outputs, measured in a fresh process per probe.

Parent side (:func:`measure_memory`): after all timing, one probe process
per implementation and size, `--probe-jobs` at a time; each is its own
process, so running them side by side does not change what they measure.

Probe side (:func:`probe`, run by ``throughput.py --_memory-probe IMPL
MxKxN``): on CPU from the process's resident high-water mark (VmHWM, reset
through /proc/self/clear_refs, glibc told by MALLOC_MMAP_THRESHOLD_ to return
big freed blocks to the OS); on CUDA from torch.cuda.max_memory_allocated.
"""

import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from bench.impls import FLOORS, IMPLS, make_impl
from bench.report import log
from bench.sizes import Size, macs, size_str
from bench.timing import make_sync
from relufrob.testing import make_inputs

MEMORY_MIN_MKN = 1024 * 256 * 256  # smaller sizes are not probed by default
QUICK_MEMORY_IMPLS = ("relufrob", "autograd")  # --quick probes only these
# The probe's warm-up sizes: a tiny one, and one past the point where kernels
# switch to their blocked, multithreaded paths (thread pools, per-thread heaps).
PROBE_WARMUP_SIZES: tuple[Size, ...] = ((64, 32, 32), (256, 256, 256))
PROBE_TIMEOUT_S = 300
PROBE_ENV = {
    "MALLOC_MMAP_THRESHOLD_": "65536",  # big freed blocks go back to the OS
    "TORCHINDUCTOR_COMPILE_THREADS": "1",  # no compile-worker pool in the probe
}
ENTRY = Path(__file__).with_name("throughput.py")
MiB = 1 << 20


# ----------------------------------------------------------------------------
# Parent side


def probe_sizes(sizes: Sequence[Size], args) -> list[Size]:
    """The sizes whose memory is probed, per --memory (and --quick)."""
    if args.memory == "none":
        return []
    if args.memory == "all":
        return list(sizes)
    if args.quick:  # exercise the probe (QUICK_MEMORY_IMPLS) on the largest size
        return [max(sizes, key=macs)]
    return [s for s in sizes if macs(s) >= MEMORY_MIN_MKN]


def probe_command(key: str, size: Size, args) -> list[str]:
    cmd = [
        sys.executable,
        str(ENTRY),
        "--_memory-probe",
        key,
        size_str(size),
        "--dtype",
        args.dtype,
        "--device",
        args.device,
    ]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    return cmd


def run_probe(key: str, size: Size, args) -> dict:
    """Run one probe in a fresh process; returns the memory record."""
    env = dict(os.environ, **PROBE_ENV)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            probe_command(key, size, args),
            env=env,
            capture_output=True,
            text=True,
            timeout=args.probe_timeout,
        )
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
    mem["extra_pct_of_outputs"] = (
        100.0 * mem["peak_extra_bytes"] / mem["output_bytes"] if mem["output_bytes"] else None
    )
    return mem


def measure_memory(records: list[dict], sizes: Sequence[Size], args) -> None:
    """Attach a memory record to every (size, implementation), in place."""
    wanted = set(probe_sizes(sizes, args))
    jobs = []
    for size, record in zip(sizes, records):
        for key, fig in record["impls"].items():
            if "error" in fig:
                fig["memory"] = {"status": "n/a", "reason": "implementation failed"}
            elif size not in wanted:
                fig["memory"] = {"status": "-", "reason": "size not probed"}
            elif key == "compiled_autotune":
                # Its compile (minutes of GEMM autotuning) would be repeated
                # in every probe process.
                fig["memory"] = {"status": "-", "reason": "not probed (max-autotune compile)"}
            elif args.quick and args.memory == "auto" and key not in QUICK_MEMORY_IMPLS:
                fig["memory"] = {"status": "-", "reason": "not probed in --quick"}
            else:
                jobs.append((size, key, fig))
    if not jobs:
        return
    log(f"memory: {len(jobs)} probes, {args.probe_jobs} at a time")

    def one(job):
        size, key, fig = job
        fig["memory"] = mem = run_probe(key, size, args)
        shown = f"{mem['extra_mib']:.2f} MiB" if mem["status"] == "ok" else f"n/a ({mem['reason']})"
        log(f"  [{size_str(size)}] {IMPLS[key]}: {shown}")

    with ThreadPoolExecutor(max_workers=max(1, args.probe_jobs)) as pool:
        list(pool.map(one, jobs))


# ----------------------------------------------------------------------------
# Probe side


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
        return {
            "method": "VmHWM - VmRSS" + ("" if self.can_reset else " (VmHWM not reset)"),
            "before_bytes": self.before,
            "peak_bytes": peak,
        }


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
        return {
            "method": "torch.cuda.max_memory_allocated",
            "before_bytes": self.before,
            "peak_bytes": torch.cuda.max_memory_allocated(self.device),
        }


def output_bytes(result) -> int:
    """Bytes of the tensors an implementation returned (Grads fields that are not None)."""
    return sum(t.numel() * t.element_size() for t in result if isinstance(t, torch.Tensor))


def measure_call(fn, meter, sync, outputs_preallocated=False) -> dict:
    """Peak of one call of `fn` beyond what was resident before and its outputs.

    Outputs that `fn` writes into preallocated tensors (the floors') were
    resident before the call, so they are not subtracted again.
    """
    gc.collect()
    meter.start()
    result = fn()
    sync()
    mem = meter.stop()
    out = output_bytes(result)
    del result
    new_out = 0 if outputs_preallocated else out
    mem.update(output_bytes=out, peak_extra_bytes=mem["peak_bytes"] - mem["before_bytes"] - new_out)
    return mem


def probe(key: str, size: Size, dtype, device) -> dict:
    """Peak memory of a call of `key` at `size`, beyond inputs and outputs.

    Libraries and thread pools are first initialised by calls on small
    problems. The first call at the real size is measured (it includes
    buffers that BLAS allocates once for the shape and keeps), then a second
    one, the steady state that the table reports. torch.compile compiles in
    its first call at the real size, so only its second call is measured.
    """
    sync = make_sync(device)
    meter = CudaMeter(device) if device.type == "cuda" else CpuMeter()
    fn = make_impl(key, *make_inputs(*size, dtype=dtype, device=device))
    preallocated = key in FLOORS
    gc.disable()
    if key == "compiled":
        if not meter.can_reset:
            raise RuntimeError("cannot reset VmHWM, and the compile's peak would be counted")
        fn()  # compiles for this very size; a compile is not the call's memory
        sync()
        first = None
    else:
        for warm_size in PROBE_WARMUP_SIZES:
            make_impl(key, *make_inputs(*warm_size, dtype=dtype, device=device))()
            sync()
        first = measure_call(fn, meter, sync, preallocated)
    # Without a resettable high-water mark only the first call can be measured.
    steady = (
        measure_call(fn, meter, sync, preallocated) if meter.can_reset or first is None else None
    )
    mem = dict(steady or first)
    mem["measured_call"] = "second" if steady else "first"
    mem["first_call_peak_extra_bytes"] = first["peak_extra_bytes"] if first else None
    return mem
