"""relufrob.testing.tolerance: the one relufrob-vs-autograd parity rule, and the
verdict built on it.

The first half checks the rule's formula; the second that it passes relufrob
where `python -m relufrob check` runs it, yet still fails the bugs a
hand-written kernel typically has.
"""

import math

import pytest
import torch

import relufrob
from relufrob.testing import FLOAT_DTYPES, make_inputs, reference
from relufrob.testing.tolerance import ASSERT_CLOSE_DEFAULTS, compare, parity_tolerance

from helpers import FIELDS, problem_size

ALL_DTYPES = tuple(FLOAT_DTYPES.values())
EPS32 = torch.finfo(torch.float32).eps


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_defaults_without_a_problem_size(dtype):
    e = torch.full((3, 2), 1e4, dtype=dtype)
    for name in ("loss", "dW", "dX", "dY"):
        assert parity_tolerance(name, e, None) == ASSERT_CLOSE_DEFAULTS[dtype]


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("name, length", [("dW", 3000 + 200), ("dX", 100 + 200), ("dY", 200)])
def test_gradients_widen_atol_only(dtype, name, length):
    e = torch.tensor([[-1e4, 3.0], [float("nan"), float("inf")]], dtype=dtype)
    rtol, atol = parity_tolerance(name, e, (3000, 200, 100))
    d_rtol, d_atol = ASSERT_CLOSE_DEFAULTS[dtype]
    assert rtol == d_rtol
    scale = abs(e[0, 0].item())  # the largest finite entry; NaN and inf ignored
    eps = torch.finfo(dtype).eps
    if dtype in (torch.float32, torch.float64):
        want = 2 * eps * math.sqrt(length) * scale
    else:  # float32 accumulation, plus rounding to the low precision: no sqrt(L) on eps
        want = 2 * EPS32 * math.sqrt(length) * scale + 4 * eps * scale
    assert atol == pytest.approx(max(d_atol, want), rel=1e-12)


def test_never_below_the_default_atol():
    e = torch.tensor([1e-3, -2e-3])
    assert parity_tolerance("dW", e, (10, 4, 4)) == ASSERT_CLOSE_DEFAULTS[torch.float32]


@pytest.mark.parametrize("name", ["loss", "f"])
def test_loss(name):
    for dtype in (torch.float32, torch.float64):  # the defaults, whatever the size
        e = torch.tensor(3e7, dtype=dtype)
        assert parity_tolerance(name, e, (3000, 200, 100)) == ASSERT_CLOSE_DEFAULTS[dtype]
    for dtype in (torch.float16, torch.bfloat16):  # 2 * eps32 * sqrt(K) * |f| + 4 * eps * |f|
        e = torch.tensor(100.0, dtype=dtype)
        rtol, atol = parity_tolerance(name, e, (10, 4, 4))
        assert rtol == ASSERT_CLOSE_DEFAULTS[dtype][0]
        assert atol == pytest.approx((2 * EPS32 * 2 + 4 * torch.finfo(dtype).eps) * 100.0)


@pytest.mark.parametrize(
    "expected",
    [
        torch.empty(0, 4),
        torch.full((2, 2), float("nan")),
        torch.tensor(float("inf"), dtype=torch.float16),
    ],
)
def test_nothing_finite_gives_the_defaults(expected):
    name = "loss" if expected.dim() == 0 else "dW"
    assert parity_tolerance(name, expected, (2, 2, 2)) == ASSERT_CLOSE_DEFAULTS[expected.dtype]


