"""relufrob: f = ||relu(X W) - Y||_F^2 and its gradients, fused, for PyTorch.

    import relufrob
    loss, dW, dX, dY = relufrob.grads(X, W, Y)      # plain tensors, no graph
    f = relufrob.loss(X, W, Y)                      # differentiable loss
"""
import torch  # noqa: F401  (loads libtorch before the extension)

from . import _C  # noqa: F401  (registers torch.ops.relufrob.*)
from . import fake_kernels  # noqa: F401  (shape functions for torch.compile)
from . import reference
from .ops import Grads, grads, loss

__version__ = "0.1.0"

__all__ = ["Grads", "grads", "loss", "reference", "build_info", "__version__"]


def build_info() -> dict:
    """How the compiled kernels were built: CUDA or not, archs, torch, OpenMP."""
    return dict(_C.build_info())
