"""Every CPU kernel variant passes the parity and property suites.

relufrob compiles its CPU kernels for three ISAs and picks one per process
from torch's CPU capability; its large-problem GEMMs run on BLAS or on brgemm
tiles (relufrob.cpu_kernels()). The suite's other files test whichever
variant this machine picks. Here each variant gets a fresh process, forced as
a user forces torch (ATEN_CPU_CAPABILITY, with oneDNN and MKL capped to the
same ISA) and with RELUFROB_CPU_GEMM naming the backend, that runs the
parity and property files. An AVX-512 machine so also tests the AVX2 and
baseline code that an AVX2-only machine runs, and the reverse for as much as
the hardware allows: an ISA the CPU lacks is skipped, not faked.
"""

import json

import pytest
import torch

from helpers import REPO, run_python

# relufrob's ISA name -> (torch's capability name, oneDNN cap, MKL cap).
ISAS = {
    "default": ("DEFAULT", "SSE41", "SSE4_2"),
    "avx2": ("AVX2", "AVX2", "AVX2"),
    "avx512": ("AVX512", "AVX512_CORE", "AVX512"),
}
GEMMS = ("blas", "brgemm")
SUITE = [
    "tests/test_parity_shapes.py",
    "tests/test_parity_special_values.py",
    "tests/test_parity_low_precision.py",
    "tests/test_parity_selective.py",
    "tests/test_parity_layouts.py",
    "tests/test_parity_empty.py",
    "tests/test_properties.py",
]


def forced_env(isa: str, gemm: str) -> dict:
    capability, onednn, mkl = ISAS[isa]
    return {
        "ATEN_CPU_CAPABILITY": isa,
        "ONEDNN_MAX_CPU_ISA": onednn,
        "MKL_ENABLE_INSTRUCTIONS": mkl,
        "RELUFROB_CPU_GEMM": gemm,
    }


def supported(isa: str) -> bool:
    """Whether this CPU can run `isa` (torch never raises its capability
    above what the CPU has, whatever ATEN_CPU_CAPABILITY says)."""
    order = [ISAS[name][0] for name in ISAS]
    native = torch.backends.cpu.get_cpu_capability()
    return native in order and order.index(ISAS[isa][0]) <= order.index(native)


@pytest.mark.parametrize("gemm", GEMMS)
@pytest.mark.parametrize("isa", list(ISAS))
def test_variant_passes_parity_suite(isa, gemm):
    if not supported(isa):
        pytest.skip(
            f"this CPU cannot run {isa} (torch capability "
            f"{torch.backends.cpu.get_cpu_capability()})"
        )
    env = forced_env(isa, gemm)
    probe = run_python(
        "-c",
        "import json, torch, relufrob; print(json.dumps([relufrob.cpu_kernels(), "
        "torch.backends.cpu.get_cpu_capability()]))",
        env=env,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    kernels, capability = json.loads(probe.stdout)
    assert kernels == {"isa": isa, "gemm": gemm}
    assert capability == ISAS[isa][0]

    suite = run_python(
        "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *SUITE, env=env, timeout=600
    )
    assert suite.returncode == 0, f"{isa}/{gemm}:\n{suite.stdout[-6000:]}\n{suite.stderr[-2000:]}"
    assert " passed" in suite.stdout.splitlines()[-1]


def test_unknown_gemm_backend_is_refused_with_its_name():
    proc = run_python(
        "-c",
        "import torch, relufrob; relufrob.grads(torch.ones(300, 300), torch.ones(300, 300), "
        "torch.ones(300, 300))",
        env={"RELUFROB_CPU_GEMM": "mkl"},
        timeout=120,
    )
    assert proc.returncode != 0
    assert "RELUFROB_CPU_GEMM must be 'auto', 'blas' or 'brgemm', got 'mkl'" in proc.stderr
    assert "ValueError" in proc.stderr


def test_suite_files_exist():
    # A renamed parity file must not silently drop out of the variant runs.
    for path in SUITE:
        assert (REPO / path).is_file(), path
