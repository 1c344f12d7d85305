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
import gc
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


# --------------------------------------------------------------------------
# relufrob.distributed.grads against single-process relufrob.grads
# --------------------------------------------------------------------------


def _grads_cases():
    for parallel in ("rows", "cols"):
        for kernel, size in (("direct", DIRECT), ("blocked", BLOCKED)):
            for split in ("uneven", "empty"):
                for reduction in ("sum", "mean"):
                    for exact in (True, False):
                        if kernel == "blocked" and not exact and split == "empty":
                            continue  # float32 blocked: the uneven split is enough
                        yield parallel, kernel, size, split, reduction, exact


def _make_grads_case(parallel, kernel, size, split, reduction, exact):
    # Blocked "mean": 1 / (M N) is no power of two, so the scaled sums round
    # differently per shard; compared with assert_close, not bitwise.
    bitwise = exact and not (kernel == "blocked" and reduction == "mean")

    def run(ctx):
        run_sharded_grads(
            ctx, size, parallel, exact=bitwise, split=split, reduction=reduction, bias="row"
        )

    dtype = "int-float64" if exact else "float32"
    run.__name__ = f"grads_{parallel}_{kernel}_{split}_{reduction}_{dtype}"
    return case(run)


for _args in _grads_cases():
    _make_grads_case(*_args)


@case
def grads_general_forms(ctx):
    """Full bias, no target, identity activation, wrt subsets, leading dimensions."""
    for parallel in ("rows", "cols"):
        for split in ("uneven", "empty"):
            run_sharded_grads(ctx, DIRECT, parallel, exact=True, split=split, bias="full")
            run_sharded_grads(
                ctx, DIRECT, parallel, exact=True, split=split, target=False, activation=None
            )
            for wrt in ((), ("W",), ("X",), ("Y", "b")):
                run_sharded_grads(
                    ctx, DIRECT, parallel, exact=True, split=split, bias="row", wrt=wrt
                )
            # X (6, 3, K): rows mode splits the first leading dimension.
            for bias in ("row", "full"):
                lead = ((6, 3), *DIRECT[1:])
                run_sharded_grads(ctx, lead, parallel, exact=True, split=split, bias=bias)


@case
def grads_reduce_with_one_all_reduce(ctx):
    """One all_gather (shapes) and one all_reduce (the packed sums) per call;
    loss in cols mode all-reduces dX in its backward instead."""
    X, W, Y, b = problem(*DIRECT, exact=True, bias="row")
    calls = []
    real = {name: getattr(dist, name) for name in ("all_reduce", "all_gather")}

    def counting(name):
        def wrapper(*args, **kwargs):
            calls.append(name)
            return real[name](*args, **kwargs)

        return wrapper

    for name in real:
        setattr(dist, name, counting(name))
    try:
        for parallel in ("rows", "cols"):
            calls.clear()
            rd.grads(X, W, Y, bias=b, parallel=parallel)
            assert calls == ["all_gather", "all_reduce"], (parallel, calls)
            # loss: rows sends loss and dW in the forward, nothing in the
            # backward; cols the loss in the forward and dX in the backward.
            Xg, Wg = X.clone().requires_grad_(), W.clone().requires_grad_()
            calls.clear()
            f = rd.loss(Xg, Wg, Y, bias=b, parallel=parallel)
            assert calls == ["all_gather", "all_reduce"], (parallel, "forward", calls)
            calls.clear()
            f.backward()
            expected = [] if parallel == "rows" else ["all_reduce"]
            assert calls == expected, (parallel, "backward", calls)
    finally:
        for name, fn in real.items():
            setattr(dist, name, fn)


# --------------------------------------------------------------------------
# relufrob.distributed.loss: forward and backward
# --------------------------------------------------------------------------


def _loss_backward(ctx, parallel, size, split, reduction, exact):
    M, K, N = size
    X, W, Y, b = problem(M, K, N, exact=exact, bias="row")
    full = relufrob.grads(X, W, Y, bias=b, reduction=reduction)
    s = my_slice(M if parallel == "rows" else N, ctx, split)
    mine = [t.requires_grad_(True) for t in shard_inputs(X, W, Y, b, parallel, s)]
    f = rd.loss(*mine[:3], bias=mine[3], parallel=parallel, reduction=reduction)
    assert f.requires_grad and f.dim() == 0
    (3.0 * f).backward()  # grad_output 3: the backward must scale by it
    expected = expected_shards(full, parallel, s, mine[3])
    check("loss", f.detach(), expected["loss"], exact, size)
    for name, t in zip(("dX", "dW", "dY", "db"), mine):
        check(f"{name} (.grad)", t.grad, 3.0 * expected[name], exact, size)


