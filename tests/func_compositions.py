"""The transforms of tests/test_func_compositions*.py: chains of torch.func
grad, vjp, jacrev and vmap (and plain autograd outside them), built the same
way over relufrob.loss and over the reference expression, so that one chain
gives two numbers to compare.

A chain is written outermost first: ``(("grad", "W"), ("vmap", None))`` is
``grad_W(vmap(loss))``. Each vmap level maps over X and Y (and a full-shape
bias, which has the output's shape); W and an (N,) bias are shared by the
whole batch. Differentiating levels name the argument they differentiate.
"""

import math

import torch
from torch import func

import relufrob
from relufrob.testing import reference

ARGS = ("X", "W", "Y", "b")
DIFF = ("grad", "vjp", "jacrev")
TRANSFORMS = (*DIFF, "vmap")

# The variants of the general form the matrix runs (the bias, no Y,
# mean); the full bias one also runs the identity activation, whose second
# derivative is not masked.
VARIANTS = {
    "plain": {},
    "row-bias": {"bias": "row"},
    "full-bias-identity": {"bias": "full", "activation": None},
    "no-Y": {"target": False},
    "mean": {"reduction": "mean"},
}

M, K, N = 5, 4, 3


def weights(shape) -> torch.Tensor:
    """Fixed, unequal weights of `shape`: the cotangent of a vjp and the
    weighting that turns a tensor into a scalar for grad. Equal weights (a
    plain sum) would let a permuted or transposed result pass."""
    n = math.prod(shape)
    return torch.linspace(-1.0, 2.0, max(n, 2), dtype=torch.float64)[:n].reshape(shape)


def scalar(out):
    return out if out.dim() == 0 else (out * weights(out.shape)).sum()


def loss_fn(impl, variant):
    kw = VARIANTS[variant]
    activation = kw.get("activation", "relu")
    reduction = kw.get("reduction", "sum")
    if impl == "ours":
        return lambda x, w, y, b: relufrob.loss(
            x, w, y, bias=b, activation=activation, reduction=reduction
        )
    return lambda x, w, y, b: reference.loss(x, w, y, reduction, bias=b, activation=activation)


def _grad(F, i):
    return lambda *a: func.grad(lambda *a: scalar(F(*a)), argnums=i)(*a)


def _jacrev(F, i):
    return lambda *a: func.jacrev(F, argnums=i)(*a)


def _vjp(F, i):
    def vjp_of(*a):
        out, pullback = func.vjp(lambda t: F(*a[:i], t, *a[i + 1 :]), a[i])
        return pullback(weights(out.shape))[0]

    return vjp_of


def _vmap(F, dims):
    return lambda *a: func.vmap(F, in_dims=dims)(*a)


def _autograd(F, i):
    """torch.autograd from outside every transform, through F's result."""

    def backward_of(*a):
        leaves = [None if t is None else t.detach().requires_grad_(True) for t in a]
        (g,) = torch.autograd.grad(scalar(F(*leaves)), leaves[i])
        return g

    return backward_of


def _create_graph(F, i):
    """torch.autograd.grad(..., create_graph=True) inside the enclosing level:
    a gradient that the level around it (a grad, vjp or jacrev of the same
    argument, or plain autograd) differentiates again at its own level."""

    def gradient_of(*a):
        (g,) = torch.autograd.grad(scalar(F(*a)), a[i], create_graph=True)
        return g

    return gradient_of


_BUILD = {
    "grad": _grad,
    "vjp": _vjp,
    "jacrev": _jacrev,
    "autograd": _autograd,
    "create_graph": _create_graph,
}


def batched_args(variant, over="inputs"):
    """The arguments each vmap level maps over. "inputs": X, Y and a full
    bias (the output's shape), W and an (N,) bias shared; "W": W alone;
    "all": every argument the variant has."""
    kw = VARIANTS[variant]
    has = {"X": True, "W": True, "Y": kw.get("target", True), "b": bool(kw.get("bias"))}
    picked = {
        "inputs": ("X", "Y") + (("b",) if kw.get("bias") == "full" else ()),
        "W": ("W",),
        "all": ARGS,
    }[over]
    return tuple(a for a in ARGS if has[a] and a in picked)


def build(chain, impl, variant, over="inputs"):
    """The chain applied to the loss of `impl` ("ours" or "ref")."""
    mapped = batched_args(variant, over)
    dims = tuple(0 if a in mapped else None for a in ARGS)
    F = loss_fn(impl, variant)
    for kind, arg in reversed(chain):
        F = _vmap(F, dims) if kind == "vmap" else _BUILD[kind](F, ARGS.index(arg))
    return F


def inputs(chain, variant, over="inputs", batch=(3, 2), seed=0):
    """(X, W, Y, b), those that the vmaps map over with one leading batch
    dimension per vmap of the chain (sizes from `batch`, outermost first)."""
    kw = VARIANTS[variant]
    lead = tuple(batch[: sum(kind == "vmap" for kind, _ in chain)])
    mapped = batched_args(variant, over)
    gen = torch.Generator().manual_seed(seed)

    def randn(name, *shape):
        lead_dims = lead if name in mapped else ()
        return torch.randn((*lead_dims, *shape), generator=gen, dtype=torch.float64)

    X, W = randn("X", M, K), randn("W", K, N)
    Y = randn("Y", M, N) if kw.get("target", True) else None
    b = {None: None, "row": (N,), "full": (M, N)}[kw.get("bias")]
    return X, W, Y, (None if b is None else randn("b", *b))


def wrt_choices(variant):
    """What a differentiating level may differentiate: the shared W, the
    batched X, and the bias and Y where the variant has them."""
    kw = VARIANTS[variant]
    return ("W", "X") + (("b",) if kw.get("bias") else ()) + (("Y",) if kw.get("target", 1) else ())


def chains(variant, depth):
    """Every chain of `depth` transforms over the variant's arguments."""
    wrt = wrt_choices(variant)
    levels = [("vmap", None)] + [(t, a) for t in DIFF for a in wrt]
    if depth == 1:
        return [(lv,) for lv in levels]
    return [(a, b) for a in levels for b in levels]


def same_level_chains(variant):
    """A gradient taken by torch.autograd.grad(create_graph=True) inside a
    level that differentiates the same argument: second order within one
    level (and the same under plain autograd and inside a vmap)."""
    out = []
    for a in wrt_choices(variant):
        for outer in (*DIFF, "autograd"):
            out.append(((outer, a), ("create_graph", a)))
            out.append((("vmap", None), (outer, a), ("create_graph", a)))
    return [c for c in out if not (c[0][0] == "vmap" and c[1][0] == "autograd")]


def chain_id(chain) -> str:
    return ".".join(kind if arg is None else f"{kind}_{arg}" for kind, arg in chain)
