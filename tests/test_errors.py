"""Bad inputs raise the documented exception type with a message that names
the offending argument. Everything runs in-process: a crash would take the
whole test session down, so "never a segfault" is checked implicitly.

Contract: ValueError for shapes, layout, device and reduction; TypeError for
dtypes and non-tensors; messages start with "relufrob: " and name X, W or Y.
"""

import re

import numpy as np
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import relufrob
from relufrob._library.checks import explain_failure
from relufrob.testing import make_inputs


def _ok(M=6, K=4, N=3, dtype=torch.float32, device="cpu"):
    return make_inputs(M, K, N, dtype=dtype, device=device)


def _names(arg):
    """A regex for a message that starts with 'relufrob: ' and names `arg`."""
    return rf"^relufrob: {arg}\b"


ENTRY_POINTS = {
    "grads": lambda X, W, Y, **kw: relufrob.grads(X, W, Y, **kw),
    "loss": lambda X, W, Y, **kw: relufrob.loss(X, W, Y, **kw),
}


@pytest.fixture(params=list(ENTRY_POINTS))
def entry(request):
    return ENTRY_POINTS[request.param]


def test_valid_inputs_do_not_raise(entry):
    # The baseline the error cases perturb is itself accepted.
    X, W, Y = _ok()
    entry(X, W, Y)


# --------------------------------------------------------------------------
# Shapes -> ValueError
# --------------------------------------------------------------------------

SHAPE_CASES = {
    # name: (X shape, W shape, Y shape, argument named, extra regex)
    "X-0d": ((), (4, 3), (3,), "X", r"shape"),
    "W-1d": ((6, 4), (4,), (6, 3), "W", r"2-D"),
    "W-3d": ((6, 4), (2, 4, 3), (6, 3), "W", r"2-D.*\[2, 4, 3\]"),
    "W-0d": ((6, 4), (), (6, 3), "W", r"2-D"),
    "inner-dim-mismatch": ((6, 4), (5, 3), (6, 3), "W", r"\bK\b"),
    "inner-dim-mismatch-1d": ((4,), (5, 3), (3,), "W", r"\bK\b"),
    "Y-wrong-N": ((6, 4), (4, 3), (6, 2), "Y", r"\bN\b"),
    "Y-wrong-M": ((6, 4), (4, 3), (5, 3), "Y", r"shape"),
    "Y-transposed-shape": ((6, 4), (4, 3), (3, 6), "Y", r"shape"),
    "Y-wrong-leading-dims": ((2, 3, 4), (4, 5), (3, 2, 5), "Y", r"leading"),
    "Y-fewer-dims": ((2, 3, 4), (4, 5), (6, 5), "Y", r"shape"),
    "Y-more-dims": ((6, 4), (4, 5), (1, 6, 5), "Y", r"shape"),
    "Y-1d-X-2d": ((6, 4), (4, 5), (5,), "Y", r"shape"),
    "Y-2d-X-1d": ((4,), (4, 5), (1, 5), "Y", r"shape"),
    "Y-0d": ((4,), (4, 1), (), "Y", r"shape"),
    "empty-K-mismatch": ((6, 0), (1, 3), (6, 3), "W", r"\bK\b"),
}


@pytest.mark.parametrize("case", list(SHAPE_CASES))
def test_bad_shapes(case, entry):
    xs, ws, ys, arg, extra = SHAPE_CASES[case]
    X, W, Y = torch.randn(xs), torch.randn(ws), torch.randn(ys)
    with pytest.raises(ValueError, match=_names(arg)) as info:
        entry(X, W, Y)
    assert re.search(extra, str(info.value)), str(info.value)


def test_w_3d_message_example():
    # The example from the documentation, checked in full.
    with pytest.raises(ValueError) as info:
        relufrob.grads(torch.randn(6, 4), torch.randn(2, 4, 4), torch.randn(6, 4))
    assert str(info.value).startswith("relufrob: W must be 2-D (K, N), got shape [2, 4, 4]")


# --------------------------------------------------------------------------
# dtypes -> TypeError
# --------------------------------------------------------------------------


