"""The implementations under test, and the check that they agree with autograd.

  relufrob         relufrob.grads(X, W, Y), the fused extension op
  relufrob wrt=W   relufrob.grads(X, W, Y, wrt=("W",)), loss and dW only
  relufrob +bias   relufrob.grads(X, W, Y, bias=b) with an (N,) bias, as
                   nn.Linear's: every gradient and db (checked against
                   autograd on the expression with the same bias)
  autograd         relufrob.testing.reference.autograd_grads, torch.autograd
  relufrob autocast bf16   relufrob.grads under torch.autocast(bfloat16) on
                           float32 inputs: bfloat16 GEMMs, float32 loss and dY
  autograd autocast bf16   autograd on the expression under the same autocast
                           (checked against float32 autograd; relufrob's row
                           against this one, both in bfloat16's tolerance)
  relufrob per-sample      torch.func.vmap(torch.func.grad(relufrob.loss)):
                           df_i/dW for each row i of X as its own problem,
                           an M×K×N result (sizes up to 1024×256×256 only)
  reference per-sample     the same transforms of the reference expression
  relufrob clipped         relufrob.clipped_grads(X, W, Y, max_norm=1): the
                           rows of X as DP-SGD samples, dW = sum of the
                           clipped per-row gradients, in one fused pass
  reference clipped        relufrob.testing.reference.clipped_grads: vmap of
                           grad, then norm and clip (an M×K×N tensor; sizes
                           up to 1024×256×256)
  ghost clipping           Opacus-style ghost clipping in plain PyTorch: a
                           backward for G and the norms ||x_i|| ||g_i||, then
                           a second backward of the reweighted loss
  relufrob norms           relufrob.per_sample_grad_norms(X, W, Y)
  relufrob wrt=()          relufrob.grads(X, W, Y, wrt=()): the loss alone,
                           the norms' natural baseline
  eager formulas   relufrob.testing.reference.formula_grads, closed form, eager
  torch.compile    torch.compile(formula_grads, dynamic=False), per size
  torch.compile max-autotune   the same with mode="max-autotune": Inductor's
                               CPU GEMM template with fused epilogues
  floor: 3 torch.mm          X@W, Xᵀ@G, G@Wᵀ into preallocated outputs, with
                             a preallocated M×N G
  floor: 3 brgemm tiles      the same three products on oneDNN's brgemm
                             micro-kernels in 64×64 tiles, as relufrob's
                             large-problem path runs them where its GEMM
                             backend is brgemm (CPU float32 only)

The floor is the faster of the two: the cost of the three matrix products
every implementation needs, on whichever GEMM this machine runs fastest.

To add one: a label in IMPLS and a branch in make_impl (and in applies, if
it runs only on some devices or dtypes).
"""

import math
from typing import Callable

import torch

import relufrob
from relufrob.testing import reference

IMPLS: dict[str, str] = {  # key (command line, JSON) -> label (table, plot)
    "relufrob": "relufrob",
    "relufrob_dW": "relufrob wrt=W",
    "relufrob_bias": "relufrob +bias",
    "autograd": "autograd",
    "relufrob_autocast": "relufrob autocast bf16",
    "autograd_autocast": "autograd autocast bf16",
    "relufrob_per_sample": "relufrob per-sample",
    "reference_per_sample": "reference per-sample",
    "relufrob_clipped": "relufrob clipped",
    "reference_clipped": "reference clipped",
    "ghost_clipping": "ghost clipping",
    "relufrob_norms": "relufrob norms",
    "relufrob_loss": "relufrob wrt=()",
    "formulas": "eager formulas",
    "compiled": "torch.compile",
    "compiled_autotune": "torch.compile max-autotune",
    "floor_mm": "floor: 3 torch.mm",
    "floor_brgemm": "floor: 3 brgemm tiles",
}
BASELINE = "autograd"  # the "vs autograd" column, and the agreement check
# The "vs floor" column divides by the faster of these; they compute no
# gradients, so they are not checked against autograd.
FLOORS = ("floor_mm", "floor_brgemm")
# Run under torch.autocast(AUTOCAST_DTYPE) on float32 inputs, and checked in
# that dtype against autograd under the same autocast.
AUTOCAST = ("relufrob_autocast", "autograd_autocast")
AUTOCAST_DTYPE = torch.bfloat16
# Per-sample gradients: an M×K×N result, so only up to this many elements
# (1024×256×256: 256 MiB in float32).
PER_SAMPLE = ("relufrob_per_sample", "reference_per_sample", "reference_clipped")
# Checked against ghost_clipping's (loss, dW, norms), not autograd's.
CLIPPING = ("relufrob_clipped", "reference_clipped", "ghost_clipping", "relufrob_norms")
MAX_NORM = 1.0
PER_SAMPLE_MAX_MKN = 1024 * 256 * 256

