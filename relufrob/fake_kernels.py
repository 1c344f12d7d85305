"""Fake (meta) implementations of the relufrob ops.

torch.compile and torch.export trace with fake tensors, possibly with symbolic
shapes, so these compute output metadata without touching data. They repeat
the shape rules of csrc/common/grads_plan.cpp so that traced code fails the
same way eager code does.
"""
import torch

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check(X, W, Y, reduction):
    for name, t in (("X", X), ("W", W), ("Y", Y)):
        if t.dtype not in _FLOAT_DTYPES:
            raise TypeError(
                f"relufrob: {name} must be a floating-point tensor (float16, bfloat16, "
                f"float32 or float64), got {t.dtype}")
    if X.dim() < 1:
        raise ValueError(f"relufrob: X must have shape (*, K) with at least 1 dimension, "
                         f"got shape {list(X.shape)}")
    if W.dim() != 2:
        raise ValueError(f"relufrob: W must be 2-D (K, N), got shape {list(W.shape)}")
    if Y.dim() != X.dim():
        raise ValueError(f"relufrob: Y must have shape (*, N) with X's leading dimensions, "
                         f"got Y shape {list(Y.shape)}")
    torch._check_value(W.shape[0] == X.shape[-1],
                 lambda: f"relufrob: W must have shape (K, N) with K = X.shape[-1], "
                         f"got W shape {list(W.shape)}")
    for i in range(X.dim() - 1):
        torch._check_value(Y.shape[i] == X.shape[i],
                     lambda: f"relufrob: Y must have X's leading dimensions, got Y shape "
                             f"{list(Y.shape)}")
    torch._check_value(Y.shape[-1] == W.shape[1],
                 lambda: f"relufrob: Y must have shape (*, N) with N = W.shape[1], "
                         f"got Y shape {list(Y.shape)}")
    for name, t in (("W", W), ("Y", Y)):
        if t.dtype != X.dtype:
            raise TypeError(f"relufrob: {name} must have the same dtype as X ({X.dtype}), "
                            f"got {t.dtype}")
        if t.device != X.device:
            raise ValueError(f"relufrob: {name} must be on the same device as X "
                             f"({X.device}), got {t.device}")
    if reduction not in ("sum", "mean"):
        raise ValueError(f"relufrob: reduction must be 'sum' or 'mean', got '{reduction}'")


@torch.library.register_fake("relufrob::grads")
def _grads_fake(X, W, Y, need_dW=True, need_dX=True, need_dY=True, reduction="sum"):
    _check(X, W, Y, reduction)

    def placeholder():
        return X.new_empty((0,))

    return (
        X.new_empty(()),
        W.new_empty(W.shape) if need_dW else placeholder(),
        X.new_empty(X.shape) if need_dX else placeholder(),
        Y.new_empty(Y.shape) if need_dY else placeholder(),
    )


@torch.library.register_fake("relufrob::loss")
def _loss_fake(X, W, Y, reduction="sum"):
    _check(X, W, Y, reduction)
    return X.new_empty(())
