"""The argument checks of csrc/common/grads_plan.cpp, in Python and in its words.

C++ validates every real call. Python needs the same checks in two places
that C++ never reaches: the fake kernels, which torch.compile traces without
running C++, and the explanation of a call that the dispatcher refused before
C++ could look at it (a list for X, a sparse tensor, a device without
kernels). Each message is worded exactly as the C++ one, and
tests/test_errors_fake_kernels.py holds them against each other.
"""

import math

import torch
from torch import Tensor

from .. import _compat
from .._types import FLOAT_DTYPES

__all__ = [
    "check_activation",
    "check_scale",
    "check_args",
    "check_reduction",
    "explain_failure",
    "target_dtype",
]

_FLOAT_NAMES = ", ".join(list(FLOAT_DTYPES)[:-1]) + " or " + list(FLOAT_DTYPES)[-1]


def _check_layout(name: str, t: Tensor) -> None:
    # A nested tensor of the strided layout is not a dense one either.
    if t.is_nested:
        raise ValueError(f"relufrob: {name} must be a dense (strided) tensor, got a nested tensor")
    if t.layout != torch.strided:
        raise ValueError(
            f"relufrob: {name} must be a dense (strided) tensor, got layout {t.layout}"
        )


def _check_devices(X: Tensor, others) -> None:
    """others: (name, tensor) pairs that must be on X's device."""
    for name, t in others:
        if t.device != X.device:
            raise ValueError(
                f"relufrob: {name} must be on the same device as X ({X.device}), got {t.device}"
            )


_ACTIVATIONS = "'relu' or None"


def _check_bias(X: Tensor, N, bias: Tensor) -> None:
    """(N,) or the output's full shape (*, N), as in C++'s check_bias."""
    _check_kind("bias", bias)
    if bias.dim() == 1 and bias.shape[0] == N:
        return
    out_shape = [*X.shape[:-1], N]
    if list(bias.shape) != out_shape:
        raise ValueError(
            f"relufrob: bias must have shape (N,) = ({N},) or the output's shape (*, N) = "
            f"{out_shape}, got bias shape {list(bias.shape)}"
        )


def _check_kind(name: str, t: Tensor) -> None:
    _check_layout(name, t)
    if t.dtype not in FLOAT_DTYPES.values():
        raise TypeError(
            f"relufrob: {name} must be a floating-point tensor ({_FLOAT_NAMES}), got {t.dtype}"
        )


_REDUCED = (torch.float16, torch.bfloat16)


def target_dtype(X: Tensor, Y, bias) -> torch.dtype:
    """The dtype of Y, bias, the loss, dY and db: Y's, else bias's, else X's.

    It is X's, or float32 under a float16/bfloat16 X (a low-precision GEMM
    with a float32 target, as autocast produces)."""
    if Y is not None:
        return Y.dtype
    if bias is not None:
        return bias.dtype
    return X.dtype


def _check_dtypes(X: Tensor, W: Tensor, Y, bias) -> None:
    if W.dtype != X.dtype:
        raise TypeError(f"relufrob: W must have the same dtype as X ({X.dtype}), got {W.dtype}")
    reduced = X.dtype in _REDUCED
    for name, t in (("Y", Y), ("bias", bias)):
        if t is not None and not (t.dtype == X.dtype or (reduced and t.dtype == torch.float32)):
            also = ", or torch.float32" if reduced else ""
            raise TypeError(
                f"relufrob: {name} must have the same dtype as X ({X.dtype}){also}, got {t.dtype}"
            )
    if Y is not None and bias is not None and bias.dtype != Y.dtype:
        raise TypeError(
            f"relufrob: bias must have the same dtype as Y ({Y.dtype}), got {bias.dtype}"
        )


def check_activation(activation) -> None:
    if activation is not None and activation != "relu":
        raise ValueError(f"relufrob: activation must be {_ACTIVATIONS}, got {activation!r}")


def check_scale(scale) -> None:
    """As the C++ plan: a NaN or infinite scale would make every output NaN/Inf."""
    if not math.isfinite(scale):
        raise ValueError(f"relufrob: scale must be a finite number, got {scale}")


def check_reduction(reduction) -> None:
    if reduction not in ("sum", "mean"):
        raise ValueError(f"relufrob: reduction must be 'sum' or 'mean', got {reduction!r}")


