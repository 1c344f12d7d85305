"""The public result types and the small vocabulary every layer shares.

A leaf: it imports torch and typing only, so the kernels' wrappers, the
reference, the distributed layer and the teaching command can all use it
without importing one another.
"""

from collections.abc import Iterable
from typing import NamedTuple, Optional, Union

import torch
from torch import Tensor

__all__ = [
    "FLOAT_DTYPES",
    "ClippedGrads",
    "Grads",
    "GradsWithBias",
    "PerSampleNorms",
    "make_grads",
    "need_flags",
]

# The dtypes relufrob accepts, by the names the command lines use.
FLOAT_DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}


class Grads(NamedTuple):
    """The loss and the gradients of the loss with respect to W, X and Y."""

    loss: Tensor
    dW: Optional[Tensor]
    dX: Optional[Tensor]
    dY: Optional[Tensor]


class GradsWithBias(NamedTuple):
    """Grads, plus db: the gradient with respect to the bias, in bias's shape."""

    loss: Tensor
    dW: Optional[Tensor]
    dX: Optional[Tensor]
    dY: Optional[Tensor]
    db: Optional[Tensor]


class PerSampleNorms(NamedTuple):
    """relufrob.per_sample_grad_norms: the loss (summed over the samples) and
    each sample's gradient norm, a (B,) tensor."""

    loss: Tensor
    norms: Tensor


class ClippedGrads(NamedTuple):
    """relufrob.clipped_grads: the loss, the sums of the clipped per-sample
    gradients of W and the bias (db None without a bias), plus noise, and
    the per-sample norms they were clipped by."""

    loss: Tensor
    dW: Tensor
    db: Optional[Tensor]
    norms: Tensor


_NAMES = ("X", "W", "Y", "b")


def need_flags(
    wrt: Optional[Iterable[str]], has_y: bool, has_bias: bool, fn: str = "relufrob.grads"
) -> tuple[bool, bool, bool, bool]:
    """(need_dW, need_dX, need_dY, need_db) for a `wrt` selection such as ("W",).

    None means every input given. `fn` names the caller in messages.
    """
    if wrt is None:
        return (True, True, has_y, has_bias)
    if isinstance(wrt, str):
        wrt = (wrt,)
    try:
        names = tuple(wrt)
    except TypeError:
        raise TypeError(
            f"{fn}: wrt must be a sequence of input names among "
            f"'X', 'W', 'Y', 'b', got {type(wrt).__name__}"
        ) from None
    unknown = [n for n in names if n not in _NAMES]
    if unknown:
        raise ValueError(f"{fn}: wrt must name inputs among 'X', 'W', 'Y', 'b', got {unknown[0]!r}")
    if "Y" in names and not has_y:
        raise ValueError(f"{fn}: wrt names 'Y', but Y is None (there is no dY)")
    if "b" in names and not has_bias:
        raise ValueError(f"{fn}: wrt names 'b', but bias is None (there is no db)")
    return ("W" in names, "X" in names, "Y" in names, "b" in names)


def make_grads(f, grads, need, has_bias: bool) -> Union[Grads, GradsWithBias]:
    """The op's (dW, dX, dY, db) as the Grads or GradsWithBias users get,
    the gradients not in ``need`` (placeholders) as None."""
    dW, dX, dY, db = (g if wanted else None for g, wanted in zip(grads, need))
    if has_bias:
        return GradsWithBias(f, dW, dX, dY, db)
    return Grads(f, dW, dX, dY)
