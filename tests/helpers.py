"""Helpers shared by the test files: parity assertions, layouts, bitwise checks.

* ``assert_grads_match(got, expected)`` compares a relufrob ``Grads`` with a
  reference ``Grads`` field by field, including shape, dtype and device;
* ``assert_matches_autograd(X, W, Y)`` runs relufrob and the autograd
  reference on the same inputs and compares them;
* ``strided(kind, shape, ...)`` draws a tensor with a given memory layout.

Inputs in the usual layout come from relufrob.testing.reference.make_inputs.
"""

import math
import os
import subprocess
import sys
from pathlib import Path

import torch

import relufrob
from relufrob.testing import make_inputs, reference
from relufrob.testing.tolerance import parity_tolerance

REPO = Path(__file__).resolve().parents[1]
REDUCTIONS = ("sum", "mean")
# The dtypes compared with autograd elementwise in the same dtype. float16 and
# bfloat16 are not: autograd rounds Z = XW to the low precision, relufrob
# keeps it in float32; test_parity_low_precision.py judges them against a
# float64 ground truth instead.
PARITY_DTYPES = (torch.float32, torch.float64)
FIELDS = ("loss", "dW", "dX", "dY")


def _check_output_meta(name, got, expected):
    assert isinstance(got, torch.Tensor), f"{name}: expected a tensor, got {type(got)}"
    assert got.shape == expected.shape, (
        f"{name}: shape {tuple(got.shape)} != {tuple(expected.shape)}"
    )
    assert got.dtype == expected.dtype, f"{name}: dtype {got.dtype} != {expected.dtype}"
    assert got.device == expected.device, f"{name}: device {got.device} != {expected.device}"


def assert_grads_match(
    got, expected, *, rtol=None, atol=None, equal_nan=False, mkn=None, fields=None
) -> None:
    """Assert a relufrob Grads equals a reference Grads.

    Checks each field's type, shape, dtype and device, that the loss is 0-dim,
    and the values with assert_close's defaults (or the rtol/atol given).
    Fields that are None in `expected` must be None in `got`; `fields` (default:
    all of them) selects which are compared. `mkn`=(M, K, N)
    enables the documented allowance for long sums in float32/float64
    (relufrob.testing.tolerance.parity_tolerance; it leaves the loss at the defaults).
    """
    assert type(got) is type(expected), f"expected {type(expected).__name__}, got {type(got)}"
    for name in fields or expected._fields:
        g, e = getattr(got, name), getattr(expected, name)
        if e is None:
            assert g is None, f"{name}: expected None, got {type(g)}"
            continue
        _check_output_meta(name, g, e)
        if name == "loss":
            assert g.dim() == 0, f"loss must be 0-dim, got shape {tuple(g.shape)}"
        if rtol is None and atol is None:
            assert e.dtype in PARITY_DTYPES, (
                f"no parity tolerance for {e.dtype}; compare against float64"
            )
            rtol_q, atol_q = parity_tolerance(name, e, mkn)
        else:
            rtol_q, atol_q = rtol, atol
        torch.testing.assert_close(
            g, e, rtol=rtol_q, atol=atol_q, equal_nan=equal_nan, msg=lambda m, n=name: f"{n}: {m}"
        )


def problem_size(X, W):
    """(M, K, N) of a relufrob problem: M is the product of X's leading dims."""
    K, N = W.shape
    return math.prod(X.shape[:-1]), K, N


def assert_matches_autograd(
    X, W, Y, reduction="sum", *, bias=None, activation="relu", equal_nan=False, **kw
):
    """Run relufrob.grads and reference.autograd_grads on the same inputs and compare."""
    general = {"bias": bias, "activation": activation}
    got = relufrob.grads(X, W, Y, reduction=reduction, **general)
    expected = reference.autograd_grads(X, W, Y, reduction, **general)
    kw.setdefault("mkn", problem_size(X, W))
    assert_grads_match(got, expected, equal_nan=equal_nan, **kw)
    return got, expected


