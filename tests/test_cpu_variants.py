"""Every CPU kernel variant passes the parity and property suites.

relufrob compiles its CPU kernels for three ISAs and picks one per process
from torch's CPU capability; its large-problem GEMMs run on BLAS or on brgemm
tiles (relufrob.cpu_kernels()). The suite's other files test whichever
variant this machine picks. Here each variant gets a fresh process, forced as
a user forces torch (ATEN_CPU_CAPABILITY, with oneDNN and MKL capped to the
same ISA) and with RELUFROB_CPU_GEMM naming the backend, that runs the
parity and property files. bfloat16 GEMMs run natively or widened to
float32 (RELUFROB_CPU_LOWP_GEMM): AVX-512 runs native with brgemm and widened
with BLAS, the other ISAs widened. An AVX-512 machine so also tests the AVX2 and
baseline code that an AVX2-only machine runs. An ISA the CPU lacks cannot be
run, only refused: torch takes ATEN_CPU_CAPABILITY at its word, relufrob
must not (test_capability_above_the_cpu_falls_back).
"""

import json
import platform

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
    "tests/test_parity_general.py",
    "tests/test_properties.py",
    "tests/test_autocast.py",
    # The per-sample kernels have a direct (small-problem) and a blocked route per ISA.
    "tests/test_per_sample_parity.py",
]


def bf16_gemm(isa: str, gemm: str) -> str:
    return "native" if isa == "avx512" and gemm == "brgemm" else "widen"


def forced_env(isa: str, gemm: str) -> dict:
    capability, onednn, mkl = ISAS[isa]
    return {
        "ATEN_CPU_CAPABILITY": isa,
        "ONEDNN_MAX_CPU_ISA": onednn,
        "MKL_ENABLE_INSTRUCTIONS": mkl,
        "RELUFROB_CPU_GEMM": gemm,
        "RELUFROB_CPU_LOWP_GEMM": bf16_gemm(isa, gemm),
    }


def on_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def supported(isa: str) -> bool:
    """Whether this CPU can run `isa`, asked of the hardware (torch's
    reported capability follows ATEN_CPU_CAPABILITY even above it)."""
    if isa == "default":
        return True
    if not on_x86():
        return False
    if isa == "avx2":
        return torch.cpu._is_avx2_supported()
    return torch.cpu._is_avx512_supported()


def run_probe(env: dict):
    """(relufrob.cpu_kernels(), torch's capability) in a process with `env`."""
    probe = run_python(
        "-c",
        "import json, torch, relufrob; print(json.dumps([relufrob.cpu_kernels(), "
        "torch.backends.cpu.get_cpu_capability()]))",
        env=env,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    return json.loads(probe.stdout)


@pytest.mark.parametrize("gemm", GEMMS)
@pytest.mark.parametrize("isa", list(ISAS))
def test_variant_passes_parity_suite(isa, gemm):
    if not supported(isa):
        pytest.skip(
            f"this CPU cannot run {isa} (torch capability "
            f"{torch.backends.cpu.get_cpu_capability()})"
        )
    env = forced_env(isa, gemm)
    kernels, capability = run_probe(env)
    assert kernels == {"isa": isa, "gemm": gemm, "bf16_gemm": bf16_gemm(isa, gemm)}
    assert capability == ISAS[isa][0]

    suite = run_python(
        "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *SUITE, env=env, timeout=600
    )
    assert suite.returncode == 0, f"{isa}/{gemm}:\n{suite.stdout[-6000:]}\n{suite.stderr[-2000:]}"
    assert " passed" in suite.stdout.splitlines()[-1]


@pytest.mark.parametrize("isa", ["avx2", "avx512"])
def test_capability_above_the_cpu_falls_back(isa):
    if supported(isa):
        pytest.skip(f"this CPU runs {isa}: nothing to fall back from")
    if not on_x86():
        pytest.skip("x86 capabilities only")
    best = "avx2" if isa == "avx512" and supported("avx2") else "default"
    # Only asked which kernels would run: torch's own kernels would crash at
    # a capability the CPU lacks, relufrob's must not be chosen.
    kernels, capability = run_probe({"ATEN_CPU_CAPABILITY": isa})
    assert capability == ISAS[isa][0]  # torch believes the variable
    assert kernels["isa"] == best


UNKNOWN_SWITCHES = {
    "RELUFROB_CPU_GEMM": ("mkl", "torch.float32", "'auto', 'blas' or 'brgemm'"),
    "RELUFROB_CPU_LOWP_GEMM": ("amx", "torch.bfloat16", "'auto', 'native' or 'widen'"),
}


@pytest.mark.parametrize("variable", list(UNKNOWN_SWITCHES))
def test_unknown_switch_value_is_refused_with_its_name(variable):
    value, dtype, choices = UNKNOWN_SWITCHES[variable]
    proc = run_python(
        "-c",
        f"import torch, relufrob; x = torch.ones(300, 300, dtype={dtype}); relufrob.grads(x, x, x)",
        env={variable: value},
        timeout=120,
    )
    assert proc.returncode != 0
    assert f"{variable} must be {choices}, got '{value}'" in proc.stderr
    assert "ValueError" in proc.stderr


def test_bf16_gemm_follows_the_capability():
    # Forced to AVX2 (torch, oneDNN and MKL alike), bfloat16 is widened.
    kernels, _ = run_probe({k: v for k, v in forced_env("avx2", "blas").items() if "LOWP" not in k})
    assert kernels["bf16_gemm"] == "widen"


def test_suite_files_exist():
    # A renamed parity file must not silently drop out of the variant runs.
    for path in SUITE:
        assert (REPO / path).is_file(), path
