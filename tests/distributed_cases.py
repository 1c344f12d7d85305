"""The cases of tests/test_distributed.py, run inside spawned gloo ranks.

Spawning a process group costs seconds, so each world size spawns once and
every rank runs every case in CASES in the same order (the collectives of
one case must meet those of the same case on the other ranks). A case
returns normally or raises; the rank records the outcome and goes on.

Every case draws the whole problem from the same seed on every rank, runs
single-process relufrob on it as the expected result, and compares the
rank's sharded result with its part of that. Integer-valued float64 data
makes every sum exact, so those comparisons are bitwise (torch.equal);
float32 data is compared with assert_close's defaults.
"""

import datetime
import importlib
import math
import os
import traceback
from typing import Callable, Optional

import torch
import torch.distributed as dist

import relufrob
import relufrob.distributed as rd
from relufrob.testing.tolerance import parity_tolerance

CASES: dict[str, Callable] = {}

# Problem sizes of the two CPU kernel paths: the direct loops (K, N <= 256
# and few multiply-adds), and the blocked kernel (K = 300 exceeds 256). The
# direct size has M * N = 64, a power of two, so that "mean" scales exactly
# and stays bitwise.
DIRECT = (16, 4, 4)
BLOCKED = (600, 300, 200)


def case(fn: Callable) -> Callable:
    CASES[fn.__name__] = fn
    return fn


# --------------------------------------------------------------------------
# Problems, shards and comparisons
# --------------------------------------------------------------------------


def problem(M, K, N, *, exact: bool, seed=0, bias=None, target=True):
    """(X, W, Y, b) of the whole problem, the same on every rank.

    M: the row count, or a tuple of leading dimensions (X is then (*M, K)).
    exact: integers in -2..2 as float64 (every sum exact); else randn float32.
    bias: None, "row" ((N,)) or "full" (the output's shape).
    """
    g = torch.Generator().manual_seed(seed)
    lead = (M,) if isinstance(M, int) else tuple(M)

    def draw(*shape):
        if exact:
            return torch.randint(-2, 3, shape, generator=g).to(torch.float64)
        return torch.randn(shape, generator=g)

    X, W = draw(*lead, K), draw(K, N)
    Y = draw(*lead, N) if target else None
    b = {None: None, "row": lambda: draw(N), "full": lambda: draw(*lead, N)}[bias]
    return X, W, Y, (b() if b else None)


