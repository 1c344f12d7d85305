"""Command-line interface: ``python -m relufrob check`` and ``python -m relufrob info``.

``check`` re-does the classic exercise: seed the generator, draw X, W and Y,
and compare the loss and the gradients of f = ||relu(X W) - Y||_F^2 computed
three ways -- by torch.autograd (the reference), by the closed-form formulas
in eager PyTorch, and by relufrob's fused kernels.

``info`` prints what a bug report needs: versions, how the kernels were built,
and the CPU thread count.

Everything is reachable in-process: :func:`main` takes ``argv`` and returns the
exit status, and the implementation being checked can be injected::

    from relufrob import cli
    status = cli.main(["check", "--json"], implementation=my_grads)
"""
import argparse
import json
import math
import os
import platform
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, TextIO, Tuple

import torch
from torch import Tensor

import relufrob as _pkg
from . import reference
from .tolerance import ASSERT_CLOSE_DEFAULTS, parity_tolerance

__all__ = ["main", "build_parser", "make_inputs", "run_check", "compare",
           "format_report", "report_json", "gather_info", "format_info"]

PROG = "python -m relufrob"

DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}

# (rtol, atol): torch.testing.assert_close's defaults for each dtype, where the
# per-quantity tolerances start (relufrob.tolerance.parity_tolerance).
TOLERANCES = ASSERT_CLOSE_DEFAULTS



def tolerance_rule(dtype: torch.dtype) -> str:
    """One line on how atol is widened in `dtype`, for the report and the JSON."""
    if dtype in (torch.float16, torch.bfloat16):
        return ("atol widened per quantity for summation order and rounding to "
                f"{_dtype_name(dtype)}: 2 * eps32 * sqrt(L) * S + 4 * eps * S, "
                "S = max|autograd value| (relufrob.tolerance)")
    return ("atol widened per gradient for summation order: 2 * eps * sqrt(L) * "
            "max|autograd value| (relufrob.tolerance)")

# Significant digits that identify a value of each dtype (for printing the loss).
_DIGITS = {torch.float16: 5, torch.bfloat16: 4, torch.float32: 9, torch.float64: 17}

QUANTITIES = ("f", "dW", "dX", "dY")
REFERENCE = "autograd"
METHODS = ("autograd", "formulas", "relufrob")
CANDIDATES = ("formulas", "relufrob")

# Matrices with both dimensions up to this are printed in full.
SMALL = 12

_TITLES = {
    "f": "loss f",
    "dW": "dW = df/dW",
    "dX": "dX = df/dX",
    "dY": "dY = df/dY",
}

# The function being checked: (X, W, Y) -> (loss, dW, dX, dY).
Implementation = Callable[[Tensor, Tensor, Tensor], Sequence[Optional[Tensor]]]


# --------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------

def make_inputs(seed: int, shape: Tuple[int, int, int], dtype: torch.dtype,
                device: str = "cpu") -> Tuple[Tensor, Tensor, Tensor]:
    """X (M, K), W (K, N), Y (M, N) exactly as the classic exercise draws them.

    ``torch.manual_seed(seed)``, then ``randn(M, K)``, ``randn(K, N)``,
    ``randn(M, N)`` in float32 on the CPU, then cast to ``dtype`` and moved to
    ``device``, so every dtype and device sees the classic CPU numbers. The
    caller's global RNG state is left as it was.
    """
    M, K, N = shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        X = torch.randn(M, K, dtype=torch.float32)
        W = torch.randn(K, N, dtype=torch.float32)
        Y = torch.randn(M, N, dtype=torch.float32)
    return tuple(t.to(device=device, dtype=dtype) for t in (X, W, Y))


def describe_inputs(seed: int, shape: Tuple[int, int, int], dtype: torch.dtype,
                    device: str) -> str:
    """One sentence saying how the inputs were made."""
    M, K, N = shape
    text = (f"torch.manual_seed({seed}); X = randn({M}, {K}); W = randn({K}, {N}); "
            f"Y = randn({M}, {N})  -- drawn in float32 on the CPU")
    steps = []
    if dtype != torch.float32:
        steps.append(f"cast to {_dtype_name(dtype)}")
    if torch.device(device).type != "cpu":
        steps.append(f"moved to {device}")
    if steps:
        text += ", then " + " and ".join(steps) + " (same numbers as the classic CPU exercise)"
    return text


