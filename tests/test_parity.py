"""Parity of relufrob.grads with torch.autograd on the reference expression.

Ground truth everywhere is relufrob.reference.autograd_grads, i.e. autograd
on f = (relu(X @ W) - Y).pow(2).sum() (or .mean()).
"""
import itertools

import pytest
import torch

import relufrob
from relufrob import reference

from conftest import (
    assert_bitwise_equal,
    assert_grads_match,
    assert_matches_autograd,
    storage_ptr,
)

REDUCTIONS = ("sum", "mean")
FP = (torch.float32, torch.float64)


def randn(*shape, dtype=torch.float32, device="cpu", gen=None):
    return torch.randn(*shape, dtype=dtype, generator=gen).to(device)


def make_inputs(M, K, N, *, dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    return (randn(M, K, dtype=dtype, device=device, gen=g),
            randn(K, N, dtype=dtype, device=device, gen=g),
            randn(M, N, dtype=dtype, device=device, gen=g))


# --------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------

# (M, K, N). The CPU kernel picks plain loops (the "direct" path) for small
# problems and row-blocked BLAS otherwise. The rule has moved during
# development (M*K*N <= 16384 at first; M*K*N <= 2**22 with K, N <= 256 at the
# time of writing), so the shapes straddle both boundaries, and the ones used
# as "blocked" elsewhere in this file (N or K > 256 and M*K*N > 16384) are
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


def test_classic_example(device):
    torch.manual_seed(0)
    X = torch.randn(10, 4)
    W = torch.randn(4, 4)
    Y = torch.randn(10, 4)
    X, W, Y = X.to(device), W.to(device), Y.to(device)
    for reduction in REDUCTIONS:
        got, expected = assert_matches_autograd(X, W, Y, reduction)
        assert got.loss.item() > 0


def test_classic_example_fields_in_order(device):
    torch.manual_seed(0)
    X, W, Y = torch.randn(10, 4), torch.randn(4, 4), torch.randn(10, 4)
    X, W, Y = X.to(device), W.to(device), Y.to(device)
    got = relufrob.grads(X, W, Y)
    loss, dW, dX, dY = got  # unpacks like a tuple, in this order
    assert loss.shape == () and dW.shape == W.shape and dX.shape == X.shape and dY.shape == Y.shape
    assert got._fields == ("loss", "dW", "dX", "dY")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", FP, ids=str)
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
    assert_grads_match(reference.formula_grads(X, W, Y, reduction),
                       reference.autograd_grads(X, W, Y, reduction))


# --------------------------------------------------------------------------
# Layouts
# --------------------------------------------------------------------------

def _layout(kind, rows, cols, *, dtype, device, gen):
    """A (rows, cols) tensor with the given memory layout."""
    if kind == "contiguous":
        return randn(rows, cols, dtype=dtype, device=device, gen=gen)
    if kind == "transposed":
        return randn(cols, rows, dtype=dtype, device=device, gen=gen).t()
    if kind == "stepped":
        return randn(2 * rows, 3 * cols, dtype=dtype, device=device, gen=gen)[::2, ::3]
    if kind == "offset":
        return randn(rows + 1, cols + 1, dtype=dtype, device=device, gen=gen)[1:, 1:]
    if kind == "expand-rows":  # stride 0 along dim 0
        return randn(1, cols, dtype=dtype, device=device, gen=gen).expand(rows, cols)
    if kind == "expand-cols":  # stride 0 along dim 1
        return randn(rows, 1, dtype=dtype, device=device, gen=gen).expand(rows, cols)
    if kind == "expand-all":  # a single element broadcast everywhere
        return randn(1, 1, dtype=dtype, device=device, gen=gen).expand(rows, cols)
    raise AssertionError(kind)


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
@pytest.mark.parametrize("dtype", FP, ids=str)
@pytest.mark.parametrize("MKN", [(9, 5, 6), (500, 16, 300)], ids=["direct", "blocked"])
@pytest.mark.parametrize("layouts", NONCONTIG_CASES, ids=["-".join(c) for c in NONCONTIG_CASES])
def test_noncontiguous(layouts, MKN, dtype, reduction, device):
    M, K, N = MKN
    g = torch.Generator().manual_seed(M + K + N)
    X = _layout(layouts[0], M, K, dtype=dtype, device=device, gen=g)
    W = _layout(layouts[1], K, N, dtype=dtype, device=device, gen=g)
    Y = _layout(layouts[2], M, N, dtype=dtype, device=device, gen=g)
    if layouts != ("offset",) * 3:
        assert not (X.is_contiguous() and W.is_contiguous() and Y.is_contiguous())
    got, _ = assert_matches_autograd(X, W, Y, reduction)
    # Gradients come back in the inputs' shapes whatever their strides.
    assert got.dX.shape == X.shape and got.dW.shape == W.shape and got.dY.shape == Y.shape


def test_noncontiguous_equals_contiguous_copy(device):
    # The same values in a strided and a contiguous layout give the same results.
    g = torch.Generator().manual_seed(11)
    for M, K, N in [(9, 5, 6), (500, 16, 300)]:
        X = _layout("stepped", M, K, dtype=torch.float64, device=device, gen=g)
        W = _layout("transposed", K, N, dtype=torch.float64, device=device, gen=g)
        Y = _layout("expand-rows", M, N, dtype=torch.float64, device=device, gen=g)
        a = relufrob.grads(X, W, Y)
        b = relufrob.grads(X.contiguous(), W.contiguous(), Y.contiguous())
        assert_grads_match(a, b)


# --------------------------------------------------------------------------
# Leading dimensions and 1-D inputs
# --------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", FP, ids=str)
@pytest.mark.parametrize("lead,K,N", [
    ((2, 3, 5), 4, 6),
    ((2, 3, 5), 16, 300),  # blocked
    ((4, 1, 7), 3, 2),
    ((1,), 4, 4),
    ((6, 70), 8, 270),     # blocked
], ids=str)
def test_leading_dims(lead, K, N, dtype, reduction, device):
    g = torch.Generator().manual_seed(len(lead) + K + N)
    X = randn(*lead, K, dtype=dtype, device=device, gen=g)
    W = randn(K, N, dtype=dtype, device=device, gen=g)
    Y = randn(*lead, N, dtype=dtype, device=device, gen=g)
    assert_matches_autograd(X, W, Y, reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_leading_dims_permuted(reduction, device):
    # A non-contiguous 4-D X and Y (permuted leading dims).
    g = torch.Generator().manual_seed(5)
    X = randn(5, 3, 2, 7, dtype=torch.float64, device=device, gen=g).permute(2, 1, 0, 3)
    W = randn(7, 6, dtype=torch.float64, device=device, gen=g)
    Y = randn(2, 5, 6, 3, dtype=torch.float64, device=device, gen=g).permute(0, 3, 1, 2)
    assert X.shape == (2, 3, 5, 7) and Y.shape == (2, 3, 5, 6)
    assert not X.is_contiguous() and not Y.is_contiguous()
    assert_matches_autograd(X, W, Y, reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", FP, ids=str)
@pytest.mark.parametrize("K,N", [(1, 1), (4, 4), (7, 3), (20, 800), (300, 80)], ids=str)
def test_one_dimensional(K, N, dtype, reduction, device):
    g = torch.Generator().manual_seed(K * N)
    X = randn(K, dtype=dtype, device=device, gen=g)
    W = randn(K, N, dtype=dtype, device=device, gen=g)
    Y = randn(N, dtype=dtype, device=device, gen=g)
    got, _ = assert_matches_autograd(X, W, Y, reduction)
    assert got.dX.shape == (K,) and got.dY.shape == (N,)


# --------------------------------------------------------------------------
# Exact zeros in XW: the ReLU gradient at 0 is 0
# --------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", FP, ids=str)
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
            torch.testing.assert_close(getattr(got, name), getattr(expected, name),
                                       rtol=0, atol=0, msg=name)


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
    W = torch.tensor([[2.0], [2.0]], device=device)   # z = [0, 2]
    Y = torch.tensor([[1.0], [1.0]], device=device)
    got, expected = assert_matches_autograd(X, W, Y)
    assert got.dX[0].eq(0).all() and got.dX[1].ne(0).all()


# --------------------------------------------------------------------------
# NaN and Inf
# --------------------------------------------------------------------------

def _nonfinite_case(where, value, M, K, N, dtype, device, seed=0):
    X, W, Y = make_inputs(M, K, N, dtype=dtype, device=device, seed=seed)
    if where == "X":
        X[M // 2, K // 2] = value
        X[0, K - 1] = value
    elif where == "Y":
        Y[M // 2, N // 2] = value
        Y[M - 1, 0] = value
    elif where == "W":
        W[K // 2, N - 1] = value
    return X, W, Y


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", FP, ids=str)
@pytest.mark.parametrize("MKN", [(10, 4, 4), (9, 1, 3), (500, 16, 300)], ids=str)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=str)
@pytest.mark.parametrize("where", ["X", "Y", "W"])
def test_nonfinite_inputs(where, value, MKN, dtype, reduction, device):
    X, W, Y = _nonfinite_case(where, value, *MKN, dtype=dtype, device=device)
    got, expected = assert_matches_autograd(X, W, Y, reduction, equal_nan=True)
    # The case must actually exercise non-finite outputs.
    assert not all(torch.isfinite(t).all() for t in expected)
    # NaN positions are the same as autograd's, output by output (assert_close
    # with equal_nan checks this too; spelled out for a clearer failure).
    for name in ("loss", "dW", "dX", "dY"):
        assert torch.equal(torch.isnan(getattr(got, name)), torch.isnan(getattr(expected, name))), name


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
    for name in ("loss", "dW", "dX", "dY"):
        assert torch.equal(torch.isnan(getattr(got, name)), torch.isnan(getattr(expected, name))), (
            f"{name}: NaN positions differ from autograd "
            f"(got {int(torch.isnan(getattr(got, name)).sum())} NaNs, "
            f"autograd {int(torch.isnan(getattr(expected, name)).sum())})")
    assert_grads_match(got, expected, equal_nan=True)


# --------------------------------------------------------------------------
# Empty dimensions
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FP, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("MKN", [(0, 4, 3), (5, 0, 3), (5, 4, 0), (0, 0, 3), (0, 4, 0),
                                 (5, 0, 0), (0, 0, 0)], ids=str)
def test_empty_dims_match_autograd(MKN, reduction, dtype, device):
    X, W, Y = make_inputs(*MKN, dtype=dtype, device=device, seed=7)
    got, expected = assert_matches_autograd(X, W, Y, reduction, equal_nan=True)
    M, K, N = MKN
    if reduction == "mean" and M * N == 0:
        assert torch.isnan(got.loss), "mean over zero elements is NaN, like torch.mean"


@pytest.mark.parametrize("dtype", FP, ids=str)
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


@pytest.mark.parametrize("dtype", FP, ids=str)
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


@pytest.mark.parametrize("dtype", FP, ids=str)
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


# --------------------------------------------------------------------------
# Output metadata, purity and aliasing
# --------------------------------------------------------------------------

METADATA_CASES = {
    "2d-direct": ((7, 5, 3), "contiguous"),
    "2d-blocked": ((300, 30, 270), "contiguous"),
    "transposed": ((7, 5, 3), "transposed"),
    "expanded": ((300, 30, 270), "expand-rows"),
    "4d": (((2, 3, 5), 4, 6), "contiguous"),
    "1d": (((), 4, 6), "contiguous"),
}


def _metadata_inputs(case, dtype, device, nonfinite=False):
    (shape, layout) = METADATA_CASES[case]
    g = torch.Generator().manual_seed(2)
    if isinstance(shape[0], tuple):
        lead, K, N = shape
        X = randn(*lead, K, dtype=dtype, gen=g).to(device)
        W = randn(K, N, dtype=dtype, gen=g).to(device)
        Y = randn(*lead, N, dtype=dtype, gen=g).to(device)
    else:
        M, K, N = shape
        X = _layout(layout, M, K, dtype=dtype, device=device, gen=g)
        W = _layout(layout, K, N, dtype=dtype, device=device, gen=g)
        Y = _layout(layout, M, N, dtype=dtype, device=device, gen=g)
    if nonfinite and layout == "contiguous":
        X.view(-1)[0] = float("nan")
        Y.view(-1)[-1] = float("inf")
    return X, W, Y


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64],
                         ids=str)
@pytest.mark.parametrize("case", list(METADATA_CASES))
def test_output_metadata(case, dtype, device):
    X, W, Y = _metadata_inputs(case, dtype, device)
    for reduction in REDUCTIONS:
        got = relufrob.grads(X, W, Y, reduction=reduction)
        assert got.loss.shape == () and got.loss.dtype == dtype and got.loss.device == X.device
        for out, inp in ((got.dW, W), (got.dX, X), (got.dY, Y)):
            assert out.shape == inp.shape
            assert out.dtype == dtype
            assert out.device == inp.device


@pytest.mark.parametrize("wrt", [("X", "W", "Y"), ("W",), ()], ids=str)
@pytest.mark.parametrize("nonfinite", [False, True], ids=["finite", "nonfinite"])
@pytest.mark.parametrize("case", list(METADATA_CASES))
def test_inputs_unchanged_and_outputs_not_aliased(case, nonfinite, wrt, device):
    X, W, Y = _metadata_inputs(case, torch.float32, device, nonfinite=nonfinite)
    clones = [t.clone() for t in (X, W, Y)]
    strides = [t.stride() for t in (X, W, Y)]
    got = relufrob.grads(X, W, Y, wrt=wrt)
    for name, t, c, s in zip("XWY", (X, W, Y), clones, strides):
        assert t.stride() == s, f"{name}'s strides changed"
        assert_bitwise_equal(t, c, f"{name} was modified by relufrob.grads")
    outs = [t for t in got if t is not None]
    in_ptrs = {storage_ptr(t) for t in (X, W, Y)} - {None}
    out_ptrs = [storage_ptr(t) for t in outs]
    for p in out_ptrs:
        assert p is None or p not in in_ptrs, "an output shares storage with an input"
    nonempty = [p for p in out_ptrs if p is not None]
    assert len(nonempty) == len(set(nonempty)), "two outputs share storage"


def test_outputs_not_aliased_after_inplace_update(device):
    # A behavioural version of the aliasing check: writing into every output
    # leaves the inputs and the other outputs alone.
    X, W, Y = make_inputs(8, 5, 3, device=device)
    clones = [t.clone() for t in (X, W, Y)]
    got = relufrob.grads(X, W, Y)
    saved = [t.clone() for t in got]
    for i, t in enumerate(got):
        t.fill_(123.0)
        for j, u in enumerate(got):
            if j != i:
                assert torch.equal(u, saved[j])
        for inp, c in zip((X, W, Y), clones):
            assert torch.equal(inp, c)
        t.copy_(saved[i])


@pytest.mark.parametrize("MKN", [(10, 4, 4), (300, 30, 270)], ids=str)
def test_requires_grad_inputs(MKN, device):
    X, W, Y = make_inputs(*MKN, device=device)
    expected = reference.autograd_grads(X, W, Y)
    for flags in itertools.product([False, True], repeat=3):
        Xr, Wr, Yr = (t.clone().requires_grad_(f) for t, f in zip((X, W, Y), flags))
        got = relufrob.grads(Xr, Wr, Yr)
        assert_grads_match(got, expected, mkn=MKN)
        for t in got:
            assert t.requires_grad is False
            assert t.grad_fn is None
        for t in (Xr, Wr, Yr):
            assert t.grad is None
    # Also under torch.no_grad and inference_mode.
    Xr, Wr, Yr = (t.clone().requires_grad_(True) for t in (X, W, Y))
    with torch.no_grad():
        assert_grads_match(relufrob.grads(Xr, Wr, Yr), expected, mkn=MKN)
    with torch.inference_mode():
        assert_grads_match(relufrob.grads(X, W, Y), expected, mkn=MKN)


@pytest.mark.parametrize("MKN", [(10, 4, 6), (300, 30, 270)], ids=["direct", "blocked"])
def test_nn_parameter_weight(MKN, device):
    M, K, N = MKN
    torch.manual_seed(0)
    lin = torch.nn.Linear(K, N, bias=False).to(device)
    W = torch.nn.Parameter(lin.weight.detach().t().contiguous())
    X = torch.randn(M, K, device=device)
    Y = torch.randn(M, N, device=device)
    for reduction in REDUCTIONS:
        got = relufrob.grads(X, W, Y, reduction=reduction)
        assert_grads_match(got, reference.autograd_grads(X, W.detach(), Y, reduction), mkn=MKN)
        assert type(got.dW) is torch.Tensor and not got.dW.requires_grad
        assert W.grad is None
    # The transposed nn.Linear weight (a non-contiguous view that requires grad) too.
    Wt = lin.weight.t()
    assert_grads_match(relufrob.grads(X, Wt, Y), reference.autograd_grads(X, Wt, Y), mkn=MKN)


# --------------------------------------------------------------------------
# Selective gradients
# --------------------------------------------------------------------------

WRT_SUBSETS = [s for r in (1, 2, 3) for s in itertools.combinations(("X", "W", "Y"), r)]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("MKN", [(10, 4, 4), (17, 13, 11), (20, 8, 300), (3000, 64, 48), (0, 3, 2),
                                 (4, 0, 3)],
                         ids=str)
def test_selective_gradients(MKN, reduction, device):
    X, W, Y = make_inputs(*MKN, device=device, seed=4)
    full = relufrob.grads(X, W, Y, reduction=reduction)
    assert_grads_match(full, reference.autograd_grads(X, W, Y, reduction), equal_nan=True,
                       mkn=MKN)
    for subset in WRT_SUBSETS:
        for wrt in (subset, tuple(reversed(subset)), list(subset)):
            got = relufrob.grads(X, W, Y, reduction=reduction, wrt=wrt)
            expected = full._replace(**{f"d{n}": None for n in "XWY" if n not in subset})
            # The selective call computes the requested values the same way
            # as the full call: demand identical results.
            assert_grads_match(got, expected, rtol=0, atol=0, equal_nan=True)
    # A single name as a plain string.
    got = relufrob.grads(X, W, Y, reduction=reduction, wrt="W")
    assert_grads_match(got, full._replace(dX=None, dY=None), rtol=0, atol=0, equal_nan=True)
    # Loss only.
    got = relufrob.grads(X, W, Y, reduction=reduction, wrt=())
    assert got.dW is None and got.dX is None and got.dY is None
    assert_grads_match(got, full._replace(dW=None, dX=None, dY=None), rtol=0, atol=0,
                       equal_nan=True)


@pytest.mark.parametrize("MKN", [(10, 4, 4), (500, 16, 300)], ids=str)
def test_selective_gradients_nonfinite(MKN, device):
    X, W, Y = _nonfinite_case("X", float("nan"), *MKN, dtype=torch.float64, device=device)
    Y[1, 1] = float("inf")
    # Consistency with the full call only; parity of the full call with
    # autograd on non-finite inputs is test_nonfinite_inputs' job.
    full = relufrob.grads(X, W, Y)
    assert torch.isnan(full.loss)
    for subset in WRT_SUBSETS + [()]:
        got = relufrob.grads(X, W, Y, wrt=subset)
        expected = full._replace(**{f"d{n}": None for n in "XWY" if n not in subset})
        assert_grads_match(got, expected, rtol=0, atol=0, equal_nan=True)


# --------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("MKN", [(3000, 64, 48), (1000, 8, 700), (10, 4, 4)], ids=str)
def test_repeated_calls_bitwise_identical(MKN, dtype, device):
    X, W, Y = make_inputs(*MKN, dtype=dtype, device=device, seed=9)
    first = relufrob.grads(X, W, Y)
    for _ in range(3):
        again = relufrob.grads(X, W, Y)
        for name, a, b in zip(first._fields, first, again):
            assert torch.equal(a, b), f"{name} differs between identical calls"


# --------------------------------------------------------------------------
# float16 / bfloat16: accuracy against a float64 ground truth
# --------------------------------------------------------------------------

# relufrob's max abs error (vs float64 autograd) in each output may be at most
# LOWP_FACTOR times the error of autograd run in the same low precision, plus
# a slack equal to the unavoidable error: the largest distance from the exact
# result to its nearest representable value in that dtype (at most half an ulp
# of the largest output; no result in the dtype can have a smaller error).
LOWP_FACTOR = 2.0


LOWP_CASES = [
    # (M, K, N, reduction). Sums must stay below float16's max (65504).
    (10, 4, 4, "sum"),
    (33, 17, 9, "sum"),
    (256, 64, 16, "sum"),
    (40, 16, 300, "sum"),     # blocked path, one block
    (1000, 8, 300, "mean"),   # blocked path, several blocks
    (40, 30, 20, "mean"),
]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", LOWP_CASES, ids=str)
def test_low_precision_accuracy(case, dtype, device):
    M, K, N, reduction = case
    g = torch.Generator().manual_seed(M + K + N)
    # Scaled so that XW and Y have comparable magnitudes and nothing overflows.
    X64 = torch.randn(M, K, dtype=torch.float64, generator=g) / K ** 0.5
    W64 = torch.randn(K, N, dtype=torch.float64, generator=g)
    Y64 = torch.randn(M, N, dtype=torch.float64, generator=g)
    X, W, Y = (t.to(dtype).to(device) for t in (X64, W64, Y64))
    # Ground truth: float64 autograd on the very same (rounded) inputs.
    truth = reference.autograd_grads(X.double(), W.double(), Y.double(), reduction)
    ref_lowp = reference.autograd_grads(X, W, Y, reduction)
    got = relufrob.grads(X, W, Y, reduction=reduction)
    for name in ("loss", "dW", "dX", "dY"):
        t, r, o = getattr(truth, name), getattr(ref_lowp, name), getattr(got, name)
        assert o.dtype == dtype and o.shape == t.shape and o.device == t.device
        assert torch.isfinite(o).all(), f"{name} has non-finite values"
        assert torch.isfinite(r).all(), "test precondition: reference must not overflow"
        err_got = (o.double() - t).abs().max().item()
        err_ref = (r.double() - t).abs().max().item()
        slack = (t.to(dtype).double() - t).abs().max().item()  # rounding floor
        bound = LOWP_FACTOR * err_ref + slack
        assert err_got <= bound, (
            f"{name}: relufrob max abs error {err_got:.3g} exceeds {LOWP_FACTOR} x autograd's "
            f"{err_ref:.3g} + {slack:.3g}")
