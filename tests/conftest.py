"""Fixtures for the relufrob test suite; the helpers live in helpers.py.

* ``device``: every test that takes it runs on "cpu" and on "cuda"; the CUDA
  run is skipped (not failed) on machines without a GPU.
"""

import os
import tempfile

import pytest
import torch
from hypothesis import settings

# torch.compile's on-disk cache does not tell CPU capabilities apart: a
# process forced to AVX2 (tests/test_cpu_variants.py) reused kernels tiled for
# AVX-512, or a baseline one kernels tiled for AVX2, and computed NaN (torch
# 2.14.1). One cache per capability, set unconditionally: the forced
# processes inherit their parent's environment, so a setdefault kept the
# parent's directory (CI, on an AVX2 machine: every forced variant failed).
os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(
    tempfile.gettempdir(),
    f"torchinductor_relufrob_tests_{torch.backends.cpu.get_cpu_capability().lower()}",
)

# CI runs the property tests on a fixed example sequence, so a landing can
# never hinge on a random draw; local runs keep exploring new examples.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(params=("cpu", "cuda"))
def device(request):
    """Runs the test on CPU and, when a GPU exists, on CUDA."""
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA is not available on this machine")
    return request.param
