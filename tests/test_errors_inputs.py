"""Bad X, W and Y: shapes raise ValueError, dtypes and non-tensors TypeError,
each with a message that starts with "relufrob: " and names the argument.

Everything runs in-process: a crash would take the whole test session down,
so "never a segfault" is checked implicitly. Layouts and devices are in
test_errors_layout_device.py, the keyword arguments in test_errors_options.py.
"""

import re

import error_cases
import numpy as np
import pytest
import torch
from error_cases import SHAPE_CASES, _names, _ok

import relufrob

entry = error_cases.entry


def test_valid_inputs_do_not_raise(entry):
    # The baseline the error cases perturb is itself accepted.
    X, W, Y = _ok()
    entry(X, W, Y)


# --------------------------------------------------------------------------
# Shapes -> ValueError
# --------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(SHAPE_CASES))
def test_bad_shapes(case, entry):
    xs, ws, ys, arg, extra = SHAPE_CASES[case]
    X, W, Y = torch.randn(xs), torch.randn(ws), torch.randn(ys)
    with pytest.raises(ValueError, match=_names(arg)) as info:
        entry(X, W, Y)
    assert re.search(extra, str(info.value)), str(info.value)


def test_w_3d_message_example():
    # The example from the documentation, checked in full.
    with pytest.raises(ValueError) as info:
        relufrob.grads(torch.randn(6, 4), torch.randn(2, 4, 4), torch.randn(6, 4))
    assert str(info.value).startswith("relufrob: W must be 2-D (K, N), got shape [2, 4, 4]")


# --------------------------------------------------------------------------
# dtypes -> TypeError
# --------------------------------------------------------------------------


@pytest.mark.parametrize("arg", ["W", "Y"])
@pytest.mark.parametrize(
    "xdtype,odtype",
    [
        (torch.float32, torch.float64),
        (torch.float64, torch.float32),
        (torch.float32, torch.float16),
        (torch.float16, torch.bfloat16),
    ],
    ids=str,
)
def test_mismatched_float_dtypes(arg, xdtype, odtype, entry):
    X, W, Y = _ok(dtype=xdtype)
    if arg == "W":
        W = W.to(odtype)
    else:
        Y = Y.to(odtype)
    with pytest.raises(TypeError, match=_names(arg)) as info:
        entry(X, W, Y)
    assert "dtype" in str(info.value)


BAD_DTYPES = [
    torch.int32,
    torch.int64,
    torch.uint8,
    torch.int8,
    torch.bool,
    torch.complex64,
    torch.complex128,
]


@pytest.mark.parametrize("arg", ["X", "W", "Y"])
@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=str)
def test_non_float_dtypes(arg, dtype, entry):
    X, W, Y = _ok()
    t = {"X": X, "W": W, "Y": Y}
    t[arg] = t[arg].to(dtype)
    with pytest.raises(TypeError, match=_names(arg)):
        entry(t["X"], t["W"], t["Y"])


@pytest.mark.parametrize("dtype", BAD_DTYPES[:2] + [torch.bool, torch.complex64], ids=str)
def test_all_inputs_same_bad_dtype(dtype):
    # Consistent but non-floating dtypes are refused too; X is named first.
    X, W, Y = (t.to(dtype) for t in _ok())
    with pytest.raises(TypeError, match=_names("X")):
        relufrob.grads(X, W, Y)


# --------------------------------------------------------------------------
# Non-tensor arguments -> TypeError
# --------------------------------------------------------------------------

NON_TENSORS = {
    "list": lambda t: t.tolist(),
    "int": lambda t: 3,
    "float": lambda t: 1.5,
    "None": lambda t: None,
    "numpy": lambda t: np.asarray(t.tolist(), dtype=np.float32),
    "str": lambda t: "X",
}


# Y=None is not a mistake but the zero target (test_parity_general.py).
@pytest.mark.parametrize(
    "arg,kind",
    [(a, k) for a in ("X", "W", "Y") for k in NON_TENSORS if (a, k) != ("Y", "None")],
)
def test_non_tensor_arguments(arg, kind, entry):
    X, W, Y = _ok()
    t = {"X": X, "W": W, "Y": Y}
    t[arg] = NON_TENSORS[kind](t[arg])
    with pytest.raises(TypeError, match=_names(arg)):
        entry(t["X"], t["W"], t["Y"])


# --------------------------------------------------------------------------
# After an error, and a problem with nothing to compute
# --------------------------------------------------------------------------


def test_library_usable_after_errors():
    # A failed call leaves nothing broken behind.
    X, W, Y = _ok()
    for bad in (torch.randn(5, 3), W.double(), [1.0]):
        with pytest.raises((TypeError, ValueError)):
            relufrob.grads(X, bad, Y)
    got = relufrob.grads(X, W, Y)
    torch.testing.assert_close(got.loss, relufrob.reference.loss(X, W, Y))


def test_empty_problem_with_huge_leading_dims_returns_at_once():
    # K = N = 0 with 2**40 rows: nothing to compute, and nothing may walk the
    # rows. Run in a subprocess so a regression fails on the timeout instead
    # of hanging the suite.
    code = (
        "import torch, relufrob\n"
        "X = torch.empty(2**20, 2**20, 0); W = torch.empty(0, 0)\n"
        "Y = torch.empty(2**20, 2**20, 0)\n"
        "out = relufrob.grads(X, W, Y)\n"
        "assert out.loss.item() == 0 and out.dX.shape == X.shape and out.dY.shape == Y.shape\n"
        "assert out.dW.shape == (0, 0)\n"
    )
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
