"""Cases of tests/test_distributed.py: relufrob.distributed.grads and loss
against single-process relufrob, in both modes, on both CPU kernel paths,
with even, uneven and empty shards (helpers in distributed_cases.py)."""

import torch
import torch.distributed as dist
from distributed_cases import (
    BLOCKED,
    DIRECT,
    case,
    check,
    expected_shards,
    my_slice,
    problem,
    run_sharded_grads,
    shard_inputs,
)

import relufrob
import relufrob.distributed as rd

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
