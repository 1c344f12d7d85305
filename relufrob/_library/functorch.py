"""relufrob.loss under torch.func (grad, vjp, jacrev, vmap, and their compositions).

The op's autograd is a C++ torch::autograd::Function, which functorch
transforms cannot run. Under a transform, relufrob.loss goes through the
Python Function below instead: the fused relufrob::grads call in forward,
the saved gradients scaled in backward. Outside transforms nothing changes
(torch.compile, export and the eager path keep the op).

One Function serves one problem and a stack of P problems that share W
(``batched``: X is (P, *, K), the loss is (P,)). Its vmap rule turns a batch
of problems into one stacked call *through this Function again*, so that
every transform level below the vmap (a grad around it: grad(vmap(loss)),
or plain autograd) still sees a differentiable node. Computing the stacked
call with the bare op there would detach it: the gradient through it was
silently zero.

The backward uses the gradients the fused forward computed, unless
something will differentiate the backward itself (grad of grad, jacrev of
jacrev, create_graph): then it recomputes them from differentiable ops.
"""

import math

import torch

from .. import _compat
from ..testing.reference import differentiable_terms
from . import vmap as vmap_rules

__all__ = ["loss", "refuse_differentiated_grads", "transforms_active"]

transforms_active = _compat.transforms_active

_grads_op = torch.ops.relufrob.grads.default
_ALL = (True, True, True, True)

NO_FORWARD_MODE = (
    "relufrob.loss has no forward-mode derivative (torch.func.jvp, jacfwd, hessian "
    "by forward-over-reverse, linearize, torch.autograd.forward_ad): use torch.func.vjp "
    "or jacrev, or relufrob.testing.reference.loss for forward mode"
)


def _backward_is_differentiated(inputs) -> bool:
    """Whether anything will differentiate the backward now running.

    torch.func runs every backward with grad mode on (its tensors track grad
    at their level even for a single grad), so grad mode alone cannot tell.
    The backward's result is differentiated again by any differentiating
    transform level other than the one that recorded this node (grad of
    grad; jacrev of jacrev and grad of vjp, whose inner level has already
    exited when its backward runs, leaving only the outer one live), or by
    plain autograd outside every transform, through an input that requires
    grad.

    The node's level is that of its saved inputs (torch.func wraps them at
    the level that ran the forward; -2 once that level has exited). Not the
    cotangent's: a cotangent made inside an outer grad (``ones_like(out)``
    for a vjp's pullback) is wrapped at that outer level, which would then
    pass for this node's own and leave the outer derivative silently zero.
    """
    own = _compat.functorch_level(inputs[1])  # W, never None
    for i in _compat.live_interpreters():
        if _compat.is_differentiating_level(i) and i.level() != own:
            return True
    return any(t is not None and _compat.functorch_unwrap(t).requires_grad for t in inputs)


def _lead(t, batched: bool) -> int:
    """Rows per problem: the product of the leading dimensions (past P)."""
    return math.prod(t.shape[1 if batched else 0 : -1])


