"""``python -m relufrob check --exercise per-sample``: per-sample gradient
norms by the identity, next to autograd's per-sample gradients and relufrob.

Each row x_b of X is a sample with the loss f_b = ||act(x_b W + b) - y_b||².
Its gradient df_b/dW = x_bᵀ g_b is an outer product (g_b the row of
G = df/dZ), so ||df_b/dW||² = ||x_b||² ||g_b||², plus ||g_b||² for the
bias's gradient g_b: the norm without forming the K x N per-sample gradient.
The check prints that identity beside the norms of the per-sample gradients
autograd forms (torch.func.vmap(torch.func.grad(f_b))) and relufrob's
per_sample_grad_norms, then the clipped sum of DP-SGD (relufrob.clipped_grads
against clipping autograd's per-sample gradients), each with a verdict.
"""

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..per_sample import clipped_grads, per_sample_grad_norms
from ..testing import reference
from ..testing.tolerance import ASSERT_CLOSE_DEFAULTS, compare, dtype_name, parity_tolerance
from .exercise import Variant

__all__ = [
    "PerSampleCheck",
    "format_per_sample_report",
    "per_sample_json",
    "run_per_sample_check",
]

NAME = "per-sample"
# Samples printed one per line; more are summarised.
SHOWN = 12


@dataclass
class PerSampleCheck:
    seed: int
    shape: tuple[int, int, int]
    dtype: torch.dtype
    variant: Variant
    max_norm: float
    x_norms: Tensor = None
    g_norms: Tensor = None
    norms: dict = field(default_factory=dict)  # method -> (B,) norms
    clipped: dict = field(default_factory=dict)  # method -> clipped dW
    comparisons: dict = field(default_factory=dict)  # "what method" -> Comparison

    @property
    def all_match(self) -> bool:
        return all(c.match for c in self.comparisons.values())


def run_per_sample_check(seed, shape, dtype, device, variant: Variant, max_norm: float = 1.0):
    r = PerSampleCheck(seed, tuple(shape), dtype, variant, max_norm)
    X, W, Y, *b = reference.make_inputs(
        *shape,
        dtype=dtype,
        device=device,
        seed=seed,
        target=variant.target,
        bias=None if variant.bias == "none" else variant.bias,
    )
    bias = b[0] if b else None
    act = "relu" if variant.activation == "relu" else None
    _, G = reference.differentiable_terms(X, W, Y, bias, act, 1.0)
    r.x_norms, r.g_norms = X.norm(dim=1), G.norm(dim=1)
    bias_term = r.g_norms.square() if bias is not None else 0.0
    r.norms["identity"] = (r.x_norms.square() * r.g_norms.square() + bias_term).sqrt()
    auto = reference.clipped_grads(X, W, Y, max_norm=max_norm, bias=bias, activation=act)
    r.norms["autograd"], r.clipped["autograd"] = auto.norms, auto.dW
    ours = clipped_grads(X, W, Y, max_norm=max_norm, bias=bias, activation=act)
    r.norms["relufrob"] = per_sample_grad_norms(X, W, Y, bias=bias, activation=act).norms
    r.clipped["relufrob"] = ours.dW
    for method in ("identity", "relufrob"):
        rtol, atol = parity_tolerance("norms", auto.norms, r.shape)
        r.comparisons[f"norms {method}"] = compare(r.norms[method], auto.norms, rtol, atol)
    rtol, atol = parity_tolerance("dW", auto.dW, r.shape)
    r.comparisons["clipped dW relufrob"] = compare(ours.dW, auto.dW, rtol, atol)
    return r


def _num(t: Tensor) -> str:
    return f"{t.item():.6g}"


def format_per_sample_report(r: PerSampleCheck) -> str:
    M, K, N = r.shape
    rtol, atol = ASSERT_CLOSE_DEFAULTS[r.dtype]
    bias = " + ||g_b||^2" if r.variant.bias != "none" else ""
    lines = [
        f"relufrob check --exercise {NAME}  (seed {r.seed}, X {M} x {K}, W {K} x {N}, "
        f"{dtype_name(r.dtype)}, bias {r.variant.bias}, activation {r.variant.activation})",
        "",
        f"Each row x_b of X is a sample; df_b/dW = x_b^T g_b, so ||df_b/dW||^2 = "
        f"||x_b||^2 ||g_b||^2{bias}.",
        "autograd: the norm of each K x N per-sample gradient, "
        "torch.func.vmap(torch.func.grad(f_b)).",
        "",
        f"{'b':>4} {'||x_b||':>12} {'||g_b||':>12} {'identity':>12} {'autograd':>12} "
        f"{'relufrob':>12}",
    ]
    for i in range(min(M, SHOWN)):
        cells = [
            r.x_norms[i],
            r.g_norms[i],
            *(r.norms[m][i] for m in ("identity", "autograd", "relufrob")),
        ]
        lines.append(f"{i:>4} " + " ".join(f"{_num(c):>12}" for c in cells))
    if M > SHOWN:
        lines.append(f"{'...':>4} ({M - SHOWN} more samples)")
    lines += [
        "",
        f"Clipped sum, max_norm {r.max_norm:g}: dW = sum_b min(1, C / (norm_b + 1e-6)) df_b/dW",
    ]
    for what, c in r.comparisons.items():
        word = "MATCH" if c.match else "MISMATCH"
        lines.append(f"  {what} vs autograd: max|Δ| {c.max_abs:.2g}  {word}")
    lines += [
        "",
        f"(tolerances start at torch.testing.assert_close's for "
        f"{dtype_name(r.dtype)}: rtol {rtol:g}, atol {atol:g})",
    ]
    lines.append("All match." if r.all_match else "MISMATCH found.")
    return "\n".join(lines)


def per_sample_json(r: PerSampleCheck) -> dict:
    return {
        "exercise": NAME,
        "seed": r.seed,
        "shape": list(r.shape),
        "dtype": dtype_name(r.dtype),
        "max_norm": r.max_norm,
        "norms": {m: v.double().tolist() for m, v in r.norms.items()},
        "verdicts": {k: {"match": c.match, "max_abs": c.max_abs} for k, c in r.comparisons.items()},
        "all_match": r.all_match,
    }