def check_args(X, W, Y, reduction: str, bias=None, activation="relu") -> None:
    """Raise as C++ does for tensors it would refuse; in the same order.

    Shape conditions go through _compat.check_value, so that under symbolic
    shapes they become runtime asserts instead of specialising the trace.
    Y and bias may be None.
    """
    named = [("X", X), ("W", W)] + ([("Y", Y)] if Y is not None else [])
    for name, t in named:
        _check_kind(name, t)
    if X.dim() < 1:
        raise ValueError(
            "relufrob: X must have shape (*, K) with at least 1 dimension, "
            f"got shape {list(X.shape)}"
        )
    if W.dim() != 2:
        raise ValueError(f"relufrob: W must be 2-D (K, N), got shape {list(W.shape)}")
    K, N = X.shape[-1], W.shape[1]
    _compat.check_value(
        W.shape[0] == K,
        lambda: (
            f"relufrob: W must have shape (K, N) with K = X.shape[-1] = {K}, "
            f"got W shape {list(W.shape)}"
        ),
    )

    def bad_y():
        return (
            f"relufrob: Y must have shape (*, N) with X's leading dimensions "
            f"{list(X.shape[:-1])} and N = W.shape[1] = {N}, got Y shape {list(Y.shape)}"
        )

    if Y is not None:
        if Y.dim() != X.dim():
            raise ValueError(bad_y())
        for y, x in zip(Y.shape[:-1], X.shape[:-1]):
            _compat.check_value(y == x, bad_y)
        _compat.check_value(Y.shape[-1] == N, bad_y)
    if bias is not None:
        _check_bias(X, N, bias)
        named.append(("bias", bias))
    _check_dtypes(X, W, Y, bias)
    _check_devices(X, named[1:])
    check_activation(activation)
    check_reduction(reduction)


def check_per_sample(X, max_norm, route) -> None:
    """The checks relufrob::per_sample_grads adds, in C++'s words and order:
    X's batch dimension and max_norm before check_args, the dtype and route
    after it (check_per_sample_dtype_and_route)."""
    if X.dim() < 2:
        raise ValueError(
            f"relufrob: X must have shape (B, *, K), a batch of samples, got shape {list(X.shape)}"
        )
    if max_norm is not None and not (math.isfinite(max_norm) and max_norm > 0):
        raise ValueError(f"relufrob: max_norm must be a finite number > 0, got {max_norm:g}")


def check_per_sample_dtype_and_route(X, route) -> None:
    if X.dtype not in (torch.float32, torch.float64):
        name = {torch.float16: "Half", torch.bfloat16: "BFloat16"}.get(X.dtype, str(X.dtype))
        raise TypeError(
            "relufrob: the per-sample kernels take float32 or float64 X (relufrob's "
            f"per-sample functions widen float16/bfloat16), got {name}"
        )
    if route not in ("auto", "ghost", "direct"):
        raise ValueError(f"relufrob: route must be 'auto', 'ghost' or 'direct', got {route!r}")


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _has_kernel(device_type: str) -> bool:
    """Whether relufrob::grads has a kernel for tensors of this device type.
    Dispatch keys are spelled per device ('CUDA', but 'Meta'); a device type
    with no key of its own has no relufrob kernel."""
    key = {"meta": "Meta"}.get(device_type, device_type.upper())
    try:
        return _compat.dispatch_has_kernel("relufrob::grads", key)
    except RuntimeError:  # "could not parse dispatch key"
        return False


def explain_failure(X, W, Y, reduction, bias=None, activation="relu") -> None:
    """Raise a clear error for arguments the dispatcher refused before C++ saw them.

    Only reached after the op has failed, so the common path pays nothing;
    returns when the failure needs no explanation (C++ raised it already).
    """
    if not isinstance(reduction, str):
        raise TypeError(f"relufrob: reduction must be 'sum' or 'mean', got {reduction!r}")
    if activation is not None and not isinstance(activation, str):
        raise TypeError(f"relufrob: activation must be {_ACTIVATIONS}, got {activation!r}")
    # A str with no UTF-8 form (a lone surrogate) never reaches C++: torch
    # refuses it with a confusing "Expected a value of type 'str'".
    if not _utf8(reduction):
        check_reduction(reduction)
    if activation is not None and not _utf8(activation):
        check_activation(activation)
    named = [("X", X), ("W", W), ("Y", Y), ("bias", bias)]
    for name, t in named:
        if not isinstance(t, Tensor) and not (t is None and name in ("Y", "bias")):
            allowed = "a torch.Tensor or None" if name in ("Y", "bias") else "a torch.Tensor"
            raise TypeError(f"relufrob: {name} must be {allowed}, got {type(t).__name__}")
    named = [(n, t) for n, t in named if t is not None]
    # Not check_args: torch.compile traces this function when the op fails
    # inside a compiled region, and cannot trace torch._check_value.
    for name, t in named:
        _check_layout(name, t)
        # Quantized tensors have no relufrob kernel, so the dispatcher refuses
        # them before C++ can check their dtype as it checks every other.
        if t.is_quantized:
            raise TypeError(
                f"relufrob: {name} must be a floating-point tensor ({_FLOAT_NAMES}), got {t.dtype}"
            )
    _check_devices(X, named[1:])
    if X.device.type != "cpu" and not _has_kernel(X.device.type):
        raise NotImplementedError(
            f"relufrob: X is on {X.device}, but this build of relufrob has no "
            f"{X.device.type} kernels (see relufrob.build_info())"
        )
