"""Parity with autograd where hand-written kernels go wrong: exact zeros in XW, NaN and Inf.

The conventions are those of docs/math.md: the ReLU gradient at 0 is 0, and
NaN flows through as it does in autograd.
"""

import pytest
import torch

import relufrob
from relufrob.testing import make_inputs, reference

from helpers import (
    PARITY_DTYPES,
    REDUCTIONS,
    assert_grads_match,
    assert_matches_autograd,
    nonfinite_case,
)

# --------------------------------------------------------------------------
# Exact zeros in XW: the ReLU gradient at 0 is 0
# --------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", PARITY_DTYPES, ids=str)
@pytest.mark.parametrize("MKN", [(10, 4, 4), (13, 3, 7), (600, 6, 300)], ids=str)
def test_integer_valued_inputs_with_exact_zeros(MKN, dtype, reduction, device):
    M, K, N = MKN
    g = torch.Generator().manual_seed(M)
    X = torch.randint(-2, 3, (M, K), generator=g).to(dtype).to(device)
    W = torch.randint(-2, 3, (K, N), generator=g).to(dtype).to(device)
    Y = torch.randint(-2, 3, (M, N), generator=g).to(dtype).to(device)
    Z = X @ W
    assert (Z == 0).any(), "test precondition: XW must contain exact zeros"
    got, expected = assert_matches_autograd(X, W, Y, reduction)
    # Everything is a small integer (times 1/numel for mean), so the results
    # are exact in both: demand bitwise equality, not just closeness.
    if reduction == "sum":
        for name in ("loss", "dW", "dX", "dY"):
            torch.testing.assert_close(
                getattr(got, name), getattr(expected, name), rtol=0, atol=0, msg=name
            )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("MKN", [(10, 4, 4), (600, 6, 300)], ids=str)
def test_relu_gradient_at_zero_is_zero(MKN, reduction, device):
    # XW is exactly 0 everywhere (W == 0) while the residual -Y is not, so a
    # mask of Z >= 0 (instead of relu(Z) > 0) would give nonzero dW and dX.
    M, K, N = MKN
    g = torch.Generator().manual_seed(1)
    X = torch.randint(-2, 3, (M, K), generator=g).double().to(device)
    W = torch.zeros(K, N, dtype=torch.float64, device=device)
    Y = (torch.rand(M, N, generator=g, dtype=torch.float64) + 0.5).to(device)
    got, expected = assert_matches_autograd(X, W, Y, reduction)
    assert torch.count_nonzero(got.dW) == 0
    assert torch.count_nonzero(got.dX) == 0
    scale = 1.0 if reduction == "sum" else 1.0 / Y.numel()
    torch.testing.assert_close(got.dY, 2 * scale * Y)
    # Only exact zeros: negate X so XW is -0.0 where it was +0.0; still masked.
    got_neg = relufrob.grads(-X, W, Y, reduction=reduction)
    assert torch.count_nonzero(got_neg.dW) == 0 and torch.count_nonzero(got_neg.dX) == 0


def test_relu_gradient_at_zero_single_entry(device):
    # One row where z == 0 exactly, one where z > 0: only the latter feeds dW.
    X = torch.tensor([[1.0, -1.0], [1.0, 0.0]], device=device)
    W = torch.tensor([[2.0], [2.0]], device=device)  # z = [0, 2]
    Y = torch.tensor([[1.0], [1.0]], device=device)
    got, expected = assert_matches_autograd(X, W, Y)
    assert got.dX[0].eq(0).all() and got.dX[1].ne(0).all()


# --------------------------------------------------------------------------
# NaN and Inf
# --------------------------------------------------------------------------


def assert_same_nan_positions(got, expected):
    for name in ("loss", "dW", "dX", "dY"):
        g, e = torch.isnan(getattr(got, name)), torch.isnan(getattr(expected, name))
        assert torch.equal(g, e), (
            f"{name}: NaN positions differ from autograd "
            f"(got {int(g.sum())} NaNs, autograd {int(e.sum())})"
        )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", PARITY_DTYPES, ids=str)
@pytest.mark.parametrize("MKN", [(10, 4, 4), (9, 1, 3), (500, 16, 300)], ids=str)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=str)
@pytest.mark.parametrize("where", ["X", "Y", "W"])
def test_nonfinite_inputs(where, value, MKN, dtype, reduction, device):
    X, W, Y = nonfinite_case(where, value, *MKN, dtype=dtype, device=device)
    got, expected = assert_matches_autograd(X, W, Y, reduction, equal_nan=True)
    # The case must actually exercise non-finite outputs.
    assert not all(torch.isfinite(t).all() for t in expected)
    # NaN positions are the same as autograd's, output by output (assert_close
    # with equal_nan checks this too; spelled out for a clearer failure).
    assert_same_nan_positions(got, expected)


@pytest.mark.parametrize("MKN", [(10, 4, 4), (500, 16, 300)], ids=str)
def test_nan_in_x_propagates_like_autograd(MKN, device):
    # A NaN in X makes row i of Z = XW NaN. autograd's ReLU backward is
    # threshold_backward(grad, result, 0), which zeroes the gradient only where
    # result <= 0; NaN <= 0 is false, so the NaN gradient 2R passes through:
    # G's row i is NaN, hence dX's row i is NaN and every entry of dW = X^T G
    # is NaN. relufrob must produce the same NaN pattern.
    M, K, N = MKN
    X, W, Y = make_inputs(M, K, N, dtype=torch.float64, device=device)
    X[3, 1] = float("nan")
    expected = reference.autograd_grads(X, W, Y)
    # The ground truth behaves as described above (guards the test's premise).
    assert torch.isnan(expected.dW).all()
    assert torch.isnan(expected.dX[3]).all()
    assert torch.isnan(expected.dY[3]).all()
    rows = torch.arange(M, device=device) != 3
    assert torch.isfinite(expected.dX[rows]).all()
    got = relufrob.grads(X, W, Y)
    assert_same_nan_positions(got, expected)
    assert_grads_match(got, expected, equal_nan=True)
