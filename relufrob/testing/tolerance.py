"""How closely relufrob must agree with torch.autograd: the one parity rule.

Used by ``python -m relufrob check`` and by the test suite, so that both judge
relufrob by the same standard::

    from relufrob.testing import parity_tolerance
    rtol, atol = parity_tolerance("dW", expected.dW, (M, K, N))
    torch.testing.assert_close(got.dW, expected.dW, rtol=rtol, atol=atol)

:func:`compare` is the same judgement as a verdict with figures, for reports.
"""

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

__all__ = ["parity_tolerance", "compare", "Comparison", "ASSERT_CLOSE_DEFAULTS", "dtype_name"]

# (rtol, atol): torch.testing.assert_close's defaults for each dtype.
ASSERT_CLOSE_DEFAULTS = {
    torch.float16: (1e-3, 1e-5),
    torch.bfloat16: (1.6e-2, 1e-5),
    torch.float32: (1.3e-6, 1e-5),
    torch.float64: (1e-7, 1e-7),
}

_LOW_PRECISION = (torch.float16, torch.bfloat16)

# Names accepted for the loss (the tests say "loss", the CLI says "f").
_LOSS_NAMES = ("loss", "f")


def _sum_length(name: str, mkn: tuple[int, int, int], numel: int = 0) -> int:
    """L: how many rounded terms feed one entry of `name`, through XW and after."""
    M, K, N = mkn
    if name == "db" and numel != M * N:
        return M + K  # an (N,) bias: Z = XW (K terms), then db sums G over M rows
    if name in ("dW", "norms"):
        # Z = XW (K terms), then dW = X^T G (M terms); a per-sample norm is
        # that of a sample's dW_b (and db_b), whose entries carry the same errors.
        return M + K
    if name == "dX":
        return N + K  # Z = XW (K terms), then dX = G W^T (N terms)
    # dY = -2 R, a full bias's db = G and the loss: R = relu(XW) - Y carries
    # the error of Z (K terms);
    # the loss then sums squares, which are never negative, so nothing cancels.
    return K


def parity_tolerance(
    name: str,
    expected: Tensor,
    mkn: Optional[tuple[int, int, int]],
    dtype: Optional[torch.dtype] = None,
) -> tuple[float, float]:
    """(rtol, atol) for comparing relufrob's `name` with autograd's `expected`.

    Args:
        name: "loss" (or "f"), "dW", "dX", "dY" or "db" (the bias's gradient:
            an (N,) bias's sums G over the M rows, as dW does; a full bias's
            is G, as exact as dY), or "norms" (per-sample gradient norms,
            judged as dW: each is the norm of a sample's dW_b and db_b).
        expected: autograd's value of that quantity (it sets the dtype and the
            scale of the allowance).
        mkn: (M, K, N) of the problem, X being M x K and W K x N; None gives
            assert_close's defaults.
        dtype: the precision the computation ran in, when it is not
            ``expected.dtype``: under torch.autocast a float32 loss or
            gradient comes from GEMMs in the autocast dtype, and is judged by
            that dtype's rule (its rtol and eps).

    The rule: rtol is torch.testing.assert_close's default for
    ``expected.dtype``; atol is the default atol or, when larger,

    * float32/float64, dW, dX, dY, db:  2 * eps * sqrt(L) * S
    * float32/float64, the loss:    nothing (the defaults)
    * float16/bfloat16, all four:   2 * eps32 * sqrt(L) * S  +  4 * eps * S

    where eps = torch.finfo(expected.dtype).eps, eps32 = float32's eps,
    S = max|finite entry of expected| (|loss| for the loss), and L = M + K for
    dW and an (N,) bias's db, N + K for dX, K for dY, a full bias's db and
    the loss. The comparison is then
    assert_close's ``|actual - expected| <= atol + rtol * |expected|``.

    Why:

    Summation order. relufrob forms Z = XW, then dW = X^T G and dX = G W^T
    with its own summation order (plain loops, or row blocks with dW
    accumulated block by block), autograd with one BLAS GEMM each. Two sums
    of L terms accumulated in different orders at precision eps differ by
    about eps * sqrt(L) * (size of the terms) (random-walk growth of the
    rounding errors). An entry of dW sums M terms that each carry the error of
    a K-term dot product in Z, hence L = M + K; an entry of dX sums N terms,
    hence N + K; dY = -2 R only carries Z's error, hence K. The terms are
    about as large as the largest entry of the result, so the allowance
    scales with S: entries that cancel to near zero are allowed the error
    their terms carry, which a fixed atol is not (seen in float32: 2e-3 to
    3e-3 on dW in ``check --shape 3000 200 100``, max|dW| 1.3e4, against atol
    1e-5, with relufrob's error against float64 the size of autograd's own,
    2.3e-3). The
    factor 2 leaves room for the two computations' errors adding up. The
    float32/float64 loss keeps the defaults, as the test suite always has:
    the rtol is already about 11 eps (float32) or far more (float64), and the
    errors of Z, random in sign, largely cancel across the M * N squares,
    which are never negative (measured: under 0.6 of the default tolerance).

    Low precision. In float16/bfloat16 both accumulate the sums in float32
    (relufrob by design; autograd's CPU GEMMs too, as measured: the
    differences do not grow with L; cuBLAS not measured), so their summation
    orders differ by the float32 term above. On top of that autograd rounds
    its intermediates to the low precision, relufrob only its results:
    autograd's Z, R and result and relufrob's result are four roundings of
    at most u = eps / 2 each. Each perturbs the terms of a sum by at most u
    relative, which moves the sum by about u * S -- at most that when the
    terms share a sign, as the loss's squares do, and typically that when
    they are random in sign, S then being about sqrt(L) times a term. Four
    roundings give 2 * eps * S, doubled for headroom: 4 * eps * S. The
    float16/bfloat16 loss needs this too: its default rtol is only 1-2 eps,
    and the defaults give false mismatches on problems with few outputs (up
    to 1 seed in 15 for 1 x K x 1 shapes). eps * sqrt(L) * S, the float32
    form with the low precision's eps, would model sums accumulated in the
    low precision, which neither does; at 3000 x 200 x 100 it would allow 11%
    of max|dW| in float16 and 88% in bfloat16, where a forgotten ReLU mask
    then passes entirely.

    What still fails: an indexing or masking bug (a wrong row, a missed or
    extra ReLU mask entry) is off by whole terms, far beyond
    eps * sqrt(L) * S in float32/float64. In float16/bfloat16 an error fails
    once it exceeds 4 * eps * S, 0.4% of S in float16 and 3.1% in bfloat16
    (plus rtol * |expected|): a 1% error in the loss or a gradient fails in
    float16 but passes in bfloat16 (for the loss even bfloat16's default rtol
    1.6e-2 allows it), where 10% fails. A forgotten ReLU mask at
    3000 x 200 x 100 moves dW by 2.3% of max|dW| and dX by 7%: bfloat16
    shows it in dX only, float16 and float32 in both.

    Measured (randn inputs as ``check`` draws them; 1 x 1 x 1 to
    3000 x 200 x 100; float16, bfloat16, float32; up to 300 seeds a shape):
    the largest difference is below 0.4 of the tolerance in float32 and
    below 0.2 of it in float16/bfloat16, with one exception.
    The scale S assumes the result is about as large as the terms it is
    computed from. That fails when every residual relu(XW) - Y nearly
    cancels, which randn inputs only produce with one to four outputs
    (M * N <= 4): there about 1 seed in 100 gives a false mismatch, the
    difference being the rounding of Z = XW against a tiny result. A problem
    with a near-perfect fit (loss much smaller than ||relu(XW)||^2) is judged
    as strictly, so there compare with a float64 ground truth instead.
    """
    dtype = dtype or expected.dtype
    rtol, atol = ASSERT_CLOSE_DEFAULTS.get(dtype, ASSERT_CLOSE_DEFAULTS[torch.float32])
    if mkn is None or expected.numel() == 0 or not expected.dtype.is_floating_point:
        return rtol, atol
    low_precision = dtype in _LOW_PRECISION
    if name in _LOSS_NAMES:
        if not low_precision:
            return rtol, atol
        length = _sum_length("loss", mkn)
    elif name in ("dW", "dX", "dY", "db", "norms"):
        length = _sum_length(name, mkn, expected.numel())
    else:
        raise ValueError(
            f"parity_tolerance: unknown quantity {name!r}; "
            "expected 'loss', 'f', 'dW', 'dX', 'dY', 'db' or 'norms'"
        )
    finite = expected.detach()
    finite = finite[torch.isfinite(finite)]
    if finite.numel() == 0:
        return rtol, atol
    scale = finite.abs().max().item()
    eps = torch.finfo(dtype).eps
    if low_precision:
        # float32 accumulation in both, plus autograd's roundings to the dtype
        eps32 = torch.finfo(torch.float32).eps
        allowance = 2.0 * eps32 * math.sqrt(length) * scale + 4.0 * eps * scale
    else:
        allowance = 2.0 * eps * math.sqrt(length) * scale
    return rtol, max(atol, allowance)