@pytest.mark.parametrize("arg", ["W", "Y"])
@pytest.mark.parametrize(
    "xdtype,odtype",
    [
        (torch.float32, torch.float64),
        (torch.float64, torch.float32),
        (torch.float32, torch.float16),
        (torch.float16, torch.bfloat16),
    ],
    ids=str,
)
def test_mismatched_float_dtypes(arg, xdtype, odtype, entry):
    X, W, Y = _ok(dtype=xdtype)
    if arg == "W":
        W = W.to(odtype)
    else:
        Y = Y.to(odtype)
    with pytest.raises(TypeError, match=_names(arg)) as info:
        entry(X, W, Y)
    assert "dtype" in str(info.value)


BAD_DTYPES = [
    torch.int32,
    torch.int64,
    torch.uint8,
    torch.int8,
    torch.bool,
    torch.complex64,
    torch.complex128,
]


@pytest.mark.parametrize("arg", ["X", "W", "Y"])
@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=str)
def test_non_float_dtypes(arg, dtype, entry):
    X, W, Y = _ok()
    t = {"X": X, "W": W, "Y": Y}
    t[arg] = t[arg].to(dtype)
    with pytest.raises(TypeError, match=_names(arg)):
        entry(t["X"], t["W"], t["Y"])


@pytest.mark.parametrize("dtype", BAD_DTYPES[:2] + [torch.bool, torch.complex64], ids=str)
def test_all_inputs_same_bad_dtype(dtype):
    # Consistent but non-floating dtypes are refused too; X is named first.
    X, W, Y = (t.to(dtype) for t in _ok())
    with pytest.raises(TypeError, match=_names("X")):
        relufrob.grads(X, W, Y)


# --------------------------------------------------------------------------
# Non-tensor arguments -> TypeError
# --------------------------------------------------------------------------

NON_TENSORS = {
    "list": lambda t: t.tolist(),
    "int": lambda t: 3,
    "float": lambda t: 1.5,
    "None": lambda t: None,
    "numpy": lambda t: np.asarray(t.tolist(), dtype=np.float32),
    "str": lambda t: "X",
}


# Y=None is not a mistake but the zero target (test_parity_general.py).
@pytest.mark.parametrize(
    "arg,kind",
    [(a, k) for a in ("X", "W", "Y") for k in NON_TENSORS if (a, k) != ("Y", "None")],
)
def test_non_tensor_arguments(arg, kind, entry):
    X, W, Y = _ok()
    t = {"X": X, "W": W, "Y": Y}
    t[arg] = NON_TENSORS[kind](t[arg])
    with pytest.raises(TypeError, match=_names(arg)):
        entry(t["X"], t["W"], t["Y"])


# --------------------------------------------------------------------------
# Layout and device -> ValueError
# --------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize("arg", ["X", "W", "Y"])
@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_sparse_tensors(arg, layout, entry):
    X, W, Y = _ok()
    t = {"X": X, "W": W, "Y": Y}
    t[arg] = t[arg].to_sparse() if layout == "coo" else t[arg].to_sparse_csr()
    with pytest.raises(ValueError, match=_names(arg)) as info:
        entry(t["X"], t["W"], t["Y"])
    assert "dense" in str(info.value) or "strided" in str(info.value)


@pytest.mark.parametrize("arg", ["W", "Y"])
def test_meta_tensor_with_cpu_x(arg, entry):
    X, W, Y = _ok()
    t = {"X": X, "W": W, "Y": Y}
    t[arg] = t[arg].to("meta")
    with pytest.raises(ValueError, match=_names(arg)) as info:
        entry(t["X"], t["W"], t["Y"])
    assert "device" in str(info.value)


@pytest.mark.parametrize("arg", ["W", "Y"])
def test_cpu_tensor_with_meta_x(arg):
    X, W, Y = _ok()
    X = X.to("meta")
    t = {"X": X, "W": W.to("meta"), "Y": Y.to("meta")}
    t[arg] = {"W": W, "Y": Y}[arg]
    with pytest.raises(ValueError, match=_names(arg)) as info:
        relufrob.grads(t["X"], t["W"], t["Y"])
    assert "device" in str(info.value)


