"""relufrob.loss in training code: autograd, double backward, opcheck, torch.compile."""

import itertools
import os
import subprocess
import sys

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import relufrob
from relufrob.testing import make_inputs, reference

from helpers import RecordTorchFunctions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REDUCTIONS = ("sum", "mean")
NAMES = ("X", "W", "Y")


def grads_of(fn, inputs, requires):
    """Gradients of fn(*inputs) for the inputs flagged in `requires` (None stays None)."""
    leaves = [
        None if t is None else t.detach().clone().requires_grad_(r)
        for t, r in zip(inputs, requires)
    ]
    fn(*leaves).backward()
    return [None if t is None else t.grad for t in leaves]


class RecordGradsCalls(TorchDispatchMode):
    """Records the need_* flags of every relufrob::grads call below autograd."""

    def __init__(self):
        super().__init__()
        self.flags = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.relufrob.grads.default:
            # The flags are keyword-only in the schema.
            self.flags.append(tuple(kwargs.get(n, True) for n in ("need_dW", "need_dX", "need_dY")))
        return func(*args, **kwargs)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "requires", [r for r in itertools.product((False, True), repeat=3) if any(r)]
)
def test_loss_gradients_match_reference(requires, reduction):
    inputs = make_inputs(9, 5, 4)
    ours = grads_of(lambda X, W, Y: relufrob.loss(X, W, Y, reduction=reduction), inputs, requires)
    ref = grads_of(lambda X, W, Y: reference.loss(X, W, Y, reduction=reduction), inputs, requires)
    for name, a, b, r in zip(NAMES, ours, ref, requires):
        if r:
            torch.testing.assert_close(a, b, msg=lambda m, name=name: f"d{name}: {m}")
        else:
            assert a is None, f"{name} does not require grad but got a gradient"


def test_loss_value_matches_reference_and_has_leading_dims():
    X, W, Y = make_inputs((2, 3, 9), 5, 4)
    W.requires_grad_(True)
    f = relufrob.loss(X, W, Y)
    assert f.dim() == 0 and f.requires_grad
    torch.testing.assert_close(f.detach(), reference.loss(X, W, Y).detach())


@pytest.mark.parametrize(
    "requires",
    [
        (True, False, False),
        (False, True, False),
        (False, False, True),
        (True, True, True),
        (False, False, False),
    ],
)
def test_forward_computes_only_the_gradients_needed(requires):
    X, W, Y = (t.requires_grad_(r) for t, r in zip(make_inputs(9, 5, 4), requires))
    with RecordGradsCalls() as rec:
        relufrob.loss(X, W, Y)
    need_dX, need_dW, need_dY = requires
    assert rec.flags == [(need_dW, need_dX, need_dY)]


def test_no_gradients_under_no_grad():
    X, W, Y = (t.requires_grad_(True) for t in make_inputs(9, 5, 4))
    with torch.no_grad(), RecordGradsCalls() as rec:
        f = relufrob.loss(X, W, Y)
    assert rec.flags == [(False, False, False)]
    assert not f.requires_grad


@pytest.mark.parametrize("scale", [1.5, -0.25, 0.0])
def test_grad_output_scales_gradients(scale):
    inputs = make_inputs(9, 5, 4)
    ours = grads_of(lambda X, W, Y: relufrob.loss(X, W, Y) * scale, inputs, (True, True, True))
    ref = grads_of(lambda X, W, Y: reference.loss(X, W, Y) * scale, inputs, (True, True, True))
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b)


def test_saved_tensors_are_released_after_backward():
    X, W, Y = make_inputs(9, 5, 4)
    W.requires_grad_(True)
    f = relufrob.loss(X, W, Y)
    f.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        f.backward()


