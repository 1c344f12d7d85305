"""Bad keyword arguments: reduction, wrt and activation. Unknown values raise
ValueError and values of the wrong type TypeError; a str that is not valid
UTF-8 is a ValueError; and a call that asks for no gradient (wrt=()) still
validates its tensors.
"""

import error_cases
import pytest
import torch
from error_cases import _names, _ok
from torch._subclasses.fake_tensor import FakeTensorMode

import relufrob

entry = error_cases.entry


# --------------------------------------------------------------------------
# reduction and wrt -> ValueError
# --------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["none", "MEAN", "Sum", "", "avg", "mean "])
def test_bad_reduction(reduction, entry):
    X, W, Y = _ok()
    with pytest.raises(ValueError, match=r"^relufrob: .*reduction") as info:
        entry(X, W, Y, reduction=reduction)
    assert repr(reduction)[1:-1] in str(info.value)


@pytest.mark.parametrize("MKN", [(6, 4, 3), (0, 4, 3), (20, 8, 300)], ids=str)
def test_bad_reduction_any_size(MKN):
    # Checked whatever path the problem size selects, empty ones included.
    X, W, Y = _ok(*MKN)
    with pytest.raises(ValueError, match="reduction"):
        relufrob.grads(X, W, Y, reduction="none")


@pytest.mark.parametrize("wrt", [("Z",), ("x",), ("W", "Q"), ["dW"], "Q", ("X", "loss")], ids=str)
def test_bad_wrt(wrt):
    X, W, Y = _ok()
    with pytest.raises(ValueError, match=r"^relufrob\S*: .*wrt"):
        relufrob.grads(X, W, Y, wrt=wrt)


def test_shape_checked_before_work_even_with_empty_wrt():
    # Loss-only calls validate as strictly as full ones.
    with pytest.raises(ValueError, match=_names("W")):
        relufrob.grads(torch.randn(6, 4), torch.randn(5, 3), torch.randn(6, 3), wrt=())
    with pytest.raises(TypeError, match=_names("Y")):
        relufrob.grads(torch.randn(6, 4), torch.randn(4, 3), torch.randn(6, 3).double(), wrt=())


@pytest.mark.parametrize("entry", [relufrob.grads, relufrob.loss], ids=["grads", "loss"])
@pytest.mark.parametrize("reduction", [None, 1, 0.5], ids=repr)
def test_non_string_reduction(entry, reduction):
    X, W, Y = _ok()
    with pytest.raises(TypeError, match="reduction must be 'sum' or 'mean'"):
        entry(X, W, Y, reduction=reduction)


@pytest.mark.parametrize("wrt", [3, 1.5], ids=repr)
def test_non_sequence_wrt(wrt):
    X, W, Y = _ok()
    with pytest.raises(TypeError, match="wrt must be a sequence"):
        relufrob.grads(X, W, Y, wrt=wrt)


# --------------------------------------------------------------------------
# activation, and a str that cannot cross into C++
# --------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["tanh", "identity", "RELU", "", "\udcff"], ids=repr)
def test_unknown_activation(activation, entry):
    X, W, Y = _ok()
    with pytest.raises(ValueError, match=r"^relufrob: activation must be 'relu' or None, got "):
        entry(X, W, Y, activation=activation)


@pytest.mark.parametrize("activation", [1, True, torch.relu], ids=repr)
def test_non_string_activation(activation, entry):
    X, W, Y = _ok()
    with pytest.raises(TypeError, match=r"^relufrob: activation must be 'relu' or None"):
        entry(X, W, Y, activation=activation)


@pytest.mark.parametrize("where", ["reduction", "activation"])
def test_a_str_without_utf8_is_a_value_error(where, entry):
    # A lone surrogate cannot cross into C++; torch's own message for it
    # ("Expected a value of type 'str'") would not say what is wrong.
    X, W, Y = _ok()
    with pytest.raises(ValueError, match=rf"^relufrob: {where} must be"):
        entry(X, W, Y, **{where: "\udcff"})


# --------------------------------------------------------------------------
# scale: the ops' explicit multiplier
# --------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), -float("inf")], ids=repr)
@pytest.mark.parametrize("op", ["grads", "loss"])
def test_non_finite_scale_is_refused_by_name(op, scale):
    # A NaN or infinite scale would make every output NaN or Inf, silently.
    X, W, Y = _ok()
    fn = getattr(torch.ops.relufrob, op)
    with pytest.raises(ValueError, match="scale must be a finite number"):
        fn(X, W, Y, scale=scale)
    # The fake kernel (torch.compile, export) refuses it in the same words.
    with FakeTensorMode() as mode:
        fakes = [mode.from_tensor(t) for t in (X, W, Y)]
        with pytest.raises(ValueError, match="scale must be a finite number"):
            fn(*fakes, scale=scale)