def test_unknown_quantity():
    with pytest.raises(ValueError, match="unknown quantity 'dZ'"):
        parity_tolerance("dZ", torch.ones(2), (1, 1, 1))


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("mkn", [(10, 4, 4), (3000, 200, 100), (100000, 1000, 10)], ids=str)
def test_allowance_stays_a_small_fraction(dtype, mkn):
    """Relative to max|expected|: 2 * eps * sqrt(L) in float32/float64 (1.4e-5 at L = 3200),
    about 4 * eps in float16/bfloat16 whatever the size (0.4% and 3.1%)."""
    _, atol = parity_tolerance("dW", torch.tensor([1.0], dtype=dtype), mkn)
    eps = torch.finfo(dtype).eps
    bound = {
        torch.float16: 0.0042,
        torch.bfloat16: 0.032,
        torch.float32: 1e-4,
        torch.float64: 1e-7,
    }[dtype]
    assert atol <= bound
    if dtype in (torch.float16, torch.bfloat16):
        assert atol < 4.2 * eps


# --------------------------------------------------------------------------
# The verdict: compare() judges as torch.testing.assert_close does
# --------------------------------------------------------------------------


def test_compare_follows_assert_close():
    nan, inf = float("nan"), float("inf")
    e = torch.tensor([1.0, 0.0, nan, inf, -2.0])
    c = compare(e.clone(), e, 1.3e-6, 1e-5)
    assert (c.max_abs, c.max_rel, c.match) == (0.0, 0.0, True)
    a = e.clone()
    a[1] = 1e-6  # within atol of an exact 0
    c = compare(a, e, 1.3e-6, 1e-5)
    assert c.match and c.max_rel == inf
    a[0] = 1.001  # beyond rtol
    c = compare(a, e, 1.3e-6, 1e-5)
    assert not c.match and c.max_abs == pytest.approx(1e-3, rel=1e-3)
    a = e.clone()
    a[2] = 0.0  # NaN on one side only
    assert not compare(a, e, 1.3e-6, 1e-5).match
    assert not compare(e.double(), e, 1.3e-6, 1e-5).match  # dtype differs
    c = compare(e[:2], e, 1.3e-6, 1e-5)  # shape differs
    assert not c.match and "shape" in c.note
    assert not compare(None, e, 1.3e-6, 1e-5).match


# --------------------------------------------------------------------------
# Passes relufrob, fails typical bugs
# --------------------------------------------------------------------------


def rejected(got, X, W, Y) -> set:
    """The fields of `got` that the parity rule rejects against autograd's."""
    expected = reference.autograd_grads(X, W, Y)
    mkn = problem_size(X, W)
    return {
        name
        for name in FIELDS
        if not compare(
            getattr(got, name),
            getattr(expected, name),
            *parity_tolerance(name, getattr(expected, name), mkn),
        ).match
    }


def scaled(name, factor):
    """relufrob with one field multiplied by `factor`."""

    def implementation(X, W, Y):
        g = relufrob.grads(X, W, Y)
        return g._replace(**{name: getattr(g, name) * factor})

    return implementation


def with_relu_derivative(relu):
    """Autograd in float32 (as relufrob computes) through `relu`: a ReLU's
    value with a wrong derivative, as a buggy kernel's mask would give."""

    def implementation(X, W, Y):
        leaves = [t.float().requires_grad_(True) for t in (X, W, Y)]
        f = (relu(leaves[0] @ leaves[1]) - leaves[2]).pow(2).sum()
        dX, dW, dY = torch.autograd.grad(f, leaves)
        return relufrob.Grads(*(t.detach().to(X.dtype) for t in (f, dW, dX, dY)))

    return implementation


# The ReLU mask forgotten: G = 2 R everywhere.
no_mask = with_relu_derivative(lambda Z: Z + (Z.relu() - Z).detach())
# The ReLU gradient taken as 1 at XW == 0 (autograd takes 0).
mask_at_zero = with_relu_derivative(lambda Z: torch.where(Z >= 0, Z, torch.zeros_like(Z)))

LARGE = (3000, 200, 100)


