"""The Python copies of the checks (relufrob._library.checks: the fake kernels
and the explanation of a refused call) word every error exactly as C++ does:
the same exception type and message, for the shape, dtype and reduction
faults, several at once, the device fault and the general form's arguments.
"""

import pytest
import torch
from error_cases import BF16, F16, F32, F64, SHAPE_CASES, _ok, _raised
from torch._subclasses.fake_tensor import FakeTensorMode

import relufrob
from relufrob._library.checks import explain_failure


def _args(xs, ws, ys, dtypes=(torch.float32,) * 3):
    return tuple(torch.zeros(s, dtype=d) for s, d in zip((xs, ws, ys), dtypes))


MESSAGE_CASES = {
    **{name: (_args(*case[:3]), "sum") for name, case in SHAPE_CASES.items()},
    "W-float64": (_args((6, 4), (4, 3), (6, 3), (F32, F64, F32)), "sum"),
    "Y-bfloat16": (_args((6, 4), (4, 3), (6, 3), (F16, F16, BF16)), "sum"),
    "X-int64": (_args((6, 4), (4, 3), (6, 3), (torch.int64, F32, F32)), "sum"),
    "W-bool": (_args((6, 4), (4, 3), (6, 3), (F32, torch.bool, F32)), "sum"),
    "Y-complex64": (_args((6, 4), (4, 3), (6, 3), (F32, F32, torch.complex64)), "sum"),
    "reduction-none": (_args((6, 4), (4, 3), (6, 3)), "none"),
    # Several faults at once: the first one C++ checks is reported.
    "X-int-and-W-3d": (_args((6, 4), (2, 4, 3), (6, 3), (torch.int32, F32, F32)), "sum"),
    "W-3d-and-Y-float64": (_args((6, 4), (2, 4, 3), (6, 3), (F32, F32, F64)), "sum"),
    "dtypes-and-reduction": (_args((6, 4), (4, 3), (6, 3), (F32, F64, F16)), "avg"),
    # Mixed precision takes a float32 Y under a low-precision X, nothing else.
    "Y-float64-under-bfloat16": (_args((6, 4), (4, 3), (6, 3), (BF16, BF16, F64)), "sum"),
    "Y-float16-under-bfloat16": (_args((6, 4), (4, 3), (6, 3), (BF16, BF16, F16)), "sum"),
    "Y-bfloat16-under-float32": (_args((6, 4), (4, 3), (6, 3), (F32, F32, BF16)), "sum"),
}


@pytest.mark.parametrize(
    "op", [torch.ops.relufrob.grads.default, torch.ops.relufrob.loss.default], ids=["grads", "loss"]
)
@pytest.mark.parametrize("case", list(MESSAGE_CASES))
def test_fake_kernel_errors_are_the_cpp_errors(case, op):
    (X, W, Y), reduction = MESSAGE_CASES[case]
    cpp = _raised(lambda: op(X, W, Y, reduction=reduction))
    assert cpp[1].startswith("relufrob: "), cpp  # C++ validation, not a dispatcher error
    with FakeTensorMode() as mode:
        fake = [mode.from_tensor(t) for t in (X, W, Y)]
        assert _raised(lambda: op(*fake, reduction=reduction)) == cpp
    # C++ said it all: the Python explanation of a refused call adds nothing.
    assert explain_failure(X, W, Y, reduction) is None


@pytest.mark.parametrize("arg", ["W", "Y"])
def test_device_error_is_the_fake_kernels(arg):
    # A meta W or Y beside a CPU X reaches the fake kernel; the explanation of
    # a refused call words the same fault the same way.
    X, W, Y = _ok()
    t = {"X": X, "W": W, "Y": Y}
    t[arg] = t[arg].to("meta")
    fake = _raised(lambda: relufrob.grads(t["X"], t["W"], t["Y"]))
    assert fake == (ValueError, f"relufrob: {arg} must be on the same device as X (cpu), got meta")
    assert _raised(lambda: explain_failure(t["X"], t["W"], t["Y"], "sum")) == fake


GENERAL_MESSAGE_CASES = {
    "bias-shape": {"bias": torch.zeros(4)},
    "bias-dtype": {"bias": torch.zeros(3, dtype=torch.float64)},
    "bias-full-shape": {"bias": torch.zeros(5, 3)},
    "activation": {"activation": "gelu"},
    "bias-and-activation": {"bias": torch.zeros(3, dtype=torch.float16), "activation": "x"},
}


@pytest.mark.parametrize(
    "op", [torch.ops.relufrob.grads.default, torch.ops.relufrob.loss.default], ids=["grads", "loss"]
)
@pytest.mark.parametrize("case", list(GENERAL_MESSAGE_CASES))
def test_fake_kernel_errors_are_the_cpp_errors_general(case, op):
    X, W, Y = _ok()
    kwargs = GENERAL_MESSAGE_CASES[case]
    cpp = _raised(lambda: op(X, W, Y, **kwargs))
    assert cpp[1].startswith("relufrob: "), cpp
    with FakeTensorMode() as mode:
        fake = [mode.from_tensor(t) for t in (X, W, Y)]
        fake_kwargs = {
            k: mode.from_tensor(v) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()
        }
        assert _raised(lambda: op(*fake, **fake_kwargs)) == cpp
