"""What the tests/test_errors_*.py files share: the valid inputs they perturb,
the message pattern, the two entry points, the shape faults and _raised.

The contract those files hold: bad inputs raise the documented exception
type -- ValueError for shapes, layout, device and reduction; TypeError for
dtypes and non-tensors -- with a message that starts with "relufrob: " and
names the offending argument (X, W, Y, bias, ...).

* ``_ok()`` is a valid (X, W, Y); ``_names(arg)`` matches a message that starts
  with "relufrob: " and names `arg`;
* the ``entry`` fixture runs a test through relufrob.grads and relufrob.loss
  (a test file takes it with ``entry = error_cases.entry``);
* ``SHAPE_CASES`` are the shape faults (test_errors_inputs.py), whose messages
  test_errors_fake_kernels.py holds the fake kernels to;
* ``_raised(call)`` is the (type, message) of what `call` raises.
"""

import pytest
import torch

import relufrob
from relufrob.testing import make_inputs


def _ok(M=6, K=4, N=3, dtype=torch.float32, device="cpu"):
    return make_inputs(M, K, N, dtype=dtype, device=device)


def _names(arg):
    """A regex for a message that starts with 'relufrob: ' and names `arg`."""
    return rf"^relufrob: {arg}\b"


ENTRY_POINTS = {
    "grads": lambda X, W, Y, **kw: relufrob.grads(X, W, Y, **kw),
    "loss": lambda X, W, Y, **kw: relufrob.loss(X, W, Y, **kw),
}


@pytest.fixture(params=list(ENTRY_POINTS))
def entry(request):
    return ENTRY_POINTS[request.param]


SHAPE_CASES = {
    # name: (X shape, W shape, Y shape, argument named, extra regex)
    "X-0d": ((), (4, 3), (3,), "X", r"shape"),
    "W-1d": ((6, 4), (4,), (6, 3), "W", r"2-D"),
    "W-3d": ((6, 4), (2, 4, 3), (6, 3), "W", r"2-D.*\[2, 4, 3\]"),
    "W-0d": ((6, 4), (), (6, 3), "W", r"2-D"),
    "inner-dim-mismatch": ((6, 4), (5, 3), (6, 3), "W", r"\bK\b"),
    "inner-dim-mismatch-1d": ((4,), (5, 3), (3,), "W", r"\bK\b"),
    "Y-wrong-N": ((6, 4), (4, 3), (6, 2), "Y", r"\bN\b"),
    "Y-wrong-M": ((6, 4), (4, 3), (5, 3), "Y", r"shape"),
    "Y-transposed-shape": ((6, 4), (4, 3), (3, 6), "Y", r"shape"),
    "Y-wrong-leading-dims": ((2, 3, 4), (4, 5), (3, 2, 5), "Y", r"leading"),
    "Y-fewer-dims": ((2, 3, 4), (4, 5), (6, 5), "Y", r"shape"),
    "Y-more-dims": ((6, 4), (4, 5), (1, 6, 5), "Y", r"shape"),
    "Y-1d-X-2d": ((6, 4), (4, 5), (5,), "Y", r"shape"),
    "Y-2d-X-1d": ((4,), (4, 5), (1, 5), "Y", r"shape"),
    "Y-0d": ((4,), (4, 1), (), "Y", r"shape"),
    "empty-K-mismatch": ((6, 0), (1, 3), (6, 3), "W", r"\bK\b"),
}

F32, F64, F16, BF16 = torch.float32, torch.float64, torch.float16, torch.bfloat16


def _raised(call):
    with pytest.raises(Exception) as info:
        call()
    return type(info.value), str(info.value)
