"""Fake (meta) implementations of the relufrob ops.

torch.compile and torch.export trace with fake tensors, possibly with symbolic
shapes, so these compute output metadata without touching data. They validate
with relufrob._library.checks.check_args, worded as the C++ checks, so that traced
code fails the same way eager code does.
"""

import torch

from .checks import (
    check_args,
    check_per_sample,
    check_per_sample_dtype_and_route,
    check_scale,
    target_dtype,
)


@torch.library.register_fake("relufrob::grads")
def _grads_fake(
    X,
    W,
    Y,
    bias=None,
    *,
    activation="relu",
    reduction="sum",
    scale=1.0,
    need_dW=True,
    need_dX=True,
    need_dY=True,
    need_db=True,
):
    check_args(X, W, Y, reduction, bias, activation)
    check_scale(scale)

    def placeholder():
        return X.new_empty((0,))

    # The loss, dY and db take the target's dtype (X's, or float32 in mixed
    # precision); dW and dX take X's.
    target = target_dtype(X, Y, bias)
    return (
        X.new_empty((), dtype=target),
        W.new_empty(W.shape) if need_dW else placeholder(),
        X.new_empty(X.shape) if need_dX else placeholder(),
        Y.new_empty(Y.shape) if need_dY and Y is not None else placeholder(),
        bias.new_empty(bias.shape) if need_db and bias is not None else placeholder(),
    )


@torch.library.register_fake("relufrob::loss")
def _loss_fake(X, W, Y, bias=None, *, activation="relu", reduction="sum", scale=1.0):
    check_args(X, W, Y, reduction, bias, activation)
    check_scale(scale)
    return X.new_empty((), dtype=target_dtype(X, Y, bias))


@torch.library.register_fake("relufrob::per_sample_grads")
def _per_sample_fake(
    X,
    W,
    Y,
    bias=None,
    *,
    activation="relu",
    max_norm=None,
    route="auto",
    need_dW=True,
    need_db=True,
):
    check_per_sample(X, max_norm, route)
    check_args(X, W, Y, "sum", bias, activation)
    check_per_sample_dtype_and_route(X, route)
    target = target_dtype(X, Y, bias)
    return (
        X.new_empty((), dtype=target),
        X.new_empty((X.shape[0],), dtype=target),
        W.new_empty(W.shape) if need_dW else X.new_empty((0,)),
        bias.new_empty(bias.shape) if need_db and bias is not None else X.new_empty((0,)),
    )
