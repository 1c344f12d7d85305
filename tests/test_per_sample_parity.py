"""relufrob.per_sample_grad_norms and relufrob.clipped_grads against the
reference (torch.func.vmap(torch.func.grad(...)) plus norm and clip in plain
PyTorch), for every variant, both norm routes and the switch between them."""

import pytest
import torch

import relufrob
from relufrob.testing import parity_tolerance, reference

VARIANTS = [
    {},
    {"bias": "row"},
    {"bias": "full"},
    {"activation": None},
    {"target": False},
    {"bias": "row", "activation": None, "target": False},
    {"bias": "full", "target": False},
]


def problem(shape, K, N, *, dtype=torch.float64, bias=None, activation="relu", target=True, seed=0):
    """X (*shape, K) with samples along dim 0, and the keyword arguments."""
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(*shape, K, generator=gen, dtype=torch.float64)
    W = torch.randn(K, N, generator=gen, dtype=torch.float64) / K**0.5
    Y = torch.randn(*shape, N, generator=gen, dtype=torch.float64) if target else None
    b = {None: None, "row": (N,), "full": (*shape, N)}[bias]
    b = None if b is None else torch.randn(b, generator=gen, dtype=torch.float64)
    cast = [None if t is None else t.to(dtype) for t in (X, W, Y, b)]
    return cast[0], cast[1], cast[2], {"bias": cast[3], "activation": activation}


