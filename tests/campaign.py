"""The hostile campaign's problems and its judge (tests/test_campaign_*.py).

A problem is a point of the general form's whole space: leading dims (none
to three, empty ones included), K and N (the direct kernel's sizes and the
row-blocked path's, K or N > 256), bias (none, (N,), full), activation,
target present, reduction, the dtype of X and W (float16 to float64) and of
Y and bias (the same, or float32 under a low-precision X), a memory layout
per tensor, randn or small-integer values (exact ties at the ReLU's 0). A
problem may carry one defect (a wrong shape, dtype or option), which must
end in a clear error naming the argument, the eager error.

Its judge, tests/campaign_judge.py, holds each result against the float64
reference.

CI runs each campaign test on its fixed example budget; RELUFROB_CAMPAIGN_SCALE
multiplies every budget for a long local run.
"""

import math
import os
import re
from dataclasses import dataclass, replace
from typing import Optional

import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

F16, BF16, F32, F64 = torch.float16, torch.bfloat16, torch.float32, torch.float64
DTYPES = (F16, BF16, F32, F64)
LOW = (F16, BF16)
LAYOUTS = (
    "contiguous",
    "transposed",
    "stepped",
    "offset",
    "expanded",
    "expand-rows",
    "expand-cols",
    "expand-all",
)
NAMES = ("X", "W", "Y", "bias")
FIELDS = {"X": "dX", "W": "dW", "Y": "dY", "bias": "db"}

# Each defect and the argument its error must name.
DEFECTS = {
    "Y-shape": "Y",
    "Y-ndim": "Y",
    "Y-dtype": "Y",
    "W-rows": "W",
    "W-ndim": "W",
    "W-dtype": "W",
    "X-0d": "X",
    "X-int": "X",
    "X-complex": "X",
    "bias-shape": "bias",
    "bias-ndim": "bias",
    "bias-dtype": "bias",
    "reduction": "reduction",
    "activation": "activation",
}


def campaign_settings(examples: int):
    """settings for one campaign test: its CI budget times RELUFROB_CAMPAIGN_SCALE."""
    scale = float(os.environ.get("RELUFROB_CAMPAIGN_SCALE", "1"))
    return settings(
        max_examples=max(1, int(examples * scale)),
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
        ],
    )


@dataclass(frozen=True)
class Problem:
    lead: tuple
    K: int
    N: int
    bias: Optional[str]  # None, "row" or "full"
    activation: Optional[str]
    target: bool
    reduction: str
    dtype: torch.dtype  # X's and W's
    target_dtype: torch.dtype  # Y's and bias's
    layouts: tuple  # X, W, Y, bias
    integer_valued: bool
    seed: int
    defect: Optional[str] = None

    @property
    def mkn(self):
        return math.prod(self.lead), self.K, self.N


_SMALL = st.sampled_from([0, 1, 1, 2, 3, 3, 4, 5, 6, 7])


@st.composite
def problems(draw, dtypes=DTYPES, defects=0.15, max_lead_dims=3, exclude=()):
    """A Problem; in about the fraction `defects` of draws it carries one
    defect (not one of `exclude`)."""
    kind = draw(st.sampled_from(["small", "small", "small", "medium", "blocked"]))
    if kind == "small":
        lead = tuple(draw(st.lists(_SMALL, max_size=max_lead_dims)))
        K, N = draw(_SMALL), draw(_SMALL)
    elif kind == "medium":
        lead = (draw(st.integers(8, 64)),)
        K, N = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    else:  # K or N > 256: the CPU's row-blocked pipeline
        lead = (draw(st.integers(1, 24)),)
        big, other = draw(st.integers(257, 300)), draw(st.integers(1, 12))
        K, N = (big, other) if draw(st.booleans()) else (other, big)
    dtype = draw(st.sampled_from(dtypes))
    mixed = dtype in LOW and draw(st.booleans())
    p = Problem(
        lead=lead,
        K=K,
        N=N,
        bias=draw(st.sampled_from([None, "row", "full"])),
        activation=draw(st.sampled_from(["relu", "relu", None])),
        target=draw(st.booleans()),
        reduction=draw(st.sampled_from(["sum", "mean"])),
        dtype=dtype,
        target_dtype=F32 if mixed else dtype,
        layouts=tuple(draw(st.sampled_from(LAYOUTS)) for _ in NAMES),
        integer_valued=kind == "small" and draw(st.integers(0, 3)) == 0,
        seed=draw(st.integers(0, 2**31 - 1)),
    )
    applicable = [
        d
        for d in DEFECTS
        if d not in exclude
        and not (d.startswith("Y-") and not p.target)
        and not (d.startswith("bias-") and p.bias is None)
    ]
    # Weighted by repetition: hypothesis favours the ends of a numeric range,
    # so a drawn float below `defects` would pick a defect far more often.
    valid = round(len(applicable) * (1 - defects) / defects) if defects else 1
    return replace(p, defect=draw(st.sampled_from([None] * valid + applicable)))