def test_retain_graph_allows_a_second_identical_backward():
    X, W, Y = make_inputs(9, 5, 4)
    W.requires_grad_(True)
    f = relufrob.loss(X, W, Y)
    (g1,) = torch.autograd.grad(f, W, retain_graph=True)
    (g2,) = torch.autograd.grad(f, W)
    torch.testing.assert_close(g1, g2, rtol=0, atol=0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("wrt", range(3))
def test_gradcheck_float64(wrt, reduction):
    inputs = list(make_inputs(6, 4, 3, dtype=torch.float64, seed=wrt))
    inputs[wrt].requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda X, W, Y: relufrob.loss(X, W, Y, reduction=reduction), tuple(inputs)
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_double_backward_is_exact(reduction):
    inputs = [t.requires_grad_(True) for t in make_inputs(6, 4, 3, dtype=torch.float64)]
    assert torch.autograd.gradgradcheck(
        lambda X, W, Y: relufrob.loss(X, W, Y, reduction=reduction), tuple(inputs)
    )

    def hvp(loss_fn):
        leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
        gX, gW, gY = torch.autograd.grad(
            loss_fn(*leaves, reduction=reduction), leaves, create_graph=True
        )
        penalty = (gW**2).sum() + (gX * gY.sum()).sum()
        return torch.autograd.grad(penalty, leaves)

    for a, b in zip(hvp(relufrob.loss), hvp(reference.loss)):
        torch.testing.assert_close(a, b)


def opcheck_samples():
    for dtype, (M, K, N), requires in itertools.product(
        (torch.float32, torch.float64), ((5, 3, 2), (1, 1, 1), (12, 7, 9)), (False, True)
    ):
        X, W, Y = make_inputs(M, K, N, dtype=dtype)
        yield (X.requires_grad_(requires), W.requires_grad_(requires), Y)
    X, W, Y = make_inputs((2, 4), 3, 2)
    yield (X, W.requires_grad_(True), Y.requires_grad_(True))


@pytest.mark.parametrize(
    "sample", list(opcheck_samples()), ids=lambda s: f"{list(s[0].shape)}-{s[0].dtype}"
)
@pytest.mark.parametrize(
    "op,kwargs",
    [
        (torch.ops.relufrob.grads.default, {}),
        (torch.ops.relufrob.grads.default, {"need_dX": False, "reduction": "mean"}),
        (torch.ops.relufrob.loss.default, {}),
        (torch.ops.relufrob.loss.default, {"reduction": "mean"}),
    ],
    ids=["grads", "grads-partial-mean", "loss", "loss-mean"],
)
def test_opcheck(op, kwargs, sample):
    torch.library.opcheck(op, sample, kwargs)


def test_grads_op_outputs_carry_no_graph():
    X, W, Y = (t.requires_grad_(True) for t in make_inputs(9, 5, 4))
    out = relufrob.grads(X, W, Y)
    assert all(t.grad_fn is None and not t.requires_grad for t in out)


@pytest.fixture
def fresh_dynamo():
    torch.compiler.reset()
    yield
    torch.compiler.reset()


@pytest.mark.parametrize(
    "requires", [(True, True, True), (False, True, False), (True, False, True)]
)
def test_compiled_loss_matches_eager(fresh_dynamo, requires):
    def step(X, W, Y):
        return relufrob.loss(X, W, Y) * 0.5 + relufrob.loss(X, W, Y, reduction="mean")

    compiled = torch.compile(step, fullgraph=True)
    inputs = make_inputs(9, 5, 4)
    eager = grads_of(step, inputs, requires)
    traced = grads_of(compiled, inputs, requires)
    for a, b in zip(traced, eager):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(a, b)


def test_compiled_dynamic_shapes_two_sizes(fresh_dynamo):
    def step(X, W, Y):
        return relufrob.loss(X, W, Y), relufrob.grads(X, W, Y, wrt=("W",)).dW

    compiled = torch.compile(step, fullgraph=True, dynamic=True)
    for M in (9, 23):
        X, W, Y = make_inputs(M, 5, 4)
        W.requires_grad_(True)
        f, dW = compiled(X, W, Y)
        f.backward()
        ref = reference.autograd_grads(X, W, Y)
        torch.testing.assert_close(f.detach(), ref.loss)
        torch.testing.assert_close(dW, ref.dW)
        torch.testing.assert_close(W.grad, ref.dW)


def test_compiled_grads_matches_eager(fresh_dynamo):
    compiled = torch.compile(
        lambda X, W, Y: relufrob.grads(X, W, Y, reduction="mean"), fullgraph=True
    )
    X, W, Y = make_inputs((3, 9), 5, 4)
    for a, b in zip(compiled(X, W, Y), relufrob.grads(X, W, Y, reduction="mean")):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_compiled_bad_shapes_name_the_argument(fresh_dynamo, dynamic):
    # The fake kernel refuses the trace with the eager message, and the
    # explanation of a refused call stays traceable by dynamo.
    compiled = torch.compile(
        lambda X, W, Y: relufrob.loss(X, W, Y), fullgraph=True, dynamic=dynamic
    )
    X, W, Y = make_inputs(7, 4, 3)
    with pytest.raises(Exception, match=r"relufrob: W must have shape \(K, N\) with K = "):
        compiled(X, W[:3], Y)


def test_fit_example_runs_and_both_loops_agree():
    out = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "examples", "fit.py"),
            "--shape",
            "256",
            "8",
            "4",
            "--steps",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    finals = {}
    for line in out.splitlines():
        if "final loss" in line:
            name, rest = line.split(":", 1)
            finals[name.strip()] = float(rest.split()[2])
    assert set(finals) == {"relufrob.loss", "autograd reference"}, out
    initial = float(out.split("initial loss:")[1].split()[0])
    assert finals["relufrob.loss"] < initial
    assert finals["relufrob.loss"] == pytest.approx(finals["autograd reference"], rel=1e-3)


