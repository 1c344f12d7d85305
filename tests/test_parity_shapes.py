"""Parity with autograd: the classic example, problem shapes, leading dimensions, 1-D inputs.

Ground truth in every test_parity_*.py file is relufrob.testing.reference.autograd_grads,
i.e. autograd on f = (relu(X @ W) - Y).pow(2).sum() (or .mean()).
"""

import pytest
import torch

import relufrob
from relufrob.testing import make_inputs, reference

from helpers import PARITY_DTYPES, REDUCTIONS, assert_grads_match, assert_matches_autograd

# (M, K, N). The CPU kernel picks plain loops (the "direct" path) for small
# problems and row-blocked BLAS otherwise. The rule has moved during
# development (M*K*N <= 16384 at first; M*K*N <= 2**22 with K, N <= 256 at the
# time of writing), so the shapes straddle both boundaries, and the ones used
# as "blocked" elsewhere in the suite (N or K > 256 and M*K*N > 16384) are
# blocked under either rule.
SHAPES = {
    "1x1x1": (1, 1, 1),
    "tall": (2000, 8, 4),
    "wide": (3, 64, 300),
    "K=1": (37, 1, 5),
    "K=1-tall": (5000, 1, 7),
    "prime-small": (17, 13, 11),
    "prime-large": (97, 31, 53),
    "rows-3000": (3000, 64, 48),
    "macs=16384": (16, 32, 32),
    "macs=17408": (17, 32, 32),
    "macs=16320": (15, 32, 34),
    "macs=16385": (16385, 1, 1),
    "macs=2^22": (256, 128, 128),
    "macs=2^22+": (257, 128, 128),
    "K=256": (64, 256, 8),
    "K=257": (64, 257, 8),
    "N=256": (8, 16, 256),
    "N=257": (8, 16, 257),
    "many-blocks-wide-N": (1000, 8, 700),  # several row blocks on the blocked path
    "wide-N-one-row": (1, 16, 1000),
}


def test_make_inputs_is_the_classic_exercise_and_leaves_the_rng_alone():
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    X, W, Y = make_inputs(6, 3, 2, dtype=torch.float64, seed=7)
    assert torch.get_rng_state().equal(before)
    torch.manual_seed(7)
    classic = torch.randn(6, 3), torch.randn(3, 2), torch.randn(6, 2)
    for got, want in zip((X, W, Y), classic):
        assert got.dtype == torch.float64 and got.equal(want.double())


def test_classic_example(device):
    X, W, Y = make_inputs(10, 4, 4, device=device)
    for reduction in REDUCTIONS:
        got, expected = assert_matches_autograd(X, W, Y, reduction)
        assert got.loss.item() > 0


def test_classic_example_fields_in_order(device):
    X, W, Y = make_inputs(10, 4, 4, device=device)
    got = relufrob.grads(X, W, Y)
    loss, dW, dX, dY = got  # unpacks like a tuple, in this order
    assert loss.shape == () and dW.shape == W.shape and dX.shape == X.shape
    assert dY.shape == Y.shape
    assert got._fields == ("loss", "dW", "dX", "dY")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", PARITY_DTYPES, ids=str)
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_shapes(shape, dtype, reduction, device):
    X, W, Y = make_inputs(*shape, dtype=dtype, device=device, seed=sum(shape))
    assert_matches_autograd(X, W, Y, reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_formula_reference_agrees(reduction, device):
    # Sanity of the ground truth itself: autograd and closed-form formulas agree,
    # and relufrob agrees with both.
    X, W, Y = make_inputs(23, 7, 9, dtype=torch.float64, device=device, seed=3)
    got = relufrob.grads(X, W, Y, reduction=reduction)
    assert_grads_match(got, reference.formula_grads(X, W, Y, reduction))
    assert_grads_match(
        reference.formula_grads(X, W, Y, reduction), reference.autograd_grads(X, W, Y, reduction)
    )


# --------------------------------------------------------------------------
# Leading dimensions and 1-D inputs
# --------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", PARITY_DTYPES, ids=str)
@pytest.mark.parametrize(
    "lead,K,N",
    [
        ((2, 3, 5), 4, 6),
        ((2, 3, 5), 16, 300),  # blocked
        ((4, 1, 7), 3, 2),
        ((1,), 4, 4),
        ((6, 70), 8, 270),  # blocked
    ],
    ids=str,
)
def test_leading_dims(lead, K, N, dtype, reduction, device):
    X, W, Y = make_inputs(lead, K, N, dtype=dtype, device=device, seed=len(lead) + K + N)
    assert_matches_autograd(X, W, Y, reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_leading_dims_permuted(reduction, device):
    # A non-contiguous 4-D X and Y (permuted leading dims).
    g = torch.Generator().manual_seed(5)
    X = torch.randn(5, 3, 2, 7, dtype=torch.float64, generator=g).to(device).permute(2, 1, 0, 3)
    W = torch.randn(7, 6, dtype=torch.float64, generator=g).to(device)
    Y = torch.randn(2, 5, 6, 3, dtype=torch.float64, generator=g).to(device).permute(0, 3, 1, 2)
    assert X.shape == (2, 3, 5, 7) and Y.shape == (2, 3, 5, 6)
    assert not X.is_contiguous() and not Y.is_contiguous()
    assert_matches_autograd(X, W, Y, reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", PARITY_DTYPES, ids=str)
@pytest.mark.parametrize("K,N", [(1, 1), (4, 4), (7, 3), (20, 800), (300, 80)], ids=str)
def test_one_dimensional(K, N, dtype, reduction, device):
    X, W, Y = make_inputs((), K, N, dtype=dtype, device=device, seed=K * N)
    got, _ = assert_matches_autograd(X, W, Y, reduction)
    assert got.dX.shape == (K,) and got.dY.shape == (N,)
