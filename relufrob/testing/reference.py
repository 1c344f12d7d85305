"""Pure-PyTorch references for f = ||act(X W + b) - Y||_F^2, and the inputs to try them on.

Two independent routes to the same numbers, used by the tests, the benchmark
and ``python -m relufrob check``:

* :func:`autograd_grads` differentiates the expression with torch.autograd,
  the ground truth the hand derivation is checked against;
* :func:`formula_grads` evaluates the closed-form gradients of
  :func:`formulas` eagerly.

The general form has an optional bias b (None, an (N,) vector added to every
row, or a tensor of the output's shape), an activation (relu, or None for the
identity) and an optional target Y (None: a target of zeros). Leading
dimensions follow nn.Linear (X is (*, K), Y is (*, N)); with
``reduction="mean"`` the loss and every gradient are divided by the output's
element count. The conventions (the ReLU gradient at 0, NaN, empty
dimensions) are those of docs/math.md.
"""

import math
from typing import NamedTuple, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .._types import Grads, GradsWithBias

__all__ = [
    "loss",
    "autograd_grads",
    "formula_grads",
    "differentiable_terms",
    "formulas",
    "make_inputs",
    "FORMULAS",
    "ClippedGrads",
    "PerSampleNorms",
    "clip_factors",
    "clipped_grads",
    "per_sample_grad_norms",
    "per_sample_grads",
]


def formulas(
    *,
    bias: Union[bool, str] = False,
    activation: Optional[str] = "relu",
    target: bool = True,
) -> dict[str, str]:
    """The closed forms of one variant, as the check command prints them.

    ``bias`` is False (none), "row" (an (N,) vector), "full" (the output's
    shape) or True (either: db is worded for both). Keys: "f", then "dY"
    (with a target), "dW", "dX" and "db" (with a bias).
    """
    if activation == "relu":
        return _relu_formulas(bias, target)
    return _identity_formulas(bias, target)


def _relu_formulas(bias, target: bool) -> dict[str, str]:
    # G names the masked residual once: spelling the mask out in every
    # gradient would bury the structure (X^T G, G W^T) the exercise is about.
    z = "X W + b" if bias else "X W"
    a = f"relu({z})"
    r = f"({a} - Y)" if target else a
    out = {"f": f"f = sum({r}^2)"}
    if target:
        out["dY"] = f"df/dY = -2 {r}"
    out["dW"] = f"df/dW = X^T G,  G = 2 {r}, zeroed where {a} <= 0"
    out["dX"] = "df/dX = G W^T"
    if bias:
        out["db"] = _db_text("G", bias)
    return out


def _identity_formulas(bias, target: bool) -> dict[str, str]:
    # Without a mask nothing needs naming: written as the linear exercise
    # writes them: df/dW = 2Xᵀ(XW+b), df/dX = 2(XW+b)Wᵀ.
    z = "XW+b" if bias else "XW"
    r = f"({z}-Y)" if target else f"({z})"
    out = {"f": f"f = sum({r}^2)"}
    if target:
        out["dY"] = f"df/dY = -2{r}"
    out["dW"] = f"df/dW = 2Xᵀ{r}"
    out["dX"] = f"df/dX = 2{r}Wᵀ"
    if bias:
        out["db"] = _db_text(f"2{r}", bias)
    return out


def _db_text(g: str, bias) -> str:
    """df/db: the output gradient itself, or its column sums for an (N,) bias (nn.Linear)."""
    if bias == "full":
        return f"df/db = {g}"
    if bias == "row":
        return f"df/db = {g} summed over the rows"
    return f"df/db = {g} (summed over the rows for an (N,) bias)"


# The closed forms of the default variant (relu, target, no bias).
FORMULAS = formulas()


def _check_reduction(reduction: str) -> None:
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")


def _check_activation(activation) -> None:
    if activation not in ("relu", None):
        raise ValueError(f"activation must be 'relu' or None, got {activation!r}")


def loss(
    X: Tensor,
    W: Tensor,
    Y: Optional[Tensor],
    reduction: str = "sum",
    *,
    bias: Optional[Tensor] = None,
    activation: Optional[str] = "relu",
) -> Tensor:
    """The loss exactly as the reference expression computes it (differentiable)."""
    _check_reduction(reduction)
    _check_activation(activation)
    Z = X @ W if bias is None else X @ W + bias
    A = F.relu(Z) if activation == "relu" else Z
    sq = (A if Y is None else A - Y).pow(2)
    return sq.sum() if reduction == "sum" else sq.mean()


def _result(f, dW, dX, dY, db, bias):
    return Grads(f, dW, dX, dY) if bias is None else GradsWithBias(f, dW, dX, dY, db)


