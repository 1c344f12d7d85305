"""The general form f = ||act(X W + b) - Y||^2 against autograd on the reference.

Every combination of bias (None, (N,), the output's shape), activation (relu,
None), target (Y or None) and reduction, on both CPU kernels (the small fused
one and the row-blocked one, several row chunks each), in the parity dtypes;
then layouts, empty dimensions, special values, exact ties at 0, float16 and
bfloat16, and selective gradients.
"""

import itertools

import pytest
import torch

import relufrob
from relufrob.testing import make_inputs, reference

from helpers import (
    PARITY_DTYPES,
    REDUCTIONS,
    assert_grads_match,
    assert_matches_autograd,
    problem_size,
    strided,
)

BIASES = (None, "row", "full")
ACTIVATIONS = ("relu", None)
# The small fused kernel (one chunk; several chunks) and the row-blocked one
# (N > 256 always takes it; M large enough for one chunk per thread).
SIZES = ((10, 4, 4), (300, 24, 40), (700, 20, 260))


def make_bias(kind, X, N, *, seed=1, layout="contiguous"):
    """None, an (N,) bias or one of the output's shape, drawn from randn."""
    if kind is None:
        return None
    shape = (N,) if kind == "row" else (*X.shape[:-1], N)
    gen = torch.Generator().manual_seed(seed)
    return strided(layout, shape, dtype=X.dtype, gen=gen).to(X.device)


def general_inputs(M, K, N, bias, target, dtype=torch.float32, seed=0):
    X, W, Y = make_inputs(M, K, N, dtype=dtype, seed=seed)
    return X, W, (Y if target else None), make_bias(bias, X, N, seed=seed + 1)


@pytest.mark.parametrize("dtype", PARITY_DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("target", [True, False], ids=["Y", "noY"])
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=["relu", "identity"])
@pytest.mark.parametrize("bias", BIASES, ids=["nobias", "rowbias", "fullbias"])
@pytest.mark.parametrize("MKN", SIZES, ids=lambda s: "x".join(map(str, s)))
def test_every_combination_matches_autograd(MKN, bias, activation, target, reduction, dtype):
    X, W, Y, b = general_inputs(*MKN, bias, target, dtype)
    got, expected = assert_matches_autograd(X, W, Y, reduction, bias=b, activation=activation)
    assert type(got) is (relufrob.Grads if b is None else relufrob.GradsWithBias)
    assert (got.dY is None) == (Y is None)


def test_the_exercise_of_the_issue():
    # torch.manual_seed(0); x, w, b = randn(10, 4), randn(4, 4), randn(10, 4);
    # y = (x.mm(w) + b).pow(2).sum()  -- the sibling exercise, as written.
    torch.manual_seed(0)
    x, w, b = torch.randn(10, 4), torch.randn(4, 4), torch.randn(10, 4)
    leaves = [t.clone().requires_grad_(True) for t in (x, w, b)]
    y = (leaves[0].mm(leaves[1]) + leaves[2]).pow(2).sum()
    y.backward()
    got = relufrob.grads(x, w, None, bias=b, activation=None)
    torch.testing.assert_close(got.loss, y.detach())
    assert round(got.loss.item(), 4) == 162.5566
    for name, leaf in zip(("dX", "dW", "db"), leaves):
        torch.testing.assert_close(getattr(got, name), leaf.grad, msg=name)
    assert got.dY is None


@pytest.mark.parametrize("layout", ["expanded", "stepped", "transposed", "offset"])
@pytest.mark.parametrize("bias", ["row", "full"])
def test_bias_layouts(bias, layout):
    # An expanded full bias is nn.Linear's bias broadcast by hand.
    X, W, Y = make_inputs((3, 50), 12, 9)
    b = make_bias(bias, X, 9, layout=layout)
    before = b.clone()
    got, _ = assert_matches_autograd(X, W, Y, bias=b)
    assert got.db.shape == b.shape and got.db.is_contiguous()
    assert torch.equal(b, before)


