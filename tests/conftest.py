"""Shared fixtures and helpers for the relufrob test suite.

* ``device``: every test that takes it runs on "cpu" and on "cuda"; the CUDA
  run is skipped (not failed) on machines without a GPU.
* ``tolerances(dtype)``: the rtol/atol used for parity with the autograd
  reference.
* ``assert_grads_match(got, expected)``: compares a relufrob ``Grads`` with a
  reference ``Grads`` field by field, including shape, dtype and device.
"""
import pytest
import torch

import relufrob
from relufrob import reference

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

    float32/float64 use torch.testing.assert_close's defaults unchanged (see
    _float32_reduction_atol for the one documented float32 allowance).
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


def _float32_reduction_atol(name, expected, mkn):
    """atol for float32 outputs computed through long sums, or None for the default.

    Loosened on purpose: relufrob forms XW, dW = X^T G and dX = G W^T with its
    own summation order (plain loops on the direct path, row blocks with
    dW accumulated block by block on the blocked path), autograd with one MKL
    (or cuBLAS) GEMM each. Two float32 sums of the same L terms in different
    orders differ by about eps * sqrt(L) * (size of the terms), which exceeds
    assert_close's fixed atol=1e-5 for entries that cancel to near zero (seen:
    8e-5 on dW at M=3000). The allowance is 2 * eps * sqrt(L) * max|expected|,
    about 7x the worst difference measured over the parity shapes; an indexing
    or masking bug is off by O(max|expected|) and still fails.
    """
    if mkn is None or name == "loss" or expected.numel() == 0:
        return None
    M, K, N = mkn
    length = {"dW": M + K, "dX": N + K, "dY": K}[name]
    finite = expected[torch.isfinite(expected)]
    if finite.numel() == 0:
        return None
    scale = finite.abs().max().item()
    atol = 2.0 * torch.finfo(torch.float32).eps * length ** 0.5 * scale
    return max(atol, 1e-5)  # never tighter than the default atol


def assert_grads_match(got, expected, *, rtol=None, atol=None, equal_nan=False, mkn=None,
                       fields=("loss", "dW", "dX", "dY")) -> None:
    """Assert a relufrob Grads equals a reference Grads.

    Checks each field's type, shape, dtype and device, that the loss is 0-dim,
    and the values with per-dtype tolerances (or the rtol/atol given). Fields
    that are None in `expected` must be None in `got`. `mkn`=(M, K, N) enables
    the documented float32 allowance for long sums (see _float32_reduction_atol).
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
            tol = tolerances(e.dtype)
            if e.dtype == torch.float32:
                loose = _float32_reduction_atol(name, e, mkn)
                if loose is not None:
                    tol = {"rtol": 1.3e-6, "atol": loose}  # rtol: the float32 default
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
