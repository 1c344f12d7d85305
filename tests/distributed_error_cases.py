"""Cases of tests/test_distributed.py: shards and arguments that disagree
across ranks raise on every rank, never hang (helpers in
distributed_cases.py; failures inside a call: distributed_fault_cases.py)."""

import torch
import torch.distributed as dist
from distributed_cases import (
    BLOCKED,
    DIRECT,
    case,
    check_grads,
    my_slice,
    problem,
    raises,
    run_sharded_grads,
    shard_inputs,
)

import relufrob
import relufrob.distributed as rd
from relufrob.testing.tolerance import parity_tolerance

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