def test_all_meta_inputs_give_meta_outputs():
    # Shape inference on the meta device (used by torch.compile tracing).
    X, W, Y = (t.to("meta") for t in _ok(M=7, K=5, N=2))
    got = relufrob.grads(X, W, Y)
    assert got.loss.shape == () and got.dW.shape == (5, 2)
    assert got.dX.shape == (7, 5) and got.dY.shape == (7, 2)
    assert all(t.device.type == "meta" for t in got)
    # ... and the meta path validates like the real one.
    with pytest.raises(ValueError, match=_names("W")):
        relufrob.grads(X, torch.empty(2, 4, 3, device="meta"), Y)


@pytest.mark.parametrize("arg", ["X", "W", "Y"])
def test_cuda_and_cpu_mixed(arg):
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available on this machine")
    X, W, Y = _ok(device="cuda")
    t = {"X": X, "W": W, "Y": Y}
    t[arg] = t[arg].cpu()
    named = arg if arg != "X" else "W"  # with X on CPU, W is the one on another device
    with pytest.raises(ValueError, match=_names(named)):
        relufrob.grads(t["X"], t["W"], t["Y"])


# --------------------------------------------------------------------------
# reduction and wrt -> ValueError
# --------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["none", "MEAN", "Sum", "", "avg", "mean "])
def test_bad_reduction(reduction, entry):
    X, W, Y = _ok()
    with pytest.raises(ValueError, match=r"^relufrob: .*reduction") as info:
        entry(X, W, Y, reduction=reduction)
    assert repr(reduction)[1:-1] in str(info.value)


@pytest.mark.parametrize("MKN", [(6, 4, 3), (0, 4, 3), (20, 8, 300)], ids=str)
def test_bad_reduction_any_size(MKN):
    # Checked whatever path the problem size selects, empty ones included.
    X, W, Y = _ok(*MKN)
    with pytest.raises(ValueError, match="reduction"):
        relufrob.grads(X, W, Y, reduction="none")


@pytest.mark.parametrize("wrt", [("Z",), ("x",), ("W", "Q"), ["dW"], "Q", ("X", "loss")], ids=str)
def test_bad_wrt(wrt):
    X, W, Y = _ok()
    with pytest.raises(ValueError, match=r"^relufrob\S*: .*wrt"):
        relufrob.grads(X, W, Y, wrt=wrt)


def test_shape_checked_before_work_even_with_empty_wrt():
    # Loss-only calls validate as strictly as full ones.
    with pytest.raises(ValueError, match=_names("W")):
        relufrob.grads(torch.randn(6, 4), torch.randn(5, 3), torch.randn(6, 3), wrt=())
    with pytest.raises(TypeError, match=_names("Y")):
        relufrob.grads(torch.randn(6, 4), torch.randn(4, 3), torch.randn(6, 3).double(), wrt=())


def test_library_usable_after_errors():
    # A failed call leaves nothing broken behind.
    X, W, Y = _ok()
    for bad in (torch.randn(5, 3), W.double(), [1.0]):
        with pytest.raises((TypeError, ValueError)):
            relufrob.grads(X, bad, Y)
    got = relufrob.grads(X, W, Y)
    torch.testing.assert_close(got.loss, relufrob.reference.loss(X, W, Y))


@pytest.mark.parametrize("entry", [relufrob.grads, relufrob.loss], ids=["grads", "loss"])
@pytest.mark.parametrize("reduction", [None, 1, 0.5], ids=repr)
def test_non_string_reduction(entry, reduction):
    X, W, Y = _ok()
    with pytest.raises(TypeError, match="reduction must be 'sum' or 'mean'"):
        entry(X, W, Y, reduction=reduction)


@pytest.mark.parametrize("wrt", [3, 1.5], ids=repr)
def test_non_sequence_wrt(wrt):
    X, W, Y = _ok()
    with pytest.raises(TypeError, match="wrt must be a sequence"):
        relufrob.grads(X, W, Y, wrt=wrt)


