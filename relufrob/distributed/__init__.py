"""relufrob on a problem sharded across processes with torch.distributed.

The loss f = ||act(X W + b) - Y||_F^2 is a sum over the output's elements,
so it splits two ways:

* ``parallel="rows"`` (data parallel): each rank holds some rows of X and Y
  (and of a full-shape bias) and all of W and an (N,) bias. The loss, dW and
  an (N,) bias's db are summed across ranks; dX, dY and a full bias's db
  are the rank's own.
* ``parallel="cols"`` (tensor parallel, as Megatron-LM's vocab-parallel
  cross entropy splits the logits): each rank holds some columns of W, Y and
  the bias, and all of X. The loss and dX are summed across ranks; dW, dY
  and db are the rank's own.

Shards may be uneven, and a rank may hold no rows (rows) or no columns (cols).

Communication per call: one small all_gather of every rank's shard shapes
(so that mismatched shards raise a ValueError on every rank instead of
hanging a collective), then ONE all-reduce of a flat buffer that packs every
summed output. :func:`loss` in cols mode all-reduces only the loss in its
forward, and dX once in its backward.

``register_dtensor_sharding()`` (run on import) teaches DTensor the same two
splits; see relufrob.distributed.dtensor.
"""

from collections.abc import Iterable
from typing import Optional, Union

import torch
from torch import Tensor

from .._types import Grads, GradsWithBias, make_grads, need_flags
from ._agreement import agree_on_shards
from ._autograd import LossPlan, ShardedLoss
from ._collectives import DistributedCallError
from ._compute import compute_and_reduce, require_process_group, sum_scale
from .dtensor import register_dtensor_sharding

__all__ = [
    "grads",
    "loss",
    "register_dtensor_sharding",
    "DistributedCallError",
    "Grads",
    "GradsWithBias",
]


def grads(
    X: Tensor,
    W: Tensor,
    Y: Optional[Tensor],
    *,
    parallel: str = "rows",
    group=None,
    bias: Optional[Tensor] = None,
    activation: Optional[str] = "relu",
    reduction: str = "sum",
    wrt: Optional[Iterable[str]] = None,
) -> Union[Grads, GradsWithBias]:
    """The global loss and gradients of a sharded problem, as relufrob.grads returns them.

    Args:
        X, W, Y, bias: this rank's shards (see the module docstring for which
            are split in each mode); shapes and dtypes as relufrob.grads takes.
        parallel: "rows" or "cols".
        group: the process group (default: the world).
        activation, wrt: as for relufrob.grads.
        reduction: "sum", or "mean", which divides by the GLOBAL element count
            (M * N of the whole problem).

    Returns:
        Grads(loss, dW, dX, dY) or, with a bias, GradsWithBias(..., db): the
        global loss and the summed gradients, the same on every rank, and
        the gradients of this rank's own shards.

    Raises:
        RuntimeError: torch.distributed has no initialised process group.
        DistributedCallError (a RuntimeError): on every rank, when one
            rank's own work raised something other than an argument error
            (the fused op, an allocation, torch.OutOfMemoryError): it names
            the failing ranks and their exceptions' types and messages, and
            on a failing rank its own exception is the cause. Also when a
            collective fails, as when a peer has exited: then within the
            process group's timeout (init_process_group's timeout=).
        ValueError: parallel is not "rows" or "cols", or the ranks' shards
            disagree (K in rows mode, W's shape in rows mode, X's shape or
            W's K in cols mode, Y or the bias given on some ranks only); on
            every rank, naming the argument. A rank whose own arguments fail
            relufrob's checks raises that error, the others a ValueError
            naming it.

    Communication: one small all_gather of every rank's shard shapes and
    flags (so that all ranks raise together instead of a collective
    hanging), then ONE all-reduce of a flat buffer packing the summed
    outputs (rows: loss, dW and an (N,) bias's db; cols: loss and dX).
    Every rank must call it, with the same parallel, reduction and wrt.
    """
    fn = "relufrob.distributed.grads"
    require_process_group(fn, group)
    agreement, need = agree_on_shards(
        fn,
        parallel,
        group,
        X,
        W,
        Y,
        bias,
        reduction,
        activation,
        lambda: need_flags(wrt, Y is not None, bias is not None),
    )
    f, dW, dX, dY, db = compute_and_reduce(
        fn,
        X,
        W,
        Y,
        bias,
        parallel=parallel,
        group=group,
        activation=activation,
        reduction_and_scale=sum_scale(reduction, agreement),
        need=need,
    )
    return make_grads(f, (dW, dX, dY, db), need, bias is not None)


def loss(
    X: Tensor,
    W: Tensor,
    Y: Optional[Tensor],
    *,
    parallel: str = "rows",
    group=None,
    bias: Optional[Tensor] = None,
    activation: Optional[str] = "relu",
    reduction: str = "sum",
) -> Tensor:
    """The global loss of a sharded problem, differentiable, the same on every rank.

    The forward computes the gradients of exactly the inputs that require
    grad in the same fused call; the backward scales them by grad_output.

    * rows: the forward all-reduces the loss and dW (and an (N,) bias's db)
      in one buffer, so after backward W.grad is the whole problem's
      gradient on every rank; X.grad and Y.grad are the local shards'.
    * cols: the forward all-reduces the loss; the backward all-reduces dX
      once (X is replicated, and its gradient sums over the column shards).
      W.grad, Y.grad and bias.grad are the local shards'.

    Every rank must call it, and call backward, alike: with the same
    requires_grad on each argument, and the same use of the loss. Not
    differentiable twice. Arguments and errors as for :func:`grads`, and so
    is the communication (the shape all_gather first), except that cols mode
    all-reduces the loss alone in the forward and dX in the backward.
    """
    fn = "relufrob.distributed.loss"
    require_process_group(fn, group)

    def need_flags():
        grad_on = torch.is_grad_enabled()
        return tuple(grad_on and t is not None and t.requires_grad for t in (W, X, Y, bias))

    agreement, need = agree_on_shards(
        fn, parallel, group, X, W, Y, bias, reduction, activation, need_flags
    )
    plan = LossPlan(fn, parallel, group, activation, sum_scale(reduction, agreement), need)
    return ShardedLoss.apply(X, W, Y, bias, plan)


register_dtensor_sharding()
