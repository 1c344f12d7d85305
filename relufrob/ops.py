"""The public API: relufrob.grads, relufrob.loss, the Grads they return, build_info
and cpu_kernels.

Validation and allocation happen in C++; these wrappers only translate the
keyword interface into the op's flags and turn the placeholders of gradients
that were not asked for into None.
"""

from collections.abc import Iterable
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from ._C import _set_grads_type
from ._C import build_info as _build_info
from ._C import cpu_kernels as _cpu_kernels
from ._C import grads_fast as _grads_fast
from .validation import explain_failure

__all__ = ["Grads", "grads", "loss", "build_info", "cpu_kernels"]


class Grads(NamedTuple):
    """The loss and the gradients of the loss with respect to W, X and Y."""

    loss: Tensor
    dW: Optional[Tensor]
    dX: Optional[Tensor]
    dY: Optional[Tensor]


_grads_op = torch.ops.relufrob.grads.default
# _grads_fast is the same dispatcher op bound directly, returning the finished
# Grads: torch.ops' generic Python argument matching costs more than a whole
# 10x4x4 problem. A C function is invisible to torch.compile and to
# __torch_function__ (modes and tensor subclasses), so those cases keep using
# _grads_op. It returns None for arguments it does not take (non-tensors).
_set_grads_type(Grads)
_is_compiling = torch.compiler.is_compiling
_torch_function_mode_enabled = torch._C._is_torch_function_mode_enabled
_has_torch_function = torch.overrides.has_torch_function
_loss_op = torch.ops.relufrob.loss.default

_ALL = ("X", "W", "Y")
_NEED_ALL = (True, True, True)


def _need_flags(wrt) -> tuple[bool, bool, bool]:
    """(need_dW, need_dX, need_dY) for a `wrt` selection such as ("W",)."""
    if isinstance(wrt, str):
        wrt = (wrt,)
    try:
        names = tuple(wrt)
    except TypeError:
        raise TypeError(
            "relufrob.grads: wrt must be a sequence of input names among "
            f"'X', 'W', 'Y', got {type(wrt).__name__}"
        ) from None
    unknown = [n for n in names if n not in _ALL]
    if unknown:
        raise ValueError(
            f"relufrob.grads: wrt must name inputs among 'X', 'W', 'Y', got {unknown[0]!r}"
        )
    return ("W" in names, "X" in names, "Y" in names)


def grads(
    X: Tensor, W: Tensor, Y: Tensor, *, reduction: str = "sum", wrt: Iterable[str] = _ALL
) -> Grads:
    """Loss f = ||relu(X W) - Y||_F^2 and its gradients, in one fused call.

    Args:
        X: (*, K) inputs. W: (K, N) weights. Y: (*, N) targets, with X's
            leading shape. Any strides; float16, bfloat16, float32 or float64,
            all three the same dtype and device.
        reduction: "sum" (default) or "mean", which divides the loss and every
            gradient by Y.numel().
        wrt: which gradients to compute, as input names, e.g. ``wrt=("W",)``.
            The others come back as None and cost nothing.

    Returns:
        Grads(loss, dW, dX, dY): a 0-dim loss and each gradient in its input's
        shape, dtype and device. The results never carry an autograd graph.
    """
    need = _NEED_ALL if wrt is _ALL else _need_flags(wrt)
    try:
        if not (
            _is_compiling() or _torch_function_mode_enabled() or _has_torch_function((X, W, Y))
        ):
            out = _grads_fast(X, W, Y, need[0], need[1], need[2], reduction)
            if out is not None:
                return out
        f, dW, dX, dY = _grads_op(X, W, Y, need[0], need[1], need[2], reduction)
    except (TypeError, NotImplementedError, RuntimeError):
        explain_failure(X, W, Y, reduction)
        raise
    return Grads(f, dW if need[0] else None, dX if need[1] else None, dY if need[2] else None)


def loss(X: Tensor, W: Tensor, Y: Tensor, *, reduction: str = "sum") -> Tensor:
    """The loss f = ||relu(X W) - Y||_F^2 as a differentiable 0-dim tensor.

    The forward computes, in the same fused pass, the gradients of exactly the
    inputs that require grad; backward only scales them by grad_output.
    X, W and Y are saved for backward (for an exact double backward), so
    modifying any of them in place before backward raises, as autograd does
    for saved tensors. Arguments are as for :func:`grads`.
    """
    try:
        return _loss_op(X, W, Y, reduction)
    except (TypeError, NotImplementedError, RuntimeError):
        explain_failure(X, W, Y, reduction)
        raise


def build_info() -> dict:
    """How the compiled kernels were built: CUDA or not, archs, torch, OpenMP."""
    return dict(_build_info())


def cpu_kernels() -> dict:
    """The CPU kernels this process runs: {'isa', 'gemm'}.

    'isa' ('default', 'avx2' or 'avx512') follows torch's CPU capability, so
    ATEN_CPU_CAPABILITY forces it; 'gemm' ('blas' or 'brgemm') is the
    large-problem GEMM backend, brgemm on AVX-512 and BLAS elsewhere unless
    RELUFROB_CPU_GEMM=blas|brgemm says otherwise. Fixed for the process.
    """
    return dict(_cpu_kernels())