def test_empty_problem_with_huge_leading_dims_returns_at_once():
    # K = N = 0 with 2**40 rows: nothing to compute, and nothing may walk the
    # rows. Run in a subprocess so a regression fails on the timeout instead
    # of hanging the suite.
    code = (
        "import torch, relufrob\n"
        "X = torch.empty(2**20, 2**20, 0); W = torch.empty(0, 0)\n"
        "Y = torch.empty(2**20, 2**20, 0)\n"
        "out = relufrob.grads(X, W, Y)\n"
        "assert out.loss.item() == 0 and out.dX.shape == X.shape and out.dY.shape == Y.shape\n"
        "assert out.dW.shape == (0, 0)\n"
    )
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --------------------------------------------------------------------------
# The Python copies of the checks (relufrob._library.checks: fake kernels and
# explanations of refused calls) word every error exactly as C++ does
# --------------------------------------------------------------------------


def _args(xs, ws, ys, dtypes=(torch.float32,) * 3):
    return tuple(torch.zeros(s, dtype=d) for s, d in zip((xs, ws, ys), dtypes))


F32, F64, F16, BF16 = torch.float32, torch.float64, torch.float16, torch.bfloat16
MESSAGE_CASES = {
    **{name: (_args(*case[:3]), "sum") for name, case in SHAPE_CASES.items()},
    "W-float64": (_args((6, 4), (4, 3), (6, 3), (F32, F64, F32)), "sum"),
    "Y-bfloat16": (_args((6, 4), (4, 3), (6, 3), (F16, F16, BF16)), "sum"),
    "X-int64": (_args((6, 4), (4, 3), (6, 3), (torch.int64, F32, F32)), "sum"),
    "W-bool": (_args((6, 4), (4, 3), (6, 3), (F32, torch.bool, F32)), "sum"),
    "Y-complex64": (_args((6, 4), (4, 3), (6, 3), (F32, F32, torch.complex64)), "sum"),
    "reduction-none": (_args((6, 4), (4, 3), (6, 3)), "none"),
    # Several faults at once: the first one C++ checks is reported.
    "X-int-and-W-3d": (_args((6, 4), (2, 4, 3), (6, 3), (torch.int32, F32, F32)), "sum"),
    "W-3d-and-Y-float64": (_args((6, 4), (2, 4, 3), (6, 3), (F32, F32, F64)), "sum"),
    "dtypes-and-reduction": (_args((6, 4), (4, 3), (6, 3), (F32, F64, F16)), "avg"),
    # Mixed precision takes a float32 Y under a low-precision X, nothing else.
    "Y-float64-under-bfloat16": (_args((6, 4), (4, 3), (6, 3), (BF16, BF16, F64)), "sum"),
    "Y-float16-under-bfloat16": (_args((6, 4), (4, 3), (6, 3), (BF16, BF16, F16)), "sum"),
    "Y-bfloat16-under-float32": (_args((6, 4), (4, 3), (6, 3), (F32, F32, BF16)), "sum"),
}


def _raised(call):
    with pytest.raises(Exception) as info:
        call()
    return type(info.value), str(info.value)


@pytest.mark.parametrize(
    "op", [torch.ops.relufrob.grads.default, torch.ops.relufrob.loss.default], ids=["grads", "loss"]
)
@pytest.mark.parametrize("case", list(MESSAGE_CASES))
def test_fake_kernel_errors_are_the_cpp_errors(case, op):
    (X, W, Y), reduction = MESSAGE_CASES[case]
    cpp = _raised(lambda: op(X, W, Y, reduction=reduction))
    assert cpp[1].startswith("relufrob: "), cpp  # C++ validation, not a dispatcher error
    with FakeTensorMode() as mode:
        fake = [mode.from_tensor(t) for t in (X, W, Y)]
        assert _raised(lambda: op(*fake, reduction=reduction)) == cpp
    # C++ said it all: the Python explanation of a refused call adds nothing.
    assert explain_failure(X, W, Y, reduction) is None