def nonfinite_case(where, value, M, K, N, dtype, device, seed=0):
    """make_inputs with `value` written into X, Y or W at a few positions."""
    X, W, Y = make_inputs(M, K, N, dtype=dtype, device=device, seed=seed)
    if where == "X":
        X[M // 2, K // 2] = value
        X[0, K - 1] = value
    elif where == "Y":
        Y[M // 2, N // 2] = value
        Y[M - 1, 0] = value
    elif where == "W":
        W[K // 2, N - 1] = value
    return X, W, Y


# --------------------------------------------------------------------------
# Layouts
# --------------------------------------------------------------------------


def strided(kind, shape, *, dtype=torch.float32, device="cpu", gen=None, integer_valued=False):
    """A tensor of `shape` with the memory layout `kind`.

    transposed: the dims stored in reverse order; stepped: every second or
    third element along each dim; offset: a view starting inside a larger buffer;
    expand-rows, expand-cols, expand-all: stride 0 along dim 0, dim 1, every
    dim; expanded: stride 0 along the first dim of size > 1 (contiguous when
    there is none). Values are randn, or integers in -2..2.
    """

    def values(sh):
        # Moved to the device before the layout is applied: .to(device) on a
        # strided view would materialise it contiguously.
        if integer_valued:
            return torch.randint(-2, 3, sh, generator=gen).to(dtype).to(device)
        return torch.randn(sh, generator=gen, dtype=dtype).to(device)

    def broadcast(dims):
        small = tuple(1 if i in dims else s for i, s in enumerate(shape))
        return values(small).expand(shape)

    shape = tuple(shape)
    if kind == "transposed" and len(shape) >= 2:
        perm = tuple(reversed(range(len(shape))))
        t = values(tuple(shape[i] for i in perm)).permute(perm)
    elif kind == "stepped":  # steps 2, 3, 2, ...
        steps = [2 + i % 2 for i in range(len(shape))]
        t = values(tuple(k * s for k, s in zip(steps, shape)))[
            tuple(slice(None, None, k) for k in steps)
        ]
    elif kind == "offset":
        t = values(tuple(s + 1 for s in shape))[tuple(slice(1, None) for _ in shape)]
    elif kind == "expanded":
        t = broadcast({next((i for i, s in enumerate(shape) if s > 1), None)})
    elif kind == "expand-rows":
        t = broadcast({0})
    elif kind == "expand-cols":
        t = broadcast({1})
    elif kind == "expand-all":
        t = broadcast(set(range(len(shape))))
    else:
        assert kind in ("contiguous", "transposed"), kind
        t = values(shape)
    assert t.shape == shape and t.device.type == torch.device(device).type
    return t


# --------------------------------------------------------------------------
# Bitwise comparisons and storage
# --------------------------------------------------------------------------


def bits(t: torch.Tensor) -> torch.Tensor:
    """An integer view of t's bit patterns, for bitwise comparisons with NaNs."""
    ints = {2: torch.int16, 4: torch.int32, 8: torch.int64}
    return t.detach().view(ints[t.element_size()])


def assert_bitwise_equal(a: torch.Tensor, b: torch.Tensor, msg: str = "") -> None:
    assert a.shape == b.shape and a.dtype == b.dtype, msg
    assert torch.equal(bits(a), bits(b)), msg or "tensors differ bitwise"


def storage_ptr(t: torch.Tensor):
    """The base address of t's storage, or None if the storage holds no bytes."""
    s = t.untyped_storage()
    return s.data_ptr() if s.nbytes() > 0 else None


# --------------------------------------------------------------------------
# What the op's callers see
# --------------------------------------------------------------------------


class RecordTorchFunctions(torch.overrides.TorchFunctionMode):
    """Records every function that __torch_function__ sees (ops included)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls.append(func)
        return func(*args, **(kwargs or {}))


# --------------------------------------------------------------------------
# Commands, as typed at a shell
# --------------------------------------------------------------------------


def run_python(*args, timeout, env=None):
    """`python ARGS...` in the repository, output captured as UTF-8 text;
    `env` adds to (or overrides) this process's environment."""
    env = dict(os.environ, PYTHONIOENCODING="utf-8", **(env or {}))
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
    )
