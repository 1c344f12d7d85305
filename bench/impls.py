"""The implementations under test, and the check that they agree with autograd.

  relufrob         relufrob.grads(X, W, Y), the fused extension op
  relufrob wrt=W   relufrob.grads(X, W, Y, wrt=("W",)), loss and dW only
  autograd         relufrob.reference.autograd_grads, torch.autograd
  eager formulas   relufrob.reference.formula_grads, closed form, eager
  torch.compile    torch.compile(formula_grads, dynamic=False), per size
  floor: 3 GEMMs   X@W, Xᵀ@G, G@Wᵀ with a preallocated M×N G: the cost of
                   the three matrix products every implementation needs

To add one: a label in IMPLS and a branch in make_impl.
"""

import math
from typing import Callable

import torch

import relufrob
from relufrob import reference

IMPLS: dict[str, str] = {  # key (command line, JSON) -> label (table, plot)
    "relufrob": "relufrob",
    "relufrob_dW": "relufrob wrt=W",
    "autograd": "autograd",
    "formulas": "eager formulas",
    "compiled": "torch.compile",
    "floor": "floor: 3 GEMMs",
}
BASELINE = "autograd"  # the "vs autograd" column, and the agreement check
FLOOR = "floor"  # the "vs floor" column; not checked (it computes no gradients)

# Largest max|got - want| / max|want| accepted by the agreement check: a
# sanity bound against wrong answers, looser than the test suite's parity rule.
TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-3, torch.float16: 3e-2, torch.bfloat16: 6e-2}


def new_compiled_formulas():
    """A fresh torch.compile of the closed-form formulas (static shapes).

    Dynamo's caches are reset first so that one compiled graph per size never
    runs into the recompile limit however many sizes are benchmarked.
    """
    torch._dynamo.reset()
    return torch.compile(reference.formula_grads, dynamic=False)


def make_impl(key: str, X, W, Y) -> Callable[[], tuple]:
    """A zero-argument callable running implementation `key` on these inputs."""
    if key == "relufrob":
        return lambda: relufrob.grads(X, W, Y)
    if key == "relufrob_dW":
        return lambda: relufrob.grads(X, W, Y, wrt=("W",))
    if key == "autograd":
        return lambda: reference.autograd_grads(X, W, Y)
    if key == "formulas":
        return lambda: reference.formula_grads(X, W, Y)
    if key == "compiled":
        compiled = new_compiled_formulas()
        return lambda: compiled(X, W, Y)
    if key == "floor":
        # G stands for the M×N gradient of Z; its values do not change a GEMM's time.
        G = Y.clone()
        Wt, Xt = W.t(), X.t()
        return lambda: (torch.mm(X, W), torch.mm(Xt, G), torch.mm(G, Wt))
    raise ValueError(f"unknown implementation {key!r}; choose from {', '.join(IMPLS)}")


def max_relative_error(got, want) -> float:
    """Largest max|got - want| / max|want| over the fields both computed."""
    worst = 0.0
    for g, w in zip(got, want):
        if g is None or w is None:
            continue
        g, w = g.detach().double().cpu(), w.detach().double().cpu()
        scale = max(w.abs().max().item() if w.numel() else 0.0, 1e-30)
        err = (g - w).abs().max().item() if w.numel() else 0.0
        worst = max(worst, err / scale)
    return worst


def check_against(key: str, result, want, dtype) -> str:
    """'ok', 'skipped' or 'MISMATCH: ...': a benchmark of wrong answers is worthless."""
    if key == FLOOR or want is None:
        return "skipped"
    err = max_relative_error(result, want)
    if err <= TOLERANCE.get(dtype, 1e-3) and math.isfinite(err):
        return "ok"
    return f"MISMATCH: max relative error {err:.3g} against {BASELINE}"
