"""The shape agreement of relufrob.distributed: one small all_gather, then
every rank raises together or none does.

Each rank checks its own arguments (relufrob._library.checks, the C++ checks in
Python) and packs what the other ranks must agree with -- its mode, its
reduction, its activation, which gradients it computes (wrt, or for
relufrob.distributed.loss which inputs require grad), its dtypes, its
device type, the autocast state of that device type and its shard shapes
-- into a fixed-length int64 vector. One all_gather gives every rank all
the vectors, and every rank applies the same rules to the same data, so a
mismatch raises on every rank, before the packed all-reduce that would
otherwise hang, fail on some ranks only, or (a differing activation) sum
two different losses into a silently wrong answer.

The op's scale is not in the vector: it follows from the reduction and the
agreed global element count, so the ranks cannot differ in it.

A rank whose checks raise something other than an argument error (a
RuntimeError, an OutOfMemoryError) sends a status that sends every rank
into _collectives.raise_shared_failure: all of them raise the same
DistributedCallError.
"""

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.distributed as dist
from torch import Tensor

from .._library.checks import check_args, explain_failure, target_dtype
from .._types import FLOAT_DTYPES
from ._collectives import collective, collective_device, raise_shared_failure

__all__ = ["MODES", "Agreement", "agree_on_shards"]

MODES = ("rows", "cols")
MAX_DIMS = 8  # dimensions per tensor the vector has room for
_ARGS = ("X", "W", "Y", "bias")
# What a rank's own failed check names, for the other ranks' messages.
_CHECKED = (*_ARGS, "parallel", "reduction", "activation", "wrt")
_DTYPES = list(FLOAT_DTYPES.values())
_NEEDS = ("dW", "dX", "dY", "db")
_ACTIVATIONS = (None, "relu")
_DEVICE_TYPES = ("cpu", "cuda")
# The status of a rank whose own work raised something other than an
# argument error: every rank then shares the failure.
SHARED_FAILURE = 100
# status, mode, reduction, X's dtype, the target's dtype, activation, device
# type, autocast state, then the four need flags
_HEAD = 8 + len(_NEEDS)
_SLOT = 1 + MAX_DIMS  # ndim (-1: None), then the dimensions


@dataclass(frozen=True)
class Agreement:
    """What the ranks agreed on: the global problem's element count."""

    global_rows: int  # M of the whole problem (X's leading dimensions, flattened)
    global_cols: int  # N of the whole problem

    @property
    def global_count(self) -> int:
        return self.global_rows * self.global_cols


@dataclass(frozen=True)
class _Shard:
    """One rank's vector, decoded."""

    status: int  # 0: its arguments passed its own checks; 1 + i: _CHECKED[i] failed
    mode: int
    reduction: int
    dtype: int
    target_dtype: int  # of Y, bias, the loss, dY and db (mixed precision: float32)
    activation: int
    device_type: int
    autocast: int  # 0: off on X's device type, else 1 + the index of its dtype
    need: tuple[bool, ...]
    shapes: tuple[Optional[tuple[int, ...]], ...]  # X, W, Y, bias; None where absent

    def shape(self, name: str) -> Optional[tuple[int, ...]]:
        return self.shapes[_ARGS.index(name)]


def _failed_argument(error: Exception) -> int:
    """1 + the index in _CHECKED of the argument an error message names
    (relufrob's messages read "relufrob: W must ..."), else len(_CHECKED) + 1."""
    text = str(error)
    for i, name in enumerate(_CHECKED):
        if f": {name} " in text:
            return 1 + i
    return 1 + len(_CHECKED)


def _autocast_state(device_type: str) -> int:
    if not torch.is_autocast_enabled(device_type):
        return 0
    return 1 + _DTYPES.index(torch.get_autocast_dtype(device_type))


