"""relufrob.loss in training code: its gradients against the autograd
reference, only the gradients needed, no_grad, grad_output, saved tensors and
retain_graph, gradcheck and double backward (the general form's too), and the
fit example. The ops as torch.library and torch.compile see them are in
test_compile.py.
"""

import itertools
import os
import subprocess
import sys

import pytest
import torch
from autograd_cases import GENERAL, _given, general_case, grads_of
from torch.utils._python_dispatch import TorchDispatchMode

import relufrob
from relufrob.testing import make_inputs, reference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REDUCTIONS = ("sum", "mean")
NAMES = ("X", "W", "Y")


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


def test_grads_op_outputs_carry_no_graph():
    X, W, Y = (t.requires_grad_(True) for t in make_inputs(9, 5, 4))
    out = relufrob.grads(X, W, Y)
    assert all(t.grad_fn is None and not t.requires_grad for t in out)


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
