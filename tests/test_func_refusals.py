"""Issue #18: a transform relufrob cannot serve raises a clear error and
never returns zeros. Forward mode is refused by relufrob.loss in every form
torch offers it; relufrob.grads, whose results carry no graph, is refused
wherever a torch.func level differentiates one of its inputs (under vmap
too); and an invalid problem under vmap or grad raises what eager raises.
"""

import re

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch import func

import relufrob
from relufrob.testing import make_inputs

FORWARD_MODE = "forward-mode.*use torch.func.vjp or jacrev"
B = 3


def problem():
    X, W, Y, b = make_inputs(5, 4, 3, dtype=torch.float64, bias="row")
    return X, W, Y, b


def batched(t):
    return torch.stack([t * (1 + i) for i in range(B)])


def _dual_tangent(f, W):
    with fwAD.dual_level():
        return fwAD.unpack_dual(f(fwAD.make_dual(W, torch.ones_like(W)))).tangent


FORWARD = {
    "jvp": lambda f, W: func.jvp(f, (W,), (torch.ones_like(W),)),
    "jacfwd": lambda f, W: func.jacfwd(f)(W),
    "hessian": lambda f, W: func.hessian(f)(W),
    "vmap-jvp": lambda f, W: func.vmap(lambda w: func.jvp(f, (w,), (w,)))(batched(W)),
    "linearize": lambda f, W: func.linearize(f, W),
    "forward_ad": _dual_tangent,
}


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
@pytest.mark.parametrize("how", list(FORWARD))
def test_forward_mode_is_refused_saying_what_to_use(how):
    X, W, Y, b = problem()
    with pytest.raises(NotImplementedError, match=FORWARD_MODE):
        FORWARD[how](lambda w: relufrob.loss(X, w, Y, bias=b), W)


# --------------------------------------------------------------------------
# relufrob.grads under a differentiating transform
# --------------------------------------------------------------------------

NAMES = {"X": 0, "W": 1, "Y": 2, "bias": 3}
REVERSE = {
    "grad": lambda f, a: func.grad(f)(a),
    "vjp": lambda f, a: func.vjp(f, a),
    "jacrev": lambda f, a: func.jacrev(f)(a),
}


def _grads_of(name, args, where):
    """relufrob.grads(...).loss as a function of the input `name`, called
    directly, or under a vmap that maps that input ("vmap-batched") or
    only the others ("vmap-shared")."""
    i = NAMES[name]

    def call(*a):
        return relufrob.grads(a[0], a[1], a[2], bias=a[3]).loss

    def with_arg(t):
        full = list(args)
        full[i] = t
        if where == "direct":
            return call(*full)
        if where == "vmap-batched":
            full[i] = batched(t)
            dims = tuple(0 if k == i else None for k in range(4))
        else:  # every other input batched, this one shared
            full = [a if k == i else batched(a) for k, a in enumerate(full)]
            dims = tuple(None if k == i else 0 for k in range(4))
        return func.vmap(call, in_dims=dims)(*full).sum()

    return with_arg


@pytest.mark.parametrize("where", ["direct", "vmap-batched", "vmap-shared"])
@pytest.mark.parametrize("transform", list(REVERSE))
@pytest.mark.parametrize("name", list(NAMES))
def test_grads_refuses_a_differentiated_input(name, transform, where):
    # Before the fix, the vmap cases whose differentiated input was batched
    # (the grad level's wrapper under the vmap's) returned zeros.
    args = problem()
    msg = f"relufrob.grads: {name} is being differentiated by a torch.func transform"
    with pytest.raises(RuntimeError, match=re.escape(msg)):
        REVERSE[transform](_grads_of(name, args, where), args[NAMES[name]])


def test_grads_of_inputs_nothing_differentiates_are_served():
    # A detached input, and a call beside the differentiated relufrob.loss
    # on tensors that level does not track, are plain calls.
    X, W, Y, b = problem()
    plain = relufrob.grads(X, W, Y, bias=b)

    def f(w):
        detached = relufrob.grads(X, w.detach(), Y, bias=b)
        beside = relufrob.grads(X, W, Y, bias=b)
        for got in (detached, beside):
            torch.testing.assert_close(got.dW, plain.dW)
        return relufrob.loss(X, w, Y, bias=b)

    torch.testing.assert_close(func.grad(f)(W), plain.dW)


RAW_TRANSFORMS = {
    "grad": lambda f, W: func.grad(f)(W),
    "vjp": lambda f, W: func.vjp(f, W)[1](torch.tensor(1.0, dtype=W.dtype)),
    "jacrev": lambda f, W: func.jacrev(f)(W),
    "jvp": FORWARD["jvp"],
    "jacfwd": FORWARD["jacfwd"],
    "forward_ad": _dual_tangent,
}


