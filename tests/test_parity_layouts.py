"""Parity with autograd for inputs in every memory layout: transposed, stepped, expanded."""

import pytest
import torch

import relufrob

from helpers import PARITY_DTYPES, REDUCTIONS, assert_grads_match, assert_matches_autograd, strided

NONCONTIG_CASES = [
    # (X layout, W layout, Y layout)
    ("transposed", "contiguous", "contiguous"),
    ("contiguous", "transposed", "contiguous"),
    ("transposed", "transposed", "transposed"),
    ("stepped", "stepped", "stepped"),
    ("offset", "offset", "offset"),
    ("expand-rows", "contiguous", "contiguous"),
    ("contiguous", "expand-cols", "contiguous"),
    ("contiguous", "contiguous", "expand-cols"),
    ("expand-cols", "expand-rows", "expand-rows"),
    ("expand-all", "expand-all", "expand-all"),
    ("stepped", "transposed", "expand-rows"),
]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", PARITY_DTYPES, ids=str)
@pytest.mark.parametrize("MKN", [(9, 5, 6), (500, 16, 300)], ids=["direct", "blocked"])
@pytest.mark.parametrize("layouts", NONCONTIG_CASES, ids=["-".join(c) for c in NONCONTIG_CASES])
def test_noncontiguous(layouts, MKN, dtype, reduction, device):
    M, K, N = MKN
    g = torch.Generator().manual_seed(M + K + N)
    X = strided(layouts[0], (M, K), dtype=dtype, device=device, gen=g)
    W = strided(layouts[1], (K, N), dtype=dtype, device=device, gen=g)
    Y = strided(layouts[2], (M, N), dtype=dtype, device=device, gen=g)
    if layouts != ("offset",) * 3:
        assert not (X.is_contiguous() and W.is_contiguous() and Y.is_contiguous())
    got, _ = assert_matches_autograd(X, W, Y, reduction)
    # Gradients come back in the inputs' shapes whatever their strides.
    assert got.dX.shape == X.shape and got.dW.shape == W.shape and got.dY.shape == Y.shape


def test_noncontiguous_equals_contiguous_copy(device):
    # The same values in a strided and a contiguous layout give the same results.
    g = torch.Generator().manual_seed(11)
    for M, K, N in [(9, 5, 6), (500, 16, 300)]:
        kw = dict(dtype=torch.float64, device=device, gen=g)
        X = strided("stepped", (M, K), **kw)
        W = strided("transposed", (K, N), **kw)
        Y = strided("expand-rows", (M, N), **kw)
        a = relufrob.grads(X, W, Y)
        b = relufrob.grads(X.contiguous(), W.contiguous(), Y.contiguous())
        assert_grads_match(a, b)
