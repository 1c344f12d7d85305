"""The report of ``python -m relufrob check``: text (:func:`format_report`) or
one JSON document (:func:`report_json`), from a relufrob.check.exercise.CheckResult."""

import math
from dataclasses import asdict
from typing import Optional

import torch
from torch import Tensor

from .._version import __version__
from ..testing.tolerance import Comparison, dtype_name
from .exercise import (
    CANDIDATES,
    CLASSIC,
    METHODS,
    REFERENCE,
    SMALL,
    TITLES,
    CheckResult,
    Variant,
    bias_shape,
    describe_inputs,
    quantity_shapes,
    tolerance_rule,
)

__all__ = ["format_report", "report_json"]


def _short(x: float) -> str:
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
        f"{quantity:<3} {method} vs {REFERENCE}: max|Δ| {_short(c.max_abs)}  "
        f"max rel {_short(c.max_rel)}  {word} (rtol {_short(rtol)}, atol {_short(atol)}){note}"
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
    name = dtype_name(r.dtype)
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
        f"Tolerance: rtol {_short(r.rtol)}, atol {_short(r.atol)} "
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
        out += ["", f"{TITLES[q]} ({shapes[q]}):"]
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
    name = dtype_name(r.dtype)
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
