"""relufrob under torch.autocast, against the reference expression under the same autocast.

Under autocast the reference's matmul runs in the autocast dtype and the
residual and the loss are promoted to float32 by a float32 Y; relufrob must
give the same results in the same dtypes: every gradient in its input's
dtype. The tolerance is the parity rule of the autocast dtype
(relufrob.testing.tolerance.parity_tolerance with ``dtype=``): both sides round the
GEMM operands to it identically, and then differ by where they round.
"""

import pytest
import torch

import relufrob
from relufrob.testing import make_inputs, reference
from relufrob.testing.tolerance import parity_tolerance

from helpers import problem_size

AUTOCAST_DTYPES = (torch.bfloat16, torch.float16)
NAMES = ("loss", "dW", "dX", "dY", "db")

SIZES = {
    "direct": (33, 17, 9),  # the small fused kernel
    "blocked": (600, 300, 20),  # K > 256: the row-blocked GEMM pipeline
}

VARIANTS = {
    "plain": {},
    "row-bias": {"bias": "row"},
    "full-bias": {"bias": "full"},
    "no-target": {"target": False},
    "identity-mean": {"activation": None, "reduction": "mean"},
}


def _inputs(size, variant, device, seed=0):
    M, K, N = SIZES[size]
    v = VARIANTS[variant]
    drawn = make_inputs(
        M, K, N, device=device, seed=seed, target=v.get("target", True), bias=v.get("bias")
    )
    X, W, Y = drawn[:3]
    bias = drawn[3] if len(drawn) > 3 else None
    # Scaled so that XW and Y have comparable magnitudes (float16 stays finite).
    X = X / K**0.5
    kw = {"activation": v.get("activation", "relu"), "reduction": v.get("reduction", "sum")}
    return X, W, Y, bias, kw


