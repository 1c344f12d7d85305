"""One rank's share of a sharded relufrob problem: the fused op on the local
shard, then one packed all-reduce of the outputs that are sums over shards.

Which outputs those are follows from how the loss splits. In rows mode every
rank holds some rows of X and Y and all of W, so the loss, dW and an (N,)
bias's db are sums over the ranks; dX, dY and a full bias's db belong to the
rank's own rows. In cols mode every rank holds some columns of W, Y and an
(N,) bias and all of X, so the loss and dX are sums; dW, dY and db belong to
the rank's own columns.
"""

from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor

from .._library.checks import target_dtype
from ._agreement import Agreement
from ._collectives import collective, collective_device, raise_shared_failure

__all__ = [
    "all_reduce_flagged",
    "compute_and_reduce",
    "packed_dtype",
    "require_process_group",
    "sum_scale",
]

_grads_op = torch.ops.relufrob.grads.default


def require_process_group(fn: str, group) -> None:
    """Raise unless torch.distributed is initialised and this rank is in `group`."""
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            f"{fn}: no torch.distributed process group is initialised; call "
            "torch.distributed.init_process_group(...) first (torchrun sets up its environment)"
        )
    if dist.get_rank(group) < 0:
        raise ValueError(f"{fn}: group does not contain this rank ({dist.get_rank()})")


def sum_scale(reduction: str, agreement: Agreement) -> tuple[str, float]:
    """The op's (reduction, scale) that make a local sum a share of the global reduction.

    "mean" must divide by the GLOBAL element count, which the local op does
    not know: each rank sums and scales by 1 / (global M * N). With no
    elements at all (then every rank's shard is empty too) the op's own
    mean is asked for, which divides by 0 as autograd's mean of nothing
    does: the loss is NaN.
    """
    if reduction == "sum":
        return "sum", 1.0
    count = agreement.global_count
    return ("sum", 1.0 / count) if count else ("mean", 1.0)


def is_row_bias(bias: Optional[Tensor], W: Tensor) -> bool:
    """An (N,) bias, added to every row (its db sums over rows)."""
    return bias is not None and bias.dim() == 1 and bias.shape[0] == W.shape[1]


def packed_dtype(X: Tensor, Y: Optional[Tensor], bias: Optional[Tensor]) -> torch.dtype:
    """The dtype the summed outputs travel in, known before the op runs (so
    that a rank whose op failed sends a buffer of the same bytes): float64
    when X or the target is float64, else float32. float16/bfloat16 parts
    are so summed in float32 and rounded once, after the sum."""
    wide = torch.float64 in (X.dtype, target_dtype(X, Y, bias))
    return torch.float64 if wide else torch.float32


def pack(parts: list[Tensor], dtype: torch.dtype) -> Tensor:
    """The parts, flattened into one buffer of `dtype`, and a 0 flag after them."""
    flag = torch.zeros(1, dtype=dtype, device=parts[0].device)
    return torch.cat([p.reshape(-1).to(dtype) for p in parts] + [flag])


def all_reduce_flagged(
    fn: str,
    group,
    compute,
    sizes: list[int],
    dtype: torch.dtype,
    device: torch.device,
    stage: str,
) -> list[Tensor]:
    """compute() -> parts, summed across ranks with ONE all-reduce of one flat buffer.

    `sizes` and `dtype` are the parts' element counts and the buffer's
    dtype, the same on every rank. If compute() raises, this rank sends
    zeros with its flag up; every rank then raises the same
    DistributedCallError. Returns flat views of the summed buffer, one
    per part, which no input shares.
    """
    own = None
    try:
        parts = compute()
        flat = pack(parts, dtype)
    except Exception as e:  # the flag tells every rank; raise_shared_failure re-raises it
        own = e
        flat = torch.zeros(sum(sizes) + 1, dtype=dtype, device=device)
        flat[-1] = 1
    collective(
        fn, "the packed all-reduce", lambda: dist.all_reduce(flat, dist.ReduceOp.SUM, group=group)
    )
    if flat[-1].item() != 0:
        raise_shared_failure(fn, group, collective_device(group, None), own, stage)
    out, offset = [], 0
    for n in sizes:
        out.append(flat[offset : offset + n])
        offset += n
    return out


def compute_and_reduce(
    fn: str,
    X: Tensor,
    W: Tensor,
    Y: Optional[Tensor],
    bias: Optional[Tensor],
    *,
    parallel: str,
    group,
    activation: Optional[str],
    reduction_and_scale: tuple[str, float],
    need: tuple[bool, bool, bool, bool],
    reduce_dX: bool = True,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(loss, dW, dX, dY, db) of the whole problem as this rank sees it.

    `reduction_and_scale`: sum_scale's, for the op. The op runs once on the local
    shard, then the outputs that are sums over shards are all-reduced
    together in one buffer. Gradients not in `need`
    (need_dW, need_dX, need_dY, need_db) stay (0,)-shaped placeholders. With
    reduce_dX=False, cols mode leaves dX local (relufrob.distributed.loss
    all-reduces it in the backward instead).
    """
    need_dW, need_dX, need_dY, need_db = need
    LOSS, DW, DX, DB = 0, 1, 2, 4  # positions in the op's result
    summed, sizes = [LOSS], [1]
    if parallel == "rows":
        if need_dW:
            summed, sizes = summed + [DW], sizes + [W.numel()]
        if need_db and is_row_bias(bias, W):
            summed, sizes = summed + [DB], sizes + [W.shape[1]]
    elif need_dX and reduce_dX:
        summed, sizes = summed + [DX], sizes + [X.numel()]
    out: list = []

    def compute():
        out.extend(
            _grads_op(
                X,
                W,
                Y,
                bias=bias,
                activation=activation,
                reduction=reduction_and_scale[0],
                scale=reduction_and_scale[1],
                need_dW=need_dW,
                need_dX=need_dX,
                need_dY=need_dY,
                need_db=need_db,
            )
        )
        return [out[i] for i in summed]

    totals = all_reduce_flagged(
        fn, group, compute, sizes, packed_dtype(X, Y, bias), X.device, "computing its shard"
    )
    for i, total in zip(summed, totals):
        out[i] = total.view(out[i].shape).to(out[i].dtype)
    return tuple(out)
