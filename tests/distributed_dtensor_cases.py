"""Cases of tests/test_distributed.py: DTensor's sharding rules for the
relufrob ops, and the documented DDP and FSDP2 recipes, against
single-process relufrob (helpers in distributed_cases.py)."""

import gc

import torch
import torch.distributed as dist
from distributed_cases import (
    BLOCKED,
    DIRECT,
    case,
    check,
    my_slice,
    problem,
)

import relufrob
import relufrob.distributed as rd

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