class FusedLoss(torch.autograd.Function):
    """loss = relufrob's loss; forward also returns the gradients it computes.

    Outputs: the loss ((), or (P,) when batched), the op's four gradients and
    G = df/dZ. Either dW or G is a (0,) placeholder: a single problem gets dW
    from the op; a stack gets G (P, rows, N), from which the backward forms
    the dW it needs once (per-problem dW_b would be P x K x N).
    """

    @staticmethod
    def forward(X, W, Y, bias, activation, reduction, batched):
        if not batched:
            out = _grads_op(X, W, Y, bias=bias, activation=activation, reduction=reduction)
            return (*out, X.new_empty((0,)))
        bias_dim = 0 if bias is not None and bias.dim() == X.dim() else None
        out, _ = vmap_rules.batched_grads(
            X.shape[0],
            (0, None, 0, bias_dim),
            X,
            W,
            Y,
            bias,
            vmap_rules.op_options(activation, reduction, 1.0),
            _ALL,
            want_g=True,
        )
        return out

    @staticmethod
    def setup_context(ctx, inputs, output):
        X, W, Y, bias, activation, reduction, batched = inputs
        _, dW, dX, dY, db, G = output
        ctx.save_for_backward(X, W, Y, bias, dW, dX, dY, db, G)
        ctx.activation, ctx.reduction, ctx.batched = activation, reduction, batched
        # The gradients stay differentiable: a backward at this node's own
        # level (torch.autograd.grad(create_graph=True) inside torch.func.grad)
        # returns them scaled, and the level then differentiates those. Their
        # cotangents reach backward; unused ones come as None.
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, g, *cotangents):
        inputs = ctx.saved_tensors[:4]
        first = (None,) * 4 if g is None else _through_the_loss(ctx, g)
        if all(c is None for c in cotangents):
            return (*first, None, None, None)
        second = _through_the_gradients(ctx, cotangents)
        summed = tuple(
            a if b is None else b if a is None else a + b.to(a.dtype) for a, b in zip(first, second)
        )
        return (*(None if t is None else s for s, t in zip(summed, inputs)), None, None, None)

    @staticmethod
    def jvp(ctx, *tangents):
        raise NotImplementedError(NO_FORWARD_MODE)

    @staticmethod
    def vmap(info, in_dims, X, W, Y, bias, activation, reduction, batched):
        return _vmap_rule(
            info.batch_size, in_dims[:4], X, W, Y, bias, activation, reduction, batched
        )


def _through_the_loss(ctx, g):
    """The inputs' gradients through the loss output, g times the fused ones."""
    X, W, Y, bias, dW, dX, dY, db, G = ctx.saved_tensors
    batched = ctx.batched
    K, N = W.shape
    problems = X.shape[0] if batched else 1
    rows = _lead(X, batched)
    row_bias = bias is not None and bias.dim() == 1
    g_p = g.reshape(problems)

    def times(t):
        """t scaled by each problem's g. (g is never broadcast as a 0-dim
        tensor: vmap over an empty batch fails on that in torch 2.14.)"""
        return g_p.reshape(problems, *[1] * (t.dim() - 1)) * t

    fused = (dW, dX, dY, db, G)
    if torch.is_grad_enabled() and _backward_is_differentiated((X, W, Y, bias)):
        # A derivative of this backward is wanted (grad of grad, hessian):
        # the gradients again, from differentiable ops.
        dW, dX, dY, db, G = _differentiable_gradients(
            X, W, Y, bias, ctx.activation, ctx.reduction, batched, fused
        )
    # A single problem, or stacked ones that ran one by one, came with dW
    # and a placeholder G.
    G = None if G is None or G.dim() == 1 else G.reshape(problems, rows, N)
    g_db = None
    if G is None:
        g_dW = times(dW).sum(0) if batched else times(dW)
        if bias is not None:
            g_db = times(db).sum(0) if row_bias and batched else times(db)
    else:
        # dW = Σ_b g_b X_bᵀ G_b, as one GEMM over the stacked rows.
        gG = times(G)
        g_dW = vmap_rules.xt_g(
            X.reshape(problems * rows, K), gG.reshape(problems * rows, N).to(X.dtype)
        )
        if bias is not None:
            g_db = gG.sum((0, 1)) if row_bias else gG.reshape(bias.shape)
    return (
        times(dX).reshape(X.shape),
        g_dW,
        None if Y is None else times(dY).reshape(Y.shape),
        g_db,
    )