@pytest.mark.parametrize("MKN", [(3, 0, 4), (3, 4, 0), (0, 3, 4)], ids=str)
def test_double_backward_with_empty_dimensions(MKN):
    inputs = make_inputs((2, MKN[0]), *MKN[1:], dtype=torch.float64)

    def first_grads(loss_fn):
        leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
        grads = torch.autograd.grad(loss_fn(*leaves), leaves, create_graph=True)
        return leaves, grads

    (ours_leaves, ours), (ref_leaves, ref) = first_grads(relufrob.loss), first_grads(reference.loss)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b)
    # A second derivative through whatever is non-empty.
    penalty = sum((g**2).sum() for g in ours)
    ref_penalty = sum((g**2).sum() for g in ref)
    for a, b in zip(
        torch.autograd.grad(penalty, ours_leaves, allow_unused=True, materialize_grads=True),
        torch.autograd.grad(ref_penalty, ref_leaves, allow_unused=True, materialize_grads=True),
    ):
        torch.testing.assert_close(a, b)


def test_torch_function_modes_see_grads_and_loss():
    X, W, Y = make_inputs(9, 5, 4)
    with RecordTorchFunctions() as rec:
        relufrob.grads(X, W, Y)
        relufrob.loss(X, W, Y)
    assert torch.ops.relufrob.grads.default in rec.calls
    assert torch.ops.relufrob.loss.default in rec.calls


def test_in_place_change_of_a_saved_input_is_detected():
    X, W, Y = make_inputs(9, 5, 4)
    W.requires_grad_(True)
    f = relufrob.loss(X, W, Y)
    Y.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        f.backward()


# --------------------------------------------------------------------------
# The general form: bias, no activation, no target
# --------------------------------------------------------------------------

GENERAL = [
    {"bias": "row"},
    {"bias": "full"},
    {"bias": "row", "activation": None, "target": False},
    {"bias": None, "activation": None},
    {"bias": "full", "activation": None, "target": False},
]


def general_case(M, K, N, *, bias=None, activation="relu", target=True, dtype=torch.float64):
    X, W, Y = make_inputs(M, K, N, dtype=dtype)
    gen = torch.Generator().manual_seed(7)
    shape = {None: None, "row": (N,), "full": (*X.shape[:-1], N)}[bias]
    b = None if shape is None else torch.randn(shape, generator=gen).to(dtype)
    return [X, W, Y if target else None, b], activation


def _given(inputs):
    return [t for t in inputs if t is not None]