# --------------------------------------------------------------------------
# Computing and comparing
# --------------------------------------------------------------------------

@dataclass
class Comparison:
    """One method's value of one quantity, judged against autograd's."""

    max_abs: float
    max_rel: float
    match: bool
    note: str = ""


@dataclass
class CheckResult:
    """Everything ``check`` found; the report and the JSON are views of it."""

    seed: int
    shape: Tuple[int, int, int]
    dtype: torch.dtype
    device: str
    # assert_close's defaults for dtype, where every quantity's tolerance starts
    rtol: float
    atol: float
    # tolerances[quantity] -> (rtol, atol) the verdicts used
    tolerances: Dict[str, Tuple[float, float]] = field(default_factory=dict)
    # values[method][quantity] -> CPU tensor (None when not produced)
    values: Dict[str, Dict[str, Optional[Tensor]]] = field(default_factory=dict)
    # errors[method] -> "ExceptionType: message" when the method raised
    errors: Dict[str, str] = field(default_factory=dict)
    # comparisons[quantity][candidate] -> Comparison against autograd
    comparisons: Dict[str, Dict[str, Comparison]] = field(default_factory=dict)

    @property
    def all_match(self) -> bool:
        return not self.errors and all(
            c.match for per_q in self.comparisons.values() for c in per_q.values())

    @property
    def failures(self) -> List[str]:
        out = [f"{m} raised an error" for m in self.errors]
        out += [f"{q} {m} vs {REFERENCE}" for q, per_q in self.comparisons.items()
                for m, c in per_q.items() if not c.match and m not in self.errors]
        return out


def default_implementation(X: Tensor, W: Tensor, Y: Tensor):
    """relufrob's fused op (looked up at call time, so it can be patched)."""
    return _pkg.grads(X, W, Y)


def compute(method: Callable, X: Tensor, W: Tensor, Y: Tensor):
    """Run one method; return ({quantity: CPU tensor or None}, error or None)."""
    try:
        result = tuple(method(X, W, Y))
    except Exception as exc:  # reported, never a traceback
        return {q: None for q in QUANTITIES}, f"{type(exc).__name__}: {exc}"
    if len(result) != len(QUANTITIES):
        return ({q: None for q in QUANTITIES},
                f"returned {len(result)} values, expected (loss, dW, dX, dY)")
    return {q: (None if t is None else t.detach()) for q, t in zip(QUANTITIES, result)}, None


def compare(actual: Optional[Tensor], expected: Optional[Tensor],
            rtol: float, atol: float) -> Comparison:
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
        return Comparison(nan, nan, False,
                          f"shape {list(actual.shape)} != {list(expected.shape)}")
    notes = []
    if actual.dtype != expected.dtype:
        notes.append(f"dtype {_dtype_name(actual.dtype)} != {_dtype_name(expected.dtype)}")
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


def run_check(seed: int = 0, shape: Tuple[int, int, int] = (10, 4, 4),
              dtype: torch.dtype = torch.float32, device: str = "cpu",
              implementation: Optional[Implementation] = None) -> CheckResult:
    """Draw the inputs, compute with all three methods, compare with autograd.

    Each quantity is judged with its own (rtol, atol) from
    relufrob.tolerance.parity_tolerance: assert_close's defaults for ``dtype``,
    atol widened for the rounding of long sums and, in float16/bfloat16, of
    autograd's low-precision intermediates.
    """
    implementation = implementation or default_implementation
    rtol, atol = TOLERANCES[dtype]
    result = CheckResult(seed, tuple(shape), dtype, str(device), rtol, atol)
    X, W, Y = make_inputs(seed, shape, dtype, device)
    methods = {
        "autograd": lambda X, W, Y: reference.autograd_grads(X, W, Y, "sum"),
        "formulas": lambda X, W, Y: reference.formula_grads(X, W, Y, "sum"),
        "relufrob": implementation,
    }
    for name in METHODS:
        values, error = compute(methods[name], X, W, Y)
        result.values[name] = values
        if error is not None:
            result.errors[name] = error
    for q in QUANTITIES:
        expected = result.values[REFERENCE][q]
        q_rtol, q_atol = (rtol, atol) if expected is None else parity_tolerance(
            q, expected, tuple(shape))
        result.tolerances[q] = (q_rtol, q_atol)
        result.comparisons[q] = {
            m: compare(result.values[m][q], expected, q_rtol, q_atol) for m in CANDIDATES}
    return result