@pytest.mark.parametrize("transform", list(RAW_TRANSFORMS))
def test_raw_grads_op_under_a_transform_raises_not_zeros(transform):
    # torch.ops.relufrob.grads, the raw op: its outputs carry no graph, so a
    # transform of W would get zeros; its C++ autograd kernel refuses, naming W.
    X, W, Y, _ = problem()
    with pytest.raises(
        RuntimeError, match="W is differentiated by a torch.func transform or forward-mode AD"
    ):
        RAW_TRANSFORMS[transform](lambda w: torch.ops.relufrob.grads(X, w, Y)[0], W)


def test_raw_grads_op_serves_what_no_transform_differentiates():
    X, W, Y, _ = problem()
    plain = torch.ops.relufrob.grads(X, W, Y)

    def f(w):
        served = torch.ops.relufrob.grads(X, w.detach(), Y)
        torch.testing.assert_close(served[1], plain[1])
        return relufrob.loss(X, w, Y)

    torch.testing.assert_close(func.grad(f)(W), plain[1])


def test_raw_loss_op_under_grad_raises():
    # The op's C++ autograd cannot run under torch.func: torch says so
    # (relufrob.loss itself routes around it).
    X, W, Y, _ = problem()
    with pytest.raises(RuntimeError, match="functorch transforms"):
        func.grad(lambda w: torch.ops.relufrob.loss(X, w, Y))(W)


# --------------------------------------------------------------------------
# Invalid problems under transforms: the eager error
# --------------------------------------------------------------------------


def _bad(**changes):
    X, W, Y, b = (t.float() for t in problem())
    args = {"X": X, "W": W, "Y": Y, "bias": b, "reduction": "sum", "activation": "relu"}
    return {**args, **changes}


BAD = {
    "Y-width": _bad(Y=torch.randn(5, 4)),
    "Y-rows": _bad(Y=torch.randn(6, 3)),
    "Y-1d": _bad(Y=torch.randn(3)),
    "W-rows": _bad(W=torch.randn(5, 3)),
    "W-1d": _bad(W=torch.randn(4)),
    "X-0d": _bad(X=torch.randn(())),
    "bias-width": _bad(bias=torch.randn(4)),
    "bias-rows": _bad(bias=torch.randn(6, 3)),
    "bias-0d": _bad(bias=torch.randn(())),
    "bias-(1,N)": _bad(bias=torch.randn(1, 3)),
    "Y-dtype": _bad(Y=torch.randn(5, 3, dtype=torch.float64)),
    "bias-dtype": _bad(bias=torch.randn(3, dtype=torch.float64)),
    "reduction": _bad(reduction="max"),
    "activation": _bad(activation="gelu"),
}

# Each a problem seen through a transform; `empty` maps over zero problems.
PATHS = {
    "vmap-X": lambda a, n: func.vmap(
        lambda x, y: relufrob.grads(x, a["W"], y, **_kw(a)).loss, in_dims=(0, 0)
    )(_rep(a["X"], n), _rep(a["Y"], n)),
    "vmap-W": lambda a, n: func.vmap(lambda w: relufrob.grads(a["X"], w, a["Y"], **_kw(a)).loss)(
        _rep(a["W"], n)
    ),
    "vmap-loss": lambda a, n: func.vmap(lambda x, y: relufrob.loss(x, a["W"], y, **_kw(a)))(
        _rep(a["X"], n), _rep(a["Y"], n)
    ),
    "vmap-grad": lambda a, n: func.vmap(
        func.grad(lambda x, y, w: relufrob.loss(x, w, y, **_kw(a)), argnums=2),
        in_dims=(0, 0, None),
    )(_rep(a["X"], n), _rep(a["Y"], n), a["W"]),
    "grad-vmap": lambda a, n: func.grad(
        lambda w: func.vmap(lambda x, y: relufrob.loss(x, w, y, **_kw(a)))(
            _rep(a["X"], n), _rep(a["Y"], n)
        ).sum()
    )(a["W"]),
}


def _kw(a):
    return {k: a[k] for k in ("bias", "reduction", "activation")}


def _rep(t, n):
    return t.expand(n, *t.shape).clone()


@pytest.mark.parametrize("size", [B, 0], ids=["batch", "empty"])
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("case", list(BAD))
def test_invalid_problem_under_a_transform_raises_the_eager_error(case, path, size):
    # Before the fix the vmap rules reshaped first: a wrong shape failed in
    # their reshape or expand ("shape '[15, 3]' is invalid"), an empty batch
    # of wrong shapes passed, and reduction='max' ran as a sum.
    a = BAD[case]
    with pytest.raises((ValueError, TypeError)) as eager:
        relufrob.grads(a["X"], a["W"], a["Y"], **_kw(a))
    assert str(eager.value).startswith("relufrob: ")
    with pytest.raises(type(eager.value)) as got:
        PATHS[path](a, size)
    assert str(got.value) == str(eager.value)
