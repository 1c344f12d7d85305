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
import torch.distributed as dist
from torch.autograd.function import once_differentiable

from ._compute import compute_and_reduce

__all__ = ["ShardedLoss", "LossPlan"]


@dataclass(frozen=True)
class LossPlan:
    """The non-tensor arguments of one call."""

    parallel: str
    group: Any
    activation: Optional[str]
    scale: float
    need: tuple[bool, bool, bool, bool]  # need_dW, need_dX, need_dY, need_db


class ShardedLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, X, W, Y, bias, plan: LossPlan):
        loss, dW, dX, dY, db = compute_and_reduce(
            X,
            W,
            Y,
            bias,
            parallel=plan.parallel,
            group=plan.group,
            activation=plan.activation,
            scale=plan.scale,
            need=plan.need,
            reduce_dX=False,
        )
        ctx.plan = plan
        ctx.save_for_backward(dW, dX, dY, db)
        # A copy: the all-reduced loss is a view of a buffer that also holds dW.
        return loss.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        plan: LossPlan = ctx.plan
        need_dW, need_dX, need_dY, need_db = plan.need
        dW, dX, dY, db = ctx.saved_tensors
        grad_X = grad_output * dX if need_dX else None
        if grad_X is not None and plan.parallel == "cols":
            dist.all_reduce(grad_X, op=dist.ReduceOp.SUM, group=plan.group)
        return (
            grad_X,
            grad_output * dW if need_dW else None,
            grad_output * dY if need_dY else None,
            grad_output * db if need_db else None,
            None,
        )
