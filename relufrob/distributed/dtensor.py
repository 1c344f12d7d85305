"""DTensor sharding rules for torch.ops.relufrob.grads and torch.ops.relufrob.loss.

With them, DTensor inputs run the fused op on each rank's local shards:

* rows: X and Y Shard(0), W Replicate (an (N,) bias Replicate, a full bias
  Shard(0)) -> loss, dW and an (N,) bias's db Partial(sum); dX, dY and a
  full bias's db Shard(0).
* cols: W Shard(1), Y and a full bias sharded on their last dimension, an
  (N,) bias Shard(0), X Replicate -> loss and dX Partial(sum); dW, dY and db
  sharded as their inputs.
* anything else: every input Replicate, every output Replicate.

reduction="mean" only gets the replicated rule: the local op would divide by
the LOCAL element count, and a sum of local means is not the mean. DTensor
then gathers the inputs and every rank computes the whole problem. For a
sharded mean call the op with reduction="sum" and scale=1 / (M * N) of the
whole problem. Gradients not requested, (0,)-shaped placeholders, are
Replicate.

The bias is a positional argument of both ops (not keyword-only), so DTensor
redistributes it to the rule it picks like X, W and Y (it leaves keyword-only
tensor arguments as they are).

relufrob.loss's C++ autograd calls relufrob::grads, so with inputs that
require grad the grads rule applies; under torch.inference_mode (and with no
input requiring grad) relufrob::loss is dispatched on its own, hence its rule.
"""

import torch
from torch.distributed.tensor import Partial, Replicate, Shard
from torch.distributed.tensor.experimental import register_sharding

from .. import _compat

__all__ = ["register_dtensor_sharding"]

_GRADS = torch.ops.relufrob.grads.default
_LOSS = torch.ops.relufrob.loss.default
# Arguments that change the rule (reduction) or the outputs' shapes (the
# need_* flags: a placeholder instead of a gradient).
_STATIC_KWARGS = ["activation", "reduction", "need_dW", "need_dX", "need_dY", "need_db"]

_registered = False


def _last(spec) -> Shard:
    return Shard(spec.ndim - 1)


def _sharded_rules(X, W, Y, bias):
    """[(outputs, inputs)] for rows and cols: outputs are (loss, dW, dX, dY, db)."""
    P, R = Partial(), Replicate()
    row_bias = bias is not None and bias.ndim == 1 and bias.shape[0] == W.shape[1]
    rules = []
    if X.ndim >= 2:  # rows: a 1-D X is one row, which cannot be split
        inputs = [Shard(0), R] + [Shard(0)] * (Y is not None)
        if bias is not None:
            inputs.append(R if row_bias else Shard(0))
        rules.append(([P, P, Shard(0), Shard(0), P if row_bias else Shard(0)], inputs))
    inputs = [R, Shard(1)] + ([_last(Y)] if Y is not None else [])
    bias_placement = None if bias is None else (Shard(0) if row_bias else _last(bias))
    if bias is not None:
        inputs.append(bias_placement)
    dY = _last(Y) if Y is not None else R
    rules.append(([P, Shard(1), P, dY, bias_placement or R], inputs))
    return rules


def _sharding_grads_rule(
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
    inputs = 2 + (Y is not None) + (bias is not None)
    rules = [([Replicate()] * 5, [Replicate()] * inputs)]
    if reduction == "sum":
        # A placeholder is a (0,) tensor on every rank: Replicate.
        computed = (True, need_dW, need_dX, need_dY and Y is not None, need_db and bias is not None)
        for outputs, ins in _sharded_rules(X, W, Y, bias):
            rules.append(([p if c else Replicate() for p, c in zip(outputs, computed)], ins))
    return rules


def _sharding_loss_rule(X, W, Y, bias=None, *, activation="relu", reduction="sum", scale=1.0):
    return [
        (outs[:1], ins)
        for outs, ins in _sharding_grads_rule(X, W, Y, bias=bias, reduction=reduction)
    ]


def register_dtensor_sharding() -> None:
    """Register the rules with DTensor; calling it again does nothing."""
    global _registered
    if _registered:
        return
    register_sharding(_GRADS)(_sharding_grads_rule)
    register_sharding(_LOSS)(_sharding_loss_rule)
    # register_sharding caches a propagation by the inputs' specs and its
    # int arguments only; these ops' str and bool arguments change the rule
    # or the outputs' shapes, and without them in the key a call with
    # need_dW=False reuses the placements (and shapes) of an earlier call
    # with need_dW=True. The same RuntimeSchemaInfo register_sharding sets,
    # plus those keys.
    for op in (_GRADS, _LOSS):
        keys = [a for a in _compat.op_argument_names(op) if a in _STATIC_KWARGS]
        _compat.dtensor_cache_by_arguments(op, keys)
    _registered = True
