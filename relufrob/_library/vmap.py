"""vmap of relufrob: a batch of problems as one bigger fused call.

Problems that share W (and an (N,) bias) are one problem of stacked rows:
the fused op computes the whole batch's epilogue and dX, dY in one call, and
only what sums over each problem's own rows is taken apart afterwards:

* the loss of problem b, from its residuals R (the op's dY at scale -1/2;
  a missing Y is a target of zeros);
* dW_b = X_bᵀ G_b, one batched GEMM over G = df/dZ, which the op hands out
  as the gradient of a full-shape bias (a bias of zeros when there is none:
  z + 0 is z, so nothing else changes);
* an (N,) bias's db_b, the sum of G_b's rows.

Problems with their own W (or their own (N,) bias) share no GEMM; they run
one fused call each. Either way PyTorch's per-example fallback never runs.
"""

import math

import torch

from .checks import check_args, check_scale, target_dtype

__all__ = ["batched_grads", "check_problem", "op_options", "register", "xt_g"]

_grads_op = torch.ops.relufrob.grads.default


def xt_g(X, G):
    """Xᵀ G over the last two dimensions: dW of each problem, X (…, rows, K)
    and G (…, rows, N). A problem of one row (per-sample gradients) is an
    outer product, formed as a broadcast multiply: CPU bmm runs a batch of
    rank-1 products one by one, 1 ms for 128 of 64×64 against 34 µs (and a
    product of one term is the same number either way)."""
    if X.shape[-2] == 1:
        return X.transpose(-1, -2) * G
    return X.transpose(-1, -2) @ G


def _front(t, dim, size):
    """t with its batch dimension first (expanded when it has none)."""
    if t is None:
        return None
    return t.movedim(dim, 0) if dim is not None else t.expand(size, *t.shape)


def check_problem(in_dims, X, W, Y, bias, activation, reduction) -> None:
    """Refuse one problem of the batch as eager relufrob would, in its words.

    Before anything is reshaped: the stacking below reshapes by the shapes
    it expects, and would otherwise fail on a wrong shape with a message
    about its own reshape, or pass one (an empty batch of wrong shapes
    reshapes to anything), and it passes the op reduction="sum" whatever
    was asked. The check looks at stand-ins of one problem's shape (no
    data: a batch of any size, empty included, is checked alike). Non-tensor
    arguments are left to the op, whose wrapper explains them.
    """
    args = (X, W, Y, bias)
    if not all(t is None or isinstance(t, torch.Tensor) for t in args) or X is None or W is None:
        return

    def one(t, d):
        if t is None or d is None:
            return t
        return t.new_empty(()).expand(t.shape[:d] + t.shape[d + 1 :])

    x, w, y, b = (one(t, d) for t, d in zip(args, (*in_dims, None, None)[:4]))
    check_args(x, w, y, reduction, b, activation)


def _scale(reduction, scale, numel):
    if reduction == "mean":
        return scale / numel if numel else math.inf
    return scale


def _one_by_one(size, args, dims, options, need, want_g=False):
    """One fused call per problem, the results stacked."""

    def item(t, d, i):
        return t if t is None or d is None else t.select(d, i)

    if size == 0:  # nothing to stack: one problem of zeros gives the shapes
        args = [
            t if t is None or d is None else t.new_zeros(t.shape[:d] + t.shape[d + 1 :])
            for t, d in zip(args, dims)
        ]
        dims = [None] * len(dims)
    outs = [
        _grads_op(
            *(item(t, d, i) for t, d in zip(args, dims)),
            **options,
            need_dW=need[0],
            need_dX=need[1],
            need_dY=need[2],
            need_db=need[3],
        )
        for i in range(max(size, 1))
    ]
    stacked = [torch.stack(parts) for parts in zip(*outs)]
    # A gradient that was not asked for is a (0,) placeholder, unbatched.
    for k, wanted in enumerate((True, *need)):
        if not wanted:
            stacked[k] = stacked[k][0]
        elif size == 0:
            stacked[k] = stacked[k][:0]
    dims_out = tuple(0 if wanted else None for wanted in (True, *need))
    if want_g:  # no G here: dW is computed whole instead (need[0] is True)
        return (*stacked, args[0].new_empty((0,))), (*dims_out, None)
    return tuple(stacked), dims_out


