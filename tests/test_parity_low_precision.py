"""float16 / bfloat16: relufrob's accuracy against a float64 ground truth.

Not compared elementwise with autograd in the same dtype: autograd rounds
Z = XW to the low precision, relufrob keeps it in float32 (docs/math.md).
"""

import pytest
import torch

import relufrob
from relufrob.testing import make_inputs, reference

# relufrob's max abs error (vs float64 autograd) in each output may be at most
# LOWP_FACTOR times the error of autograd run in the same low precision, plus
# a slack equal to the unavoidable error: the largest distance from the exact
# result to its nearest representable value in that dtype (at most half an ulp
# of the largest output; no result in the dtype can have a smaller error).
LOWP_FACTOR = 2.0


LOWP_CASES = [
    # (M, K, N, reduction). Sums must stay below float16's max (65504).
    (10, 4, 4, "sum"),
    (33, 17, 9, "sum"),
    (256, 64, 16, "sum"),
    (40, 16, 300, "sum"),  # blocked path, one block
    (1000, 8, 300, "mean"),  # blocked path, several blocks
    (40, 30, 20, "mean"),
]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", LOWP_CASES, ids=str)
def test_low_precision_accuracy(case, dtype, device):
    M, K, N, reduction = case
    X, W, Y = make_inputs(M, K, N, dtype=torch.float64, seed=M + K + N)
    # Scaled so that XW and Y have comparable magnitudes and nothing overflows.
    X, W, Y = (t.to(dtype).to(device) for t in (X / K**0.5, W, Y))
    # Ground truth: float64 autograd on the very same (rounded) inputs.
    truth = reference.autograd_grads(X.double(), W.double(), Y.double(), reduction)
    ref_lowp = reference.autograd_grads(X, W, Y, reduction)
    got = relufrob.grads(X, W, Y, reduction=reduction)
    for name in ("loss", "dW", "dX", "dY"):
        t, r, o = getattr(truth, name), getattr(ref_lowp, name), getattr(got, name)
        assert o.dtype == dtype and o.shape == t.shape and o.device == t.device
        assert torch.isfinite(o).all(), f"{name} has non-finite values"
        assert torch.isfinite(r).all(), "test precondition: reference must not overflow"
        err_got = (o.double() - t).abs().max().item()
        err_ref = (r.double() - t).abs().max().item()
        slack = (t.to(dtype).double() - t).abs().max().item()  # rounding floor
        bound = LOWP_FACTOR * err_ref + slack
        assert err_got <= bound, (
            f"{name}: relufrob max abs error {err_got:.3g} exceeds {LOWP_FACTOR} x autograd's "
            f"{err_ref:.3g} + {slack:.3g}"
        )
