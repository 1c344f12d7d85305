"""What relufrob.grads returns: output metadata, purity, aliasing, determinism.

Also that inputs requiring grad (nn.Parameter included) are accepted and the
results carry no graph.
"""

import itertools

import pytest
import torch

import relufrob
from relufrob.testing import make_inputs, reference

from helpers import REDUCTIONS, assert_bitwise_equal, assert_grads_match, storage_ptr, strided

METADATA_CASES = {
    "2d-direct": ((7, 5, 3), "contiguous"),
    "2d-blocked": ((300, 30, 270), "contiguous"),
    "transposed": ((7, 5, 3), "transposed"),
    "expanded": ((300, 30, 270), "expand-rows"),
    "4d": (((2, 3, 5), 4, 6), "contiguous"),
    "1d": (((), 4, 6), "contiguous"),
}


def _metadata_inputs(case, dtype, device, nonfinite=False):
    (M, K, N), layout = METADATA_CASES[case]
    g = torch.Generator().manual_seed(2)
    if isinstance(M, tuple):
        X, W, Y = make_inputs(M, K, N, dtype=dtype, device=device, seed=2)
    else:
        X = strided(layout, (M, K), dtype=dtype, device=device, gen=g)
        W = strided(layout, (K, N), dtype=dtype, device=device, gen=g)
        Y = strided(layout, (M, N), dtype=dtype, device=device, gen=g)
    if nonfinite and layout == "contiguous":
        X.view(-1)[0] = float("nan")
        Y.view(-1)[-1] = float("inf")
    return X, W, Y


@pytest.mark.parametrize(
    "dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64], ids=str
)
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
    X, _, Y = make_inputs(M, K, N, device=device)
    for reduction in REDUCTIONS:
        got = relufrob.grads(X, W, Y, reduction=reduction)
        assert_grads_match(got, reference.autograd_grads(X, W.detach(), Y, reduction), mkn=MKN)
        assert type(got.dW) is torch.Tensor and not got.dW.requires_grad
        assert W.grad is None
    # The transposed nn.Linear weight (a non-contiguous view that requires grad) too.
    Wt = lin.weight.t()
    assert_grads_match(relufrob.grads(X, Wt, Y), reference.autograd_grads(X, Wt, Y), mkn=MKN)


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