def _loss_fn(fn, inputs, activation, reduction="sum"):
    """fn as a function of the given tensors only (for gradcheck)."""
    present = [t is not None for t in inputs]

    def call(*given):
        it = iter(given)
        X, W, Y, b = (next(it) if p else None for p in present)
        return fn(X, W, Y, bias=b, activation=activation, reduction=reduction)

    return call


@pytest.mark.parametrize("case", GENERAL, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_and_double_backward_general(case, reduction):
    inputs, activation = general_case(6, 4, 3, **case)
    given = [t.requires_grad_(True) for t in _given(inputs)]
    fn = _loss_fn(relufrob.loss, inputs, activation, reduction)
    assert torch.autograd.gradcheck(fn, tuple(given))
    assert torch.autograd.gradgradcheck(fn, tuple(given))


@pytest.mark.parametrize("case", GENERAL, ids=str)
def test_loss_gradients_general_match_reference(case):
    inputs, activation = general_case(9, 5, 4, **case)
    given = _given(inputs)
    ours = grads_of(_loss_fn(relufrob.loss, inputs, activation), given, [True] * len(given))
    ref = grads_of(_loss_fn(reference.loss, inputs, activation), given, [True] * len(given))
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b)


def test_only_the_bias_requires_grad():
    inputs, activation = general_case(9, 5, 4, bias="row")
    X, W, Y, b = inputs
    b.requires_grad_(True)
    with RecordGradsCalls() as rec:
        f = relufrob.loss(X, W, Y, bias=b)
    assert rec.flags == [(False, False, False)]  # need_db is the only one asked
    f.backward()
    torch.testing.assert_close(b.grad, reference.autograd_grads(X, W, Y, bias=b).db)


def general_opcheck_samples():
    for case in GENERAL:
        for dtype in (torch.float32, torch.float64):
            inputs, activation = general_case(7, 3, 5, dtype=dtype, **case)
            for t in _given(inputs):
                t.requires_grad_(True)
            X, W, Y, b = inputs
            yield (X, W, Y), {"bias": b, "activation": activation}


@pytest.mark.parametrize(
    "sample", list(general_opcheck_samples()), ids=lambda s: f"{s[1]['activation']}"
)
@pytest.mark.parametrize(
    "op,extra",
    [
        (torch.ops.relufrob.grads.default, {}),
        (torch.ops.relufrob.grads.default, {"need_dX": False, "scale": 0.25}),
        (torch.ops.relufrob.loss.default, {}),
        (torch.ops.relufrob.loss.default, {"reduction": "mean", "scale": 3.0}),
    ],
    ids=["grads", "grads-partial-scaled", "loss", "loss-mean-scaled"],
)
def test_opcheck_general(op, extra, sample):
    args, kwargs = sample
    torch.library.opcheck(op, args, {**kwargs, **extra})


@pytest.mark.parametrize("scale", [0.5, 3.0])
def test_the_op_scale_multiplies_loss_and_gradients(scale):
    X, W, Y = make_inputs(30, 6, 5, dtype=torch.float64)
    b = torch.randn(5, dtype=torch.float64)
    op = torch.ops.relufrob.grads.default
    plain = op(X, W, Y, bias=b, reduction="mean")
    scaled = op(X, W, Y, bias=b, reduction="mean", scale=scale)
    for a, e in zip(scaled, plain):
        torch.testing.assert_close(a, e * scale)


@pytest.mark.parametrize("case", GENERAL, ids=str)
def test_compiled_general_loss_matches_eager(fresh_dynamo, case):
    def step(X, W, Y, b):
        return relufrob.loss(X, W, Y, bias=b, activation=activation)

    compiled = torch.compile(step, fullgraph=True, dynamic=True)
    for M in (9, 23):
        inputs, activation = general_case(M, 5, 4, dtype=torch.float32, **case)
        eager = grads_of(step, inputs, [t is not None for t in inputs])
        traced = grads_of(compiled, inputs, [t is not None for t in inputs])
        for a, b in zip(traced, eager):
            if b is None:
                assert a is None
            else:
                torch.testing.assert_close(a, b)