def autograd_grads(
    X: Tensor,
    W: Tensor,
    Y: Optional[Tensor],
    reduction: str = "sum",
    *,
    bias: Optional[Tensor] = None,
    activation: Optional[str] = "relu",
) -> Union[Grads, GradsWithBias]:
    """Loss and gradients by torch.autograd on the reference expression."""
    inputs = {n: t for n, t in zip(("X", "W", "Y", "b"), (X, W, Y, bias)) if t is not None}
    leaves = {n: t.detach().requires_grad_(True) for n, t in inputs.items()}
    with torch.enable_grad():
        f = loss(
            leaves["X"],
            leaves["W"],
            leaves.get("Y"),
            reduction,
            bias=leaves.get("b"),
            activation=activation,
        )
        grads = dict(zip(leaves, torch.autograd.grad(f, list(leaves.values()))))
    return _result(f.detach(), grads["W"], grads["X"], grads.get("Y"), grads.get("b"), bias)


def formula_grads(
    X: Tensor,
    W: Tensor,
    Y: Optional[Tensor],
    reduction: str = "sum",
    *,
    bias: Optional[Tensor] = None,
    activation: Optional[str] = "relu",
) -> Union[Grads, GradsWithBias]:
    """Loss and gradients from the closed forms of :func:`formulas`, in eager PyTorch."""
    _check_reduction(reduction)
    _check_activation(activation)
    K, N = W.shape
    M = math.prod(X.shape[:-1])  # not reshape(-1, K): ambiguous when K == 0
    # The mean over nothing is NaN, as torch's mean: 1/0 taken as inf.
    scale = 1.0 if reduction == "sum" else (1.0 / (M * N) if M * N else math.inf)
    R, G = differentiable_terms(X, W, Y, bias, activation, scale)
    # G in X's dtype for the GEMMs, as autograd's matmul backward takes it (in
    # mixed precision G is float32, from a float32 Y, and X bfloat16).
    Gx = G.to(X.dtype)
    dW = X.reshape(M, K).T @ Gx.reshape(M, N)
    dX = Gx @ W.T
    dY = None if Y is None else (-2.0 * scale) * R
    db = None
    if bias is not None:
        db = G.reshape(M, N).sum(0) if bias.dim() == 1 else G
    f = (R * R).sum() * scale if reduction == "sum" else (R * R).mean()
    return _result(f, dW, dX, dY, db, bias)


def differentiable_terms(X, W, Y, bias, activation, scale: float) -> tuple[Tensor, Tensor]:
    """(R, G): the residual act(X W + b) - Y and G = df/dZ for a loss scaled
    by `scale`, as differentiable expressions (X may have leading dimensions)."""
    Z = X @ W if bias is None else X @ W + bias
    if activation == "relu":
        A = F.relu(Z)
        R = A if Y is None else A - Y
        # Zero where relu(Z) <= 0, as autograd's ReLU backward: NaN passes
        # through, and a masked infinite residual gives 0, not inf * 0.
        G = torch.where(A <= 0, torch.zeros_like(R), (2.0 * scale) * R)
    else:
        R = Z if Y is None else Z - Y
        G = (2.0 * scale) * R
    return R, G


def make_inputs(
    M: Union[int, tuple[int, ...]],
    K: int,
    N: int,
    *,
    dtype: torch.dtype = torch.float32,
    device="cpu",
    seed: int = 0,
    target: bool = True,
    bias: Optional[str] = None,
) -> tuple[Optional[Tensor], ...]:
    """X (M, K), W (K, N), Y (M, N), as the classic exercise draws them.

    ``torch.manual_seed(seed); X = torch.randn(M, K); W = torch.randn(K, N);
    Y = torch.randn(M, N)``: drawn in float32 on the CPU, then cast to
    ``dtype`` and moved to ``device``, so every dtype and device sees the same
    numbers. A private generator leaves the global RNG state alone. M may be
    a tuple of leading dimensions: X is then (*M, K) and Y (*M, N), and
    ``M=()`` gives 1-D X and Y.

    For the general form: ``target=False`` draws no Y and returns None in its
    place (a target of zeros); ``bias="row"`` (an (N,) vector) or ``"full"``
    (the output's shape, (*M, N)) draws b last and returns (X, W, Y, b). The
    draws keep the order X, W, [Y], [b], so seed 0 with ``target=False,
    bias="full"`` reproduces ``torch.manual_seed(0); x = randn(10, 4);
    w = randn(4, 4); b = randn(10, 4)``.
    """
    lead = (M,) if isinstance(M, int) else tuple(M)
    bias_shapes = {None: None, "row": (N,), "full": (*lead, N)}
    if bias not in bias_shapes:
        raise ValueError(f"bias must be None, 'row' or 'full', got {bias!r}")
    gen = torch.Generator().manual_seed(seed)
    shapes = ((*lead, K), (K, N), (*lead, N) if target else None, bias_shapes[bias])
    drawn = tuple(
        None if s is None else torch.randn(s, generator=gen).to(device=device, dtype=dtype)
        for s in shapes
    )
    # Three values unless a bias was asked for, as every caller before the bias unpacks.
    return drawn if bias is not None else drawn[:3]