# --------------------------------------------------------------------------
# Human-readable report
# --------------------------------------------------------------------------

def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _g(x: float) -> str:
    """A difference or tolerance, short: 2.4e-07, 0, 1e-05, inf, nan."""
    return f"{x:.2g}"


def _scalar(t: Tensor) -> str:
    return f"{t.item():.{_DIGITS.get(t.dtype, 9)}g}"


def _cell_format(t: Tensor) -> str:
    """A fixed format for the entries of one matrix."""
    finite = t[t.isfinite()]
    biggest = finite.abs().max().item() if finite.numel() else 0.0
    return "{: .6f}" if biggest < 1e4 else "{: .6e}"


def format_matrix(t: Tensor, indent: str = "    ") -> List[str]:
    """Every entry of a 2-D tensor, one row per line, right-aligned."""
    if t.numel() == 0:
        return [f"{indent}(empty, shape {' x '.join(map(str, t.shape))})"]
    t64 = t.to(torch.float64)
    fmt = _cell_format(t64)
    cells = [[fmt.format(v) for v in row] for row in t64.tolist()]
    width = max(len(c) for row in cells for c in row)
    return [indent + " ".join(c.rjust(width) for c in row) for row in cells]


def summarise_matrix(t: Tensor, indent: str = "    ", first: int = 4) -> List[str]:
    """Shape, min, max, mean and the first few entries of a large tensor."""
    if t.numel() == 0:
        return [f"{indent}(empty, shape {' x '.join(map(str, t.shape))})"]
    t64 = t.to(torch.float64)
    flat = t64.reshape(-1)
    head = ", ".join(f"{v:.6g}" for v in flat[:first].tolist())
    more = ", ..." if flat.numel() > first else ""
    return [f"{indent}shape {' x '.join(map(str, t.shape))}  min {t64.min().item():.6g}  "
            f"max {t64.max().item():.6g}  mean {t64.mean().item():.6g}  "
            f"first entries [{head}{more}]"]


def _is_small(t: Tensor) -> bool:
    return all(d <= SMALL for d in t.shape)


def verdict_line(quantity: str, method: str, c: Comparison, rtol: float, atol: float) -> str:
    """E.g. 'dW  relufrob vs autograd: max|Δ| 2.4e-07  max rel 1.1e-07  MATCH (rtol ...)'."""
    word = "MATCH" if c.match else "MISMATCH"
    note = f"  [{c.note}]" if c.note else ""
    return (f"{quantity:<3} {method} vs {REFERENCE}: max|Δ| {_g(c.max_abs)}  "
            f"max rel {_g(c.max_rel)}  {word} (rtol {_g(rtol)}, atol {_g(atol)}){note}")


def _value_lines(r: CheckResult, q: str, full: bool) -> List[str]:
    lines = []
    for m in METHODS:
        t = r.values[m][q]
        if t is None:
            lines.append(f"  {m:<9} (none: {r.errors.get(m, 'not returned')})")
        elif t.dim() == 0:
            lines.append(f"  {m:<9} {_scalar(t)}")
        elif full or _is_small(t):
            lines.append(f"  {m}:")
            lines += format_matrix(t)
        else:
            lines.append(f"  {m}:")
            lines += summarise_matrix(t)
    return lines


def format_report(r: CheckResult, show_matrices: bool = False) -> str:
    """The report ``check`` prints without --json."""
    M, K, N = r.shape
    shapes = {"f": "scalar", "dW": f"{K} x {N}", "dX": f"{M} x {K}", "dY": f"{M} x {N}"}
    out = [
        f"relufrob {_pkg.__version__} check  (torch {torch.__version__})",
        "",
        "Objective:",
        f"  {reference.FORMULAS['f']}      i.e. f = ||relu(X W) - Y||_F^2",
        "Closed-form gradients:",
        *(f"  {reference.FORMULAS[q]}" for q in ("dW", "dX", "dY")),
        "",
        f"Inputs: {describe_inputs(r.seed, r.shape, r.dtype, r.device)}",
        f"dtype {_dtype_name(r.dtype)}, device {r.device}, reduction sum",
        f"Tolerance: rtol {_g(r.rtol)}, atol {_g(r.atol)} "
        f"(torch.testing.assert_close defaults for {_dtype_name(r.dtype)});",
        f"  {tolerance_rule(r.dtype)}",
    ]
    if r.dtype in (torch.float16, torch.bfloat16):
        out.append(f"Note: autograd and the formulas round every intermediate to "
                   f"{_dtype_name(r.dtype)}, relufrob computes in float32; the tolerances "
                   f"allow for the few {_dtype_name(r.dtype)} ulps this changes.")
    for m, err in r.errors.items():
        out.append(f"ERROR: {m} raised {err}")
    for q in QUANTITIES:
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
    values = t.to(torch.float64).tolist()

    def clean(v):
        return [clean(x) for x in v] if isinstance(v, list) else _json_float(v)
    return clean(values)


