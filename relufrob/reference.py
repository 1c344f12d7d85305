"""Pure-PyTorch references for f = ||relu(X W) - Y||_F^2, and the inputs to try them on.

Two independent routes to the same numbers, used by the tests, the benchmark
and ``python -m relufrob check``:

* :func:`autograd_grads` differentiates the expression with torch.autograd,
  the ground truth the hand derivation is checked against;
* :func:`formula_grads` evaluates the closed-form gradients of
  :data:`FORMULAS` eagerly.

Leading dimensions follow nn.Linear (X is (*, K), Y is (*, N)); with
``reduction="mean"`` the loss and every gradient are divided by Y.numel().
The conventions (the ReLU gradient at 0, NaN, empty dimensions) are those of
docs/math.md.
"""

import math
from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .ops import Grads

__all__ = ["loss", "autograd_grads", "formula_grads", "make_inputs", "FORMULAS"]

# The closed forms, as the check command prints them.
FORMULAS = {
    "f": "f = sum((relu(X W) - Y)^2)",
    "dY": "df/dY = -2 (relu(X W) - Y)",
    "dW": "df/dW = X^T G,  G = 2 (relu(X W) - Y), zeroed where relu(X W) <= 0",
    "dX": "df/dX = G W^T",
}


def _check_reduction(reduction: str) -> None:
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")


def loss(X: Tensor, W: Tensor, Y: Tensor, reduction: str = "sum") -> Tensor:
    """The loss exactly as the reference expression computes it (differentiable)."""
    _check_reduction(reduction)
    sq = (F.relu(X @ W) - Y).pow(2)
    return sq.sum() if reduction == "sum" else sq.mean()


def autograd_grads(X: Tensor, W: Tensor, Y: Tensor, reduction: str = "sum") -> Grads:
    """Loss and gradients by torch.autograd on the reference expression."""
    X, W, Y = (t.detach().requires_grad_(True) for t in (X, W, Y))
    with torch.enable_grad():
        f = loss(X, W, Y, reduction)
        dX, dW, dY = torch.autograd.grad(f, (X, W, Y))
    return Grads(f.detach(), dW, dX, dY)


def formula_grads(X: Tensor, W: Tensor, Y: Tensor, reduction: str = "sum") -> Grads:
    """Loss and gradients from the closed-form FORMULAS, in eager PyTorch."""
    _check_reduction(reduction)
    # The mean over nothing is NaN, as torch's mean: 1/0 taken as inf.
    scale = 1.0 if reduction == "sum" else (1.0 / Y.numel() if Y.numel() else math.inf)
    A = F.relu(X @ W)
    R = A - Y
    # Zero where relu(XW) <= 0, as autograd's ReLU backward: NaN passes through,
    # and a masked infinite residual gives 0, not inf * 0.
    G = torch.where(A <= 0, torch.zeros_like(R), (2.0 * scale) * R)
    K, N = W.shape
    M = math.prod(X.shape[:-1])  # not reshape(-1, K): ambiguous when K == 0
    dW = X.reshape(M, K).T @ G.reshape(M, N)
    dX = G @ W.T
    dY = (-2.0 * scale) * R
    f = (R * R).sum() * scale if reduction == "sum" else (R * R).mean()
    return Grads(f, dW, dX, dY)


def make_inputs(
    M: Union[int, tuple[int, ...]],
    K: int,
    N: int,
    *,
    dtype: torch.dtype = torch.float32,
    device="cpu",
    seed: int = 0,
) -> tuple[Tensor, Tensor, Tensor]:
    """X (M, K), W (K, N), Y (M, N), as the classic exercise draws them.

    ``torch.manual_seed(seed); X = torch.randn(M, K); W = torch.randn(K, N);
    Y = torch.randn(M, N)``: drawn in float32 on the CPU, then cast to
    ``dtype`` and moved to ``device``, so every dtype and device sees the same
    numbers. A private generator leaves the global RNG state alone. M may be
    a tuple of leading dimensions: X is then (*M, K) and Y (*M, N), and
    ``M=()`` gives 1-D X and Y.
    """
    lead = (M,) if isinstance(M, int) else tuple(M)
    gen = torch.Generator().manual_seed(seed)
    shapes = ((*lead, K), (K, N), (*lead, N))
    return tuple(torch.randn(s, generator=gen).to(device=device, dtype=dtype) for s in shapes)