@case
def loss_backward(ctx):
    for parallel in ("rows", "cols"):
        for split in ("uneven", "empty"):
            for reduction in ("sum", "mean"):
                _loss_backward(ctx, parallel, DIRECT, split, reduction, exact=True)
        _loss_backward(ctx, parallel, BLOCKED, "uneven", "sum", exact=False)


@case
def loss_backward_only_what_requires_grad(ctx):
    """W alone requires grad (rows), X alone (cols): the rest get no .grad."""
    X, W, Y, _ = problem(*DIRECT, exact=True)
    full = relufrob.grads(X, W, Y)
    for parallel, wanted in (("rows", 1), ("cols", 0)):
        s = my_slice(DIRECT[0] if parallel == "rows" else DIRECT[2], ctx, "uneven")
        mine = list(shard_inputs(X, W, Y, None, parallel, s)[:3])
        mine[wanted].requires_grad_(True)
        rd.loss(*mine, parallel=parallel).backward()
        expected = expected_shards(full, parallel, s, None)
        name = ("dX", "dW")[wanted]
        check(name, mine[wanted].grad, expected[name], exact=True)
        assert all(t.grad is None for i, t in enumerate(mine) if i != wanted)


@case
def loss_without_grad(ctx):
    """no_grad and inference_mode: the global loss, no graph."""
    X, W, Y, _ = problem(*DIRECT, exact=True)
    expected = relufrob.grads(X, W, Y, wrt=()).loss
    for parallel in ("rows", "cols"):
        s = my_slice(DIRECT[0] if parallel == "rows" else DIRECT[2], ctx, "empty")
        Xs, Ws, Ys, _ = shard_inputs(X, W, Y, None, parallel, s)
        Ws.requires_grad_(True)
        for mode in (torch.no_grad, torch.inference_mode):
            with mode():
                f = rd.loss(Xs, Ws, Ys, parallel=parallel)
            assert not f.requires_grad
            check("loss", f, expected, exact=True)


# --------------------------------------------------------------------------
# Errors: raised on every rank, never a hang
# --------------------------------------------------------------------------


@case
def errors_parallel(ctx):
    X, W, Y, _ = problem(*DIRECT, exact=True)
    for api in (rd.grads, rd.loss):
        call = lambda api=api: api(X, W, Y, parallel="x")  # noqa: E731
        raises(ValueError, "parallel", "'rows' or 'cols'", fn=call)
    # Only rank 1 is wrong: it raises the ValueError, the others one naming it.
    bad = "diagonal" if ctx.rank == 1 else "rows"
    needles = ("parallel", "'rows' or 'cols'") if ctx.rank == 1 else ("rank 1", "parallel")
    raises(ValueError, *needles, fn=lambda: rd.grads(X, W, Y, parallel=bad))
    # Every rank valid, but not the same mode.
    mode = "cols" if ctx.rank == 0 else "rows"
    raises(
        ValueError, "parallel", "same on every rank", fn=lambda: rd.grads(X, W, Y, parallel=mode)
    )


@case
def group_argument(ctx):
    """group: a subgroup's collectives stay in it; a rank outside it is told so."""
    X, W, Y, _ = problem(*DIRECT, exact=True)
    only_rank0 = dist.new_group([0])  # a collective of the whole world
    if ctx.rank == 0:  # alone in its group: the whole problem is its shard
        check_grads(
            rd.grads(X, W, Y, group=only_rank0), relufrob.grads(X, W, Y)._asdict(), True, DIRECT
        )
    else:
        raises(
            ValueError, "group", "does not contain", fn=lambda: rd.grads(X, W, Y, group=only_rank0)
        )


@case
def errors_rows_shapes(ctx):
    """K or N differing across ranks in rows mode names X or W; so do Y and bias."""
    M, K, N = DIRECT
    odd = ctx.rank == ctx.world - 1

    def call(X, W, Y, **kw):
        return lambda: rd.grads(X, W, Y, parallel="rows", **kw)

    X, W, Y, b = problem(M, K + odd, N, exact=True, bias="row")
    raises(ValueError, "X's K", "same on every rank", fn=call(X, W, Y))
    X, W, Y, b = problem(M, K, N + odd, exact=True, bias="row")
    raises(ValueError, "W's shape", "same on every rank", fn=call(X, W, Y))
    X, W, Y, b = problem(M, K, N, exact=True, bias="row")
    raises(ValueError, "Y", "every rank", fn=call(X, W, None if odd else Y))
    raises(ValueError, "bias", "every rank", fn=call(X, W, Y, bias=None if odd else b))
    full_b = torch.zeros(M, N, dtype=X.dtype)
    raises(ValueError, "bias", "every rank", fn=call(X, W, Y, bias=full_b if odd else b))
    raises(ValueError, "wrt", fn=call(X, W, Y, wrt=("W",) if odd else ("X",)))
    raises(ValueError, "reduction", fn=call(X, W, Y, reduction="mean" if odd else "sum"))