def bounds(n: int, world: int, kind: str) -> list[int]:
    """Shard boundaries of n rows or columns: rank r holds [bounds[r], bounds[r+1]).

    "uneven": rank r's share grows with r (1 : 2 : 3 ...). "empty": rank 0
    holds nothing, the others share n unevenly.
    """
    holders = world if kind == "uneven" else world - 1
    total = holders * (holders + 1) // 2
    cuts = [n * (c * (c + 1) // 2) // total for c in range(holders + 1)]
    return cuts if kind == "uneven" else [0, *cuts]


def my_slice(n, ctx, kind) -> slice:
    b = bounds(n, ctx.world, kind)
    return slice(b[ctx.rank], b[ctx.rank + 1])


def check(name: str, got, expected, exact: bool, mkn=None) -> None:
    """Bitwise when `exact`; else assert_close, loosened for long float32 sums.

    A summed gradient (dW in rows mode, dX in cols mode) adds the ranks'
    partial sums, each accumulated over its own rows or columns, while the
    single-process kernel accumulates all of them in its own block order:
    the same sum in another order, off by about eps * sqrt(L) * max|entry|
    (measured 1.2e-3 on dW at 600x300x200, over the default atol 1e-5).
    relufrob.testing.tolerance.parity_tolerance is that allowance, given the GLOBAL
    problem's (M, K, N) (`mkn`); it leaves the loss at the defaults.
    """
    if expected is None:
        assert got is None, f"{name}: expected None, got {type(got)}"
        return
    assert got is not None, f"{name}: expected a tensor, got None"
    assert got.shape == expected.shape, f"{name}: shape {tuple(got.shape)} != {expected.shape}"
    assert got.dtype == expected.dtype, f"{name}: dtype {got.dtype} != {expected.dtype}"
    if exact:
        assert torch.equal(got, expected), f"{name}: differs bitwise from single-process"
    else:
        rtol, atol = parity_tolerance(name.split()[0], expected, mkn)
        torch.testing.assert_close(
            got, expected, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}"
        )


def check_grads(got, expected: dict, exact: bool, mkn) -> None:
    assert type(got) is (relufrob.GradsWithBias if "db" in expected else relufrob.Grads)
    for name, value in expected.items():
        check(name, getattr(got, name), value, exact, mkn)


def expected_shards(full, parallel, rows_or_cols: slice, bias) -> dict:
    """The rank's part of single-process results `full`: summed outputs whole,
    the others sliced to the rank's shard."""
    s = rows_or_cols
    out = {"loss": full.loss}
    if parallel == "rows":
        out.update(dW=full.dW, dX=_sl(full.dX, s, 0), dY=_sl(full.dY, s, 0))
        if bias is not None:
            out["db"] = full.db if bias.dim() == 1 else _sl(full.db, s, 0)
    else:
        dY = None if full.dY is None else _sl(full.dY, s, full.dY.dim() - 1)
        out.update(dW=_sl(full.dW, s, 1), dX=full.dX, dY=dY)
        if bias is not None:
            out["db"] = _sl(full.db, s, bias.dim() - 1)
    return out


def _sl(t: Optional[torch.Tensor], s: slice, dim: int):
    return None if t is None else t.narrow(dim, s.start, s.stop - s.start)


def shard_inputs(X, W, Y, b, parallel, s: slice):
    """This rank's (X, W, Y, b), as copies (the whole tensors stay intact)."""
    if parallel == "rows":
        row_bias = b is not None and b.dim() == 1
        return (
            X[s].clone(),
            W.clone(),
            None if Y is None else Y[s].clone(),
            None if b is None else (b.clone() if row_bias else b[s].clone()),
        )
    return (
        X.clone(),
        W[:, s].clone(),
        None if Y is None else Y[..., s].clone(),
        None if b is None else b[..., s].clone(),
    )


def run_sharded_grads(ctx, size, parallel, *, exact, split, reduction="sum", **kw):
    bias_kind, target, wrt = kw.pop("bias", None), kw.pop("target", True), kw.pop("wrt", None)
    activation = kw.pop("activation", "relu")
    assert not kw, kw
    lead, K, N = size  # lead: M, or X's leading dimensions (rows mode splits the first)
    X, W, Y, b = problem(lead, K, N, exact=exact, bias=bias_kind, target=target)
    general = {"bias": b, "activation": activation, "reduction": reduction, "wrt": wrt}
    full = relufrob.grads(X, W, Y, **general)
    s = my_slice(X.shape[0] if parallel == "rows" else N, ctx, split)
    size = (math.prod(X.shape[:-1]), K, N)  # the global (M, K, N), for the tolerance
    mine = shard_inputs(X, W, Y, b, parallel, s)
    copies = [None if t is None else t.clone() for t in mine]
    got = rd.grads(*mine[:3], parallel=parallel, **{**general, "bias": mine[3]})
    check_grads(got, expected_shards(full, parallel, s, mine[3]), exact, size)
    for t, before in zip(mine, copies):  # inputs are never modified
        assert t is None or torch.equal(t, before), "an input was modified"
    for out in got:  # ... and no output shares memory with one
        for t in mine:
            assert out is None or t is None or not _shares_memory(out, t), "output aliases input"


def _shares_memory(a, b) -> bool:
    if a.numel() == 0 or b.numel() == 0:
        return False
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def raises(exc_type, *needles, fn):
    """Assert fn() raises exc_type with every needle in its message."""
    try:
        fn()
    except exc_type as e:
        text = str(e)
        missing = [n for n in needles if n not in text]
        assert not missing, f"message {text!r} lacks {missing}"
        return text
    raise AssertionError(f"expected {exc_type.__name__}, nothing raised")


CASE_MODULES = (
    "distributed_grads_cases",
    "distributed_error_cases",
    "distributed_dtensor_cases",
    "distributed_fault_cases",
)


def import_case_modules() -> None:
    """Every module of cases, in one fixed order: each rank runs CASES in
    its insertion order, and the collectives of one case must meet those of
    the same case on the other ranks."""
    for name in CASE_MODULES:
        importlib.import_module(name)


# --------------------------------------------------------------------------
# The rank's main loop
# --------------------------------------------------------------------------


class Context:
    def __init__(self, rank: int, world: int):
        self.rank, self.world, self.mesh = rank, world, None
        self.case = None  # the running case's name
        self.timings: dict = {}  # case -> seconds each coordinated failure took


def run_rank(rank: int, world: int, rendezvous: str, results_dir: str) -> None:
    """torch.multiprocessing.spawn's target: every case, outcomes to a file."""
    import json

    import_case_modules()

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{rendezvous}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )
    ctx = Context(rank, world)
    outcomes = {}
    for name, fn in CASES.items():
        ctx.case = name
        try:
            fn(ctx)
            outcomes[name] = None
        except Exception:
            outcomes[name] = traceback.format_exc()
    with open(f"{results_dir}/rank{rank}.json", "w") as f:
        json.dump(outcomes, f)
    with open(f"{results_dir}/rank{rank}.timings.json", "w") as f:
        json.dump(ctx.timings, f)
    dist.barrier()
    dist.destroy_process_group()
    # Skip the interpreter's teardown: there torch's gloo/c10d background
    # threads have aborted a rank ("terminate called without an active
    # exception", once in a CI rehearsal on 2 cores) after every case had passed
    # and its outcome was on disk. Nothing of relufrob's runs at that point.
    os._exit(0)
