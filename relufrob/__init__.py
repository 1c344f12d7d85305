"""relufrob: f = ||relu(X W + b) - Y||_F^2 and its gradients, fused, for PyTorch.

import relufrob
loss, dW, dX, dY = relufrob.grads(X, W, Y)      # plain tensors, no graph
f = relufrob.loss(X, W, Y)                      # differentiable loss
loss, dW, dX, dY, db = relufrob.grads(X, W, Y, bias=b)   # with a bias
relufrob.grads(X, W, None, bias=b, activation=None)       # f = ||X W + b||^2

relufrob.testing holds the pure-PyTorch reference and the parity rule;
relufrob.distributed (sharded problems) and relufrob.check (the teaching
exercise) are imported on first use.
"""

import importlib

import torch  # noqa: F401  (loads libtorch before the extension)

from . import (
    _library,  # noqa: F401  (loads the ops and registers their rules)
    reference,
    testing,
)
from ._types import ClippedGrads, Grads, GradsWithBias, PerSampleNorms
from ._version import __version__
from .ops import build_info, cpu_kernels, grads, loss
from .per_sample import clipped_grads, per_sample_grad_norms

__all__ = [
    "Grads",
    "GradsWithBias",
    "grads",
    "loss",
    "per_sample_grad_norms",
    "clipped_grads",
    "PerSampleNorms",
    "ClippedGrads",
    "reference",
    "testing",
    "build_info",
    "cpu_kernels",
    "__version__",
]

# Not imported by `import relufrob`: torch.distributed and the report code
# are loaded only by those who use them.
_LAZY = ("distributed", "check")


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'relufrob' has no attribute {name!r}")