def _through_the_gradients(ctx, cotangents):
    """The inputs' gradients through FusedLoss's gradient outputs (dW, dX,
    dY, db, G), given their cotangents: the second derivative, when a
    backward of this node is differentiated at the node's own level.

    The gradients are formed again from differentiable ops, shaped as the
    forward returned them, and pulled back by torch.func.vjp, which works
    whether this node's level is live (grad) or has exited (vjp's pullback)
    and stays differentiable for the levels outside.
    """
    X, W, Y, bias, *fused = ctx.saved_tensors
    present = [i for i, t in enumerate((X, W, Y, bias)) if t is not None]
    kept = []  # the outputs with a cotangent that are results, not placeholders

    def gradients(*args):
        full = [None] * 4
        for i, t in zip(present, args):
            full[i] = t
        again = _differentiable_gradients(*full, ctx.activation, ctx.reduction, ctx.batched, fused)
        kept[:] = [k for k, c in enumerate(cotangents) if c is not None and again[k] is not None]
        return tuple(again[k] for k in kept)

    args = [_compat.unwrap_if_dead((X, W, Y, bias)[i]) for i in present]
    again, pullback = torch.func.vjp(gradients, *args)
    if not kept:
        return (None,) * 4
    pulled = pullback(tuple(cotangents[k].to(o.dtype) for k, o in zip(kept, again)))
    out = [None] * 4
    for i, t in zip(present, pulled):
        out[i] = t
    return tuple(out)


def _differentiable_gradients(X, W, Y, bias, activation, reduction, batched, fused):
    """FusedLoss's (dW, dX, dY, db, G) from differentiable ops, each shaped as
    its fused counterpart in `fused` (None where that is a placeholder)."""
    dW, dX, dY, db, G = fused
    K, N = W.shape
    problems = X.shape[0] if batched else 1
    rows = _lead(X, batched)
    scale = 1.0 if reduction == "sum" else 1.0 / (rows * N) if rows * N else math.inf
    R, Gd = differentiable_terms(X, W, Y, bias, activation, scale)
    per_problem = Gd.reshape(problems, rows, N) if batched else Gd.reshape(rows, N)
    out_dW = out_db = None
    if dW.dim() > 1:
        Xs = X.reshape(problems, rows, K) if batched else X.reshape(rows, K)
        out_dW = vmap_rules.xt_g(Xs, per_problem.to(X.dtype))
    if bias is not None:
        # An (N,) bias sums its rows (per problem when stacked); a full one is G.
        out_db = Gd.reshape(db.shape) if Gd.numel() == db.numel() else per_problem.sum(-2)
    return (
        out_dW,
        (Gd.to(X.dtype) @ W.t()).reshape(dX.shape),
        None if Y is None else ((-2.0 * scale) * R).reshape(dY.shape),
        out_db,
        per_problem if G.dim() > 1 else None,
    )


def _vmap_rule(size, in_dims, X, W, Y, bias, activation, reduction, batched):
    """A batch of `size` problems (or stacks) as one stacked FusedLoss call.

    The stacked call goes through FusedLoss.apply, so the levels below this
    vmap differentiate it. Problems with their own W (or their own (N,)
    bias) share no GEMM: one apply each.
    """
    xd, wd, yd, bd = in_dims
    vmap_rules.check_problem(in_dims, X, W, Y, bias, activation, reduction)
    logical_x_dim = X.dim() - (xd is not None)
    row_bias = (
        bias is not None and bias.dim() - (bd is not None) == 1 and logical_x_dim > 1 + batched
    )
    if wd is not None or (row_bias and bd is not None):
        return _one_apply_each(size, in_dims, X, W, Y, bias, activation, reduction, batched)
    # Problems per stack (1 for single problems).
    per = (X.shape[1 if xd == 0 else 0] if xd is not None else X.shape[0]) if batched else 1

    def front(t, d):
        if t is None:
            return None
        t = t.movedim(d, 0) if d is not None else t.expand(size, *t.shape)
        # Stacks of stacks: merge the two problem dimensions.
        return t.reshape(size * per, *t.shape[2:]) if batched else t

    Xs, Ys = front(X, xd), front(Y, yd)
    bs = bias if row_bias or bias is None else front(bias, bd)
    out = FusedLoss.apply(Xs, W, Ys, bs, activation, reduction, True)
    real = _computed(out, Y is not None, bias is not None)
    if batched:
        out = tuple(o.unflatten(0, (size, per)) if r else o for o, r in zip(out, real))
    return out, tuple(0 if r else None for r in real)


def _computed(out, has_y: bool, has_bias: bool) -> tuple[bool, ...]:
    """Which of FusedLoss's six outputs are results, not (0,) placeholders.

    Told by what was given, not by shape: a real dX of an X with K = 0 is (0,) too.
    """
    has_g = out[5].dim() > 1  # G is (rows, N) or (P, rows, N); dW is then the placeholder
    return (True, not has_g, True, has_y, has_bias, has_g)


