"""relufrob.tolerance.parity_tolerance: the one relufrob-vs-autograd parity rule."""
import math

import pytest
import torch

from relufrob.tolerance import ASSERT_CLOSE_DEFAULTS, parity_tolerance

ALL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
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


@pytest.mark.parametrize("expected", [torch.empty(0, 4), torch.full((2, 2), float("nan")),
                                      torch.tensor(float("inf"), dtype=torch.float16)])
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
    bound = {torch.float16: 0.0042, torch.bfloat16: 0.032,
             torch.float32: 1e-4, torch.float64: 1e-7}[dtype]
    assert atol <= bound
    if dtype in (torch.float16, torch.bfloat16):
        assert atol < 4.2 * eps
