"""The hostile campaign's judge: every result against the float64 truth.

The judge holds each result against reference.autograd_grads in float64 on
the very inputs relufrob saw (autocast's casts included), by the parity
rule of the precision the GEMMs ran in (relufrob.testing.parity_tolerance,
``dtype=``): its long-sum allowance is what float32 needs against a float64
truth, and its low-precision allowance the rounding of float16/bfloat16.
The problems it judges come from tests/campaign.py.
"""

import math

import torch
from campaign import F32, F64, LOW

from relufrob.testing import reference
from relufrob.testing.tolerance import parity_tolerance


def truth(X, W, Y, b, options):
    """reference.autograd_grads in float64 on exactly these values, with the
    ReLU mask relufrob documents for float16/bfloat16 X (docs/math.md,
    Precision): Z = XW rounded to X's dtype before b is added, autograd's
    mask. Where b moves that Z across 0 (|XW + b| within XW's rounding), the
    float64 mask differs, by a whole term of G: those entries are counted
    with relufrob's mask instead (the same reference, entry by entry)."""
    up = [None if t is None else t.detach().to(F64) for t in (X, W, Y, b)]
    X64, W64, Y64, b64 = up
    reduction, activation = options["reduction"], options["activation"]
    out = reference.autograd_grads(X64, W64, Y64, reduction, bias=b64, activation=activation)
    if X.dtype not in LOW or activation != "relu" or b is None or X.dim() == 0:
        return out
    M, K, N = math.prod(X.shape[:-1]), X.shape[-1], W.shape[1]
    XW = (X64.reshape(M, K) @ W64).reshape(*X.shape[:-1], N)
    Z = XW + b64
    flips = (Z > 0) != (XW.to(X.dtype).to(F64) + b64 > 0)
    if not flips.any():
        return out
    s = 1.0 if reduction == "sum" else 1.0 / (M * N)
    target = torch.zeros_like(Z) if Y64 is None else Y64
    # +1 where relufrob's mask lets the entry through and float64's does not.
    sign = torch.where(Z > 0, -1.0, 1.0) * flips
    dG = sign * 2 * s * (Z - target)  # the entry's G under the mask that has it
    dG2 = dG.reshape(M, N)
    fixed = {
        "loss": out.loss + (sign * s * ((Z - target) ** 2 - target**2)).sum(),
        "dW": out.dW + X64.reshape(M, K).t() @ dG2,
        "dX": out.dX + (dG2 @ W64.t()).reshape(X.shape),
        "dY": None if Y is None else out.dY - sign * 2 * s * Z,
    }
    if b64 is not None:
        fixed["db"] = out.db + (dG2.sum(0) if out.db.shape != Z.shape else dG)
    return out._replace(**fixed)


def expected_dtypes(X, W, Y, b):
    """Each result's dtype: the loss in the target's (Y's, else bias's, else
    X's), each gradient in its input's."""
    target = (Y if Y is not None else b if b is not None else X).dtype
    return {"loss": target, "dW": W.dtype, "dX": X.dtype, "dY": _dt(Y), "db": _dt(b)}


def _dt(t):
    return None if t is None else t.dtype


def term_scales(X, W, Y, b, options, expected=None) -> dict:
    """For each result, the size of the terms its sums add: its formula on
    |X|, |W|, |Y|, |b|, as (the sum of the terms' sizes, their 2-norm), the
    largest over its entries. The result itself may cancel far below them.
    With float32 inputs, a third figure: how far plain PyTorch in float32
    lands from the float64 truth on these very inputs (float32_error;
    `expected`, when given, is that truth, so it is not computed again)."""
    M, K, N = math.prod(X.shape[:-1]), X.shape[-1], W.shape[1]
    if M * N == 0:
        return {}
    own = float32_error(X, W, Y, b, options, expected) if X.dtype == F32 else {}
    s = 1.0 if options["reduction"] == "sum" else 1.0 / (M * N)
    Xa, Wa = X.detach().to(F64).abs().reshape(M, K), W.detach().to(F64).abs()
    T = Xa @ Wa
    for t in (Y, b):
        if t is not None:
            T = T + t.detach().to(F64).abs().reshape(-1, N)  # an (N,) bias broadcasts
    G = 2.0 * s * T  # bounds |df/dZ| and |dY|
    row_bias = b is not None and b.dim() == 1 and X.dim() > 1

    def both(sums, squares):
        return sums.max().item(), squares.max().sqrt().item()

    out = {
        "loss": (s * (T * T).sum().item(), s * (T**4).sum().sqrt().item()),
        "dY": both(G, G * G),
        "db": both(G.sum(0), (G * G).sum(0)) if row_bias else both(G, G * G),
    }
    if K:
        out["dW"] = both(Xa.t() @ G, (Xa * Xa).t() @ (G * G))
        out["dX"] = both(G @ Wa.t(), (G * G) @ (Wa * Wa).t())
    return {name: (*scales, own.get(name, 0.0)) for name, scales in out.items()}