def _one_apply_each(size, in_dims, X, W, Y, bias, activation, reduction, batched):
    def item(t, d, i):
        return t if t is None or d is None else t.select(d, i)

    args = (X, W, Y, bias)
    if size == 0:  # nothing to stack: one problem of zeros gives the shapes
        args = [
            t if t is None or d is None else t.new_zeros(t.shape[:d] + t.shape[d + 1 :])
            for t, d in zip(args, in_dims)
        ]
        in_dims = (None,) * 4
    outs = []
    for i in range(max(size, 1)):
        x, w, y, b = (item(t, d, i) for t, d in zip(args, in_dims))
        # Each stack of this loop has its own W, so it forms its own dW now
        # (the items must agree on which of dW and G they return).
        outs.append(_with_dW(FusedLoss.apply(x, w, y, b, activation, reduction, batched), x))
    real = _computed(outs[0], Y is not None, bias is not None)
    stacked = []
    for parts, r in zip(zip(*outs), real):
        if not r:
            stacked.append(parts[0])
        else:
            t = torch.stack(parts)
            stacked.append(t[:0] if size == 0 else t)
    return tuple(stacked), tuple(0 if r else None for r in real)


def _with_dW(out, X):
    """out with its dW formed from G (G then a placeholder), where it came as G."""
    loss, dW, dX, dY, db, G = out
    if G.dim() == 1:
        return out
    K = X.shape[-1]
    dW = vmap_rules.xt_g(X.reshape(*G.shape[:-1], K), G.to(X.dtype))  # G: (rows, N) or (P, rows, N)
    return (loss, dW, dX, dY, db, G.new_empty((0,)))


_loss_op = torch.ops.relufrob.loss.default


def loss(X, W, Y, bias, activation, reduction):
    if not _differentiated((X, W, Y, bias)):
        # Only vmap levels: the op's own vmap rule, no autograd.Function
        # (whose functorch machinery costs far more than the call itself).
        return _loss_op(X, W, Y, bias=bias, activation=activation, reduction=reduction)
    return FusedLoss.apply(X, W, Y, bias, activation, reduction, False)[0]


def _differentiated(tensors) -> bool:
    """Whether anything may differentiate the loss of these inputs: a live
    grad or jvp level, or plain autograd through an input that requires grad."""
    if any(_compat.is_differentiating_level(i) for i in _compat.live_interpreters()):
        return True
    return any(
        isinstance(t, torch.Tensor) and _compat.functorch_unwrap(t).requires_grad for t in tensors
    )


def refuse_differentiated_grads(X, W, Y, bias, *, fn: str = "relufrob.grads") -> None:
    """relufrob.grads (or `fn`, which the message names) returns plain tensors;
    under torch.func.grad/vjp/jacrev of one of its inputs that would silently
    give zero gradients. Raise.

    Every wrapper of an input is looked at, not only the outermost: under
    grad(vmap(...)) a batched input wraps the grad level's tensor, and the
    vmap level on top says nothing about differentiation. A wrapper of a
    live grad/jvp level differentiates the input where it requires grad
    (a detached input, or one the level does not track, is left alone).
    """
    differentiating = None
    for name, t in (("X", X), ("W", W), ("Y", Y), ("bias", bias)):
        if t is None or not isinstance(t, torch.Tensor):
            continue
        while _compat._is_wrapped(t):
            if t.requires_grad:
                if differentiating is None:
                    differentiating = {
                        i.level()
                        for i in _compat.live_interpreters()
                        if _compat.is_differentiating_level(i)
                    }
                if _compat.functorch_level(t) in differentiating:
                    raise RuntimeError(
                        f"{fn}: {name} is being differentiated by a torch.func "
                        f"transform (grad, vjp, jacrev), but {fn} returns plain "
                        "tensors without a graph, so its gradient would be silently zero; "
                        "differentiate relufrob.loss instead"
                    )
            t = _compat._get_unwrapped(t)