@case
def errors_cols_shapes(ctx):
    """W's K or X's shape differing across ranks in cols mode names W or X."""
    M, K, N = DIRECT
    odd = ctx.rank == ctx.world - 1

    def call(X, W, Y, **kw):
        return lambda: rd.grads(X, W, Y, parallel="cols", **kw)

    X, W, Y, _ = problem(M + odd, K, N, exact=True)
    raises(ValueError, "X's shape", "same on every rank", fn=call(X, W, Y))
    X, W, Y, _ = problem(M, K + odd, N, exact=True)
    raises(ValueError, "W's K", "same on every rank", fn=call(X, W, Y))
    X, W, Y, _ = problem((2, M // 2) if odd else (M,), K, N, exact=True)  # same M, other dims
    raises(ValueError, "X's shape", "same on every rank", fn=call(X, W, Y))
    # The loss agrees on shapes just as grads does.
    X, W, Y, _ = problem(M + odd, K, N, exact=True)
    raises(ValueError, "X's shape", fn=lambda: rd.loss(X, W.requires_grad_(), Y, parallel="cols"))


@case
def errors_one_rank_invalid(ctx):
    """An argument only one rank's own checks refuse: that rank raises
    relufrob's error, every other rank a ValueError naming the rank and argument."""
    X, W, Y, _ = problem(*DIRECT, exact=True)
    last = ctx.world - 1
    Yr = Y.float() if ctx.rank == last else Y
    if ctx.rank == last:
        raises(TypeError, "Y", "dtype", fn=lambda: rd.grads(X, W, Yr))
    else:
        raises(ValueError, f"rank {last}", "invalid Y", fn=lambda: rd.grads(X, W, Yr))
    Wr = W[:3] if ctx.rank == last else W
    raises(ValueError, "W", fn=lambda: rd.grads(X, Wr, Y, parallel="cols"))
    wrt = ("Y", "nonsense") if ctx.rank == last else None
    raises(ValueError, "wrt", fn=lambda: rd.grads(X, W, Y, wrt=wrt))


@case
def errors_target_dtype(ctx):
    """Mixed precision whose target dtype differs across ranks (Y float32 on
    one, bfloat16 on another): a ValueError on every rank, not a broken
    all-reduce."""
    X, W, Y, _ = problem(*DIRECT, exact=False)
    Xl, Wl = X.bfloat16(), W.bfloat16()
    Yr = Y.bfloat16() if ctx.rank == ctx.world - 1 else Y
    for parallel in ("rows", "cols"):
        raises(
            ValueError,
            "Y's and bias's dtype",
            "same on every rank",
            fn=lambda parallel=parallel: rd.grads(Xl, Wl, Yr, parallel=parallel),
        )


@case
def mixed_precision_dtypes(ctx):
    """bfloat16 X and W with a float32 Y: each output in the dtype the local op
    gives it (the float32 loss must not promote the packed bfloat16 sums)."""
    X, W, Y, b = problem(*BLOCKED, exact=False, bias="row")
    X, W = X.bfloat16(), W.bfloat16()
    full = relufrob.grads(X, W, Y, bias=b)
    for parallel in ("rows", "cols"):
        s = my_slice(X.shape[0] if parallel == "rows" else W.shape[1], ctx, "uneven")
        mine = shard_inputs(X, W, Y, b, parallel, s)
        got = rd.grads(*mine[:3], bias=mine[3], parallel=parallel)
        for name in got._fields:
            assert getattr(got, name).dtype == getattr(full, name).dtype, (parallel, name)
        # The summed outputs are the whole problem's, to bfloat16's tolerance.
        summed = ("loss", "dW", "db") if parallel == "rows" else ("loss", "dX")
        for name in summed:
            e = getattr(full, name)
            rtol, atol = parity_tolerance(name, e, (X.shape[0], *W.shape), dtype=torch.bfloat16)
            torch.testing.assert_close(getattr(got, name), e, rtol=rtol, atol=atol)


@case
def still_works_after_errors(ctx):
    """After the error cases the group is intact: a normal call succeeds."""
    run_sharded_grads(ctx, DIRECT, "rows", exact=True, split="uneven", bias="row")


# --------------------------------------------------------------------------
# DTensor
# --------------------------------------------------------------------------


def _mesh(ctx):
    from torch.distributed.tensor import init_device_mesh

    if ctx.mesh is None:
        ctx.mesh = init_device_mesh("cpu", (ctx.world,))
    return ctx.mesh


def _dtensor_case(
    ctx, parallel, size, exact, reduction="sum", bias="row", wrt=None, bias_placement=None
):
    from torch.distributed.tensor import Partial, Replicate, Shard, distribute_tensor

    rd.register_dtensor_sharding()
    mesh = _mesh(ctx)
    X, W, Y, b = problem(*size, exact=exact, bias=bias)
    full = relufrob.grads(X, W, Y, bias=b, reduction=reduction, wrt=wrt)
    if parallel == "rows":
        placements = [Shard(0), Replicate(), Shard(0), Replicate() if bias == "row" else Shard(0)]
    else:
        placements = [Replicate(), Shard(1), Shard(1), Shard(0) if bias == "row" else Shard(1)]
    placements[3] = bias_placement or placements[3]
    args = [
        None if t is None else distribute_tensor(t, mesh, [p])
        for t, p in zip((X, W, Y, b), placements)
    ]
    got = relufrob.grads(*args[:3], bias=args[3], reduction=reduction, wrt=wrt)
    summed = {"rows": ("loss", "dW", "db"), "cols": ("loss", "dX")}[parallel]
    if bias == "full" and parallel == "rows":
        summed = ("loss", "dW")
    for name in got._fields:
        value, expected = getattr(got, name), getattr(full, name)
        if expected is None:
            assert value is None, name
            continue
        if reduction == "mean":  # only the replicated rule (see dtensor_rules)
            want = Replicate()
        elif name in summed:
            want = Partial()
        else:
            want = placements[{"dX": 0, "dW": 1, "dY": 2, "db": 3}[name]]
        assert value.placements == (want,), (name, value.placements, want)
        check(name, value.full_tensor(), expected, exact, size)
    with torch.inference_mode():  # relufrob::loss on its own
        f = relufrob.loss(*args[:3], bias=args[3], reduction=reduction)
    check("loss (inference_mode)", f.full_tensor(), full.loss, exact, size)


@case
def dtensor_rows_and_cols(ctx):
    from torch.distributed.tensor import Replicate

    for parallel in ("rows", "cols"):
        for size, exact in ((DIRECT, True), (BLOCKED, False)):
            _dtensor_case(ctx, parallel, size, exact)
        _dtensor_case(ctx, parallel, DIRECT, True, bias="full")
        _dtensor_case(ctx, parallel, DIRECT, True, reduction="mean", bias_placement=Replicate())
        _dtensor_case(ctx, parallel, DIRECT, True, reduction="mean", bias=None)
        # A different wrt after the default: the placements follow the flags
        # (a cached propagation would report dX's shape for its placeholder).
        _dtensor_case(ctx, parallel, DIRECT, True, wrt=("W",))
        _dtensor_case(ctx, parallel, DIRECT, True, wrt=("X", "b"))


@case
def dtensor_loss_backward(ctx):
    """relufrob.loss on DTensors that require grad: its C++ autograd calls
    relufrob::grads under the rule; the gradient of the summed (Partial)
    loss is Partial too, and sums to the single-process gradient."""
    from torch.distributed.tensor import Partial, Replicate, Shard, distribute_tensor

    mesh = _mesh(ctx)
    X, W, Y, _ = problem(*BLOCKED, exact=False)
    full = relufrob.grads(X, W, Y)
    for parallel, wanted in (("rows", "W"), ("cols", "X")):
        placed = (
            (Shard(0), Replicate(), Shard(0))
            if parallel == "rows"
            else (
                Replicate(),
                Shard(1),
                Shard(1),
            )
        )
        args = [distribute_tensor(t, mesh, [p]) for t, p in zip((X, W, Y), placed)]
        leaf = args["XW".index(wanted)].requires_grad_(True)
        f = relufrob.loss(*args)
        assert f.placements == (Partial(),), f.placements
        f.full_tensor().backward()
        assert leaf.grad.placements == (Partial(),), leaf.grad.placements
        check(f"d{wanted}", leaf.grad.full_tensor(), getattr(full, f"d{wanted}"), False, BLOCKED)


@case
def dtensor_bias_placed_otherwise(ctx):
    """A bias placed as no sharded rule for this call takes it is redistributed.

    An (N,) bias Shard(0) beside row-sharded X and Y selects the cols rule;
    under "mean" only the replicated rule exists. Either way DTensor must
    redistribute the bias (a positional argument of the op) with X, W and Y,
    not run the op on its local piece.
    """
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    mesh = _mesh(ctx)
    X, W, Y, b = problem(*DIRECT, exact=True, bias="row")
    placed = (Shard(0), Replicate(), Shard(0), Shard(0))
    args = [distribute_tensor(t, mesh, [p]) for t, p in zip((X, W, Y, b), placed)]
    for reduction in ("sum", "mean"):
        full = relufrob.grads(X, W, Y, bias=b, reduction=reduction)
        got = relufrob.grads(*args[:3], bias=args[3], reduction=reduction)
        for name in got._fields:
            check(name, getattr(got, name).full_tensor(), getattr(full, name), exact=True)
        with torch.inference_mode():
            f = relufrob.loss(*args[:3], bias=args[3], reduction=reduction)
        check("loss", f.full_tensor(), full.loss, exact=True)


@case
def dtensor_with_an_empty_local_shard(ctx):
    """Fewer rows (cols) than ranks: the last rank's local shard is empty.
    DTensor then picks the replicated rule; the results must stay right."""
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    mesh = _mesh(ctx)
    few = ctx.world - 1
    for parallel, size in (("rows", (few, 4, 4)), ("cols", (16, 4, few))):
        X, W, Y, b = problem(*size, exact=True, bias="row")
        full = relufrob.grads(X, W, Y, bias=b)
        if parallel == "rows":
            placed = (Shard(0), Replicate(), Shard(0), Replicate())
        else:
            placed = (Replicate(), Shard(1), Shard(1), Shard(0))
        args = [distribute_tensor(t, mesh, [p]) for t, p in zip((X, W, Y, b), placed)]
        got = relufrob.grads(*args[:3], bias=args[3])
        for name in got._fields:
            check(name, getattr(got, name).full_tensor(), getattr(full, name), exact=True)


@case
def dtensor_registration_is_idempotent(ctx):
    rd.register_dtensor_sharding()
    rd.register_dtensor_sharding()
    _dtensor_case(ctx, "rows", DIRECT, True)


# --------------------------------------------------------------------------
# DDP and FSDP2: the documented recipe reproduces the single-process mean
# --------------------------------------------------------------------------


class FitModule(torch.nn.Module):
    """The docs' recipe: a weight, and the loss computed inside forward.

    Each rank sums its shard's loss; DDP and FSDP2 average the gradients
    over the world, so the factor world_size / global_count makes the
    averaged gradient the whole problem's mean gradient.
    """

    def __init__(self, W: torch.Tensor, world_size: int, global_count: int):
        super().__init__()
        self.W = torch.nn.Parameter(W.clone())
        self.factor = world_size / global_count

    def forward(self, X, Y):
        return relufrob.loss(X, self.W, Y, reduction="sum") * self.factor

    def mean_loss(self, X, Y):
        """The same loss, in a method (FSDP2: register_fsdp_forward_method)."""
        return relufrob.loss(X, self.W, Y, reduction="sum") * self.factor


def _recipe(ctx, wrap, split, method="forward"):
    """Wrap FitModule, run `method` on this rank's rows, compare W.grad with
    the single-process mean gradient."""
    M, K, N = DIRECT
    X, W, Y, _ = problem(M, K, N, exact=False)
    expected = relufrob.grads(X, W, Y, reduction="mean").dW
    s = my_slice(M, ctx, split)
    model = wrap(FitModule(W, ctx.world, M * N))
    call = model if method == "forward" else getattr(model, method)
    call(X[s], Y[s]).backward()
    grad = getattr(model, "module", model).W.grad  # DDP wraps the module
    if hasattr(grad, "full_tensor"):  # FSDP2 leaves a sharded DTensor gradient
        grad = grad.full_tensor()
    check("dW (W.grad)", grad, expected, False, DIRECT)


@case
def ddp_recipe(ctx):
    from torch.nn.parallel import DistributedDataParallel

    for split in ("uneven", "empty"):
        _recipe(ctx, DistributedDataParallel, split)
    gc.collect()  # a live DDP module at destroy_process_group aborts a rank
    dist.barrier()


@case
def fsdp2_recipe(ctx):
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    def wrap(module):
        return fully_shard(module, mesh=_mesh(ctx))

    def wrap_with_method(module):
        module = wrap(module)
        register_fsdp_forward_method(module, "mean_loss")
        return module

    for split in ("uneven", "empty"):
        _recipe(ctx, wrap, split)
    # The loss in a method other than forward, registered so that FSDP2
    # gathers W around it as it does around forward.
    _recipe(ctx, wrap_with_method, "uneven", method="mean_loss")


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

    import distributed_fault_cases  # noqa: F401  (its cases join CASES)

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
