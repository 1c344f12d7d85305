"""One rank's share of a sharded relufrob problem: the fused op on the local
shard, then one packed all-reduce of the outputs that are sums over shards.

Which outputs those are follows from how the loss splits. In rows mode every
rank holds some rows of X and Y and all of W, so the loss, dW and an (N,)
bias's db are sums over the ranks; dX, dY and a full bias's db belong to the
rank's own rows. In cols mode every rank holds some columns of W, Y and an
(N,) bias and all of X, so the loss and dX are sums; dW, dY and db belong to
the rank's own columns.
"""

import math
from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor

from ._agreement import Agreement

__all__ = ["all_reduce_packed", "compute_and_reduce", "require_process_group", "sum_scale"]

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


def sum_scale(reduction: str, agreement: Agreement) -> float:
    """The op's scale that makes a local sum a share of the global reduction.

    "mean" must divide by the GLOBAL element count, which the local op does
    not know: each rank sums and scales by 1 / (global M * N). With no
    elements at all the op's own mean divides by 0 (an infinite scale, so the
    loss is NaN as autograd's mean of nothing is), and so does this.
    """
    if reduction == "sum":
        return 1.0
    count = agreement.global_count
    return 1.0 / count if count else math.inf


def is_row_bias(bias: Optional[Tensor], W: Tensor) -> bool:
    """An (N,) bias, added to every row (its db sums over rows)."""
    return bias is not None and bias.dim() == 1 and bias.shape[0] == W.shape[1]


def all_reduce_packed(parts: list[Tensor], group) -> list[Tensor]:
    """Sum `parts` across ranks with ONE all-reduce of one flat buffer.

    Returns new tensors in the parts' shapes and dtypes (views of that buffer,
    which no input shares, or copies where the parts' dtypes differ: in mixed
    precision the float32 loss promotes the buffer, and a bfloat16 gradient
    is summed in float32 and returned in bfloat16).
    """
    flat = torch.cat([p.reshape(-1) for p in parts])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    out, offset = [], 0
    for p in parts:
        out.append(flat[offset : offset + p.numel()].view(p.shape).to(p.dtype))
        offset += p.numel()
    return out


def compute_and_reduce(
    X: Tensor,
    W: Tensor,
    Y: Optional[Tensor],
    bias: Optional[Tensor],
    *,
    parallel: str,
    group,
    activation: Optional[str],
    scale: float,
    need: tuple[bool, bool, bool, bool],
    reduce_dX: bool = True,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(loss, dW, dX, dY, db) of the whole problem as this rank sees it.

    The op runs once on the local shard, then the outputs that are sums over
    shards are all-reduced together in one buffer. Gradients not in `need`
    (need_dW, need_dX, need_dY, need_db) stay (0,)-shaped placeholders. With
    reduce_dX=False, cols mode leaves dX local (relufrob.distributed.loss
    all-reduces it in the backward instead).
    """
    need_dW, need_dX, need_dY, need_db = need
    out = list(
        _grads_op(
            X,
            W,
            Y,
            bias=bias,
            activation=activation,
            reduction="sum",
            scale=scale,
            need_dW=need_dW,
            need_dX=need_dX,
            need_dY=need_dY,
            need_db=need_db,
        )
    )
    LOSS, DW, DX, DB = 0, 1, 2, 4  # positions in the op's result
    summed = [LOSS]
    if parallel == "rows":
        summed += [DW] if need_dW else []
        summed += [DB] if need_db and is_row_bias(bias, W) else []
    elif need_dX and reduce_dX:
        summed.append(DX)
    for i, total in zip(summed, all_reduce_packed([out[i] for i in summed], group)):
        out[i] = total
    return tuple(out)
