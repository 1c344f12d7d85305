"""relufrob's ops as torch sees them: torch function modes see grads and loss,
torch.library.opcheck passes on the plain and the general form, the op's
scale argument, and torch.compile (static and dynamic shapes, full graph)
gives what eager gives and refuses bad shapes with the eager message.
"""

import itertools

import pytest
import torch
from autograd_cases import GENERAL, _given, general_case, grads_of

import relufrob
from relufrob.testing import make_inputs, reference

from helpers import RecordTorchFunctions


def test_torch_function_modes_see_grads_and_loss():
    X, W, Y = make_inputs(9, 5, 4)
    with RecordTorchFunctions() as rec:
        relufrob.grads(X, W, Y)
        relufrob.loss(X, W, Y)
    assert torch.ops.relufrob.grads.default in rec.calls
    assert torch.ops.relufrob.loss.default in rec.calls


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
