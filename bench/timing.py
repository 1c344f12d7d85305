"""Timing: batched samples, interleaved rounds, medians.

A sample is one call, or for fast calls a batch of calls lasting at least
MIN_SAMPLE_S divided by the batch length. Implementations are timed
interleaved, round after round, so that drift of the machine hits all of
them alike.
"""

import contextlib
import gc
import math
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Callable

import torch

MIN_SAMPLE_S = 200e-6  # a sample lasts at least this long (batching)
MAX_BATCH = 1000
WARMUP_CALLS = 3
TIME_BUDGET_S = 1.0  # per implementation and size, when adapting
# At least 11 rounds: with a handful, one slow moment of a shared machine
# moves the median of a large size by several percent.
MIN_REPEAT, MAX_REPEAT = 11, 100
NOISY_SPREAD = 1.5  # q3/q1 of the samples above which a size counts as noisy


def make_sync(device: torch.device) -> Callable[[], None]:
    """A function that waits for queued device work (no-op on CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def time_batch(fn: Callable[[], tuple], batch: int, sync: Callable[[], None]) -> float:
    """Seconds per call, averaged over `batch` back-to-back calls."""
    sync()
    t0 = time.perf_counter()
    for _ in range(batch):
        fn()
    sync()
    return (time.perf_counter() - t0) / batch


def warm_up(fn, sync, calls: int = WARMUP_CALLS) -> tuple[float, tuple]:
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


def choose_batch(fn, sync) -> tuple[int, float]:
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


def choose_repeat(sample_seconds: Sequence[float], budget: float = TIME_BUDGET_S) -> int:
    """Rounds so the slowest implementation spends about `budget` seconds."""
    slowest = max(sample_seconds)
    return int(min(MAX_REPEAT, max(MIN_REPEAT, round(budget / max(slowest, 1e-9)))))


def run_rounds(
    fns: dict[str, Callable], batches: dict[str, int], repeat: int, sync
) -> dict[str, list[float]]:
    """Interleaved timing: every round times every implementation once.

    Each round runs them in a new order (a fixed-seed shuffle, the same in
    every run), so that no implementation always follows the same
    neighbour: a rotation of one order would keep every predecessor, and the
    implementation after the brgemm-tile floor was measured 5-8% slower
    (Xeon, 1024×256×256) whichever it was. The garbage collector is off
    while timing.
    """
    keys = list(fns)
    samples: dict[str, list[float]] = {k: [] for k in keys}
    order = random.Random(0)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeat):
            for key in order.sample(keys, len(keys)):
                samples[key].append(time_batch(fns[key], batches[key], sync))
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


def summarize_samples(samples: Sequence[float]) -> dict:
    q = statistics.quantiles(samples, n=4) if len(samples) >= 2 else [samples[0]] * 3
    return {
        "median_s": statistics.median(samples),
        "min_s": min(samples),
        "q1_s": q[0],
        "q3_s": q[2],
        "spread": q[2] / q[0] if q[0] > 0 else None,
        "samples_s": list(samples),
    }


def is_noisy(figures: dict) -> bool:
    """Whether one implementation's samples scatter widely (a busy machine)."""
    spread = figures.get("spread")
    return len(figures.get("samples_s", ())) >= 8 and bool(spread) and spread > NOISY_SPREAD


# A competing load for --busy: a process that spins on one core. It stops by
# itself after SPIN_LIMIT_S, or as soon as its parent is gone, so that no
# spinner can outlive the benchmark even if the benchmark is killed.
SPIN_LIMIT_S = 3600
SPIN_START_S = 0.3  # time for the spinners to start before timing resumes
_SPIN_CODE = (
    "import os, time\n"
    "end = time.monotonic() + {limit}\n"
    "while os.getppid() == {parent} and time.monotonic() < end:\n"
    "    pass\n"
)


@contextlib.contextmanager
def busy_processes(count: int) -> Iterator[None]:
    """`count` processes spinning on the CPU for the duration of the block."""
    code = _SPIN_CODE.format(limit=SPIN_LIMIT_S, parent=os.getpid())
    procs = []
    try:
        for _ in range(count):
            procs.append(subprocess.Popen([sys.executable, "-c", code]))
        time.sleep(SPIN_START_S if procs else 0)
        yield
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
