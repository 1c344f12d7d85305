"""Selective gradients: wrt=... returns exactly the full call's values for the names asked for."""

import itertools

import pytest
import torch

import relufrob
from relufrob.testing import make_inputs, reference

from helpers import REDUCTIONS, assert_grads_match, nonfinite_case

WRT_SUBSETS = [s for r in (1, 2, 3) for s in itertools.combinations(("X", "W", "Y"), r)]


def _only(full, names):
    """`full` with the gradients not in `names` set to None."""
    return full._replace(**{f"d{n}": None for n in "XWY" if n not in names})


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "MKN", [(10, 4, 4), (17, 13, 11), (20, 8, 300), (3000, 64, 48), (0, 3, 2), (4, 0, 3)], ids=str
)
def test_selective_gradients(MKN, reduction, device):
    X, W, Y = make_inputs(*MKN, device=device, seed=4)
    full = relufrob.grads(X, W, Y, reduction=reduction)
    assert_grads_match(full, reference.autograd_grads(X, W, Y, reduction), equal_nan=True, mkn=MKN)
    for subset in WRT_SUBSETS:
        for wrt in (subset, tuple(reversed(subset)), list(subset)):
            got = relufrob.grads(X, W, Y, reduction=reduction, wrt=wrt)
            # The selective call computes the requested values the same way
            # as the full call: demand identical results.
            assert_grads_match(got, _only(full, subset), rtol=0, atol=0, equal_nan=True)
    # A single name as a plain string.
    got = relufrob.grads(X, W, Y, reduction=reduction, wrt="W")
    assert_grads_match(got, _only(full, "W"), rtol=0, atol=0, equal_nan=True)
    # Loss only.
    got = relufrob.grads(X, W, Y, reduction=reduction, wrt=())
    assert got.dW is None and got.dX is None and got.dY is None
    assert_grads_match(got, _only(full, ()), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("MKN", [(10, 4, 4), (500, 16, 300)], ids=str)
def test_selective_gradients_nonfinite(MKN, device):
    X, W, Y = nonfinite_case("X", float("nan"), *MKN, dtype=torch.float64, device=device)
    Y[1, 1] = float("inf")
    # Consistency with the full call only; parity of the full call with
    # autograd on non-finite inputs is test_nonfinite_inputs' job.
    full = relufrob.grads(X, W, Y)
    assert torch.isnan(full.loss)
    for subset in WRT_SUBSETS + [()]:
        got = relufrob.grads(X, W, Y, wrt=subset)
        assert_grads_match(got, _only(full, subset), rtol=0, atol=0, equal_nan=True)