def assert_matches(got, expected, name, mkn, dtype=None):
    rtol, atol = parity_tolerance(name, expected, mkn, dtype=dtype)
    torch.testing.assert_close(got, expected, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


def mkn_of(X, W):
    return (X[..., 0].numel(), W.shape[0], W.shape[1])


@pytest.mark.parametrize("variant", VARIANTS, ids=str)
@pytest.mark.parametrize("shape", [(9,), (4, 3), (300,), (6, 5, 2)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_norms_and_clipped_sums(variant, shape, dtype):
    X, W, Y, kw = problem(shape, 7, 5, dtype=dtype, **variant)
    mkn = mkn_of(X, W)
    ref = reference.clipped_grads(X, W, Y, max_norm=1.5, **kw)
    got = relufrob.clipped_grads(X, W, Y, max_norm=1.5, **kw)
    assert_matches(got.loss, ref.loss, "loss", mkn)
    assert_matches(got.norms, ref.norms, "norms", mkn)
    assert_matches(got.dW, ref.dW, "dW", mkn)
    if kw["bias"] is None:
        assert got.db is None
    else:
        assert_matches(got.db, ref.db, "db", mkn)
    norms = relufrob.per_sample_grad_norms(X, W, Y, **kw)
    assert_matches(norms.norms, ref.norms, "norms", mkn)
    assert_matches(norms.loss, ref.loss, "loss", mkn)


@pytest.mark.parametrize("route", ["ghost", "direct"])
@pytest.mark.parametrize("bias", [None, "row", "full"])
def test_both_routes_of_a_multi_row_sample(route, bias):
    X, W, Y, kw = problem((5, 6), 4, 3, bias=bias)
    ref = reference.clipped_grads(X, W, Y, max_norm=0.7, **kw)
    got = relufrob.clipped_grads(X, W, Y, max_norm=0.7, route=route, **kw)
    torch.testing.assert_close(got.norms, ref.norms)
    torch.testing.assert_close(got.dW, ref.dW)
    if bias:
        torch.testing.assert_close(got.db, ref.db)


@pytest.mark.parametrize("variant", VARIANTS[:3], ids=str)
@pytest.mark.parametrize("K", [200, 300], ids=["direct-kernel", "blocked-kernel"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_one_row_samples_on_either_kernel(variant, K, dtype):
    # One row per sample runs the fused small-problem kernel while K and N
    # are at most 256 (and the problem is small), the row-blocked BLAS pass
    # beyond: K = 300 is past the line whatever the ISA.
    X, W, Y, kw = problem((48,), K, 24, dtype=dtype, **variant)
    mkn = mkn_of(X, W)
    # The median norm as max_norm: half the samples clipped, half not.
    max_norm = float(reference.per_sample_grad_norms(X, W, Y, **kw).norms.median())
    ref = reference.clipped_grads(X, W, Y, max_norm=max_norm, **kw)
    got = relufrob.clipped_grads(X, W, Y, max_norm=max_norm, **kw)
    for name in ("loss", "norms", "dW") + (("db",) if kw["bias"] is not None else ()):
        assert_matches(getattr(got, name), getattr(ref, name), name, mkn)
    norms = relufrob.per_sample_grad_norms(X, W, Y, **kw)
    assert_matches(norms.norms, ref.norms, "norms", mkn)


@pytest.mark.parametrize("T,K,N", [(2, 3, 6), (3, 3, 6), (4, 4, 4), (5, 4, 4)])
def test_at_the_switch_between_ghost_and_direct(T, K, N):
    # auto takes the ghost norm while T (K + N) <= K N: here T = 2 (18 <= 18)
    # and T = 4 (32 <= 16 is false: direct) sit on either side of the line.
    X, W, Y, kw = problem((6, T), K, N, bias="row")
    ref = reference.per_sample_grad_norms(X, W, Y, **kw)
    for route in ("auto", "ghost", "direct"):
        got = relufrob.per_sample_grad_norms(X, W, Y, route=route, **kw)
        torch.testing.assert_close(got.norms, ref.norms, msg=lambda m, r=route: f"{r}: {m}")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("variant", [{}, {"bias": "row"}, {"bias": "full", "target": False}])
def test_low_precision_against_float64(dtype, variant):
    X, W, Y, kw = problem((40, 2), 8, 6, dtype=dtype, **variant)
    up = [None if t is None else t.double() for t in (X, W, Y, kw["bias"])]
    ref = reference.clipped_grads(up[0], up[1], up[2], max_norm=2.0, bias=up[3])
    got = relufrob.clipped_grads(X, W, Y, max_norm=2.0, **kw)
    assert got.dW.dtype == dtype and got.norms.dtype == (Y if Y is not None else X).dtype
    mkn = mkn_of(X, W)
    # float16/bfloat16 inputs are widened to float32 for the kernels: judged
    # against float64 by the low-precision rule, as relufrob.grads is.
    for name, a, e in (("norms", got.norms, ref.norms), ("dW", got.dW, ref.dW)):
        assert_matches(a.double(), e, name, mkn, dtype=dtype)


def test_blocked_problem_with_many_threads_is_deterministic():
    X, W, Y, kw = problem((3000, 4), 64, 48, dtype=torch.float32, bias="row")
    first = relufrob.clipped_grads(X, W, Y, max_norm=0.5, **kw)
    again = relufrob.clipped_grads(X, W, Y, max_norm=0.5, **kw)
    for a, b in zip(first, again):
        assert torch.equal(a, b)
    ref = reference.clipped_grads(X, W, Y, max_norm=0.5, **kw)
    mkn = mkn_of(X, W)
    assert_matches(first.dW, ref.dW, "dW", mkn)
    assert_matches(first.norms, ref.norms, "norms", mkn)


def test_noise_is_reproducible_and_is_the_references():
    X, W, Y, kw = problem((20,), 5, 4, bias="row")
    runs = [
        relufrob.clipped_grads(
            X,
            W,
            Y,
            max_norm=1.0,
            noise_multiplier=0.8,
            generator=torch.Generator().manual_seed(7),
            **kw,
        )
        for _ in range(2)
    ]
    assert torch.equal(runs[0].dW, runs[1].dW) and torch.equal(runs[0].db, runs[1].db)
    ref = reference.clipped_grads(
        X,
        W,
        Y,
        max_norm=1.0,
        noise_multiplier=0.8,
        generator=torch.Generator().manual_seed(7),
        **kw,
    )
    torch.testing.assert_close(runs[0].dW, ref.dW)
    torch.testing.assert_close(runs[0].db, ref.db)
    clean = relufrob.clipped_grads(X, W, Y, max_norm=1.0, **kw)
    assert not torch.allclose(runs[0].dW, clean.dW)


def test_a_large_max_norm_gives_the_plain_gradients():
    X, W, Y, kw = problem((30,), 6, 5, bias="row")
    got = relufrob.clipped_grads(X, W, Y, max_norm=1e30, **kw)
    plain = relufrob.grads(X, W, Y, **kw)
    torch.testing.assert_close(got.dW, plain.dW)
    torch.testing.assert_close(got.db, plain.db)
    torch.testing.assert_close(got.loss, plain.loss)