def test_expanded_full_bias_equals_row_bias():
    # The same numbers through either reading of the bias; db of the full one
    # is G, whose row sums are the row bias's db.
    X, W, Y = make_inputs(200, 16, 12)
    b = torch.randn(12)
    row = relufrob.grads(X, W, Y, bias=b)
    full = relufrob.grads(X, W, Y, bias=b.expand(200, 12))
    torch.testing.assert_close(full.loss, row.loss)
    torch.testing.assert_close(full.dW, row.dW)
    torch.testing.assert_close(full.db.sum(0), row.db, **_sum_tolerance(row.db, 200))


def _sum_tolerance(expected, terms):
    eps = torch.finfo(expected.dtype).eps
    return {"rtol": 1.3e-6, "atol": 2 * eps * terms**0.5 * expected.abs().max().item()}


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=["relu", "identity"])
@pytest.mark.parametrize("target", [True, False], ids=["Y", "noY"])
@pytest.mark.parametrize("bias", ["row", "full"])
@pytest.mark.parametrize("MKN", [(0, 3, 4), (5, 0, 4), (5, 3, 0), (0, 0, 0)], ids=str)
def test_empty_dimensions(MKN, bias, target, activation):
    X, W, Y, b = general_inputs(*MKN, bias, target)
    for reduction in REDUCTIONS:
        assert_matches_autograd(X, W, Y, reduction, bias=b, activation=activation, equal_nan=True)


