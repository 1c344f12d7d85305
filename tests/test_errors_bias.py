"""The general form's bias: a bias of another shape, dtype, device or layout,
or not a tensor, raises an error that names it; under a low-precision X a
float32 target is allowed only if Y and bias agree, and the fake kernel
words that fault as C++ does.
"""

import error_cases
import pytest
import torch
from error_cases import BF16, F32, F64, _names, _ok, _raised
from torch._subclasses.fake_tensor import FakeTensorMode

entry = error_cases.entry

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
