"""Fake (meta) implementations of the relufrob ops.

torch.compile and torch.export trace with fake tensors, possibly with symbolic
shapes, so these compute output metadata without touching data. They validate
with relufrob.validation.check_args, worded as the C++ checks, so that traced
code fails the same way eager code does.
"""

import torch

from .validation import check_args


@torch.library.register_fake("relufrob::grads")
def _grads_fake(X, W, Y, need_dW=True, need_dX=True, need_dY=True, reduction="sum"):
    check_args(X, W, Y, reduction)

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
    check_args(X, W, Y, reduction)
    return X.new_empty(())
