"""relufrob.loss under torch.func: grad, vjp, jacrev, grad of grad, per-sample
gradients with vmap(grad), against the same transforms of the reference
expression; forward mode says it is not supported."""

import warnings

import pytest
import torch
from torch import func

import relufrob
from relufrob import reference
from relufrob.reference import make_inputs

from helpers import RecordTorchFunctions

VARIANTS = [
    {},
    {"bias": "row"},
    {"bias": "full", "activation": None, "target": False},
    {"reduction": "mean"},
]


def problem(M=12, K=5, N=4, *, bias=None, activation="relu", target=True, reduction="sum"):
    X, W, Y = make_inputs(M, K, N, dtype=torch.float64)
    gen = torch.Generator().manual_seed(9)
    b = {None: None, "row": (N,), "full": (M, N)}[bias]
    b = None if b is None else torch.randn(b, generator=gen, dtype=torch.float64)
    kw = {"bias": b, "activation": activation, "reduction": reduction}
    return X, W, (Y if target else None), kw


def both(X, Y, kw):
    """The loss as a function of W, by relufrob and by the reference."""

    def ours(w):
        return relufrob.loss(X, w, Y, **kw)

    def ref(w):
        return reference.loss(
            X, w, Y, kw["reduction"], bias=kw["bias"], activation=kw["activation"]
        )

    return ours, ref


@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_grad_vjp_jacrev(variant):
    X, W, Y, kw = problem(**variant)
    ours, ref = both(X, Y, kw)
    torch.testing.assert_close(func.grad(ours)(W), func.grad(ref)(W))
    (_, vjp_ours), (_, vjp_ref) = func.vjp(ours, W), func.vjp(ref, W)
    one = torch.tensor(2.5, dtype=torch.float64)
    torch.testing.assert_close(vjp_ours(one)[0], vjp_ref(one)[0])
    torch.testing.assert_close(func.jacrev(ours)(W), func.jacrev(ref)(W))


@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_grad_of_grad(variant):
    X, W, Y, kw = problem(**variant)
    ours, ref = both(X, Y, kw)
    torch.testing.assert_close(func.jacrev(func.grad(ours))(W), func.jacrev(func.grad(ref))(W))


def test_grad_with_respect_to_every_input():
    X, W, Y, kw = problem(bias="row")
    b = kw.pop("bias")

    def ours(x, w, y, b):
        return relufrob.loss(x, w, y, bias=b, **kw)

    def ref(x, w, y, b):
        return reference.loss(x, w, y, kw["reduction"], bias=b, activation=kw["activation"])

    args = (X, W, Y, b)
    for a, e in zip(
        func.grad(ours, argnums=(0, 1, 2, 3))(*args), func.grad(ref, argnums=(0, 1, 2, 3))(*args)
    ):
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_per_sample_gradients_without_the_fallback(reduction):
    W = torch.randn(5, 4, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64)
    Xb = torch.randn(7, 3, 5, dtype=torch.float64)
    Yb = torch.randn(7, 3, 4, dtype=torch.float64)

    def ours(x, y, w):
        return relufrob.loss(x, w, y, bias=b, reduction=reduction)

    def ref(x, y, w):
        return reference.loss(x, w, y, reduction, bias=b)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the per-example fallback warns
        got = func.vmap(func.grad(ours, argnums=2), in_dims=(0, 0, None))(Xb, Yb, W)
    expected = func.vmap(func.grad(ref, argnums=2), in_dims=(0, 0, None))(Xb, Yb, W)
    assert got.shape == (7, 5, 4)
    torch.testing.assert_close(got, expected)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_forward_mode_says_what_to_use():
    X, W, Y, kw = problem()
    ours, _ = both(X, Y, kw)
    with pytest.raises(NotImplementedError, match="forward-mode.*vjp or jacrev"):
        func.jvp(ours, (W,), (torch.ones_like(W),))


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compiled_grad_transform_is_not_zero(fresh_dynamo):
    # torch.compile over torch.func.grad of a Python autograd.Function has
    # returned silent zeros; compiled gradients must equal eager ones.
    X, W, Y, kw = problem(bias="row")
    ours, ref = both(X, Y, kw)
    compiled = torch.compile(lambda w: func.grad(ours)(w))
    torch.testing.assert_close(compiled(W), func.grad(ref)(W))


def test_fullgraph_compile_of_a_transform_fails_loudly(fresh_dynamo):
    # Not supported (the op's C++ autograd under a traced transform), but it
    # must raise rather than return wrong gradients.
    X, W, Y, kw = problem()
    ours, _ = both(X, Y, kw)
    compiled = torch.compile(lambda w: func.grad(ours)(w), fullgraph=True)
    with pytest.raises(Exception, match="functorch transforms"):
        compiled(W)


def test_outside_transforms_the_op_is_used():
    # The Python Function is only for transforms: plain autograd, compile and
    # export keep the op (and its fused backward).
    X, W, Y, kw = problem()
    with RecordTorchFunctions() as rec:
        relufrob.loss(X, W.requires_grad_(True), Y, **kw).backward()
    assert torch.ops.relufrob.loss.default in rec.calls
