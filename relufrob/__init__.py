"""relufrob: f = ||relu(X W + b) - Y||_F^2 and its gradients, fused, for PyTorch.

import relufrob
loss, dW, dX, dY = relufrob.grads(X, W, Y)      # plain tensors, no graph
f = relufrob.loss(X, W, Y)                      # differentiable loss
loss, dW, dX, dY, db = relufrob.grads(X, W, Y, bias=b)   # with a bias
relufrob.grads(X, W, None, bias=b, activation=None)       # f = ||X W + b||^2
"""

import torch  # noqa: F401  (loads libtorch before the extension)

from . import (
    _C,  # noqa: F401  (registers torch.ops.relufrob.*, before the fake kernels)
    batching,
    fake_kernels,  # noqa: F401  (shape functions for torch.compile)
    reference,
)
from ._version import __version__
from .ops import Grads, GradsWithBias, build_info, cpu_kernels, grads, loss

batching.register()  # vmap rules for both ops

__all__ = [
    "Grads",
    "GradsWithBias",
    "grads",
    "loss",
    "reference",
    "build_info",
    "cpu_kernels",
    "__version__",
]
