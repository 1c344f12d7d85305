"""The exercise behind ``python -m relufrob check``, and its report.

Seed the generator, draw X, W, Y and b (relufrob.reference.make_inputs), and
compute the loss and the gradients of f = ||act(X W + b) - Y||_F^2 three
ways: by torch.autograd (the reference), by the closed-form formulas in eager
PyTorch, and by relufrob. Each of the other two is judged against autograd
with the parity rule of relufrob.tolerance. Which form (activation, bias,
target) is a :class:`Variant`; the default is the classic
f = ||relu(X W) - Y||_F^2. The result is printed as a text report
(:func:`format_report`) or as one JSON document (:func:`report_json`).
"""

import math
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch
from torch import Tensor

from ._version import __version__
from .ops import grads
from .reference import autograd_grads, formula_grads, formulas, make_inputs
from .tolerance import ASSERT_CLOSE_DEFAULTS, Comparison, compare, parity_tolerance

__all__ = ["Variant", "EXERCISES", "CheckResult", "run_check", "format_report", "report_json"]

# Every quantity, in the order the methods return them (Grads, then GradsWithBias's db).
QUANTITIES = ("f", "dW", "dX", "dY", "db")
REFERENCE = "autograd"
METHODS = ("autograd", "formulas", "relufrob")
CANDIDATES = ("formulas", "relufrob")
_TITLES = {
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


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


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
        steps.append(f"cast to {_dtype_name(dtype)}")
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
            f"{_dtype_name(dtype)}: 2 * eps32 * sqrt(L) * S + 4 * eps * S, "
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


# --------------------------------------------------------------------------
# Text report
# --------------------------------------------------------------------------


def _g(x: float) -> str:
    """A difference or tolerance, short: 2.4e-07, 0, 1e-05, inf, nan."""
    return f"{x:.2g}"


def _scalar(t: Tensor) -> str:
    """Enough significant digits to identify a value of t's dtype (max_digits10)."""
    if not t.dtype.is_floating_point:
        return str(t.item())
    mantissa_bits = 1 - math.log2(torch.finfo(t.dtype).eps)
    return f"{t.item():.{math.ceil(1 + mantissa_bits * math.log10(2))}g}"


def _shape_text(t: Tensor) -> str:
    return " x ".join(map(str, t.shape))


def format_matrix(t: Tensor, indent: str = "    ") -> list[str]:
    """Every entry of a 2-D tensor, one row per line, right-aligned (a 1-D one as a row)."""
    if t.numel() == 0:
        return [f"{indent}(empty, shape {_shape_text(t)})"]
    t64 = t.to(torch.float64).reshape(-1, t.shape[-1])
    finite = t64[t64.isfinite()]
    biggest = finite.abs().max().item() if finite.numel() else 0.0
    fmt = "{: .6f}" if biggest < 1e4 else "{: .6e}"
    cells = [[fmt.format(v) for v in row] for row in t64.tolist()]
    width = max(len(c) for row in cells for c in row)
    return [indent + " ".join(c.rjust(width) for c in row) for row in cells]


def summarise_matrix(t: Tensor, indent: str = "    ", first: int = 4) -> list[str]:
    """Shape, min, max, mean and the first few entries of a large tensor."""
    if t.numel() == 0:
        return [f"{indent}(empty, shape {_shape_text(t)})"]
    t64 = t.to(torch.float64)
    flat = t64.reshape(-1)
    head = ", ".join(f"{v:.6g}" for v in flat[:first].tolist())
    more = ", ..." if flat.numel() > first else ""
    return [
        f"{indent}shape {_shape_text(t)}  min {t64.min().item():.6g}  "
        f"max {t64.max().item():.6g}  mean {t64.mean().item():.6g}  "
        f"first entries [{head}{more}]"
    ]


def verdict_line(quantity: str, method: str, c: Comparison, rtol: float, atol: float) -> str:
    """E.g. 'dW  relufrob vs autograd: max|Δ| 2.4e-07  max rel 1.1e-07  MATCH (rtol ...)'."""
    word = "MATCH" if c.match else "MISMATCH"
    note = f"  [{c.note}]" if c.note else ""
    return (
        f"{quantity:<3} {method} vs {REFERENCE}: max|Δ| {_g(c.max_abs)}  "
        f"max rel {_g(c.max_rel)}  {word} (rtol {_g(rtol)}, atol {_g(atol)}){note}"
    )


def _value_lines(r: CheckResult, q: str, full: bool) -> list[str]:
    lines = []
    for m in METHODS:
        t = r.values[m][q]
        if t is None:
            lines.append(f"  {m:<9} (none: {r.errors.get(m, 'not returned')})")
        elif t.dim() == 0:
            lines.append(f"  {m:<9} {_scalar(t)}")
        else:
            small = all(d <= SMALL for d in t.shape)
            lines.append(f"  {m}:")
            lines += format_matrix(t) if full or small else summarise_matrix(t)
    return lines


def frobenius_text(f: str) -> str:
    """'f = sum((R)^2)' or 'f = sum(R^2)' as 'f = ||R||_F^2', the same objective as a norm."""
    residual = f.removeprefix("f = sum(").removesuffix("^2)")
    if residual.startswith("(") and residual.endswith(")"):
        residual = residual[1:-1]
    return f"f = ||{residual}||_F^2"


def describe_variant(variant: Variant, shape: tuple[int, int, int]) -> str:
    """E.g. 'activation identity, bias full (10 x 4), no target'."""
    parts = [f"activation {variant.activation}"]
    if variant.bias == "none":
        parts.append("no bias")
    else:
        dims = " x ".join(map(str, bias_shape(variant, shape)))
        parts.append(f"bias {variant.bias} ({dims})")
    parts.append("target Y" if variant.target else "no target (Y = 0)")
    text = ", ".join(parts)
    return text + (f"  [--exercise {variant.name}]" if variant.name else "")


def format_report(r: CheckResult, show_matrices: bool = False) -> str:
    """The report ``check`` prints without --json."""
    shapes = {
        q: " x ".join(map(str, dims)) if dims else "scalar"
        for q, dims in quantity_shapes(r.variant, r.shape).items()
    }
    name = _dtype_name(r.dtype)
    closed_forms = r.variant.formulas()
    out = [
        f"relufrob {__version__} check  (torch {torch.__version__})",
        "",
        "Objective:",
        f"  {closed_forms['f']}      i.e. {frobenius_text(closed_forms['f'])}",
        "Closed-form gradients:",
        *(f"  {closed_forms[q]}" for q in r.variant.gradients),
        "",
    ]
    # The classic variant's report stays as it was before the general form.
    if r.variant != CLASSIC:
        out.append(f"Variant: {describe_variant(r.variant, r.shape)}")
    out += [
        f"Inputs: {describe_inputs(r.seed, r.shape, r.dtype, r.device, r.variant)}",
        f"dtype {name}, device {r.device}, reduction sum",
        f"Tolerance: rtol {_g(r.rtol)}, atol {_g(r.atol)} "
        f"(torch.testing.assert_close defaults for {name});",
        f"  {tolerance_rule(r.dtype)}",
    ]
    if r.dtype in (torch.float16, torch.bfloat16):
        out.append(
            f"Note: autograd and the formulas round every intermediate to {name}, "
            f"relufrob rounds X W as they do and computes the rest in float32; "
            f"the tolerances allow for the few {name} ulps this changes."
        )
    for m, err in r.errors.items():
        out.append(f"ERROR: {m} raised {err}")
    for q in r.variant.quantities:
        out += ["", f"{_TITLES[q]} ({shapes[q]}):"]
        out += _value_lines(r, q, show_matrices)
        q_rtol, q_atol = r.tolerances[q]
        out += [verdict_line(q, m, r.comparisons[q][m], q_rtol, q_atol) for m in CANDIDATES]
    out.append("")
    out.append("ALL MATCH" if r.all_match else "MISMATCH: " + ", ".join(r.failures))
    return "\n".join(out)


# --------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------


def _json_float(x: float):
    """JSON has no NaN or infinity: spell those as strings."""
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def _json_tensor(t: Optional[Tensor]):
    if t is None:
        return None

    def clean(v):
        return [clean(x) for x in v] if isinstance(v, list) else _json_float(v)

    return clean(t.to(torch.float64).tolist())


def report_json(r: CheckResult, show_matrices: bool = False) -> dict:
    """The document ``check --json`` prints: the figures of the report."""
    M, K, N = r.shape
    shapes = quantity_shapes(r.variant, r.shape)
    name = _dtype_name(r.dtype)
    closed_forms = r.variant.formulas()
    quantities = {}
    for q in r.variant.quantities:
        q_rtol, q_atol = r.tolerances[q]
        vs_autograd = {
            m: {
                "max_abs_diff": _json_float(c.max_abs),
                "max_rel_diff": _json_float(c.max_rel),
                "match": c.match,
                **({"note": c.note} if c.note else {}),
            }
            for m, c in r.comparisons[q].items()
        }
        entry = {
            "shape": shapes[q],
            "tolerance": {"rtol": q_rtol, "atol": q_atol},
            "vs_autograd": vs_autograd,
        }
        if q == "f" or show_matrices:
            entry["values"] = {m: _json_tensor(r.values[m][q]) for m in METHODS}
        quantities[q] = entry
    return {
        "command": "check",
        "relufrob_version": __version__,
        "torch_version": torch.__version__,
        "seed": r.seed,
        "shape": {"M": M, "K": K, "N": N},
        "dtype": name,
        "device": r.device,
        "reduction": "sum",
        "variant": {**asdict(r.variant), "exercise": r.variant.name},
        "inputs": describe_inputs(r.seed, r.shape, r.dtype, r.device, r.variant),
        "objective": closed_forms["f"],
        "formulas": {q: closed_forms[q] for q in r.variant.gradients},
        "tolerance": {
            "defaults": {"rtol": r.rtol, "atol": r.atol},
            "source": f"torch.testing.assert_close defaults for {name}",
            "rule": tolerance_rule(r.dtype),
            "per_quantity": {
                q: {"rtol": r.tolerances[q][0], "atol": r.tolerances[q][1]}
                for q in r.variant.quantities
            },
        },
        "errors": dict(r.errors),
        "quantities": quantities,
        "all_match": r.all_match,
        "verdict": "ALL MATCH" if r.all_match else "MISMATCH",
    }
