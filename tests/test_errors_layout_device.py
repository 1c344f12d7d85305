"""Tensors relufrob has no kernel for: sparse, nested and quantized inputs, meta
or CUDA tensors beside CPU ones, and expanded inputs too big to copy. Layout
and device faults raise ValueError, a quantized dtype TypeError, and each
message names the argument (not a dispatch key).

The meta device is also the shape-inference path: all-meta inputs give meta
outputs and are validated like real ones.
"""

import error_cases
import pytest
import torch
from error_cases import _names, _ok

import relufrob

entry = error_cases.entry


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


def test_expanded_W_too_big_for_memory_is_refused_by_name():
    # W expanded to 2^40 columns: its contiguous copy is K x N whatever X
    # is, so even with wrt=() the error names W, not the allocator.
    code = (
        "import torch, relufrob\n"
        "X = torch.randn(2, 4); W = torch.randn(4, 1).expand(4, 2**40)\n"
        "for wrt in ((), None):\n"
        "    try:\n"
        "        relufrob.grads(X, W, None, wrt=wrt)\n"
        "    except torch.OutOfMemoryError as e:\n"
        "        assert str(e).startswith('relufrob: W has shape (4, 1099511627776)'), e\n"
        "    else:\n"
        "        raise AssertionError('no error')\n"
    )
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
