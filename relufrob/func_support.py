"""relufrob.loss under torch.func (grad, vjp, jacrev, vmap).

The op's autograd is a C++ torch::autograd::Function, which functorch
transforms cannot run. Under a transform, relufrob.loss goes through the
Python Function below instead: the same fused relufrob::grads call in
forward, the saved gradients scaled in backward. Outside transforms
nothing changes (torch.compile, export and the eager path keep the op).

vmap runs the problems of a batch one fused call each (the ``vmap`` rule
below), without PyTorch's per-example fallback and its warning: the
per-example gradients of a batch share no GEMM that one call could do.
Under torch.compile the op is kept even inside transforms (torch.compile
traces the transforms check as true everywhere, and returned zero gradients,
silently, when it traced this Function inside torch.func.grad; torch 2.14):
a transform then runs eagerly behind a graph break, and fullgraph=True
raises.
"""

import torch

from . import reference

_grads_op = torch.ops.relufrob.grads.default


def transforms_active() -> bool:
    """Whether a torch.func transform (grad, vjp, vmap, ...) is running, in
    eager code. (torch.compile traces this check as true everywhere.)"""
    if torch.compiler.is_compiling():
        return False
    return torch._C._functorch.peek_interpreter_stack() is not None


class FusedLoss(torch.autograd.Function):
    """loss = relufrob's loss; forward also returns the gradients it computes."""

    @staticmethod
    def forward(X, W, Y, bias, activation, reduction):
        return _grads_op(X, W, Y, bias=bias, activation=activation, reduction=reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        X, W, Y, bias, activation, reduction = inputs
        _, dW, dX, dY, db = output
        ctx.save_for_backward(X, W, Y, bias, dW, dX, dY, db)
        ctx.activation, ctx.reduction = activation, reduction
        ctx.mark_non_differentiable(dW, dX, dY, db)

    @staticmethod
    def backward(ctx, g, *_):
        X, W, Y, bias, dW, dX, dY, db = ctx.saved_tensors
        if torch.is_grad_enabled():
            # A derivative of this backward may be wanted (grad of grad,
            # hessian): the gradients again, from differentiable ops. Note
            # that torch.func always runs backward this way (its tensors
            # track grad at their level even for a single grad), so under
            # the transforms only the forward's loss comes from the fused op.
            ref = reference.formula_grads(
                X, W, Y, ctx.reduction, bias=bias, activation=ctx.activation
            )
            dW, dX, dY = ref.dW, ref.dX, ref.dY
            db = None if bias is None else ref.db
        return (
            g * dX,
            g * dW,
            None if Y is None else g * dY,
            None if bias is None else g * db,
            None,
            None,
        )

    @staticmethod
    def jvp(ctx, *tangents):
        raise NotImplementedError(
            "relufrob.loss has no forward-mode derivative (torch.func.jvp, jacfwd, hessian "
            "by forward-over-reverse): use torch.func.vjp or jacrev, or "
            "relufrob.reference.loss for forward mode"
        )

    @staticmethod
    def vmap(info, in_dims, X, W, Y, bias, activation, reduction):
        size = info.batch_size
        args = (X, W, Y, bias)

        def item(t, dim, i):
            return t if t is None or dim is None else t.select(dim, i)

        outs = [
            FusedLoss.apply(
                *(item(t, d, i) for t, d in zip(args, in_dims[:4])), activation, reduction
            )
            for i in range(size)
        ]
        stacked = tuple(torch.stack(parts) for parts in zip(*outs))
        return stacked, (0,) * len(stacked)


def loss(X, W, Y, bias, activation, reduction):
    return FusedLoss.apply(X, W, Y, bias, activation, reduction)[0]