def _encode(status, mode, reduction, activation, X, W, Y, bias, need) -> list[int]:
    ok = status == 0
    head = [
        status,
        MODES.index(mode) if mode in MODES else -1,
        ("sum", "mean").index(reduction) if ok else -1,
        _DTYPES.index(X.dtype) if ok else -1,
        _DTYPES.index(target_dtype(X, Y, bias)) if ok else -1,
        _ACTIVATIONS.index(activation) if ok else -1,
        _DEVICE_TYPES.index(X.device.type) if ok else -1,
        _autocast_state(X.device.type) if ok else -1,
        *(int(n) for n in (need if ok else (False,) * len(_NEEDS))),
    ]
    slots = []
    for t in (X, W, Y, bias):
        dims = list(t.shape) if ok and t is not None else []
        slots += [len(dims) if ok and t is not None else -1, *dims, *[0] * (MAX_DIMS - len(dims))]
    return head + slots


def _decode(row: list[int]) -> _Shard:
    shapes = []
    for i in range(len(_ARGS)):
        ndim, *dims = row[_HEAD + i * _SLOT : _HEAD + (i + 1) * _SLOT]
        shapes.append(None if ndim < 0 else tuple(dims[:ndim]))
    return _Shard(*row[:8], tuple(bool(n) for n in row[8:_HEAD]), tuple(shapes))


def _ranks_text(values: list) -> str:
    """'[4, 3] on ranks 0, 2; [5, 3] on rank 1' for a value per rank."""
    groups: dict = {}
    for rank, value in enumerate(values):
        groups.setdefault(value, []).append(rank)
    parts = []
    for value, ranks in groups.items():
        shown = "None" if value is None else (list(value) if isinstance(value, tuple) else value)
        word = "rank" if len(ranks) == 1 else "ranks"
        parts.append(f"{shown} on {word} {', '.join(map(str, ranks))}")
    return "; ".join(parts)


def _bias_kind(shard: _Shard) -> Optional[str]:
    """'(N,)' for a bias added to every row, 'full' for one of the output's shape."""
    bias, W = shard.shape("bias"), shard.shape("W")
    if bias is None:
        return None
    return "(N,)" if len(bias) == 1 and bias[0] == W[1] else "full"


def _require_same(fn: str, what: str, values: list, why: str) -> None:
    if len(set(values)) > 1:
        raise ValueError(
            f"{fn}: {what} must be the same on every rank ({why}); got {_ranks_text(values)}"
        )


def _autocast_text(code: int) -> str:
    return "off" if code == 0 else f"on, {str(_DTYPES[code - 1]).replace('torch.', '')}"


def _check_agreement(fn: str, shards: list[_Shard]) -> Agreement:
    """The rules, applied by every rank to every rank's vector."""

    def same(what, values, why):
        _require_same(fn, what, values, why)

    modes = [MODES[s.mode] if s.mode >= 0 else "an invalid mode" for s in shards]
    same("parallel", modes, "it says how the problem is split")
    rows = modes[0] == "rows"
    same("reduction", [("sum", "mean")[s.reduction] for s in shards], "the loss is one sum")
    same(
        "activation",
        [repr(_ACTIVATIONS[s.activation]) for s in shards],
        "the summed loss and gradients must be of one function",
    )
    same(
        "the device type of X",
        [_DEVICE_TYPES[s.device_type] for s in shards],
        "the collectives run on one kind of device",
    )
    same(
        "the autocast state (torch.autocast on X's device type)",
        [_autocast_text(s.autocast) for s in shards],
        "it decides the dtype the GEMMs run in",
    )
    dtypes = [str(_DTYPES[s.dtype]).replace("torch.", "") for s in shards]
    same("X's dtype", dtypes, "the all-reduce sums one dtype")
    targets = [str(_DTYPES[s.target_dtype]).replace("torch.", "") for s in shards]
    same("Y's and bias's dtype", targets, "the loss and db are summed in it")
    X = [s.shape("X") for s in shards]
    W = [s.shape("W") for s in shards]
    given = ["None" if s.shape("Y") is None else "given" for s in shards]
    same("Y (given or None)", given, "a target on every rank or on none")
    same("bias's kind", [_bias_kind(s) for s in shards], "None, (N,) or full on every rank")
    wrt = [tuple(n for n, w in zip(_NEEDS, s.need) if w) for s in shards]
    if fn.endswith(".loss"):
        what = "requires_grad (of W, X, Y, bias: the gradients computed)"
    else:
        what = "wrt (the gradients computed)"
    same(what, wrt, "the all-reduce packs them")
    leading = [math.prod(x[:-1]) for x in X]
    if rows:
        same("X's K = X.shape[-1]", [x[-1] for x in X], "rows mode splits X by rows only")
        same("W's shape", W, "rows mode replicates W")
        return Agreement(global_rows=sum(leading), global_cols=W[0][1])
    # W's K first: a K that differs is then told as W's, a differing M as X's.
    same("W's K = W.shape[0]", [w[0] for w in W], "cols mode splits W by columns only")
    same("X's shape", X, "cols mode replicates X")
    return Agreement(global_rows=leading[0], global_cols=sum(w[1] for w in W))


