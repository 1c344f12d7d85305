"""The machine's GEMM peak, for the "% of GEMM peak" column.

One large square GEMM, timed with every GEMM the floors use (torch.mm, and
brgemm tiles where they run); the peak is the best rate any of them reaches,
or any floor reaches later in the run (raise_to_floors), whichever is higher.
A fused implementation at 100% would do its three GEMMs at that rate with
nothing else to pay for.
"""

import torch

import relufrob
from bench.impls import FLOORS, IMPLS, applies
from bench.timing import make_sync, time_batch

PEAK_SIZE = 1024  # n of the n×n×n GEMM
QUICK_PEAK_SIZE = 256
PEAK_CUDA_SIZE = 4096
TRIES = 5


def _best_seconds(fn, sync) -> float:
    time_batch(fn, 1, sync)  # warm-up: first-call allocation, kernel selection
    return min(time_batch(fn, 1, sync) for _ in range(TRIES))


def measure_gemm_peak(device: torch.device, dtype: torch.dtype, quick: bool = False) -> dict:
    """{'gflops', 'by', 'rates'}: the best GFLOP/s of an n×n×n GEMM on this device."""
    n = PEAK_CUDA_SIZE if device.type == "cuda" else (QUICK_PEAK_SIZE if quick else PEAK_SIZE)
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=gen).to(device=device, dtype=dtype) for _ in range(2))
    out = torch.empty_like(a)
    gemms = {"torch.mm": lambda: torch.mm(a, b, out=out)}
    if applies("floor_brgemm", device, dtype):
        gemms["brgemm tiles"] = lambda: relufrob._C._brgemm_mm(a, b, out)
    sync = make_sync(device)
    rates = {name: 2 * n**3 / _best_seconds(fn, sync) / 1e9 for name, fn in gemms.items()}
    best = max(rates, key=rates.get)
    return {"gflops": rates[best], "by": f"{best}, {n}×{n}×{n}", "rates": rates}


def raise_to_floors(peak: dict, records: list[dict]) -> dict:
    """The peak, raised to the best rate a floor reached in the run: one
    probe of a few calls can land in a slow moment of the machine, and no
    GEMM measured here should come out above 100% of the peak."""
    best = dict(peak)
    for record in records:
        for key in FLOORS:
            rate = record["impls"].get(key, {}).get("gflops")
            if rate and rate > best["gflops"]:
                best.update(gflops=rate, by=f"{IMPLS[key]} at {record['size']}")
    return best
