"""How the extension was built, and the CUDA kernels compiled on their own."""

import os
import shutil
import subprocess

import pytest
import torch

import relufrob
from relufrob import _compat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUDA_HOME = os.environ.get("CUDA_HOME") or "/usr/local/cuda"
NVCC = shutil.which("nvcc") or (
    os.path.join(CUDA_HOME, "bin", "nvcc")
    if os.path.exists(os.path.join(CUDA_HOME, "bin", "nvcc"))
    else None
)


def test_build_info_fields():
    info = relufrob.build_info()
    assert set(info) >= {"cuda", "cuda_archs", "torch_version", "openmp"}
    assert info["torch_version"] == torch.__version__
    assert bool(info["cuda_archs"]) == info["cuda"]


def test_every_op_has_a_cpu_path_and_a_fake_kernel():
    for op in ("relufrob::grads", "relufrob::loss"):
        assert _compat.dispatch_has_kernel(op, "CPU") or _compat.dispatch_has_kernel(
            op, "CompositeExplicitAutograd"
        )
        assert _compat.dispatch_has_kernel(op, "Meta")


@pytest.mark.skipif(os.environ.get("RELUFROB_CPU_ONLY") == "1", reason="CPU-only build requested")
@pytest.mark.skipif(
    torch.version.cuda is None or NVCC is None, reason="needs a CUDA build of torch and nvcc"
)
def test_cuda_kernels_are_compiled_where_cuda_is_available():
    # setup.py builds CUDA automatically when torch is a CUDA build and nvcc is
    # found, so a CUDA compile error fails CI here even without a GPU.
    assert relufrob.build_info()["cuda"]
    assert _compat.dispatch_has_kernel("relufrob::grads", "CUDA")


@pytest.mark.skipif(NVCC is None, reason="needs nvcc")
def test_epilogue_kernels_build_without_torch(tmp_path):
    # The device headers include only CUDA and the shared math; this builds
    # them with plain nvcc (no ATen include path) and, with a GPU, runs the
    # self-test against the same math on the host.
    exe = tmp_path / "epilogue_selftest"
    subprocess.run(
        [
            NVCC,
            "-std=c++17",
            "-arch=sm_80",
            "-I",
            os.path.join(ROOT, "csrc"),
            os.path.join(ROOT, "csrc", "cuda", "selftest", "epilogue_selftest.cu"),
            "-o",
            str(exe),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() in ("PASS", "SKIP: no CUDA device")
    if torch.cuda.is_available():
        assert out.stdout.strip() == "PASS"