def agree_on_shards(
    fn: str, parallel, group, X, W, Y, bias, reduction, activation, need_flags: Callable
) -> tuple[Agreement, tuple[bool, ...]]:
    """All-gather every rank's shard shapes and raise on all ranks if they disagree.

    `fn` names the caller in messages; `need_flags()` gives (need_dW, need_dX,
    need_dY, need_db), and may raise for a bad `wrt`. Returns the agreement
    and those flags. A rank whose own arguments fail relufrob's checks
    re-raises its error; the others raise a ValueError naming that rank and
    argument.
    """
    status, error, need = 0, None, (False,) * len(_NEEDS)
    try:
        if parallel not in MODES:
            raise ValueError(f"{fn}: parallel must be 'rows' or 'cols', got {parallel!r}")
        explain_failure(X, W, Y, reduction, bias, activation)
        check_args(X, W, Y, reduction, bias, activation)
        for name, t in zip(_ARGS, (X, W, Y, bias)):
            if t is not None and t.dim() > MAX_DIMS:
                raise ValueError(
                    f"{fn}: {name} may have at most {MAX_DIMS} dimensions, got {t.dim()}"
                )
        _check_device_type(fn, X)
        need = tuple(need_flags())
    except (TypeError, ValueError, NotImplementedError) as e:
        error, status = e, _failed_argument(e)
    except Exception as e:  # not an argument error: every rank shares it
        error, status = e, SHARED_FAILURE
    device = collective_device(group, X)
    mine = torch.tensor(
        _encode(status, parallel, reduction, activation, X, W, Y, bias, need), device=device
    )
    world = dist.get_world_size(group)
    gathered = [torch.empty_like(mine) for _ in range(world)]
    collective(
        fn, "the agreement (all_gather)", lambda: dist.all_gather(gathered, mine, group=group)
    )
    shards = [_decode(v.tolist()) for v in gathered]
    if any(s.status == SHARED_FAILURE for s in shards):
        own = error if status == SHARED_FAILURE else None
        raise_shared_failure(fn, group, device, own, "checking its arguments")
    if error is not None:
        raise error
    failed = [(r, s.status) for r, s in enumerate(shards) if s.status]
    if failed:
        rank, code = failed[0]
        what = _CHECKED[code - 1] if code <= len(_CHECKED) else "argument"
        raise ValueError(
            f"{fn}: rank {rank} was given an invalid {what}, so no rank computes; "
            "see the error raised on that rank"
        )
    return _check_agreement(fn, shards), need


def _check_device_type(fn: str, X: Tensor) -> None:
    """A device the collectives cannot serve (meta, or one relufrob has no
    kernels for) is refused here, by name, on the rank that has it; the
    shape checks have already put every other tensor on X's device."""
    if X.device.type not in _DEVICE_TYPES:
        raise ValueError(
            f"{fn}: X is on {X.device}, but a distributed call runs on 'cpu' or 'cuda' "
            "tensors (a meta tensor has no values to reduce)"
        )