# Largest max|got - want| / max|want| accepted by the agreement check: a
# sanity bound against wrong answers, looser than the test suite's parity rule.
TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-3, torch.float16: 3e-2, torch.bfloat16: 6e-2}


def new_compiled_formulas(mode=None):
    """A fresh torch.compile of the closed-form formulas (static shapes).

    Dynamo's caches are reset first so that one compiled graph per size never
    runs into the recompile limit however many sizes are benchmarked.
    """
    torch.compiler.reset()
    return torch.compile(reference.formula_grads, dynamic=False, mode=mode)


def ghost_clipping(X, W, Y, max_norm=MAX_NORM):
    """(loss, dW, norms): Opacus' ghost clipping for one linear layer, two
    backward passes. The first gives G = df/dZ, and with it the per-row norms
    ||x_i|| ||g_i|| (no per-sample gradient is formed); the second
    differentiates the loss reweighted by the clip factors."""
    W = W.detach().requires_grad_()
    with torch.enable_grad():
        Z = X @ W
        per_row = (torch.relu(Z) - Y).pow(2).sum(1)
        (G,) = torch.autograd.grad(per_row.sum(), Z, retain_graph=True)
        norms = X.norm(dim=1) * G.norm(dim=1)
        c = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        (dW,) = torch.autograd.grad((c.detach() * per_row).sum(), W)
    return per_row.sum().detach(), dW, norms


def applies(key: str, device: torch.device, dtype: torch.dtype) -> bool:
    """Whether implementation `key` runs on this device and dtype."""
    if key == "floor_brgemm":
        return device.type == "cpu" and dtype == torch.float32
    if key in AUTOCAST:
        return dtype == torch.float32
    return True


def size_applies(key: str, size) -> bool:
    """Whether implementation `key` runs at this M×K×N."""
    M, K, N = size
    return key not in PER_SAMPLE or M * K * N <= PER_SAMPLE_MAX_MKN


def per_sample_grads(loss_fn, X, W, Y):
    """df_i/dW for every row i of X (with its row of Y) as its own problem."""

    def one(x, y, w):
        return loss_fn(x, w, y)

    return (torch.func.vmap(torch.func.grad(one, argnums=2), in_dims=(0, 0, None))(X, Y, W),)


def floor_operands(X, W, Y):
    """What the floors multiply, made before timing: X, W and a stand-in G
    (the M×N gradient of Z; its values do not change a GEMM's time), their
    transposes as contiguous copies (brgemm reads row-major operands only),
    and preallocated outputs for the three products."""
    G = Y.clone()
    Xt, Wt = X.t().contiguous(), W.t().contiguous()
    # Zeroed, so that their pages are resident before any measured call.
    outs = (X.new_zeros(Y.shape), W.new_zeros(W.shape), X.new_zeros(X.shape))
    return G, Xt, Wt, outs


def bench_bias(Y):
    """The (N,) bias of the +bias rows: fixed randn values (they do not
    change the time)."""
    gen = torch.Generator().manual_seed(1)
    return torch.randn(Y.shape[-1], generator=gen).to(device=Y.device, dtype=Y.dtype)


def own_reference(key: str, X, W, Y):
    """What `key` is checked against when the baseline's result is not it."""
    if key == "relufrob_bias":
        return tuple(reference.autograd_grads(X, W, Y, bias=bench_bias(Y)))
    if key == "relufrob_autocast":
        return make_impl("autograd_autocast", X, W, Y)()
    if key in CLIPPING and key != "ghost_clipping":
        return ghost_clipping(X, W, Y)
    return None


