"""Smoke test of bench/throughput.py: `--quick` must keep working.

One subprocess run (tiny sizes, few rounds, a couple of memory probes) with
--json and --plot, shared by the tests below. Nothing here asserts on timings:
only that every implementation and size produced a positive, finite median,
that the report and the files are well formed.
"""

import json
import math

import pytest
import torch

from bench.impls import FLOORS, IMPLS, applies
from bench.sizes import QUICK_SIZES, size_str

from helpers import REPO, run_python

SCRIPT = REPO / "bench" / "throughput.py"
TABLE_HEADER = "| impl | median | vs autograd | vs floor |"


def run_bench(*args, timeout=240):
    return run_python(str(SCRIPT), *args, timeout=timeout)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    json_path, png_path = out / "bench.json", out / "bench.png"
    proc = run_bench("--quick", "--json", str(json_path), "--plot", str(png_path))
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    return proc, json.loads(json_path.read_text(encoding="utf-8")), png_path


def test_json_has_every_implementation_and_size(quick):
    _, data, _ = quick
    results = {r["size"]: r for r in data["results"]}
    assert set(results) == {size_str(s) for s in QUICK_SIZES}
    for size, record in results.items():
        cpu_float32 = (torch.device("cpu"), torch.float32)
        assert set(record["impls"]) == {k for k in IMPLS if applies(k, *cpu_float32)}, size
        for key, fig in record["impls"].items():
            median = fig.get("median_s")
            assert isinstance(median, float) and math.isfinite(median) and median > 0, (
                size,
                key,
                fig.get("error"),
            )
            assert all(math.isfinite(s) and s > 0 for s in fig["samples_s"]), (size, key)
            assert fig["check"] in ("ok", "skipped"), (size, key, fig["check"])
            assert math.isfinite(fig["gflops"]) and fig["gflops"] > 0


def test_json_derived_figures_and_metadata(quick):
    _, data, _ = quick
    meta = data["meta"]
    for field in ("torch", "threads", "cpu_model", "device", "device_name", "dtype"):
        assert meta.get(field), field
    assert meta["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert set(meta["relufrob_cpu_kernels"]) == {"isa", "gemm", "bf16_gemm"}
    assert meta["gemm_peak"]["gflops"] > 0
    assert meta["dtype"] == "float32" and meta["device"] == "cpu"
    for record in data["results"]:
        impls = record["impls"]
        assert impls["autograd"]["speedup_vs_autograd"] == pytest.approx(1.0)
        # The floor is the faster of the floors.
        assert min(impls[k]["ratio_to_floor"] for k in FLOORS) == pytest.approx(1.0)
        assert all(impls[k]["ratio_to_floor"] >= 1 - 1e-12 for k in FLOORS)
        for fig in impls.values():
            assert fig["pct_of_peak"] == pytest.approx(
                100 * fig["gflops"] / meta["gemm_peak"]["gflops"]
            )
        t = impls["relufrob"]
        assert t["speedup_vs_autograd"] == pytest.approx(
            impls["autograd"]["median_s"] / t["median_s"]
        )


def test_memory_probe_ran_in_quick_mode(quick):
    _, data, _ = quick
    probed = [
        (r["size"], k, f["memory"])
        for r in data["results"]
        for k, f in r["impls"].items()
        if f["memory"]["status"] == "ok"
    ]
    assert probed, "--quick should exercise at least one memory probe"
    for size, key, mem in probed:
        assert isinstance(mem["peak_extra_bytes"], int), (size, key)
        assert mem["output_bytes"] > 0, (size, key)
        assert math.isfinite(mem["extra_mib"]), (size, key)
    for record in data["results"]:
        for key, fig in record["impls"].items():
            assert fig["memory"]["status"] in ("ok", "-", "n/a"), (record["size"], key)


def test_table_on_stdout_progress_on_stderr(quick):
    proc, data, _ = quick
    out = proc.stdout
    assert out.count(TABLE_HEADER) == len(QUICK_SIZES)
    assert data["meta"]["torch"] in out.splitlines()[0]
    assert f"ISA {torch.backends.cpu.get_cpu_capability()}" in out.splitlines()[0]
    for label in IMPLS.values():
        assert f"| {label} |" in out, label
    assert "warm-up" in proc.stderr and "warm-up" not in out


def test_plot_is_a_png(quick):
    _, _, png_path = quick
    data = png_path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_sizes_parse_and_bad_ones_are_usage_errors(capsys):
    from bench.sizes import parse_size
    from bench.throughput import parse_args

    assert parse_size("1024x256x256") == (1024, 256, 256)
    assert parse_args(["--sizes", "10x4x4", "8X2X3"]).sizes == [(10, 4, 4), (8, 2, 3)]
    for bad in ("10x4", "0x4x4", "axbxc"):
        with pytest.raises(SystemExit) as exc:
            parse_args(["--sizes", bad])
        assert exc.value.code == 2
        assert "MxKxN" in capsys.readouterr().err


def test_busy_times_each_size_again_under_load(tmp_path):
    json_path = tmp_path / "busy.json"
    proc = run_bench(
        "--quick",
        "--busy",
        "1",
        "--memory",
        "none",
        "--impls",
        "relufrob",
        "floor_mm",
        "--sizes",
        "64x32x32",
        "--json",
        str(json_path),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "| busy 1 slowdown |" in proc.stdout
    (record,) = json.loads(json_path.read_text(encoding="utf-8"))["results"]
    for key, fig in record["impls"].items():
        busy = fig["busy"]
        assert busy["slowdown"] == pytest.approx(busy["median_s"] / fig["median_s"]), key
        assert math.isfinite(busy["slowdown"]) and busy["slowdown"] > 0, key
