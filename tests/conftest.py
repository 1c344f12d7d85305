"""Shared fixtures and helpers for the relufrob test suite.

* ``device``: every test that takes it runs on "cpu" and on "cuda"; the CUDA
  run is skipped (not failed) on machines without a GPU.
* ``tolerances(dtype)``: the rtol/atol used for parity with the autograd
  reference.
* ``assert_grads_match(got, expected)``: compares a relufrob ``Grads`` with a
  reference ``Grads`` field by field, including shape, dtype and device.
"""
import os

import pytest
import torch
from hypothesis import settings

import relufrob
from relufrob import reference
from relufrob.tolerance import parity_tolerance

# CI runs the property tests on a fixed example sequence, so a landing can
# never hinge on a random draw; local runs keep exploring new examples.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

DEVICES = ("cpu", "cuda")

# The four dtypes relufrob accepts.
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# Bit-pattern views used to compare tensors bitwise (NaN payloads included).
_BITS_DTYPE = {
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
    torch.float32: torch.int32,
    torch.float64: torch.int64,
}

def skip_unless_device_available(device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA is not available on this machine")


@pytest.fixture(params=DEVICES)
def device(request):
    """Runs the test on CPU and, when a GPU exists, on CUDA."""
    skip_unless_device_available(request.param)
    return request.param


def tolerances(dtype: torch.dtype) -> dict:
    """rtol/atol for relufrob-vs-autograd parity in `dtype`.

    float32/float64 start from torch.testing.assert_close's defaults; with
    `mkn` given, assert_grads_match widens the gradients' atol by the shared
    parity rule, relufrob.tolerance.parity_tolerance (the loss keeps the
    defaults).
    """
    if dtype in (torch.float32, torch.float64):
        return {}  # assert_close defaults
    # float16/bfloat16 are not compared elementwise with autograd in the same
    # dtype (autograd rounds Z = XW to the low precision, relufrob keeps it in
    # float32); test_parity.py judges them against a float64 ground truth.
    raise AssertionError(f"no parity tolerance for {dtype}; compare against float64")


def _check_output_meta(name, got, expected):
    assert isinstance(got, torch.Tensor), f"{name}: expected a tensor, got {type(got)}"
    assert got.shape == expected.shape, f"{name}: shape {tuple(got.shape)} != {tuple(expected.shape)}"
    assert got.dtype == expected.dtype, f"{name}: dtype {got.dtype} != {expected.dtype}"
    assert got.device == expected.device, f"{name}: device {got.device} != {expected.device}"


def assert_grads_match(got, expected, *, rtol=None, atol=None, equal_nan=False, mkn=None,
                       fields=("loss", "dW", "dX", "dY")) -> None:
    """Assert a relufrob Grads equals a reference Grads.

    Checks each field's type, shape, dtype and device, that the loss is 0-dim,
    and the values with per-dtype tolerances (or the rtol/atol given). Fields
    that are None in `expected` must be None in `got`. `mkn`=(M, K, N) enables
    the documented allowance for long sums in float32/float64
    (relufrob.tolerance.parity_tolerance; it leaves the loss at the defaults).
    """
    assert isinstance(got, relufrob.Grads), f"expected relufrob.Grads, got {type(got)}"
    for name in fields:
        g, e = getattr(got, name), getattr(expected, name)
        if e is None:
            assert g is None, f"{name}: expected None, got {type(g)}"
            continue
        _check_output_meta(name, g, e)
        if name == "loss":
            assert g.dim() == 0, f"loss must be 0-dim, got shape {tuple(g.shape)}"
        if rtol is not None or atol is not None:
            tol = {"rtol": rtol, "atol": atol}
        else:
            tolerances(e.dtype)  # refuses float16/bfloat16: they are judged against float64
            parity_rtol, parity_atol = parity_tolerance(name, e, mkn)
            tol = {"rtol": parity_rtol, "atol": parity_atol}
        torch.testing.assert_close(g, e, equal_nan=equal_nan, msg=lambda m, n=name: f"{n}: {m}",
                                   **tol)


def problem_size(X, W):
    """(M, K, N) of a relufrob problem: M is the product of X's leading dims."""
    K, N = W.shape
    M = 1
    for d in X.shape[:-1]:
        M *= d
    return M, K, N


def assert_matches_autograd(X, W, Y, reduction="sum", *, equal_nan=False, **kw):
    """Run relufrob.grads and reference.autograd_grads on the same inputs and compare."""
    got = relufrob.grads(X, W, Y, reduction=reduction)
    expected = reference.autograd_grads(X, W, Y, reduction)
    kw.setdefault("mkn", problem_size(X, W))
    assert_grads_match(got, expected, equal_nan=equal_nan, **kw)
    return got, expected


def bits(t: torch.Tensor) -> torch.Tensor:
    """An integer view of t's bit patterns, for bitwise comparisons with NaNs."""
    return t.detach().view(_BITS_DTYPE[t.dtype])


def assert_bitwise_equal(a: torch.Tensor, b: torch.Tensor, msg: str = "") -> None:
    assert a.shape == b.shape and a.dtype == b.dtype, msg
    assert torch.equal(bits(a), bits(b)), msg or "tensors differ bitwise"


def storage_ptr(t: torch.Tensor):
    """The base address of t's storage, or None if the storage holds no bytes."""
    s = t.untyped_storage()
    return s.data_ptr() if s.nbytes() > 0 else None