@dataclass
class Comparison:
    """One value judged against its expected value."""

    max_abs: float
    max_rel: float
    match: bool
    note: str = ""


def dtype_name(dtype: torch.dtype) -> str:
    """'float32' for torch.float32."""
    return str(dtype).replace("torch.", "")


def compare(
    actual: Optional[Tensor], expected: Optional[Tensor], rtol: float, atol: float
) -> Comparison:
    """Judge ``actual`` against ``expected`` the way torch.testing.assert_close does.

    Shape, dtype and device must agree; values must satisfy
    ``torch.isclose(actual, expected, rtol, atol, equal_nan=True)`` everywhere.
    Also returns the largest absolute and relative differences (NaN == NaN
    counts as no difference; a nonzero difference from an exact 0 is an
    infinite relative difference).
    """
    nan = float("nan")
    if expected is None:
        return Comparison(nan, nan, False, "no reference value")
    if actual is None:
        return Comparison(nan, nan, False, "not returned")
    if actual.shape != expected.shape:
        return Comparison(nan, nan, False, f"shape {list(actual.shape)} != {list(expected.shape)}")
    notes = []
    if actual.dtype != expected.dtype:
        notes.append(f"dtype {dtype_name(actual.dtype)} != {dtype_name(expected.dtype)}")
    if actual.device != expected.device:
        notes.append(f"device {actual.device} != {expected.device}")
    if actual.numel() == 0:
        return Comparison(0.0, 0.0, not notes, "; ".join(notes))

    a = actual.to("cpu")
    e = expected.to("cpu")
    a64, e64 = a.to(torch.float64), e.to(torch.float64)
    same = (a64 == e64) | (a64.isnan() & e64.isnan())
    diff = torch.where(same, torch.zeros_like(a64), (a64 - e64).abs())
    rel = torch.where(diff == 0, torch.zeros_like(diff), diff / e64.abs())
    max_abs = diff.max().item()  # NaN propagates: a NaN on one side only shows
    max_rel = rel.max().item()
    close = bool(torch.isclose(a.to(e.dtype), e, rtol=rtol, atol=atol, equal_nan=True).all())
    return Comparison(max_abs, max_rel, close and not notes, "; ".join(notes))
