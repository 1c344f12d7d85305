"""Parity with autograd when M, K or N is 0 (the conventions of docs/math.md)."""

import pytest
import torch

import relufrob
from relufrob.testing import make_inputs

from helpers import PARITY_DTYPES, REDUCTIONS, assert_matches_autograd


@pytest.mark.parametrize("dtype", PARITY_DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "MKN", [(0, 4, 3), (5, 0, 3), (5, 4, 0), (0, 0, 3), (0, 4, 0), (5, 0, 0), (0, 0, 0)], ids=str
)
def test_empty_dims_match_autograd(MKN, reduction, dtype, device):
    X, W, Y = make_inputs(*MKN, dtype=dtype, device=device, seed=7)
    got, expected = assert_matches_autograd(X, W, Y, reduction, equal_nan=True)
    M, K, N = MKN
    if reduction == "mean" and M * N == 0:
        assert torch.isnan(got.loss), "mean over zero elements is NaN, like torch.mean"


@pytest.mark.parametrize("dtype", PARITY_DTYPES, ids=str)
def test_empty_M(dtype, device):
    X = torch.empty(0, 4, dtype=dtype, device=device)
    W = torch.randn(4, 3, dtype=dtype).to(device)
    Y = torch.empty(0, 3, dtype=dtype, device=device)
    for reduction in REDUCTIONS:
        got = relufrob.grads(X, W, Y, reduction=reduction)
        assert got.dW.shape == (4, 3) and got.dX.shape == (0, 4) and got.dY.shape == (0, 3)
        assert torch.equal(got.dW, torch.zeros_like(W))
        if reduction == "sum":
            assert got.loss.item() == 0.0
        else:
            assert torch.isnan(got.loss)
    # Leading dims with a zero in the middle are an empty M too.
    X3 = torch.empty(2, 0, 5, 4, dtype=dtype, device=device)
    Y3 = torch.empty(2, 0, 5, 3, dtype=dtype, device=device)
    got = relufrob.grads(X3, W, Y3)
    assert got.dX.shape == X3.shape and got.dY.shape == Y3.shape
    assert torch.equal(got.dW, torch.zeros_like(W)) and got.loss.item() == 0.0


@pytest.mark.parametrize("dtype", PARITY_DTYPES, ids=str)
def test_empty_K(dtype, device):
    M, N = 6, 3
    X = torch.empty(M, 0, dtype=dtype, device=device)
    W = torch.empty(0, N, dtype=dtype, device=device)
    Y = torch.randn(M, N, dtype=dtype).to(device)
    for reduction in REDUCTIONS:
        scale = 1.0 if reduction == "sum" else 1.0 / (M * N)
        got = relufrob.grads(X, W, Y, reduction=reduction)
        assert got.dX.shape == (M, 0) and got.dW.shape == (0, N) and got.dY.shape == (M, N)
        torch.testing.assert_close(got.loss, (Y * Y).sum() * scale)
        torch.testing.assert_close(got.dY, 2 * scale * Y)
    # 1-D form: X (0,), Y (N,).
    got = relufrob.grads(torch.empty(0, dtype=dtype, device=device), W, Y[0])
    assert got.dX.shape == (0,) and got.dW.shape == (0, N)
    torch.testing.assert_close(got.loss, (Y[0] ** 2).sum())
    torch.testing.assert_close(got.dY, 2 * Y[0])


@pytest.mark.parametrize("dtype", PARITY_DTYPES, ids=str)
def test_empty_N(dtype, device):
    M, K = 6, 4
    X = torch.randn(M, K, dtype=dtype).to(device)
    W = torch.empty(K, 0, dtype=dtype, device=device)
    Y = torch.empty(M, 0, dtype=dtype, device=device)
    for reduction in REDUCTIONS:
        got = relufrob.grads(X, W, Y, reduction=reduction)
        assert got.dW.shape == (K, 0) and got.dX.shape == (M, K) and got.dY.shape == (M, 0)
        assert torch.equal(got.dX, torch.zeros_like(X))
        if reduction == "sum":
            assert got.loss.item() == 0.0
        else:
            assert torch.isnan(got.loss)