def report_json(r: CheckResult, show_matrices: bool = False) -> dict:
    """The document ``check --json`` prints: the figures of the report."""
    M, K, N = r.shape
    shapes = {"f": [], "dW": [K, N], "dX": [M, K], "dY": [M, N]}
    quantities = {}
    for q in QUANTITIES:
        q_rtol, q_atol = r.tolerances[q]
        vs_autograd = {
            m: {"max_abs_diff": _json_float(c.max_abs), "max_rel_diff": _json_float(c.max_rel),
                "match": c.match, **({"note": c.note} if c.note else {})}
            for m, c in r.comparisons[q].items()}
        entry = {"shape": shapes[q], "tolerance": {"rtol": q_rtol, "atol": q_atol},
                 "vs_autograd": vs_autograd}
        if q == "f" or show_matrices:
            entry["values"] = {m: _json_tensor(r.values[m][q]) for m in METHODS}
        quantities[q] = entry
    return {
        "command": "check",
        "relufrob_version": _pkg.__version__,
        "torch_version": torch.__version__,
        "seed": r.seed,
        "shape": {"M": M, "K": K, "N": N},
        "dtype": _dtype_name(r.dtype),
        "device": r.device,
        "reduction": "sum",
        "inputs": describe_inputs(r.seed, r.shape, r.dtype, r.device),
        "objective": reference.FORMULAS["f"],
        "formulas": {q: reference.FORMULAS[q] for q in ("dW", "dX", "dY")},
        "tolerance": {"defaults": {"rtol": r.rtol, "atol": r.atol},
                      "source": f"torch.testing.assert_close defaults for {_dtype_name(r.dtype)}",
                      "rule": tolerance_rule(r.dtype),
                      "per_quantity": {q: {"rtol": r.tolerances[q][0], "atol": r.tolerances[q][1]}
                                       for q in QUANTITIES}},
        "errors": dict(r.errors),
        "quantities": quantities,
        "all_match": r.all_match,
        "verdict": "ALL MATCH" if r.all_match else "MISMATCH",
    }


# --------------------------------------------------------------------------
# info
# --------------------------------------------------------------------------

def gather_info() -> dict:
    """Versions, how the kernels were built, and the threads -- for bug reports."""
    build = _pkg.build_info()
    cuda_available = torch.cuda.is_available()
    return {
        "relufrob_version": _pkg.__version__,
        "torch_version": torch.__version__,
        "torch_cuda_version": torch.version.cuda,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "cuda_kernels_compiled": bool(build.get("cuda")),
        "cuda_archs": build.get("cuda_archs") or "",
        "openmp": bool(build.get("openmp")),
        "built_with_torch": build.get("torch_version"),
        "cuda_available": cuda_available,
        "cuda_devices": ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
                         if cuda_available else []),
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }


def format_info(info: dict) -> str:
    cuda = (f"yes (archs {info['cuda_archs'] or 'unknown'})"
            if info["cuda_kernels_compiled"] else "no")
    devices = ", ".join(info["cuda_devices"]) if info["cuda_devices"] else "none"
    return "\n".join([
        f"relufrob version:       {info['relufrob_version']}",
        f"torch version:          {info['torch_version']} (CUDA {info['torch_cuda_version'] or 'none'})",
        f"built against torch:    {info['built_with_torch']}",
        f"CUDA kernels compiled:  {cuda}",
        f"CUDA available:         {'yes' if info['cuda_available'] else 'no'} (devices: {devices})",
        f"OpenMP:                 {'yes' if info['openmp'] else 'no'}",
        f"CPU threads (torch):    {info['cpu_threads']} of {info['cpu_count']} CPUs",
        f"python:                 {info['python_version']} on {info['platform']}",
    ])