@pytest.mark.parametrize("where", ["X", "W", "Y", "bias"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")], ids=str)
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=["relu", "identity"])
@pytest.mark.parametrize("MKN", [(12, 5, 7), (700, 20, 260)], ids=str)
def test_nan_and_inf(MKN, where, value, activation):
    X, W, Y, b = general_inputs(*MKN, "row", True)
    M, K, N = MKN
    t = {"X": X, "W": W, "Y": Y, "bias": b}[where]
    t.view(-1)[:: max(1, t.numel() // 3)] = value
    assert_matches_autograd(X, W, Y, bias=b, activation=activation, equal_nan=True)


@pytest.mark.parametrize("bias", ["row", "full"])
@pytest.mark.parametrize("MKN", [(40, 6, 5), (700, 20, 260)], ids=str)
def test_exact_ties_at_zero(MKN, bias):
    # Integer-valued X and W, and a bias that cancels XW exactly in half of
    # the entries: Z == 0 there, where the ReLU gradient is 0 and relu(Z) - Y
    # still counts in the loss.
    M, K, N = MKN
    gen = torch.Generator().manual_seed(3)
    X = torch.randint(-2, 3, (M, K), generator=gen).double()
    W = torch.randint(-2, 3, (K, N), generator=gen).double()
    Y = torch.randint(-2, 3, (M, N), generator=gen).double()
    if bias == "row":
        b = -(X[0] @ W)  # row 0 of Z is all zeros
    else:
        b = torch.where(torch.rand(M, N, generator=gen) < 0.5, -(X @ W), torch.ones(M, N).double())
    Z = X @ W + b
    assert (Z == 0).sum() >= N
    got, _ = assert_matches_autograd(X, W, Y, bias=b)
    # Exact data: the sums are exact whatever their order.
    expected = reference.autograd_grads(X, W, Y, bias=b)
    for name in expected._fields:
        assert torch.equal(getattr(got, name), getattr(expected, name)), name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=["relu", "identity"])
@pytest.mark.parametrize("bias", ["row", "full"])
@pytest.mark.parametrize("MKN", [(30, 8, 6), (700, 20, 260)], ids=str)
def test_low_precision_against_autograd(MKN, bias, activation, dtype):
    # relufrob rounds Z = XW to the low precision, as autograd's GEMM does, so
    # a bias that nearly cancels XW flips the ReLU mask in both or in neither
    # (judged against a float64 truth, such flips were off by whole terms).
    # The remaining differences are autograd's extra roundings (of Z + b, R
    # and G), which the low-precision tolerance of relufrob.testing.tolerance allows.
    X, W, Y, b = general_inputs(*MKN, bias, True, dtype)
    got = relufrob.grads(X, W, Y, bias=b, activation=activation)
    expected = reference.autograd_grads(X, W, Y, bias=b, activation=activation)
    for name in expected._fields:
        g = getattr(got, name)
        assert g.dtype == dtype, name
        assert_grads_match_one(name, g, getattr(expected, name), problem_size(X, W))


def assert_grads_match_one(name, got, expected, mkn):
    from relufrob.testing.tolerance import parity_tolerance

    rtol, atol = parity_tolerance(name, expected, mkn)
    torch.testing.assert_close(got, expected, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


WRTS = [("b",), ("W", "b"), ("X",), ("Y", "b"), ("X", "W", "Y", "b")]


@pytest.mark.parametrize("wrt", WRTS, ids="".join)
@pytest.mark.parametrize("bias", ["row", "full"])
@pytest.mark.parametrize("MKN", [(30, 8, 6), (700, 20, 260)], ids=str)
def test_selective_gradients_with_bias(MKN, bias, wrt):
    X, W, Y, b = general_inputs(*MKN, bias, True)
    got = relufrob.grads(X, W, Y, bias=b, wrt=wrt)
    expected = reference.autograd_grads(X, W, Y, bias=b)
    names = {"X": "dX", "W": "dW", "Y": "dY", "b": "db"}
    wanted = {names[n] for n in wrt}
    for field in ("dW", "dX", "dY", "db"):
        if field not in wanted:
            assert getattr(got, field) is None, field
    keep = ["loss", *sorted(wanted)]
    assert_grads_match(got, expected, mkn=problem_size(X, W), fields=keep)


@pytest.mark.parametrize("wrt,message", [(("Y",), "Y is None"), (("b",), "bias is None")])
def test_wrt_names_an_absent_input(wrt, message):
    X, W, Y = make_inputs(5, 3, 2)
    with pytest.raises(ValueError, match=message):
        relufrob.grads(X, W, None if "Y" in wrt else Y, wrt=wrt)


def test_leading_dimensions_with_bias():
    X, W, Y = make_inputs((2, 3, 5), 4, 6)
    for kind in ("row", "full"):
        b = make_bias(kind, X, 6)
        got, _ = assert_matches_autograd(X, W, Y, "mean", bias=b)
        assert got.db.shape == b.shape


def test_inputs_are_not_modified_and_outputs_do_not_alias():
    X, W, Y, b = general_inputs(300, 24, 40, "full", True)
    copies = [t.clone() for t in (X, W, Y, b)]
    got = relufrob.grads(X, W, Y, bias=b)
    for t, c in zip((X, W, Y, b), copies):
        assert torch.equal(t, c)
    inputs = {t.untyped_storage().data_ptr() for t in (X, W, Y, b)}
    for g in got:
        assert g.untyped_storage().data_ptr() not in inputs


def test_row_bias_gradient_is_deterministic():
    X, W, Y, b = general_inputs(3000, 64, 300, "row", True)
    first = relufrob.grads(X, W, Y, bias=b).db
    for _ in range(3):
        assert torch.equal(relufrob.grads(X, W, Y, bias=b).db, first)


@pytest.mark.parametrize(
    "combo", list(itertools.product(BIASES, ACTIVATIONS, [True, False])), ids=str
)
def test_loss_backward_matches_reference(combo):
    bias, activation, target = combo
    X, W, Y, b = general_inputs(40, 6, 5, bias, target, torch.float64)
    inputs = [t for t in (X, W, Y, b) if t is not None]

    def grads(fn):
        leaves = [t.clone().requires_grad_(True) for t in inputs]
        it = iter(leaves)
        X_, W_ = next(it), next(it)
        Y_ = next(it) if Y is not None else None
        b_ = next(it) if b is not None else None
        fn(X_, W_, Y_, bias=b_, activation=activation).backward()
        return [t.grad for t in leaves]

    ours = grads(relufrob.loss)
    ref = grads(lambda *a, **k: reference.loss(*a, **k))
    for a, e in zip(ours, ref):
        torch.testing.assert_close(a, e)