def _assert_autocast_close(got, expected, dtype, mkn):
    for name in NAMES:
        e = getattr(expected, name, None)
        g = getattr(got, name, None)
        if e is None:
            assert g is None, f"{name}: expected None"
            continue
        assert g.dtype == e.dtype, f"{name}: dtype {g.dtype} != reference's {e.dtype}"
        assert g.shape == e.shape and g.device == e.device, name
        rtol, atol = parity_tolerance(name, e, mkn, dtype=dtype)
        torch.testing.assert_close(g, e, rtol=rtol, atol=atol, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("dtype", AUTOCAST_DTYPES, ids=str)
def test_grads_under_autocast(dtype, size, variant, device):
    X, W, Y, bias, kw = _inputs(size, variant, device)
    with torch.autocast(device, dtype=dtype):
        expected = reference.autograd_grads(X, W, Y, kw["reduction"], bias=bias, **_act(kw))
        got = relufrob.grads(X, W, Y, bias=bias, **kw)
    # The reference's own dtypes: the loss in float32 when Y or bias is
    # float32 (promoted by the subtraction), each gradient in its input's.
    _assert_autocast_close(got, expected, dtype, problem_size(X, W))
    assert got.dW.dtype == W.dtype and got.dX.dtype == X.dtype
    # The GEMMs ran in the autocast dtype: bitwise what the op gives on X and
    # W cast by hand (a float32 run would pass the tolerance above too).
    by_hand = relufrob.grads(X.to(dtype), W.to(dtype), Y, bias=bias, **kw)
    for name in got._fields:
        g, h = getattr(got, name), getattr(by_hand, name)
        assert (g is None) == (h is None), name
        if g is not None:
            assert torch.equal(g, h.to(g.dtype)), f"{name} differs from the hand-cast call"


@pytest.mark.parametrize("variant", ["plain", "row-bias", "no-target"])
@pytest.mark.parametrize("dtype", AUTOCAST_DTYPES, ids=str)
def test_loss_backward_under_autocast(dtype, variant, device):
    X, W, Y, bias, kw = _inputs("blocked", variant, device, seed=1)
    leaves = [t.clone().requires_grad_(True) for t in (X, W, Y, bias) if t is not None]
    with torch.autocast(device, dtype=dtype):
        expected = reference.autograd_grads(X, W, Y, kw["reduction"], bias=bias, **_act(kw))
        args = dict(zip(("X", "W", "Y", "bias"), (X, W, Y, bias)))
        mine = dict(zip([n for n, t in args.items() if t is not None], leaves))
        f = relufrob.loss(mine["X"], mine["W"], mine.get("Y"), bias=mine.get("bias"), **kw)
    f.backward()
    grads = {"dX": mine["X"].grad, "dW": mine["W"].grad}
    if "Y" in mine:
        grads["dY"] = mine["Y"].grad
    if "bias" in mine:
        grads["db"] = mine["bias"].grad
    got = type(expected)(f.detach(), *(grads.get(n) for n in expected._fields[1:]))
    _assert_autocast_close(got, expected, dtype, problem_size(X, W))


def test_issue_example_linear_then_loss():
    # A bfloat16 activation from an autocast linear layer, with float32 W and Y.
    torch.manual_seed(0)
    linear = torch.nn.Linear(16, 32)
    W = torch.randn(32, 8, requires_grad=True)
    X, Y = torch.randn(64, 16), torch.randn(64, 8)

    def run(loss_fn):
        for p in (*linear.parameters(), W):
            p.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h = linear(X)
            assert h.dtype == torch.bfloat16
            f = loss_fn(h, W, Y)
        f.backward()
        return f.detach(), linear.weight.grad.clone(), W.grad.clone()

    f_ref, dlin_ref, dW_ref = run(lambda h, w, y: reference.loss(h, w, y))
    f, dlin, dW = run(relufrob.loss)
    assert f.dtype == f_ref.dtype == torch.float32
    assert dW.dtype == torch.float32 and dlin.dtype == torch.float32
    mkn = (64, 32, 8)
    for name, g, e in (("loss", f, f_ref), ("dW", dW, dW_ref), ("dX", dlin, dlin_ref)):
        rtol, atol = parity_tolerance(name, e, mkn, dtype=torch.bfloat16)
        torch.testing.assert_close(g, e, rtol=rtol, atol=atol, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("dtype", AUTOCAST_DTYPES, ids=str)
def test_mixed_dtypes_without_autocast(dtype):
    # Low-precision X and W with a float32 Y and bias: what autocast hands the
    # op, also accepted directly, and computed as the reference computes it.
    X, W, Y, bias, kw = _inputs("blocked", "row-bias", "cpu", seed=2)
    X, W = X.to(dtype), W.to(dtype)
    expected = reference.autograd_grads(X, W, Y, bias=bias)
    got = relufrob.grads(X, W, Y, bias=bias)
    assert got.loss.dtype == got.dY.dtype == got.db.dtype == torch.float32
    assert got.dW.dtype == got.dX.dtype == dtype
    _assert_autocast_close(got, expected, dtype, problem_size(X, W))


def test_autocast_leaves_float64_alone():
    # autocast never casts float64, so a float64 problem runs unchanged.
    X, W, Y = make_inputs(20, 6, 5, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = relufrob.grads(X, W, Y)
    expected = relufrob.grads(X, W, Y)
    for name in ("loss", "dW", "dX", "dY"):
        assert torch.equal(getattr(got, name), getattr(expected, name)), name


def test_autocast_float64_target_is_refused_by_name():
    X, W, _ = make_inputs(20, 6, 5)
    Y = torch.randn(20, 5, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(TypeError, match="Y must"):
        relufrob.grads(X, W, Y)


def test_autocast_inputs_unmodified_and_cache_reused():
    X, W, Y = make_inputs(40, 8, 6)
    W = W.requires_grad_(True)
    before = [t.detach().clone() for t in (X, W, Y)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        f1 = relufrob.loss(X, W, Y)
        f2 = relufrob.loss(X, W, Y)
    (f1 + f2).backward()
    for t, b in zip((X, W, Y), before):
        assert torch.equal(t.detach(), b)
    # Two identical losses: W's gradient is twice one of them.
    W2 = W.detach().clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        relufrob.loss(X, W2, Y).backward()
    torch.testing.assert_close(W.grad, 2 * W2.grad)


def test_compiled_autocast_matches_eager():
    X, W, Y, bias, kw = _inputs("direct", "row-bias", "cpu", seed=3)

    def fn(X, W, Y, b):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return relufrob.loss(X, W, Y, bias=b)

    def grads_of(f):
        leaves = [t.clone().requires_grad_(True) for t in (X, W, Y, bias)]
        out = f(*leaves)
        out.backward()
        return [out.detach()] + [t.grad for t in leaves]

    eager = grads_of(fn)
    compiled = grads_of(torch.compile(fn, fullgraph=True))
    for e, c in zip(eager, compiled):
        assert c.dtype == e.dtype
        torch.testing.assert_close(c, e)
        assert c.abs().sum() > 0  # not silently zero


def _act(kw):
    return {"activation": kw["activation"]}


def test_double_backward_in_mixed_precision():
    # create_graph=True rebuilds the gradients from differentiable ops; with
    # a bfloat16 X and W and a float32 Y they must mix dtypes as autograd does.
    X, W, Y = make_inputs(30, 6, 5)
    Xb = X.bfloat16()

    def second(loss_fn):
        w = W.bfloat16().requires_grad_(True)
        (g,) = torch.autograd.grad(loss_fn(Xb, w, Y), w, create_graph=True)
        (gg,) = torch.autograd.grad((g.float() ** 2).sum(), w)
        return g.detach(), gg

    (g1, gg1), (g2, gg2) = second(relufrob.loss), second(lambda x, w, y: reference.loss(x, w, y))
    assert g1.dtype == gg1.dtype == torch.bfloat16
    mkn = (30, 6, 5)
    for name, a, e in (("dW", g1, g2), ("dW", gg1, gg2)):
        rtol, atol = parity_tolerance(name, e, mkn)
        torch.testing.assert_close(a, e, rtol=rtol, atol=atol)
