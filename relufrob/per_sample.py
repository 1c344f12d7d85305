"""Per-sample gradients as DP-SGD uses them: their norms, and their clipped sum.

Sample b is X[b]: one row of a (B, K) X, or the rows of a (B, T, K) (or
(B, *, K)) X, with f_b = ||act(X_b W + bias_b) - Y_b||_F^2. For this loss
both quantities have closed forms (see docs/math.md) that fit relufrob's
fused row-blocked pass, so neither ever forms the B x K x N tensor of the
per-sample gradients themselves: the norms cost one GEMM and a pass over G,
the clipped sum two GEMMs (plain relufrob.grads needs three).
"""

import math
from numbers import Real
from typing import Optional

import torch
from torch import Tensor

from . import _compat
from ._C import _set_result_types
from ._C import per_sample_fast as _per_sample_fast
from ._library import functorch
from ._library.checks import explain_failure
from ._types import ClippedGrads, PerSampleNorms

__all__ = ["clipped_grads", "per_sample_grad_norms"]

_op = torch.ops.relufrob.per_sample_grads.default
_is_compiling = torch.compiler.is_compiling
_has_torch_function = torch.overrides.has_torch_function
_interpreter_stack = _compat.interpreter_stack  # None outside torch.func transforms
_LOW = (torch.float16, torch.bfloat16)
_set_result_types({"PerSampleNorms": PerSampleNorms, "ClippedGrads": ClippedGrads})


def _call(fn, X, W, Y, bias, activation, max_norm, route):
    """PerSampleNorms(loss, norms) for max_norm None, else ClippedGrads(loss,
    dW, db, norms) without noise: the op on float32/float64 inputs
    (float16/bfloat16 widened to float32: the kernels take those two), its
    results back in the inputs' dtypes."""
    fast = not _is_compiling()
    if fast and _interpreter_stack() is not None:  # a torch.func transform
        functorch.refuse_differentiated_grads(X, W, Y, bias, fn=fn)
        fast = False
    clip = max_norm is not None
    try:
        # The direct binding where no compile, mode, subclass or transform
        # needs torch.ops' Python entry (as relufrob.grads; ops.py). It takes
        # float32/float64 tensors only, and answers None to anything else.
        if fast and not _has_torch_function((X, W, Y, bias)):
            out = _per_sample_fast(
                X, W, Y, bias, activation, max_norm, route, clip, clip and bias is not None
            )
            if out is not None:
                return out
        args = (X, W, Y, bias)
        low = any(isinstance(t, Tensor) and t.dtype in _LOW for t in args)
        if low:
            args = tuple(
                t.float() if isinstance(t, Tensor) and t.dtype in _LOW else t for t in args
            )
        loss, norms, dW, db = _op(
            *args,
            activation=activation,
            max_norm=max_norm,
            route=route,
            need_dW=clip,
            need_db=clip and bias is not None,
        )
    except (TypeError, NotImplementedError, RuntimeError):
        explain_failure(X, W, Y, "sum", bias, activation)
        raise
    if low:
        target = (Y if Y is not None else bias if bias is not None else X).dtype
        loss, norms = loss.to(target), norms.to(target)
    if not clip:
        return PerSampleNorms(loss, norms)
    if bias is None:
        db = None
    elif low:
        db = db.to(bias.dtype)
    return ClippedGrads(loss, dW.to(W.dtype) if low else dW, db, norms)


def per_sample_grad_norms(
    X: Tensor,
    W: Tensor,
    Y: Optional[Tensor],
    *,
    bias: Optional[Tensor] = None,
    activation: Optional[str] = "relu",
    route: str = "auto",
) -> PerSampleNorms:
    """The loss and each sample's gradient norm, in one fused pass.

    Args:
        X: (B, K), one row per sample, or (B, T, K) (any (B, *, K)), T rows
            per sample. W: (K, N). Y: X's shape with N last, or None.
        bias: None, (N,) (shared by every sample) or the output's shape
            (each sample its own slice).
        activation: "relu" or None.
        route: for T > 1, how ||X_bᵀ G_b|| is formed: "auto" (the cheaper),
            "ghost" (<X_b X_bᵀ, G_b G_bᵀ>, T²(K+N) work) or "direct"
            (X_bᵀ G_b, T K N work).

    Returns:
        PerSampleNorms(loss, norms): the summed loss sum_b f_b and the (B,)
        norms sqrt(||df_b/dW||² + ||df_b/dbias||²), with no B x K x N tensor.
    """
    return _call("relufrob.per_sample_grad_norms", X, W, Y, bias, activation, None, route)


def _check_number(fn: str, name: str, value, *, positive: bool) -> float:
    # A float or int first: the Real (ABC) check costs more than a tiny call.
    if type(value) is not float and type(value) is not int:
        if isinstance(value, bool) or not isinstance(value, Real):
            raise TypeError(f"{fn}: {name} must be a real number, got {type(value).__name__}")
    value = float(value)
    ok = math.isfinite(value) and (value > 0 if positive else value >= 0)
    if not ok:
        rule = "a finite number > 0" if positive else "a finite number >= 0"
        raise ValueError(f"{fn}: {name} must be {rule}, got {value!r}")
    return value


def clipped_grads(
    X: Tensor,
    W: Tensor,
    Y: Optional[Tensor],
    *,
    max_norm: float,
    bias: Optional[Tensor] = None,
    activation: Optional[str] = "relu",
    noise_multiplier: float = 0.0,
    generator: Optional[torch.Generator] = None,
    route: str = "auto",
) -> ClippedGrads:
    """DP-SGD's gradient of this layer in one call: the clipped per-sample sum, plus noise.

    With c_b = min(1, max_norm / (norm_b + 1e-6)) (Opacus' clip factor),
    dW = sum_b c_b df_b/dW + noise_multiplier * max_norm * N(0, I), and db
    likewise (None without a bias); the noise is drawn from `generator`
    (dW's first, then db's), so a seeded generator reproduces it. Divide by
    B for a mean. The extra memory is one block of rows per thread (plus a
    K x N product per thread for the direct route), never B x K x N.
    Arguments as for :func:`per_sample_grad_norms`.

    Returns:
        ClippedGrads(loss, dW, db, norms).
    """
    fn = "relufrob.clipped_grads"
    max_norm = _check_number(fn, "max_norm", max_norm, positive=True)
    noise_multiplier = _check_number(fn, "noise_multiplier", noise_multiplier, positive=False)
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(
                f"{fn}: generator must be a torch.Generator or None, got {type(generator).__name__}"
            )
        if isinstance(X, Tensor) and generator.device.type != X.device.type:
            raise ValueError(
                f"{fn}: generator must be on X's device ({X.device}), got a generator on "
                f"{generator.device}"
            )
    out = _call(fn, X, W, Y, bias, activation, max_norm, route)
    if not noise_multiplier:
        return out
    std = noise_multiplier * max_norm

    def noisy(t):
        return t + std * torch.randn(t.shape, generator=generator, dtype=t.dtype, device=t.device)

    # dW's noise first, then db's: a seeded generator reproduces both.
    dW = noisy(out.dW)
    return out._replace(dW=dW, db=None if out.db is None else noisy(out.db))
