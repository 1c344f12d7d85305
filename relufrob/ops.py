"""The public API: relufrob.grads, relufrob.loss, the Grads and GradsWithBias
they return, build_info and cpu_kernels.

Validation and allocation happen in C++; these wrappers only translate the
keyword interface into the op's flags and turn the placeholders of gradients
that were not asked for into None.
"""

from collections.abc import Iterable
from typing import Optional, Union

import torch
from torch import Tensor

from . import _compat
from ._C import _set_result_types
from ._C import build_info as _build_info
from ._C import cpu_kernels as _cpu_kernels
from ._C import grads_fast as _grads_fast
from ._library import functorch
from ._library.checks import explain_failure
from ._types import Grads, GradsWithBias, make_grads, need_flags

__all__ = ["Grads", "GradsWithBias", "grads", "loss", "build_info", "cpu_kernels"]


_grads_op = torch.ops.relufrob.grads.default
# _grads_fast is the same dispatcher op bound directly, returning the finished
# Grads: torch.ops' generic Python argument matching costs more than a whole
# 10x4x4 problem. A C function is invisible to torch.compile and to
# __torch_function__ (modes and tensor subclasses), so those cases keep using
# _grads_op. It returns None for arguments it does not take (non-tensors).
_set_result_types({"Grads": Grads, "GradsWithBias": GradsWithBias})
_is_compiling = torch.compiler.is_compiling
_has_torch_function = torch.overrides.has_torch_function
_loss_op = torch.ops.relufrob.loss.default
# Under torch.func transforms the op's C++ autograd cannot run; see _library/functorch.py.
_transforms_active = _compat.transforms_active
_interpreter_stack = _compat.interpreter_stack
_func_loss = functorch.loss
_unpack_dual = torch.autograd.forward_ad.unpack_dual
_refuse_differentiated_grads = functorch.refuse_differentiated_grads


def grads(
    X: Tensor,
    W: Tensor,
    Y: Optional[Tensor],
    *,
    bias: Optional[Tensor] = None,
    activation: Optional[str] = "relu",
    reduction: str = "sum",
    wrt: Optional[Iterable[str]] = None,
) -> Union[Grads, GradsWithBias]:
    """Loss f = ||act(X W + b) - Y||_F^2 and its gradients, in one fused call.

    Args:
        X: (*, K) inputs. W: (K, N) weights. Y: (*, N) targets with X's
            leading shape, or None for a target of zeros. Any strides;
            float16, bfloat16, float32 or float64, all the same dtype and
            device.
        bias: None; an (N,) vector added to every row, as nn.Linear's; or a
            tensor of the output's shape (*, N), added elementwise.
        activation: "relu" (default) or None (the identity: no mask).
        reduction: "sum" (default) or "mean", which divides the loss and every
            gradient by the output's element count.
        wrt: which gradients to compute, as input names among "X", "W", "Y"
            and "b", e.g. ``wrt=("W",)``. Default: every input given. The
            others come back as None and cost nothing.

    Returns:
        Grads(loss, dW, dX, dY) without a bias, GradsWithBias(loss, dW, dX,
        dY, db) with one: a 0-dim loss and each gradient in its input's
        shape, dtype and device (dY is None when Y is). The results never
        carry an autograd graph.
    """
    # wrt=None, the default, is left to _grads_fast (every input given).
    need = None if wrt is None else need_flags(wrt, Y is not None, bias is not None)
    try:
        # has_torch_function is also true under any torch function mode.
        if not (_is_compiling() or _has_torch_function((X, W, Y, bias))):
            if _interpreter_stack() is None:  # no torch.func transform
                out = _grads_fast(X, W, Y, bias, activation, reduction, need)
                if out is not None:
                    return out
            else:
                _refuse_differentiated_grads(X, W, Y, bias)
        if need is None:
            need = need_flags(None, Y is not None, bias is not None)
        f, dW, dX, dY, db = _grads_op(
            X,
            W,
            Y,
            bias=bias,
            activation=activation,
            reduction=reduction,
            need_dW=need[0],
            need_dX=need[1],
            need_dY=need[2],
            need_db=need[3],
        )
    except (TypeError, NotImplementedError, RuntimeError):
        explain_failure(X, W, Y, reduction, bias, activation)
        raise
    return make_grads(f, (dW, dX, dY, db), need, bias is not None)


def loss(
    X: Tensor,
    W: Tensor,
    Y: Optional[Tensor],
    *,
    bias: Optional[Tensor] = None,
    activation: Optional[str] = "relu",
    reduction: str = "sum",
) -> Tensor:
    """The loss f = ||act(X W + b) - Y||_F^2 as a differentiable 0-dim tensor.

    The forward computes, in the same fused pass, the gradients of exactly the
    inputs that require grad; backward only scales them by grad_output.
    X, W, Y and bias are saved for backward (for an exact double backward),
    so modifying any of them in place before backward raises, as autograd
    does for saved tensors. Arguments are as for :func:`grads`.
    """
    try:
        if _transforms_active():
            return _func_loss(X, W, Y, bias, activation, reduction)
        return _loss_op(X, W, Y, bias=bias, activation=activation, reduction=reduction)
    except (TypeError, NotImplementedError, RuntimeError) as e:
        explain_failure(X, W, Y, reduction, bias, activation)
        # Forward-mode AD outside torch.func (forward_ad dual tensors, and
        # func.linearize, which traces with them) reaches the op's C++
        # autograd, whose refusal names neither relufrob nor what to use.
        if _has_tangent(X, W, Y, bias):
            raise NotImplementedError(functorch.NO_FORWARD_MODE) from e
        raise


def _has_tangent(*tensors) -> bool:
    return any(isinstance(t, torch.Tensor) and _unpack_dual(t).tangent is not None for t in tensors)


def build_info() -> dict:
    """How the compiled kernels were built: CUDA or not, archs, torch, OpenMP."""
    return dict(_build_info())


def cpu_kernels() -> dict:
    """The CPU kernels this process runs: {'isa', 'gemm', 'bf16_gemm'}.

    'isa' ('default', 'avx2' or 'avx512') follows torch's CPU capability, so
    ATEN_CPU_CAPABILITY forces it; 'gemm' ('blas' or 'brgemm') is the
    large-problem float32 GEMM backend, brgemm on non-Intel AVX-512 CPUs and
    BLAS elsewhere (MKL's AVX-512 paths run on Intel CPUs only)
    unless RELUFROB_CPU_GEMM=blas|brgemm says otherwise; 'bf16_gemm' is
    'native' (bfloat16 GEMMs, on AVX-512 CPUs with AMX or AVX512-BF16) or
    'widen' (bfloat16 operands converted to float32, everywhere else; float16
    always), unless RELUFROB_CPU_LOWP_GEMM=native|widen says otherwise.
    Fixed for the process.
    """
    return dict(_cpu_kernels())