def laid_out(kind, values):
    """`values` (a contiguous tensor) behind the memory layout `kind`, the
    same numbers: transposed storage, a stepped or offset view of a larger
    buffer, or stride 0 (an expanded dimension takes the first index's values)."""
    shape, nd = values.shape, values.dim()
    if kind == "transposed" and nd >= 2:
        return values.permute(*reversed(range(nd))).contiguous().permute(*reversed(range(nd)))
    if kind == "stepped" and nd:
        big = values.new_zeros(tuple(2 * s for s in shape))
        view = big[tuple(slice(None, None, 2) for _ in shape)]
        view.copy_(values)
        return view
    if kind == "offset" and nd:
        big = values.new_zeros(tuple(s + 1 for s in shape))
        view = big[tuple(slice(1, None) for _ in shape)]
        view.copy_(values)
        return view
    dims = {
        "expanded": [next((i for i, s in enumerate(shape) if s > 1), None)],
        "expand-rows": [0],
        "expand-cols": [1],
        "expand-all": list(range(nd)),
    }.get(kind, [])
    dims = [d for d in dims if d is not None and d < nd and shape[d] > 0]
    if not dims:
        return values
    return values[tuple(slice(0, 1) if i in dims else slice(None) for i in range(nd))].expand(shape)


def make(p: Problem, device="cpu"):
    """(X, W, Y, bias, options) of problem p, with its defect if it has one.

    Values are drawn in float32 and cast, then laid out: every dtype and
    layout sees the same numbers. X is scaled by 1/sqrt(K) so that XW and Y
    are of one size (float16 stays finite on these sizes)."""
    gen = torch.Generator().manual_seed(p.seed)

    def draw(shape, dtype, scale=1.0):
        if p.integer_valued:
            t = torch.randint(-2, 3, shape, generator=gen).float()
        else:
            t = torch.randn(shape, generator=gen) * scale
        return t.to(dtype=dtype, device=device)

    out_shape = (*p.lead, p.N)
    tensors = [
        draw((*p.lead, p.K), p.dtype, 1.0 / math.sqrt(max(p.K, 1))),
        draw((p.K, p.N), p.dtype),
        draw(out_shape, p.target_dtype) if p.target else None,
        {None: None, "row": (p.N,), "full": out_shape}[p.bias],
    ]
    if tensors[3] is not None:
        tensors[3] = draw(tensors[3], p.target_dtype)
    X, W, Y, b = (None if t is None else laid_out(k, t) for t, k in zip(tensors, p.layouts))
    options = {"activation": p.activation, "reduction": p.reduction}
    return (*_defective(p, X, W, Y, b, options, gen), options)


def _other_dtype(dtype, allowed):
    """A floating dtype relufrob refuses where `allowed` are accepted."""
    return next(d for d in (F64, F32, F16, BF16) if d not in allowed and d != dtype)


def _defective(p, X, W, Y, b, options, gen):
    d = p.defect
    if d is None:
        return X, W, Y, b
    lead, K, N = p.lead, p.K, p.N
    target_ok = (p.dtype, F32) if p.dtype in LOW else (p.dtype,)
    if d == "Y-shape":
        Y = torch.zeros(*lead[:-1], lead[-1] + 1, N) if lead else torch.zeros(N + 1)
    elif d == "Y-ndim":
        Y = torch.zeros(2, *lead, N)
    elif d == "Y-dtype":
        Y = Y.to(_other_dtype(p.dtype, target_ok))
    elif d == "W-rows":
        W = torch.zeros(K + 1, N, dtype=p.dtype)
    elif d == "W-ndim":
        W = torch.zeros(K, dtype=p.dtype) if N % 2 else torch.zeros(1, K, N, dtype=p.dtype)
    elif d == "W-dtype":
        W = W.to(_other_dtype(p.dtype, (p.dtype,)))
    elif d == "X-0d":
        X = torch.zeros((), dtype=p.dtype)
    elif d == "X-int":
        X = torch.randint(-2, 3, X.shape, generator=gen, dtype=torch.int32)
    elif d == "X-complex":
        X = X.to(torch.complex64)
    elif d == "bias-shape":
        b = torch.zeros(N + 1) if p.bias == "row" else torch.zeros(2, *lead, N)
    elif d == "bias-ndim":
        b = torch.zeros(2, *lead, N)
    elif d == "bias-dtype":
        allowed = (Y.dtype,) if Y is not None else target_ok
        b = b.to(_other_dtype(p.dtype, allowed))
    elif d == "reduction":
        options["reduction"] = "Sum" if p.seed % 2 else "max"
    elif d == "activation":
        options["activation"] = "RELU" if p.seed % 2 else "gelu"
    if d.endswith(("-shape", "-ndim", "-rows")):
        # Shape defects keep the dtypes a valid call would have.
        X, W, Y, b = (_as(t, like) for t, like in zip((X, W, Y, b), _dtypes(p)))
    return X, W, Y, b


def _dtypes(p):
    return (p.dtype, p.dtype, p.target_dtype, p.target_dtype)


def _as(t, dtype):
    return t if t is None or t.dtype == dtype else t.to(dtype)


def eager_error(X, W, Y, b, options):
    """The exception eager relufrob.grads raises on these arguments."""
    import relufrob

    try:
        relufrob.grads(X, W, Y, bias=b, **options)
    except (ValueError, TypeError) as e:
        return e
    raise AssertionError("a defective problem ran without an error")


def assert_names_the_argument(err, p: Problem):
    """A clear error: relufrob's own message, naming the defective argument."""
    arg = DEFECTS[p.defect]
    msg = str(err)
    assert msg.startswith("relufrob: "), f"{p.defect}: not relufrob's error: {msg!r}"
    assert re.search(rf"\b{arg}\b", msg), f"{p.defect}: the error does not name {arg}: {msg!r}"