@pytest.mark.parametrize("arg", ["W", "Y"])
def test_device_error_is_the_fake_kernels(arg):
    # A meta W or Y beside a CPU X reaches the fake kernel; the explanation of
    # a refused call words the same fault the same way.
    X, W, Y = _ok()
    t = {"X": X, "W": W, "Y": Y}
    t[arg] = t[arg].to("meta")
    fake = _raised(lambda: relufrob.grads(t["X"], t["W"], t["Y"]))
    assert fake == (ValueError, f"relufrob: {arg} must be on the same device as X (cpu), got meta")
    assert _raised(lambda: explain_failure(t["X"], t["W"], t["Y"], "sum")) == fake


# --------------------------------------------------------------------------
# The general form's arguments: bias and activation
# --------------------------------------------------------------------------

BAD_BIAS_SHAPES = {
    "N+1": (4,),
    "M": (6,),
    "0-d": (),
    "M-by-N+1": (6, 4),
    "extra-dim": (2, 6, 3),
    "N-by-M": (3, 6),
}


@pytest.mark.parametrize("shape", list(BAD_BIAS_SHAPES.values()), ids=list(BAD_BIAS_SHAPES))
def test_bias_of_another_shape(shape, entry):
    X, W, Y = _ok()
    with pytest.raises(ValueError, match=_names("bias")) as info:
        entry(X, W, Y, bias=torch.zeros(shape))
    # The message gives both accepted shapes.
    assert r"(N,) = (3,)" in str(info.value) and "[6, 3]" in str(info.value)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.int64, torch.bool], ids=str)
def test_bias_of_another_dtype(dtype, entry):
    X, W, Y = _ok()
    with pytest.raises(TypeError, match=_names("bias")):
        entry(X, W, Y, bias=torch.zeros(3, dtype=dtype))


def test_bias_on_another_device(entry):
    X, W, Y = _ok()
    with pytest.raises(ValueError, match=_names("bias") + ".*same device"):
        entry(X, W, Y, bias=torch.zeros(3, device="meta"))


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_sparse_bias(entry):
    X, W, Y = _ok()
    with pytest.raises(ValueError, match=_names("bias") + ".*dense"):
        entry(X, W, Y, bias=torch.zeros(6, 3).to_sparse())


@pytest.mark.parametrize("bias", [[0.0, 0.0, 0.0], 1.5, "b"], ids=repr)
def test_non_tensor_bias(bias, entry):
    X, W, Y = _ok()
    with pytest.raises(TypeError, match=_names("bias") + " must be a torch.Tensor or None"):
        entry(X, W, Y, bias=bias)


@pytest.mark.parametrize("activation", ["tanh", "identity", "RELU", "", "\udcff"], ids=repr)
def test_unknown_activation(activation, entry):
    X, W, Y = _ok()
    with pytest.raises(ValueError, match=r"^relufrob: activation must be 'relu' or None, got "):
        entry(X, W, Y, activation=activation)


@pytest.mark.parametrize("activation", [1, True, torch.relu], ids=repr)
def test_non_string_activation(activation, entry):
    X, W, Y = _ok()
    with pytest.raises(TypeError, match=r"^relufrob: activation must be 'relu' or None"):
        entry(X, W, Y, activation=activation)


@pytest.mark.parametrize("where", ["reduction", "activation"])
def test_a_str_without_utf8_is_a_value_error(where, entry):
    # A lone surrogate cannot cross into C++; torch's own message for it
    # ("Expected a value of type 'str'") would not say what is wrong.
    X, W, Y = _ok()
    with pytest.raises(ValueError, match=rf"^relufrob: {where} must be"):
        entry(X, W, Y, **{where: "\udcff"})


GENERAL_MESSAGE_CASES = {
    "bias-shape": {"bias": torch.zeros(4)},
    "bias-dtype": {"bias": torch.zeros(3, dtype=torch.float64)},
    "bias-full-shape": {"bias": torch.zeros(5, 3)},
    "activation": {"activation": "gelu"},
    "bias-and-activation": {"bias": torch.zeros(3, dtype=torch.float16), "activation": "x"},
}

