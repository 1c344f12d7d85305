"""relufrob.loss under torch.func (grad, vjp, jacrev, vmap).

The op's autograd is a C++ torch::autograd::Function, which functorch
transforms cannot run. Under a transform, relufrob.loss goes through the
Python Function below instead: the same fused relufrob::grads call in
forward, the saved gradients scaled in backward. Outside transforms
nothing changes (torch.compile, export and the eager path keep the op).

vmap runs a batch of problems as one bigger fused call (relufrob.batching),
without PyTorch's per-example fallback and its warning. The backward uses
the gradients the fused forward computed, unless something will
differentiate the backward itself (then it recomputes them from
differentiable ops).
Under torch.compile the op is kept even inside transforms (torch.compile
traces the transforms check as true everywhere, and returned zero gradients,
silently, when it traced this Function inside torch.func.grad; torch 2.14):
a transform then runs eagerly behind a graph break, and fullgraph=True
raises.
"""

import torch
from torch._functorch import pyfunctorch

from . import batching, reference

_grads_op = torch.ops.relufrob.grads.default


def _base(t):
    """The plain tensor under every functorch wrapper of t."""
    while torch._C._functorch.is_functorch_wrapped_tensor(t):
        t = torch._C._functorch.get_unwrapped(t)
    return t


def _backward_is_differentiated(g, inputs) -> bool:
    """Whether anything will differentiate the backward now running.

    torch.func runs every backward with grad mode on (its tensors track grad
    at their level even for a single grad), so grad mode alone cannot tell.
    The backward's result is differentiated again by any differentiating
    transform level other than the one whose cotangent ``g`` is (grad of
    grad; jacrev of jacrev, whose inner level has already exited when its
    backward runs, leaving only the outer one live), or by plain autograd
    outside every transform, through an input that requires grad there.
    Otherwise the gradients saved by the fused forward are exact and the
    backward only scales them.
    """
    own = torch._C._functorch.maybe_get_level(g)
    for i in pyfunctorch.retrieve_all_functorch_interpreters():
        is_grad = isinstance(i, (pyfunctorch.GradInterpreter, pyfunctorch.JvpInterpreter))
        if is_grad and i.level() != own:
            return True
    return any(t is not None and _base(t).requires_grad for t in inputs)


def transforms_active() -> bool:
    """Whether a torch.func transform (grad, vjp, vmap, ...) is running, in
    eager code. (torch.compile traces this check as true everywhere.)"""
    if torch.compiler.is_compiling():
        return False
    return torch._C._functorch.peek_interpreter_stack() is not None


class FusedLoss(torch.autograd.Function):
    """loss = relufrob's loss; forward also returns the gradients it computes."""

    # Outputs: the loss, the op's four gradients and G = df/dZ. Either dW or
    # G is a (0,) placeholder: the op gives dW; the vmap rule gives G, from
    # which backward forms dW already scaled (relufrob.batching says why).
    @staticmethod
    def forward(X, W, Y, bias, activation, reduction):
        out = _grads_op(X, W, Y, bias=bias, activation=activation, reduction=reduction)
        return (*out, X.new_empty((0,)))

    @staticmethod
    def setup_context(ctx, inputs, output):
        X, W, Y, bias, activation, reduction = inputs
        _, dW, dX, dY, db, G = output
        ctx.save_for_backward(X, W, Y, bias, dW, dX, dY, db, G)
        ctx.activation, ctx.reduction = activation, reduction
        ctx.mark_non_differentiable(dW, dX, dY, db, G)

    @staticmethod
    def backward(ctx, g, *_):
        X, W, Y, bias, dW, dX, dY, db, G = ctx.saved_tensors
        if torch.is_grad_enabled() and _backward_is_differentiated(g, (X, W, Y, bias)):
            # A derivative of this backward is wanted (grad of grad, hessian):
            # the gradients again, from differentiable ops.
            ref = reference.formula_grads(
                X, W, Y, ctx.reduction, bias=bias, activation=ctx.activation
            )
            dW, dX, dY = ref.dW, ref.dX, ref.dY
            db = None if bias is None else ref.db
            g_dW = g * dW
        elif G.dim() == 2:  # from the vmap rule: dW = X_2dᵀ (g G), in one pass
            g_dW = X.reshape(G.shape[0], X.shape[-1]).t() @ (g * G).to(X.dtype)
        else:
            g_dW = g * dW
        return (
            g * dX,
            g_dW,
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
        options = batching.op_options(activation, reduction, 1.0)
        need = (True, True, True, True)
        return batching.batched_grads(
            info.batch_size, in_dims[:4], X, W, Y, bias, options, need, want_g=True
        )


def loss(X, W, Y, bias, activation, reduction):
    return FusedLoss.apply(X, W, Y, bias, activation, reduction)[0]
