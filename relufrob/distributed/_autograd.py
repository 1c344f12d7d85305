"""The differentiable sharded loss: an autograd.Function around one fused call.

Its own Function, not torch.distributed.nn.functional.all_reduce: that is
deprecated in torch 2.14, and its backward all-reduces the gradient again,
which multiplies a replicated loss's gradient by the world size.

Forward: the fused op computes the loss and the gradients of exactly the
inputs that require grad, once. In rows mode the loss, dW (and an (N,)
bias's db) are all-reduced together, in one buffer, so W.grad is the whole
problem's gradient on every rank. In cols mode only the loss is all-reduced
in the forward; dX, a sum over the column shards, is all-reduced once in the
backward, where it is needed (as Megatron-LM's tensor-parallel layers do).
Backward: the saved gradients times grad_output. Every rank gets the same
global loss, so every rank's grad_output is taken to be the same, as it is
when each rank calls backward on the same expression of it.
"""

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch.autograd.function import once_differentiable

from ._compute import all_reduce_flagged, compute_and_reduce, packed_dtype

__all__ = ["ShardedLoss", "LossPlan"]


@dataclass(frozen=True)
class LossPlan:
    """The non-tensor arguments of one call."""

    fn: str  # the caller, for messages
    parallel: str
    group: Any
    activation: Optional[str]
    reduction_and_scale: tuple[str, float]  # _compute.sum_scale's, for the op
    need: tuple[bool, bool, bool, bool]  # need_dW, need_dX, need_dY, need_db


class ShardedLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, X, W, Y, bias, plan: LossPlan):
        loss, dW, dX, dY, db = compute_and_reduce(
            plan.fn,
            X,
            W,
            Y,
            bias,
            parallel=plan.parallel,
            group=plan.group,
            activation=plan.activation,
            reduction_and_scale=plan.reduction_and_scale,
            need=plan.need,
            reduce_dX=False,
        )
        ctx.plan = plan
        ctx.packed_dtype = packed_dtype(X, Y, bias)
        ctx.save_for_backward(dW, dX, dY, db)
        # A copy: the all-reduced loss is a view of a buffer that also holds dW.
        return loss.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        plan: LossPlan = ctx.plan
        need_dW, need_dX, need_dY, need_db = plan.need
        dW, dX, dY, db = ctx.saved_tensors
        if need_dX and plan.parallel == "cols":
            # Flagged, as the forward's all-reduce is: a rank whose product
            # fails still joins, and every rank raises.
            (summed,) = all_reduce_flagged(
                f"{plan.fn} (backward)",
                plan.group,
                lambda: [grad_output * dX],
                [dX.numel()],
                ctx.packed_dtype,
                dX.device,
                "computing its dX",
            )
            grad_X = summed.view(dX.shape).to(torch.promote_types(dX.dtype, grad_output.dtype))
        else:
            grad_X = grad_output * dX if need_dX else None
        return (
            grad_X,
            grad_output * dW if need_dW else None,
            grad_output * dY if need_dY else None,
            grad_output * db if need_db else None,
            None,
        )