def _under_autocast(fn, device):
    def run():
        with torch.autocast(device.type, dtype=AUTOCAST_DTYPE):
            return tuple(fn())

    return run


def make_impl(key: str, X, W, Y) -> Callable[[], tuple]:
    """A zero-argument callable running implementation `key` on these inputs."""
    if key == "relufrob":
        return lambda: relufrob.grads(X, W, Y)
    if key == "relufrob_bias":
        b = bench_bias(Y)
        return lambda: relufrob.grads(X, W, Y, bias=b)
    if key == "relufrob_dW":
        return lambda: relufrob.grads(X, W, Y, wrt=("W",))
    if key == "autograd":
        return lambda: reference.autograd_grads(X, W, Y)
    if key == "relufrob_autocast":
        return _under_autocast(lambda: relufrob.grads(X, W, Y), X.device)
    if key == "autograd_autocast":
        return _under_autocast(lambda: reference.autograd_grads(X, W, Y), X.device)
    if key == "relufrob_per_sample":
        return lambda: per_sample_grads(relufrob.loss, X, W, Y)
    if key == "reference_per_sample":
        return lambda: per_sample_grads(reference.loss, X, W, Y)
    if key == "relufrob_clipped":
        return lambda: relufrob.clipped_grads(X, W, Y, max_norm=MAX_NORM)
    if key == "reference_clipped":
        return lambda: reference.clipped_grads(X, W, Y, max_norm=MAX_NORM)
    if key == "ghost_clipping":
        return lambda: ghost_clipping(X, W, Y)
    if key == "relufrob_norms":
        return lambda: relufrob.per_sample_grad_norms(X, W, Y)
    if key == "relufrob_loss":
        return lambda: relufrob.grads(X, W, Y, wrt=())
    if key == "formulas":
        return lambda: reference.formula_grads(X, W, Y)
    if key == "compiled":
        compiled = new_compiled_formulas()
        return lambda: compiled(X, W, Y)
    if key == "compiled_autotune":
        compiled = new_compiled_formulas(mode="max-autotune")
        return lambda: compiled(X, W, Y)
    if key == "floor_mm":
        G, _, _, (Z, dW, dX) = floor_operands(X, W, Y)
        Xt, Wt = X.t(), W.t()  # BLAS reads transposed views directly
        return lambda: (
            torch.mm(X, W, out=Z),
            torch.mm(Xt, G, out=dW),
            torch.mm(G, Wt, out=dX),
        )
    if key == "floor_brgemm":
        G, Xt, Wt, (Z, dW, dX) = floor_operands(X, W, Y)
        mm = relufrob._C._brgemm_mm

        def three_brgemm():
            mm(X, W, Z)
            mm(Xt, G, dW)
            mm(G, Wt, dX)
            return Z, dW, dX

        return three_brgemm
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
    # ghost_clipping is the plain-PyTorch anchor the clipping rows are checked
    # against, as autograd is for the others.
    if key in FLOORS or key == "ghost_clipping" or want is None:
        return "skipped"
    if key in CLIPPING:
        # Against ghost_clipping's (loss, dW, norms): the results are
        # PerSampleNorms (loss, norms) or ClippedGrads (loss, dW, db, norms).
        if key == "relufrob_norms":
            result, want = (result[0], result[1]), (want[0], want[2])
        else:
            result = (result[0], result[1], result[3])
    elif key in PER_SAMPLE:
        # The per-sample gradients add up to the whole batch's dW (want is
        # the baseline's (loss, dW, dX, dY)).
        result, want = (result[0].sum(0),), (want[1],)
    err = max_relative_error(result, want)
    if key in AUTOCAST:
        dtype = AUTOCAST_DTYPE
    if err <= TOLERANCE.get(dtype, 1e-3) and math.isfinite(err):
        return "ok"
    return f"MISMATCH: max relative error {err:.3g} against {BASELINE}"
