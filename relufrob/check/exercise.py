"""The exercise behind ``python -m relufrob check``, and its report.

Seed the generator, draw X, W, Y and b (relufrob.testing.make_inputs), and
compute the loss and the gradients of f = ||act(X W + b) - Y||_F^2 three
ways: by torch.autograd (the reference), by the closed-form formulas in eager
PyTorch, and by relufrob. Each of the other two is judged against autograd
with the parity rule of relufrob.testing. Which form (activation, bias,
target) is a :class:`Variant`; the default is the classic
f = ||relu(X W) - Y||_F^2. The result is printed by relufrob.check.report.
"""

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor

from ..ops import grads
from ..testing.reference import autograd_grads, formula_grads, formulas, make_inputs
from ..testing.tolerance import (
    ASSERT_CLOSE_DEFAULTS,
    Comparison,
    compare,
    dtype_name,
    parity_tolerance,
)

__all__ = ["Variant", "EXERCISES", "CheckResult", "run_check"]

# Every quantity, in the order the methods return them (Grads, then GradsWithBias's db).
QUANTITIES = ("f", "dW", "dX", "dY", "db")
REFERENCE = "autograd"
METHODS = ("autograd", "formulas", "relufrob")
CANDIDATES = ("formulas", "relufrob")
TITLES = {
    "f": "loss f",
    "dW": "dW = df/dW",
    "dX": "dX = df/dX",
    "dY": "dY = df/dY",
    "db": "db = df/db",
}

# Matrices with both dimensions up to this are printed in full.
SMALL = 12


# --------------------------------------------------------------------------
# Variants of f = ||act(X W + b) - Y||_F^2
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """Which form of f = ||act(X W + b) - Y||_F^2 the check runs."""

    activation: str = "relu"  # "relu" or "identity"
    bias: str = "none"  # "none", "row" (an (N,) vector, as nn.Linear's) or "full" (M x N)
    target: bool = True  # False: no Y, a target of zeros

    @property
    def quantities(self) -> tuple[str, ...]:
        """The quantities this variant has: dY only with a target, db only with a bias."""
        return tuple(
            q
            for q in QUANTITIES
            if (q != "dY" or self.target) and (q != "db" or self.bias != "none")
        )

    @property
    def gradients(self) -> tuple[str, ...]:
        return tuple(q for q in self.quantities if q != "f")

    @property
    def name(self) -> Optional[str]:
        """The --exercise this variant is, if any."""
        return next((n for n, v in EXERCISES.items() if v == self), None)

    def formulas(self) -> dict[str, str]:
        return formulas(
            bias=False if self.bias == "none" else self.bias,
            activation="relu" if self.activation == "relu" else None,
            target=self.target,
        )

    def options(self, b: Optional[Tensor]) -> dict:
        """The keyword arguments that select this variant in grads and the references.

        Only those that differ from the API's defaults, so the classic variant
        calls every method as grads(X, W, Y), exactly as before the general form.
        """
        kwargs = {}
        if b is not None:
            kwargs["bias"] = b
        if self.activation != "relu":
            kwargs["activation"] = None
        return kwargs


# The named exercises of --exercise. "linear-bias" is the f = ||XW + b||^2 exercise: seed 0,
# x = randn(10, 4), w = randn(4, 4), b = randn(10, 4),
# y = (x.mm(w) + b).pow(2).sum() = 162.5566.
CLASSIC = Variant()
EXERCISES = {
    "relu": CLASSIC,
    "linear-bias": Variant(activation="identity", bias="full", target=False),
}


def bias_shape(variant: Variant, shape: tuple[int, int, int]) -> tuple[int, ...]:
    """b's shape: (N,) for a row bias, (M, N) for a full one, () for none."""
    M, _, N = shape
    return {"none": (), "row": (N,), "full": (M, N)}[variant.bias]


def quantity_shapes(variant: Variant, shape: tuple[int, int, int]) -> dict[str, list[int]]:
    """Each quantity's shape (each gradient has its input's)."""
    M, K, N = shape
    shapes = {"f": [], "dW": [K, N], "dX": [M, K], "dY": [M, N]}
    shapes["db"] = list(bias_shape(variant, shape))
    return {q: shapes[q] for q in variant.quantities}


def _randn_text(dims) -> str:
    return f"randn({', '.join(map(str, dims))})"


def describe_inputs(
    seed: int,
    shape: tuple[int, int, int],
    dtype: torch.dtype,
    device: str,
    variant: Variant = CLASSIC,
) -> str:
    """One sentence saying how the inputs were made."""
    M, K, N = shape
    draws = [f"X = randn({M}, {K})", f"W = randn({K}, {N})"]
    if variant.target:
        draws.append(f"Y = randn({M}, {N})")
    if variant.bias != "none":
        draws.append(f"b = {_randn_text(bias_shape(variant, shape))}")
    text = f"torch.manual_seed({seed}); " + "; ".join(draws) + "  -- drawn in float32 on the CPU"
    if not variant.target:
        text += "; no Y (a target of zeros)"
    steps = []
    if dtype != torch.float32:
        steps.append(f"cast to {dtype_name(dtype)}")
    if torch.device(device).type != "cpu":
        steps.append(f"moved to {device}")
    if steps:
        text += ", then " + " and ".join(steps) + " (same numbers as the classic CPU exercise)"
    return text


