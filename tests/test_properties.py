"""Property test: relufrob.grads equals reference.autograd_grads on random
problems: sizes 0..40 plus tall (M up to 600) and wide (N 257..300) ones, so
both CPU paths (direct loops, row-blocked BLAS) and empty dims are reached,
0-3 leading dims, float32/float64, contiguous, transposed, stepped, offset
and expanded layouts, values with and without exact zeros in XW, and
both reductions.
"""

import math

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import relufrob
from relufrob.testing import reference

from helpers import assert_grads_match, problem_size, strided

# The layouts of helpers.strided that apply to any number of dimensions.
LAYOUTS = ("contiguous", "transposed", "stepped", "offset", "expanded")


@st.composite
def problems(draw):
    size = st.integers(1, 40)
    shape_kind = draw(st.sampled_from(["2d", "2d-tall", "2d-wide", "nd", "1d"]))
    if shape_kind == "1d":
        lead = ()
    elif shape_kind == "2d":
        lead = (draw(size),)
    elif shape_kind == "2d-tall":
        lead = (draw(st.integers(300, 600)),)
    else:
        lead = tuple(draw(st.lists(st.integers(1, 6), min_size=2, max_size=3)))
    K, N = draw(size), draw(size)
    if shape_kind == "2d-wide":
        # N > 256: the CPU kernel's row-blocked BLAS path.
        lead, N = (draw(size),), draw(st.integers(257, 300))
    # An empty dimension in about one problem in four.
    empty = draw(st.sampled_from(["none", "none", "none", "none", "none", "M", "K", "N"]))
    if empty == "M" and lead:
        lead = lead[:-1] + (0,)
    elif empty == "K":
        K = 0
    elif empty == "N":
        N = 0
    return {
        "lead": lead,
        "K": K,
        "N": N,
        "dtype": draw(st.sampled_from([torch.float32, torch.float64])),
        "reduction": draw(st.sampled_from(["sum", "mean"])),
        "layouts": tuple(draw(st.sampled_from(LAYOUTS)) for _ in range(3)),
        "integer_valued": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def inputs(p, device):
    """X, W, Y of problem `p`, in its layouts."""
    gen = torch.Generator().manual_seed(p["seed"])
    kw = dict(dtype=p["dtype"], device=device, gen=gen, integer_valued=p["integer_valued"])
    lx, lw, ly = p["layouts"]
    X = strided(lx, p["lead"] + (p["K"],), **kw)
    W = strided(lw, (p["K"], p["N"]), **kw)
    Y = strided(ly, p["lead"] + (p["N"],), **kw)
    return X, W, Y


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(p=problems())
def test_grads_match_autograd(p, device):
    X, W, Y = inputs(p, device)
    got = relufrob.grads(X, W, Y, reduction=p["reduction"])
    expected = reference.autograd_grads(X, W, Y, p["reduction"])
    # equal_nan: reduction="mean" over zero elements is NaN in both.
    assert_grads_match(got, expected, equal_nan=True, mkn=problem_size(X, W))

    M, K, N = problem_size(X, W)
    if M * N == 0:
        if p["reduction"] == "sum":
            assert got.loss.item() == 0.0
        else:
            assert math.isnan(got.loss.item())
    if M == 0:
        assert torch.count_nonzero(got.dW) == 0


@settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(p=problems(), wrt=st.lists(st.sampled_from(["X", "W", "Y"]), unique=True, max_size=3))
def test_selective_grads_consistent(p, wrt, device):
    X, W, Y = inputs(p, device)
    full = relufrob.grads(X, W, Y, reduction=p["reduction"])
    got = relufrob.grads(X, W, Y, reduction=p["reduction"], wrt=tuple(wrt))
    expected = full._replace(**{f"d{n}": None for n in "XWY" if n not in wrt})
    assert_grads_match(got, expected, rtol=0, atol=0, equal_nan=True)