def batched_grads(size, in_dims, X, W, Y, bias, options, need, want_g=False):
    """relufrob::grads over a batch: ((loss, dW, dX, dY, db), out_dims).

    ``in_dims`` gives the batch dimension of X, W, Y and bias (None: shared
    by every problem); ``options`` the op's activation, reduction and scale;
    ``need`` its (need_dW, need_dX, need_dY, need_db). Results have the
    batch first; placeholders of gradients not asked for have none.

    With ``want_g`` a sixth result is G = df/dZ, each problem's (rows, N),
    and dW is left to the caller (a placeholder): relufrob.loss's backward
    under vmap forms dW_b = X_bᵀ (g_b G_b) once, rather than dW_b here and
    g_b dW_b there, two passes over a result that can be large (per-sample
    gradients: B × K × N). Where the problems run one by one, dW comes
    whole and G is the placeholder.
    """
    xd, wd, yd, bd = (*in_dims, None, None)[:4]  # bias may not have been passed
    check_problem((xd, wd, yd, bd), X, W, Y, bias, options["activation"], options["reduction"])
    if isinstance(options["scale"], (int, float)):
        check_scale(options["scale"])
    need = (need[0], need[1], need[2] and Y is not None, need[3] and bias is not None)
    x_shape = X.shape if xd is None else X.shape[:xd] + X.shape[xd + 1 :]
    K, N = (W.shape if wd is None else W.shape[:wd] + W.shape[wd + 1 :])[-2:]
    rows = math.prod(x_shape[:-1])
    bias_shape = None
    if bias is not None:
        bias_shape = bias.shape if bd is None else bias.shape[:bd] + bias.shape[bd + 1 :]
    row_bias = bias_shape is not None and len(bias_shape) == 1 and len(x_shape) > 1
    s = _scale(options["reduction"], options["scale"], rows * N)
    shared = wd is None and not (row_bias and bd is not None)
    if not shared or rows * N == 0 or s == 0 or not math.isfinite(s):
        need = (need[0] or want_g, *need[1:])
        return _one_by_one(size, (X, W, Y, bias), in_dims, options, need, want_g)
    if want_g:
        need = (False, *need[1:])

    Xf = _front(X, xd, size).reshape(size * rows, K)
    target = target_dtype(X, Y, bias)
    # The residuals come back through dY, so a missing Y is a target of zeros.
    if Y is None:
        Yf = X.new_zeros(size * rows, N, dtype=target)
    else:
        Yf = _front(Y, yd, size).reshape(size * rows, N)
    need_g = want_g or need[0] or (need[3] and row_bias)
    if bias is None:
        bf = X.new_zeros(size * rows, N, dtype=target) if need_g else None
    elif row_bias:
        bf = bias.expand(size * rows, N) if need_g else bias
    else:
        bf = _front(bias, bd, size).reshape(size * rows, N)
    # At scale -1/2 the op's dY is R itself and its G and dX are -R-based:
    # the loss is then taken from R in float64 (from the scaled dY a float16
    # mean could overflow in R², or underflow in dY), and the gradients are
    # scaled by -2 s afterwards (exactly, for a sum: s = 1).
    _, _, dXf, R, G = _grads_op(
        Xf,
        W,
        Yf,
        bf,
        activation=options["activation"],
        reduction="sum",
        scale=-0.5,
        need_dW=False,
        need_dX=need[1],
        need_dY=True,
        need_db=need_g or (need[3] and not row_bias),
    )
    c = -2.0 * s
    loss = ((R.double() ** 2).view(size, rows * N).sum(1) * s).to(target)
    if G.numel():
        G = G * c

    placeholder = X.new_empty((0,))
    dW = dX = dY = db = placeholder
    if need[0]:
        Gb = G.view(size, rows, N).to(X.dtype)
        dW = xt_g(Xf.view(size, rows, K), Gb)
    if need[1]:
        dX = (dXf * c).view(size, *x_shape)
    if need[2]:
        dY = (R * c).view(size, *x_shape[:-1], N)
    if need[3]:
        db = G.view(size, rows, N).sum(1) if row_bias else G.view(size, *bias_shape)
    dims_out = (0,) + tuple(0 if wanted else None for wanted in need)
    if want_g:
        return (loss, dW, dX, dY, db, G.view(size, rows, N)), (*dims_out, 0)
    return (loss, dW, dX, dY, db), dims_out


def op_options(activation, reduction, scale):
    """The op's non-tensor arguments, as batched_grads takes them."""
    return {"activation": activation, "reduction": reduction, "scale": scale}


def _vmap_grads_rule(
    info,
    in_dims,
    X,
    W,
    Y,
    bias=None,
    *,
    activation="relu",
    reduction="sum",
    scale=1.0,
    need_dW=True,
    need_dX=True,
    need_dY=True,
    need_db=True,
):
    return batched_grads(
        info.batch_size,
        in_dims,
        X,
        W,
        Y,
        bias,
        op_options(activation, reduction, scale),
        (need_dW, need_dX, need_dY, need_db),
    )


def _vmap_loss_rule(
    info, in_dims, X, W, Y, bias=None, *, activation="relu", reduction="sum", scale=1.0
):
    (loss, *_), dims = batched_grads(
        info.batch_size,
        in_dims,
        X,
        W,
        Y,
        bias,
        op_options(activation, reduction, scale),
        (False, False, False, False),
    )
    return loss, dims[0]


def register() -> None:
    """The vmap rules of relufrob::grads and relufrob::loss (done on import)."""
    torch.library.register_vmap("relufrob::grads", _vmap_grads_rule)
    torch.library.register_vmap("relufrob::loss", _vmap_loss_rule)
