"""relufrob.loss under torch.func: grad, vjp, jacrev, grad of grad, per-sample
gradients with vmap(grad), against the same transforms of the reference
expression; forward mode says it is not supported."""

import contextlib
import warnings

import pytest
import torch
from torch import func

import relufrob
from relufrob._library import functorch as functorch_rules
from relufrob.testing import make_inputs, reference

from helpers import RecordTorchFunctions

VARIANTS = [
    {},
    {"bias": "row"},
    {"bias": "full", "activation": None, "target": False},
    {"reduction": "mean"},
]


def problem(M=12, K=5, N=4, *, bias=None, activation="relu", target=True, reduction="sum"):
    X, W, Y = make_inputs(M, K, N, dtype=torch.float64)
    gen = torch.Generator().manual_seed(9)
    b = {None: None, "row": (N,), "full": (M, N)}[bias]
    b = None if b is None else torch.randn(b, generator=gen, dtype=torch.float64)
    kw = {"bias": b, "activation": activation, "reduction": reduction}
    return X, W, (Y if target else None), kw


def both(X, Y, kw):
    """The loss as a function of W, by relufrob and by the reference."""

    def ours(w):
        return relufrob.loss(X, w, Y, **kw)

    def ref(w):
        return reference.loss(
            X, w, Y, kw["reduction"], bias=kw["bias"], activation=kw["activation"]
        )

    return ours, ref


@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_grad_vjp_jacrev(variant):
    X, W, Y, kw = problem(**variant)
    ours, ref = both(X, Y, kw)
    torch.testing.assert_close(func.grad(ours)(W), func.grad(ref)(W))
    (_, vjp_ours), (_, vjp_ref) = func.vjp(ours, W), func.vjp(ref, W)
    one = torch.tensor(2.5, dtype=torch.float64)
    torch.testing.assert_close(vjp_ours(one)[0], vjp_ref(one)[0])
    torch.testing.assert_close(func.jacrev(ours)(W), func.jacrev(ref)(W))


@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_grad_of_grad(variant):
    X, W, Y, kw = problem(**variant)
    ours, ref = both(X, Y, kw)
    torch.testing.assert_close(func.jacrev(func.grad(ours))(W), func.jacrev(func.grad(ref))(W))


def test_grad_with_respect_to_every_input():
    X, W, Y, kw = problem(bias="row")
    b = kw.pop("bias")

    def ours(x, w, y, b):
        return relufrob.loss(x, w, y, bias=b, **kw)

    def ref(x, w, y, b):
        return reference.loss(x, w, y, kw["reduction"], bias=b, activation=kw["activation"])

    args = (X, W, Y, b)
    for a, e in zip(
        func.grad(ours, argnums=(0, 1, 2, 3))(*args), func.grad(ref, argnums=(0, 1, 2, 3))(*args)
    ):
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_per_sample_gradients_without_the_fallback(reduction):
    W = torch.randn(5, 4, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64)
    Xb = torch.randn(7, 3, 5, dtype=torch.float64)
    Yb = torch.randn(7, 3, 4, dtype=torch.float64)

    def ours(x, y, w):
        return relufrob.loss(x, w, y, bias=b, reduction=reduction)

    def ref(x, y, w):
        return reference.loss(x, w, y, reduction, bias=b)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the per-example fallback warns
        got = func.vmap(func.grad(ours, argnums=2), in_dims=(0, 0, None))(Xb, Yb, W)
    expected = func.vmap(func.grad(ref, argnums=2), in_dims=(0, 0, None))(Xb, Yb, W)
    assert got.shape == (7, 5, 4)
    torch.testing.assert_close(got, expected)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_forward_mode_says_what_to_use():
    X, W, Y, kw = problem()
    ours, _ = both(X, Y, kw)
    with pytest.raises(NotImplementedError, match="forward-mode.*vjp or jacrev"):
        func.jvp(ours, (W,), (torch.ones_like(W),))


@pytest.fixture
def fresh_dynamo():
    torch.compiler.reset()
    yield
    torch.compiler.reset()


def test_compiled_grad_transform_is_not_zero(fresh_dynamo):
    # torch.compile over torch.func.grad of a Python autograd.Function has
    # returned silent zeros; compiled gradients must equal eager ones.
    X, W, Y, kw = problem(bias="row")
    ours, ref = both(X, Y, kw)
    compiled = torch.compile(lambda w: func.grad(ours)(w))
    torch.testing.assert_close(compiled(W), func.grad(ref)(W))


def test_fullgraph_compile_of_a_transform_fails_loudly(fresh_dynamo):
    # Not supported (the op's C++ autograd under a traced transform), but it
    # must raise rather than return wrong gradients.
    X, W, Y, kw = problem()
    ours, _ = both(X, Y, kw)
    compiled = torch.compile(lambda w: func.grad(ours)(w), fullgraph=True)
    with pytest.raises(Exception, match="functorch transforms"):
        compiled(W)