# --------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse, but errors are a single line on stderr (exit status 2)."""

    def error(self, message):
        message = " ".join(str(message).split())
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _dimension(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid dimension {text!r}: expected a non-negative integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"invalid dimension {text!r}: expected a non-negative integer")
    return value


def _seed(text: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seed {text!r}: expected an integer") from None


def _device(text: str) -> str:
    """A usable device: cpu, or cuda[:i] when a GPU and relufrob's CUDA kernels exist."""
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"invalid device {text!r}: expected cpu, cuda or cuda:<index>") from None
    if device.type == "cpu":
        return "cpu"
    if device.type != "cuda":
        raise argparse.ArgumentTypeError(
            f"unsupported device {text!r}: expected cpu, cuda or cuda:<index>")
    if not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(
            f"{text!r} requested but no GPU is available (torch.cuda.is_available() is False)")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(
            f"{text!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    if not _pkg.build_info().get("cuda"):
        raise argparse.ArgumentTypeError(
            f"{text!r} requested but this build of relufrob has no CUDA kernels")
    return str(device)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="relufrob: f = ||relu(X W) - Y||_F^2 and its "
                                            "gradients, fused.")
    sub = parser.add_subparsers(dest="command", metavar="{check,info}", required=True)

    check = sub.add_parser(
        "check", help="verify the hand-derived gradients against autograd",
        description="Draw X, W, Y as the classic exercise does (torch.manual_seed(S); "
                    "X = randn(M, K); W = randn(K, N); Y = randn(M, N)) and compare the loss "
                    "and the gradients by autograd, by the closed-form formulas and by "
                    "relufrob. Exit status 0 when everything matches, 1 otherwise.")
    check.add_argument("--seed", type=_seed, default=0, metavar="S",
                       help="torch.manual_seed value (default 0)")
    check.add_argument("--shape", type=_dimension, nargs=3, default=[10, 4, 4],
                       metavar=("M", "K", "N"), help="X is M x K, W is K x N (default 10 4 4)")
    check.add_argument("--dtype", choices=list(DTYPES), default="float32",
                       help="dtype of X, W and Y (default float32)")
    check.add_argument("--device", type=_device, default="cpu", metavar="DEV",
                       help="cpu or cuda[:i]; inputs are drawn on the CPU, then moved "
                            "(default cpu)")
    check.add_argument("--json", action="store_true", help="print one JSON document")
    check.add_argument("--show-matrices", action="store_true",
                       help="include the matrices in the JSON; print them in full even "
                            "when large")

    info = sub.add_parser("info", help="versions and build details for a bug report",
                          description="Print relufrob's and torch's versions, whether CUDA "
                                      "kernels were compiled and for which architectures, "
                                      "and the CPU thread count.")
    info.add_argument("--json", action="store_true", help="print one JSON document")
    return parser


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------

def cmd_check(args: argparse.Namespace, out: TextIO,
              implementation: Optional[Implementation] = None) -> int:
    result = run_check(args.seed, tuple(args.shape), DTYPES[args.dtype], args.device,
                       implementation)
    if args.json:
        out.write(json.dumps(report_json(result, args.show_matrices), indent=2) + "\n")
    else:
        out.write(format_report(result, args.show_matrices) + "\n")
    return 0 if result.all_match else 1


def cmd_info(args: argparse.Namespace, out: TextIO) -> int:
    info = gather_info()
    out.write((json.dumps(info, indent=2) if args.json else format_info(info)) + "\n")
    return 0


def main(argv: Optional[Sequence[str]] = None, *,
         implementation: Optional[Implementation] = None,
         stdout: Optional[TextIO] = None) -> int:
    """Run the CLI with ``argv`` (default sys.argv[1:]); return the exit status.

    ``implementation`` replaces relufrob.grads in ``check`` -- a function
    (X, W, Y) -> (loss, dW, dX, dY) -- so a wrong one can be seen to fail.
    """
    out = stdout if stdout is not None else sys.stdout
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    if args.command == "check":
        return cmd_check(args, out, implementation)
    return cmd_info(args, out)
