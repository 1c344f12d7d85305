"""Every private torch name relufrob uses, in one place.

Each entry below is a torch internal that no public API replaces (the
reason is written next to it). They are looked up once, at import, and a
name that this torch lacks does not break ``import relufrob``: the entry
raises a RuntimeError naming itself when it is used, and
tests/test_compat.py fails naming it on such a torch before any user does.
Nothing outside this module touches ``torch._*`` or an underscore attribute
of a torch object.
"""

import importlib
from typing import Any, Callable, NamedTuple

import torch

__all__ = [
    "ENTRIES",
    "Entry",
    "check_value",
    "dispatch_has_kernel",
    "dtensor_cache_by_arguments",
    "functorch_level",
    "functorch_unwrap",
    "interpreter_stack",
    "is_differentiating_level",
    "live_interpreters",
    "op_argument_names",
    "require",
    "transforms_active",
    "unwrap_if_dead",
]


class Entry(NamedTuple):
    name: str  # what relufrob calls it
    path: str  # module path, then attributes after the colon
    why: str  # why no public API serves


ENTRIES = (
    Entry(
        "interpreter_stack",
        "torch._C._functorch:peek_interpreter_stack",
        "relufrob.loss must know whether a torch.func transform is running, to route the "
        "call through its Python autograd.Function (functorch cannot run the op's C++ "
        "autograd); torch.func has no public 'is transforming' query",
    ),
    Entry(
        "wrapper_level",
        "torch._C._functorch:maybe_get_level",
        "the backward must know which transform level its cotangent belongs to, to tell "
        "grad-of-grad (recompute differentiably) from a single grad (reuse the fused "
        "gradients); no public API exposes a tensor's transform level",
    ),
    Entry(
        "is_wrapped",
        "torch._C._functorch:is_functorch_wrapped_tensor",
        "the backward looks through transform wrappers to see whether plain autograd "
        "tracks an input; no public API unwraps them",
    ),
    Entry(
        "unwrap",
        "torch._C._functorch:get_unwrapped",
        "as is_wrapped: the tensor under one transform wrapper",
    ),
    Entry(
        "unwrap_if_dead",
        "torch._C._functorch:unwrap_if_dead",
        "a backward run after its transform level has exited (vjp's pullback) holds that "
        "level's dead wrappers; a second derivative formed there must start from the "
        "tensors under them, as autograd.Function.apply does; no public API unwraps them",
    ),
    Entry(
        "interpreters",
        "torch._functorch.pyfunctorch:retrieve_all_functorch_interpreters",
        "which transform levels are live (grad/jvp levels differentiate the backward); "
        "no public API lists them",
    ),
    Entry(
        "grad_interpreter",
        "torch._functorch.pyfunctorch:GradInterpreter",
        "to tell a differentiating level from a vmap level",
    ),
    Entry(
        "jvp_interpreter",
        "torch._functorch.pyfunctorch:JvpInterpreter",
        "to tell a differentiating level from a vmap level",
    ),
    Entry(
        "check_value",
        "torch:_check_value",
        "shape checks that raise ValueError and, under symbolic shapes, become runtime "
        "asserts instead of specialising the trace; torch.check* has no public ValueError form",
    ),
    Entry(
        "dispatch_has_kernel",
        "torch._C:_dispatch_has_kernel_for_dispatch_key",
        "to explain a refused call on a device this build has no kernels for; "
        "torch.library offers no query of registered kernels",
    ),
    Entry(
        "op_schema",
        "torch._ops:OpOverload",
        "an op's argument names (OpOverload._schema); OpOverload has no public schema accessor",
    ),
    Entry(
        "dtensor_schema_info",
        "torch.distributed.tensor._op_schema:RuntimeSchemaInfo",
        "register_sharding caches a propagation by tensor and int arguments only; the "
        "ops' str and bool arguments must be added to its cache key, which has no public API",
    ),
    Entry(
        "dtensor_schema_table",
        "torch.distributed.tensor:DTensor._op_dispatcher.sharding_propagator.op_to_schema_info",
        "where DTensor keeps that cache key per op (as dtensor_schema_info)",
    ),
)

_BY_NAME = {e.name: e for e in ENTRIES}


def _lookup(path: str) -> Any:
    """The object at 'module:attr.attr', or None where this torch lacks it."""
    module, _, attrs = path.partition(":")
    try:
        obj = importlib.import_module(module)
    except ImportError:
        return None
    for attr in attrs.split("."):
        obj = getattr(obj, attr, None)
        if obj is None:
            return None
    return obj


def require(name: str) -> Any:
    """The entry's object; a RuntimeError naming it where this torch lacks it."""
    entry = _BY_NAME[name]
    obj = _lookup(entry.path)
    if obj is None:
        raise RuntimeError(
            f"relufrob: torch {torch.__version__} lacks {entry.path.replace(':', '.')} "
            f"(relufrob._compat entry {entry.name!r}), which relufrob needs because "
            f"{entry.why}. Use a torch version relufrob supports (see README)."
        )
    return obj


def _bound(name: str) -> Callable:
    """The entry's object bound now (hot paths call it); a raiser where it is missing."""
    obj = _lookup(_BY_NAME[name].path)
    if obj is not None:
        return obj

    def missing(*args, **kwargs):
        require(name)

    return missing


# Bound at import: relufrob.loss asks on every call whether a transform runs.
interpreter_stack = _bound("interpreter_stack")  # None outside transforms
functorch_level = _bound("wrapper_level")
_is_wrapped = _bound("is_wrapped")
_get_unwrapped = _bound("unwrap")
unwrap_if_dead = _bound("unwrap_if_dead")
check_value = _bound("check_value")
dispatch_has_kernel = _bound("dispatch_has_kernel")


def transforms_active() -> bool:
    """Whether a torch.func transform (grad, vjp, vmap, ...) is running, in eager code."""
    # torch.compile traces the interpreter stack as non-empty everywhere
    # (torch 2.14): compiled code keeps the op, which it can trace.
    if torch.compiler.is_compiling():
        return False
    return interpreter_stack() is not None


def functorch_unwrap(t):
    """The plain tensor under every transform wrapper of t."""
    while _is_wrapped(t):
        t = _get_unwrapped(t)
    return t


def is_differentiating_level(interpreter) -> bool:
    kinds = (require("grad_interpreter"), require("jvp_interpreter"))
    return isinstance(interpreter, kinds)


def live_interpreters() -> list:
    return require("interpreters")()


def op_argument_names(op) -> list[str]:
    """The names of an OpOverload's arguments, in schema order."""
    require("op_schema")
    return [a.name for a in op._schema.arguments]


def dtensor_cache_by_arguments(op, names: list[str]) -> None:
    """Make DTensor's sharding cache key include the op's arguments `names`
    (with pytree inputs, as register_sharding itself sets)."""
    schema_info = require("dtensor_schema_info")
    table = require("dtensor_schema_table")
    table[op] = schema_info(static_kwargkey=names, needs_pytree=True)