def test_large_float32_problem_passes_relufrob_and_the_formulas():
    """Entries of dW that cancel to ~0 differ by summation order alone."""
    X, W, Y = make_inputs(*LARGE)
    assert rejected(relufrob.grads(X, W, Y), X, W, Y) == set()
    assert rejected(reference.formula_grads(X, W, Y), X, W, Y) == set()
    # the loss keeps float32's defaults; dW's atol is widened, but stays a tiny
    # fraction of dW itself: 2 * eps * sqrt(3200) = 1.3e-5 of max|dW|
    expected = reference.autograd_grads(X, W, Y)
    assert parity_tolerance("loss", expected.loss, LARGE) == (1.3e-6, 1e-5)
    atol = parity_tolerance("dW", expected.dW, LARGE)[1]
    assert 1e-5 < atol < 2e-5 * expected.dW.abs().max().item()


@pytest.mark.parametrize(
    "implementation, wrong",
    [
        (scaled("dW", 1.01), {"dW"}),
        (no_mask, {"dW", "dX"}),
    ],
    ids=["dW*1.01", "no-mask"],
)
def test_large_float32_problem_still_catches_bugs(implementation, wrong):
    X, W, Y = make_inputs(*LARGE)
    assert rejected(implementation(X, W, Y), X, W, Y) == wrong


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize(
    "implementation, wrong",
    [
        (relufrob.grads, set()),
        (no_mask, {"dW", "dX"}),
    ],
    ids=["relufrob", "no-mask"],
)
def test_large_low_precision_problem(dtype, implementation, wrong):
    """No false rejection at 3000 x 200 x 100, yet a forgotten ReLU mask still fails.

    The mask moves dW by 2.3% of max|dW| there: inside bfloat16's 4 * eps (3.1%), so
    bfloat16 shows the bug in dX (7%) only.
    """
    X, W, Y = make_inputs(*LARGE, dtype=dtype)
    if dtype == torch.bfloat16:
        wrong = wrong - {"dW"}
    assert rejected(implementation(X, W, Y), X, W, Y) == wrong


@pytest.mark.parametrize(
    "dtype, implementation, wrong",
    [
        # float16 resolves a 1% error in the loss and in dW at 10 x 4 x 4 ...
        (torch.float16, scaled("loss", 1.01), {"loss"}),
        (torch.float16, scaled("dW", 1.01), {"dW"}),
        # ... bfloat16 does not (1% of the loss is 2 of its ulps, inside even the default
        # rtol 1.6e-2; dW's allowance is 4 * eps = 3.1% of max|dW|), so there it is 10%
        (torch.bfloat16, scaled("loss", 1.1), {"loss"}),
        (torch.bfloat16, scaled("dW", 1.1), {"dW"}),
    ],
    ids=["float16-loss*1.01", "float16-dW*1.01", "bfloat16-loss*1.1", "bfloat16-dW*1.1"],
)
def test_low_precision_still_catches_errors(dtype, implementation, wrong):
    X, W, Y = make_inputs(10, 4, 4, dtype=dtype)
    assert rejected(relufrob.grads(X, W, Y), X, W, Y) == set()
    assert rejected(reference.formula_grads(X, W, Y), X, W, Y) == set()
    assert rejected(implementation(X, W, Y), X, W, Y) == wrong


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_mask_bug_at_zero_is_rejected(dtype):
    """A ReLU mask that passes XW == 0 fails even with the widened tolerances."""
    # X, W in {-1, 0, 1} and Y in -3..3: XW is exact in every dtype and often exactly 0.
    g = torch.Generator().manual_seed(0)
    X = torch.randint(-1, 2, (10, 4), generator=g).to(dtype)
    W = torch.randint(-1, 2, (4, 4), generator=g).to(dtype)
    Y = torch.randint(-3, 4, (10, 4), generator=g).to(dtype)
    assert ((X @ W) == 0).sum() > 5  # precondition: the bug has entries to show on
    assert rejected(relufrob.grads(X, W, Y), X, W, Y) == set()  # exact zeros handled
    assert rejected(mask_at_zero(X, W, Y), X, W, Y) == {"dW", "dX"}