# Under a low-precision X the target (Y and bias) may be float32, but Y and
# bias must then agree.
MIXED_MESSAGE_CASES = {
    "bias-float32-Y-bfloat16": (BF16, {"bias": torch.zeros(3)}),
    "bias-bfloat16-Y-float32": (F32, {"bias": torch.zeros(3, dtype=BF16)}),
    "bias-float64": (F32, {"bias": torch.zeros(3, dtype=F64)}),
}


@pytest.mark.parametrize("case", list(MIXED_MESSAGE_CASES))
def test_mixed_precision_target_errors(case, entry):
    ydtype, kwargs = MIXED_MESSAGE_CASES[case]
    X, W, Y = (t.to(d) for t, d in zip(_ok(), (BF16, BF16, ydtype)))
    with pytest.raises(TypeError, match=_names("bias")) as info:
        entry(X, W, Y, **kwargs)
    cpp = (TypeError, str(info.value))
    op = torch.ops.relufrob.grads.default
    with FakeTensorMode() as mode:
        fake = [mode.from_tensor(t) for t in (X, W, Y)]
        fake_kwargs = {k: mode.from_tensor(v) for k, v in kwargs.items()}
        assert _raised(lambda: op(*fake, **fake_kwargs)) == cpp


@pytest.mark.parametrize(
    "op", [torch.ops.relufrob.grads.default, torch.ops.relufrob.loss.default], ids=["grads", "loss"]
)
@pytest.mark.parametrize("case", list(GENERAL_MESSAGE_CASES))
def test_fake_kernel_errors_are_the_cpp_errors_general(case, op):
    X, W, Y = _ok()
    kwargs = GENERAL_MESSAGE_CASES[case]
    cpp = _raised(lambda: op(X, W, Y, **kwargs))
    assert cpp[1].startswith("relufrob: "), cpp
    with FakeTensorMode() as mode:
        fake = [mode.from_tensor(t) for t in (X, W, Y)]
        fake_kwargs = {
            k: mode.from_tensor(v) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()
        }
        assert _raised(lambda: op(*fake, **fake_kwargs)) == cpp


# --------------------------------------------------------------------------
# Tensors with no relufrob kernel: the dispatcher refuses them, and the error
# still names the argument (not a dispatch key)
# --------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor.*deprecated")
@pytest.mark.parametrize("arg", ["X", "W", "Y", "bias"])
def test_quantized_tensors(arg, entry):
    X, W, Y = _ok()
    t = {"X": X, "W": W, "Y": Y, "bias": torch.zeros(3)}
    t[arg] = torch.quantize_per_tensor(t[arg], 0.1, 0, torch.qint8)
    with pytest.raises(TypeError, match=_names(arg) + r" must be a floating-point tensor.*qint8"):
        entry(t["X"], t["W"], t["Y"], bias=t["bias"])


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype")
@pytest.mark.parametrize("arg", ["X", "W", "Y"])
def test_nested_tensors(arg, entry):
    X, W, Y = _ok()
    t = {"X": X, "W": W, "Y": Y}
    t[arg] = torch.nested.nested_tensor([t[arg], t[arg]], layout=torch.strided)
    with pytest.raises(ValueError, match=_names(arg) + r" must be a dense \(strided\) tensor"):
        entry(t["X"], t["W"], t["Y"])


def test_expanded_inputs_too_big_for_memory_fail_at_once():
    # X and Y expanded from one row to more rows than memory can hold once
    # copied: a clear error before any copy, not seconds of copying (or the
    # OOM killer). Sized from this machine's memory, in a subprocess so that
    # a regression fails on the timeout instead of taking the suite down.
    code = (
        "import os, torch, relufrob\n"
        "rows = os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') // 4\n"
        "X = torch.randn(1, 1).expand(rows, 1); W = torch.randn(1, 1)\n"
        "Y = torch.randn(1, 1).expand(rows, 1)\n"
        "try:\n"
        "    relufrob.grads(X, W, Y)\n"
        "except torch.OutOfMemoryError as e:\n"
        "    assert str(e).startswith('relufrob: X has'), e\n"
        "    assert 'GiB of memory' in str(e), e\n"
        "else:\n"
        "    raise AssertionError('no error')\n"
    )
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