def test_outside_transforms_the_op_is_used():
    # The Python Function is only for transforms: plain autograd, compile and
    # export keep the op (and its fused backward).
    X, W, Y, kw = problem()
    with RecordTorchFunctions() as rec:
        relufrob.loss(X, W.requires_grad_(True), Y, **kw).backward()
    assert torch.ops.relufrob.loss.default in rec.calls


# --------------------------------------------------------------------------
# vmap rules: a batch of problems is one bigger fused call
# --------------------------------------------------------------------------

B = 4


def batch_problem(M=6, K=5, N=3, *, bias=None, target=True, seed=0):
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    X, W, Y = randn(B, M, K), randn(K, N), randn(B, M, N) if target else None
    b = {None: None, "row": randn(N), "full": randn(B, M, N)}[bias]
    return X, W, Y, b


def one_by_one(fn, *batched):
    """fn over the batch, problem by problem (None: shared), stacked."""
    outs = []
    for i in range(B):
        outs.append(fn(*(a if d is None else a[i] for a, d in batched)))
    if isinstance(outs[0], torch.Tensor):
        return torch.stack(outs)
    return [None if parts[0] is None else torch.stack(parts) for parts in zip(*outs)]


@contextlib.contextmanager
def no_fallback():
    """The per-example fallback warns; make that an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


VMAP_CASES = {
    "shared-W": ({}, {}),
    "row-bias": ({"bias": "row"}, {}),
    "full-bias": ({"bias": "full"}, {}),
    "no-target": ({"target": False}, {}),
    "identity-mean": ({}, {"activation": None, "reduction": "mean"}),
    "blocked": ({"M": 100, "K": 300, "N": 20}, {}),
}


@pytest.mark.parametrize("case", list(VMAP_CASES))
def test_vmap_of_grads_is_the_per_problem_result(case):
    shape, kw = VMAP_CASES[case]
    X, W, Y, b = batch_problem(**shape)
    b_dim = 0 if b is not None and b.dim() == 3 else None

    def call(x, y, bias):  # vmap returns tensors only: no dY without Y
        return tuple(t for t in relufrob.grads(x, W, y, bias=bias, **kw) if t is not None)

    y_dim = None if Y is None else 0
    with no_fallback():
        got = func.vmap(call, in_dims=(0, y_dim, b_dim))(X, Y, b)
    expected = one_by_one(call, (X, 0), (Y, y_dim), (b, b_dim))
    # The same sums in another grouping of rows: float64 rounding apart.
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected)):
        torch.testing.assert_close(g, e, msg=lambda m, i=i: f"output {i}: {m}")
    # And against the reference, problem by problem.
    ref = one_by_one(
        lambda x, y, bias: tuple(
            t
            for t in reference.autograd_grads(
                x,
                W,
                y,
                kw.get("reduction", "sum"),
                bias=bias,
                activation=kw.get("activation", "relu"),
            )
            if t is not None
        ),
        (X, 0),
        (Y, y_dim),
        (b, b_dim),
    )
    for g, e in zip(got, ref):
        torch.testing.assert_close(g, e)


def test_vmap_of_loss_and_of_selected_grads():
    X, W, Y, b = batch_problem(bias="row")
    with no_fallback():
        losses = func.vmap(lambda x, y: relufrob.loss(x, W, y, bias=b))(X, Y)
        dW_only = func.vmap(lambda x, y: relufrob.grads(x, W, y, bias=b, wrt=("W",)).dW)(X, Y)
    expected = one_by_one(lambda x, y: relufrob.grads(x, W, y, bias=b), (X, 0), (Y, 0))
    torch.testing.assert_close(losses, expected[0])
    torch.testing.assert_close(dW_only, expected[1])


@pytest.mark.parametrize("batched", ["W", "X-shared", "Y-shared"])
def test_vmap_over_other_batch_dims(batched):
    X, W, Y, _ = batch_problem()
    Wb = torch.randn(B, *W.shape, dtype=W.dtype)
    args = {
        "W": ((X, 0), (Wb, 0), (Y, 0)),  # each problem has its own W: one call each
        "X-shared": ((X[0], None), (W, None), (Y, 0)),
        "Y-shared": ((X, 0), (W, None), (Y[0], None)),
    }[batched]

    def call(x, w, y):
        return tuple(relufrob.grads(x, w, y))

    with no_fallback():
        got = func.vmap(call, in_dims=tuple(d for _, d in args))(*(a for a, _ in args))
    for g, e in zip(got, one_by_one(call, *args)):
        torch.testing.assert_close(g, e)


def test_vmap_of_empty_and_nonfinite_problems():
    X, W, Y, _ = batch_problem(M=0)
    with no_fallback():
        got = func.vmap(lambda x, y: tuple(relufrob.grads(x, W, y)))(X, Y)
    assert got[0].shape == (B,) and torch.equal(got[0], torch.zeros(B, dtype=X.dtype))
    assert torch.equal(got[1], torch.zeros(B, *W.shape, dtype=W.dtype))
    X, W, Y, _ = batch_problem()
    X[1, 2, 0] = float("nan")
    Y[2, 0, 1] = float("inf")
    with no_fallback():
        got = func.vmap(lambda x, y: tuple(relufrob.grads(x, W, y)))(X, Y)
    expected = one_by_one(lambda x, y: tuple(reference.autograd_grads(x, W, y)), (X, 0), (Y, 0))
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, equal_nan=True)


def test_per_sample_gradients_use_the_fused_gradients(monkeypatch):
    # A single grad under vmap: nothing differentiates the backward, so it
    # scales the forward's fused gradients instead of recomputing them.
    calls = []
    original = functorch_rules.differentiable_terms
    monkeypatch.setattr(
        functorch_rules,
        "differentiable_terms",
        lambda *a, **k: calls.append(1) or original(*a, **k),
    )
    X, W, Y, b = batch_problem(M=1, bias="row")

    def ours(x, y, w):
        return relufrob.loss(x, w, y, bias=b)

    def ref(x, y, w):
        return reference.loss(x, w, y, bias=b)

    with no_fallback():
        got = func.vmap(func.grad(ours, argnums=2), in_dims=(0, 0, None))(X, Y, W)
    assert not calls, "the backward recomputed the gradients"
    expected = func.vmap(func.grad(ref, argnums=2), in_dims=(0, 0, None))(X, Y, W)
    torch.testing.assert_close(got, expected)
    # Grad of grad still differentiates the backward: it recomputes.
    func.jacrev(func.grad(lambda w: ours(X[0], Y[0], w)))(W)
    assert calls


def test_plain_autograd_over_a_transform_is_exact():
    # torch.autograd differentiating func.grad's result from outside every
    # transform: the backward must stay differentiable.
    X, W, Y, kw = problem(bias="row")
    ours, ref = both(X, Y, kw)
    w1 = W.clone().requires_grad_(True)
    w2 = W.clone().requires_grad_(True)
    (func.grad(ours)(w1) ** 2).sum().backward()
    (func.grad(ref)(w2) ** 2).sum().backward()
    torch.testing.assert_close(w1.grad, w2.grad)


def test_reverse_over_reverse_is_differentiated():
    # jacrev of jacrev and grad of vjp: the inner level has exited when its
    # backward runs, and the outer one differentiates it.
    X, W, Y, kw = problem(bias="row")
    ours, ref = both(X, Y, kw)
    torch.testing.assert_close(func.jacrev(func.jacrev(ours))(W), func.jacrev(func.jacrev(ref))(W))
    one = torch.tensor(1.0, dtype=torch.float64)

    def through_vjp(f):
        return lambda w: (func.vjp(f, w)[1](one)[0] ** 2).sum()

    torch.testing.assert_close(func.grad(through_vjp(ours))(W), func.grad(through_vjp(ref))(W))
    assert func.grad(through_vjp(ours))(W).abs().sum() > 0


def test_higher_derivatives_in_mixed_precision():
    X, W, Y = make_inputs(12, 5, 4)
    Xb, Wb = X.bfloat16(), W.bfloat16()

    def ours(w):
        return relufrob.loss(Xb, w, Y)

    def ref(w):
        return reference.loss(Xb, w, Y)

    got = func.jacrev(func.grad(ours))(Wb)
    expected = func.jacrev(func.grad(ref))(Wb)
    assert got.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(got, expected)
    w1, w2 = Wb.clone().requires_grad_(True), Wb.clone().requires_grad_(True)
    (func.grad(ours)(w1).float() ** 2).sum().backward()
    (func.grad(ref)(w2).float() ** 2).sum().backward()
    torch.testing.assert_close(w1.grad, w2.grad)


def test_vmap_low_precision_mean_loss_is_the_op_loss():
    # The per-problem loss is taken from the residuals, not from the scaled
    # dY: a float16 mean whose squares overflow, or whose dY underflows.
    X = torch.tensor([[[300.0, 0.0], [0.0, 0.0]]], dtype=torch.float16)
    W = torch.eye(2, dtype=torch.float16)
    Y = torch.zeros(1, 2, 2, dtype=torch.float16)
    with no_fallback():
        got = func.vmap(lambda x, y: relufrob.loss(x, W, y, reduction="mean"))(X, Y)
    torch.testing.assert_close(got, relufrob.loss(X[0], W, Y[0], reduction="mean")[None])
    X, W, Y = make_inputs((2, 512), 8, 64, dtype=torch.float16)
    with no_fallback():
        got = func.vmap(lambda x, y: relufrob.grads(x, W, y, reduction="mean").loss)(X, Y)
    expected = torch.stack([relufrob.grads(X[i], W, Y[i], reduction="mean").loss for i in range(2)])
    torch.testing.assert_close(got, expected)


def test_vmap_of_an_empty_batch():
    X, W, Y, _ = batch_problem()
    Wb = torch.randn(B, *W.shape, dtype=W.dtype)
    one = relufrob.grads(X[0], W, Y[0])
    for w, w_dim in ((W, None), (Wb[:0], 0)):
        with no_fallback():
            got = func.vmap(lambda x, w, y: tuple(relufrob.grads(x, w, y)), in_dims=(0, w_dim, 0))(
                X[:0], w, Y[:0]
            )
        for g, e in zip(got, one):
            assert g.shape == (0, *e.shape) and g.dtype == e.dtype