def float32_error(X, W, Y, b, options, expected=None) -> dict:
    """For each result, the largest |autograd in float32 - float64 truth| on
    these float32 inputs.

    Why: the long-sum allowance assumes roundings that cancel, growing as
    sqrt(L). Constant, expanded X and W (the "expand-all" layout) make every
    entry of Z the same K-term sum with the same rounding, so the errors add
    instead: measured, float32 losses with K of 283-296 off by 6.5e-6 to
    7.0e-6 relative, 1.5 times the allowance, and plain PyTorch off by the
    same amount to two digits. Twice the float32 reference's own error is
    allowed on top: a result must be as good as the ten lines of PyTorch in
    the same precision, while a wrong term or mask stays far outside."""
    ref = reference.autograd_grads(
        X.detach(),
        W.detach(),
        None if Y is None else Y.detach(),
        options["reduction"],
        bias=None if b is None else b.detach(),
        activation=options["activation"],
    )
    if expected is None:
        expected = truth(X, W, Y, b, options)
    out = {}
    for name in ("loss", "dW", "dX", "dY", "db"):
        r, e = getattr(ref, name, None), getattr(expected, name, None)
        if r is not None and e is not None and e.numel():
            out[name] = largest_error(r, e)
    return out


def largest_error(got, expected) -> float:
    """max |got - expected| in float64, NaN and inf entries left out (the
    judges compare those with equal_nan)."""
    d = (got.detach().to(F64) - expected).abs()
    return d.nan_to_num(nan=0.0, posinf=0.0).max().item()


def _length(name, mkn, expected) -> int:
    """L of the parity rule: the terms of one entry's sums, through XW and after."""
    M, K, N = mkn
    if name == "dW" or (name == "db" and expected.numel() != M * N):
        return M + K
    return N + K if name == "dX" else K


def tolerance(name, expected, mkn, compute_dtype, terms) -> tuple[float, float]:
    """(rtol, atol): the parity rule of compute_dtype, its atol raised to
    what rounding can do to terms of the sizes `terms` gives (term_scales).

    Why: the rule scales its allowance by the result's largest entry S,
    assuming the terms are no larger; against a float64 truth that fails
    where a result cancels below its terms. Measured: float32
    (M, K, N) = (1, 257, 1), a quarter of the seeds missed the loss's
    default rtol; bfloat16 with a constant W (expand-all), dX = w * (a sum
    over N of G) off by 9% of its largest entry, 2.7 times the rule's
    allowance. autograd and formula_grads missed by exactly as much: it is
    the precision, not relufrob. So the rule's own terms, with S taken from
    the terms: accumulation, 2 eps sqrt(L) (sum of the terms' sizes), eps
    that of float32 where the dtype is float16/bfloat16 (both accumulate in
    float32); and there, the roundings to the dtype (of G before the GEMMs,
    and of the result), which move a sum by about u times the 2-norm of its
    terms (random in sign), 4 eps times it as the rule has 4 eps S. A whole
    wrong term (a missed mask entry, a wrong row) stays far outside."""
    rtol, atol = parity_tolerance(name, expected, mkn, dtype=compute_dtype)
    sums, norm, own = terms.get(name, (0.0, 0.0, 0.0))
    if compute_dtype == F32 and math.isfinite(own):
        atol = max(atol, 2 * own)
    if not (math.isfinite(sums) and math.isfinite(norm)) or sums == 0.0:
        return rtol, atol
    root = math.sqrt(_length(name, mkn, expected))
    if compute_dtype in LOW:
        extra = 2 * torch.finfo(F32).eps * root * sums + 4 * torch.finfo(compute_dtype).eps * norm
    else:
        extra = 2 * torch.finfo(compute_dtype).eps * root * sums
    return rtol, max(atol, extra)


def assert_matches(got: dict, expected, mkn, compute_dtype, dtypes, terms, context=""):
    """Every result in `got` (field name -> tensor) against the float64
    reference `expected`, in its dtype, by `tolerance`."""
    assert got, "nothing to compare"
    for name, g in got.items():
        e = getattr(expected, name)
        where = f"{context}{name}"
        assert isinstance(g, torch.Tensor), f"{where}: got {type(g).__name__}"
        assert g.shape == e.shape, f"{where}: shape {tuple(g.shape)} != {tuple(e.shape)}"
        assert g.dtype == dtypes[name], f"{where}: dtype {g.dtype} != {dtypes[name]}"
        assert g.grad_fn is None or name == "loss", f"{where} carries a graph"
        rtol, atol = tolerance(name, e, mkn, compute_dtype, terms)
        torch.testing.assert_close(
            g.detach().to(F64),
            e,
            rtol=rtol,
            atol=atol,
            equal_nan=True,
            msg=lambda m, w=where: f"{w}: {m}",
        )


def representable(expected, dtypes) -> bool:
    """Whether every reference value fits its result's dtype with room (a
    float16 sum beyond 65504 is inf there, correctly: not a case to judge)."""
    for name, dtype in dtypes.items():
        e = getattr(expected, name, None)
        if e is None or dtype is None or dtype in (F32, F64):
            continue
        finite = e[torch.isfinite(e)]
        if finite.numel() and finite.abs().max().item() > 0.25 * torch.finfo(dtype).max:
            return False
    return True


def judge_one(got: dict, problem, p, options, dtypes, context="") -> bool:
    """Hold one problem's results `got` against its float64 truth. False,
    with nothing judged, where the truth is beyond the dtypes' range."""
    expected = truth(*problem, options)
    if not representable(expected, dtypes):
        return False
    terms = term_scales(*problem, options, expected)
    assert_matches(got, expected, p.mkn, p.dtype, dtypes, terms, context=context)
    return True
