"""Pure-PyTorch references for f = ||relu(X W) - Y||_F^2 and its gradients.

Two independent routes to the same numbers, used by the tests, the benchmark
and ``python -m relufrob check``:

* :func:`autograd_grads` differentiates the expression with torch.autograd,
  the ground truth the hand derivation is checked against;
* :func:`formula_grads` evaluates the closed-form gradients eagerly::

      R  = relu(X W) - Y
      dY = -2 R
      G  = 2 R * [relu(X W) > 0]      (NaN counts as > 0, as in autograd)
      dW = Xᵀ G
      dX = G Wᵀ

Leading dimensions follow nn.Linear (X is (*, K), Y is (*, N)); with
``reduction="mean"`` the loss and every gradient are divided by Y.numel().
"""
import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Grads", "loss", "autograd_grads", "formula_grads", "FORMULAS"]

FORMULAS = {
    "f": "f = sum((relu(X W) - Y)^2)",
    "dY": "df/dY = -2 (relu(X W) - Y)",
    "dW": "df/dW = X^T G,  G = 2 (relu(X W) - Y), zeroed where relu(X W) <= 0",
    "dX": "df/dX = G W^T",
}


class Grads(NamedTuple):
    """The loss and the gradients of the loss with respect to W, X and Y."""

    loss: Tensor
    dW: Optional[Tensor]
    dX: Optional[Tensor]
    dY: Optional[Tensor]


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
    """Loss and gradients from the closed-form formulas, in eager PyTorch."""
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