def tolerance_rule(dtype: torch.dtype) -> str:
    """One line on how atol is widened in `dtype`, for the report and the JSON."""
    if dtype in (torch.float16, torch.bfloat16):
        return (
            "atol widened per quantity for summation order and rounding to "
            f"{dtype_name(dtype)}: 2 * eps32 * sqrt(L) * S + 4 * eps * S, "
            "S = max|autograd value| (relufrob.tolerance)"
        )
    return (
        "atol widened per gradient for summation order: 2 * eps * sqrt(L) * "
        "max|autograd value| (relufrob.tolerance)"
    )


# --------------------------------------------------------------------------
# Computing and comparing
# --------------------------------------------------------------------------


@dataclass
class CheckResult:
    """Everything ``check`` found; the report and the JSON are views of it."""

    seed: int
    shape: tuple[int, int, int]
    dtype: torch.dtype
    device: str
    # assert_close's defaults for dtype, where every quantity's tolerance starts
    rtol: float
    atol: float
    variant: Variant = CLASSIC
    # tolerances[quantity] -> (rtol, atol) the verdicts used
    tolerances: dict[str, tuple[float, float]] = field(default_factory=dict)
    # values[method][quantity] -> tensor (None when not produced)
    values: dict[str, dict[str, Optional[Tensor]]] = field(default_factory=dict)
    # errors[method] -> "ExceptionType: message" when the method raised
    errors: dict[str, str] = field(default_factory=dict)
    # comparisons[quantity][candidate] -> Comparison against autograd
    comparisons: dict[str, dict[str, Comparison]] = field(default_factory=dict)

    @property
    def all_match(self) -> bool:
        return not self.errors and all(
            c.match for per_q in self.comparisons.values() for c in per_q.values()
        )

    @property
    def failures(self) -> list[str]:
        out = [f"{m} raised an error" for m in self.errors]
        out += [
            f"{q} {m} vs {REFERENCE}"
            for q, per_q in self.comparisons.items()
            for m, c in per_q.items()
            if not c.match and m not in self.errors
        ]
        return out


def _compute(method, inputs: tuple, options: dict, quantities: tuple[str, ...]):
    """Run one method; return ({quantity: tensor or None}, error or None).

    Grads has four fields and GradsWithBias five (db last), so the result
    must have the length for the options given: with a bias, five.
    """
    fields = QUANTITIES if "bias" in options else QUANTITIES[:4]
    try:
        result = tuple(method(*inputs, **options))
    except Exception as exc:  # reported, never a traceback
        return dict.fromkeys(quantities), f"{type(exc).__name__}: {exc}"
    if len(result) != len(fields):
        names = ", ".join(("loss",) + fields[1:])
        return dict.fromkeys(quantities), f"returned {len(result)} values, expected ({names})"
    values = dict(zip(fields, result))
    return {q: (None if values[q] is None else values[q].detach()) for q in quantities}, None


def run_check(
    seed: int,
    shape: tuple[int, int, int],
    dtype: torch.dtype,
    device: str,
    variant: Variant = CLASSIC,
) -> CheckResult:
    """Draw the inputs, compute with all three methods, compare with autograd.

    The inputs are drawn in the order X, W, [Y], [b] from one generator
    seeded ``seed``. Each quantity is judged with its own (rtol, atol) from
    relufrob.tolerance.parity_tolerance.
    """
    rtol, atol = ASSERT_CLOSE_DEFAULTS[dtype]
    shape = tuple(shape)
    result = CheckResult(seed, shape, dtype, str(device), rtol, atol, variant)
    X, W, Y, *b = make_inputs(
        *shape,
        dtype=dtype,
        device=device,
        seed=seed,
        target=variant.target,
        bias=None if variant.bias == "none" else variant.bias,
    )
    options = variant.options(b[0] if b else None)
    methods = {"autograd": autograd_grads, "formulas": formula_grads, "relufrob": grads}
    for name in METHODS:
        values, error = _compute(methods[name], (X, W, Y), options, variant.quantities)
        result.values[name] = values
        if error is not None:
            result.errors[name] = error
    for q in variant.quantities:
        expected = result.values[REFERENCE][q]
        q_rtol, q_atol = (rtol, atol) if expected is None else parity_tolerance(q, expected, shape)
        result.tolerances[q] = (q_rtol, q_atol)
        result.comparisons[q] = {
            m: compare(result.values[m][q], expected, q_rtol, q_atol) for m in CANDIDATES
        }
    return result