# --------------------------------------------------------------------------
# Per-sample gradients (DP-SGD): the definitions relufrob's fused versions
# are held to, computed the way anyone would without them.
# --------------------------------------------------------------------------


class PerSampleNorms(NamedTuple):
    loss: Tensor  # sum over samples of f_b
    norms: Tensor  # (B,): ||(df_b/dW, df_b/dbias)||


class ClippedGrads(NamedTuple):
    loss: Tensor
    dW: Tensor  # sum_b c_b df_b/dW (+ noise)
    db: Optional[Tensor]  # likewise, or None without a bias
    norms: Tensor


# Opacus's clip factor: c_b = min(1, max_norm / (norm_b + 1e-6)).
CLIP_EPS = 1e-6


def per_sample_grads(X, W, Y, *, bias=None, activation="relu"):
    """(loss, dW_b (B, K, N), db_b or None): torch.func.vmap(torch.func.grad(...)).

    Sample b is X[b] (one row, or the rows of its leading dimensions), with
    f_b = ||act(X_b W + bias_b) - Y_b||_F^2. An (N,) bias is shared by every
    sample; a full-shape bias has one slice per sample, which is that
    sample's own.
    """
    _check_activation(activation)
    if X.dim() < 2:
        raise ValueError(f"X must have a batch dimension (B, *, K), got shape {list(X.shape)}")
    row_bias = bias is not None and bias.dim() == 1 and X.dim() > 1
    bias_dim = None if bias is None or row_bias else 0

    def f(x, w, y, b):
        return loss(x, w, y, bias=b, activation=activation)

    argnums = (1,) if bias is None else (1, 3)
    grad = torch.func.grad_and_value(f, argnums=argnums)
    in_dims = (0, None, None if Y is None else 0, bias_dim)
    grads, losses = torch.func.vmap(grad, in_dims=in_dims)(X, W, Y, bias)
    return losses.sum(), grads[0], grads[1] if bias is not None else None


def _norms(dW_b, db_b):
    sq = dW_b.flatten(1).pow(2).sum(1)
    if db_b is not None:
        sq = sq + db_b.flatten(1).pow(2).sum(1)
    return sq.sqrt()


def per_sample_grad_norms(X, W, Y, *, bias=None, activation="relu") -> PerSampleNorms:
    """Loss and the norm of each sample's gradient (dW_b, db_b), from the
    per-sample gradients themselves (a B x K x N tensor)."""
    f, dW_b, db_b = per_sample_grads(X, W, Y, bias=bias, activation=activation)
    return PerSampleNorms(f, _norms(dW_b, db_b))


def clip_factors(norms: Tensor, max_norm: float) -> Tensor:
    """c_b = min(1, max_norm / (norm_b + 1e-6)); a NaN norm gives a NaN factor."""
    return (max_norm / (norms + CLIP_EPS)).clamp(max=1.0)


def clipped_grads(
    X,
    W,
    Y,
    *,
    max_norm: float,
    bias=None,
    activation="relu",
    noise_multiplier: float = 0.0,
    generator=None,
) -> ClippedGrads:
    """DP-SGD's gradient of this layer: sum_b c_b (dW_b, db_b), plus
    noise_multiplier * max_norm * N(0, I) drawn from `generator` (dW's noise
    first, then db's)."""
    f, dW_b, db_b = per_sample_grads(X, W, Y, bias=bias, activation=activation)
    norms = _norms(dW_b, db_b)
    c = clip_factors(norms, max_norm)
    dW = torch.einsum("b,bkn->kn", c.to(dW_b.dtype), dW_b)
    db = None
    if db_b is not None:
        scaled = c.reshape(-1, *[1] * (db_b.dim() - 1)).to(db_b.dtype) * db_b
        db = scaled.sum(0) if bias.dim() == 1 else scaled
    if noise_multiplier:
        std = noise_multiplier * max_norm
        dW = dW + std * torch.randn(dW.shape, generator=generator, dtype=dW.dtype, device=dW.device)
        if db is not None:
            db = db + std * torch.randn(
                db.shape, generator=generator, dtype=db.dtype, device=db.device
            )
    return ClippedGrads(f, dW, db, norms)
