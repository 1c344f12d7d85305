"""`python -m relufrob check` and `python -m relufrob info`.

The commands run in a subprocess, as a user runs them (a handful of runs: each
pays the torch import). The paths that need a wrong implementation or many
argument variations run in-process through relufrob.cli.main.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import relufrob
from relufrob import cli
from relufrob.tolerance import ASSERT_CLOSE_DEFAULTS, parity_tolerance

REPO = Path(__file__).resolve().parents[1]
QUANTITIES = ("f", "dW", "dX", "dY")
CANDIDATES = ("formulas", "relufrob")
VERDICT = re.compile(
    r"^(f|dW|dX|dY) +(formulas|relufrob) vs autograd: max\|Δ\| (\S+)  max rel (\S+)  "
    r"(MATCH|MISMATCH) \(rtol (\S+), atol (\S+)\)", re.M)


def run_cli(*args):
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    return subprocess.run([sys.executable, "-m", "relufrob", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, encoding="utf-8", timeout=120)


def verdicts(text):
    """{(quantity, method): 'MATCH' | 'MISMATCH'} from a text report."""
    return {(m[0], m[1]): m[4] for m in VERDICT.findall(text)}


def wrong_dW(X, W, Y):
    """relufrob with dW off by 1% (relufrob.ops.grads: unaffected by patching relufrob.grads)."""
    g = relufrob.ops.grads(X, W, Y)
    return relufrob.Grads(g.loss, g.dW * 1.01, g.dX, g.dY)


def scaled_loss(factor):
    """relufrob with the loss multiplied by `factor`."""
    def implementation(X, W, Y):
        g = relufrob.ops.grads(X, W, Y)
        return relufrob.Grads(g.loss * factor, g.dW, g.dX, g.dY)
    return implementation


def scaled_dW(factor):
    """relufrob with dW multiplied by `factor`."""
    def implementation(X, W, Y):
        g = relufrob.ops.grads(X, W, Y)
        return relufrob.Grads(g.loss, g.dW * factor, g.dX, g.dY)
    return implementation


def _masked_formulas(X, W, Y, mask):
    """The closed-form gradients in float32 (as relufrob computes), with G = 2 R * mask(Z)."""
    X32, W32, Y32 = X.float(), W.float(), Y.float()
    Z = X32 @ W32
    R = torch.relu(Z) - Y32
    G = 2 * R * mask(Z)
    out = ((R * R).sum(), X32.T @ G, G @ W32.T, -2 * R)
    return relufrob.Grads(*(t.to(X.dtype) for t in out))


def mask_at_zero(X, W, Y):
    """Masking bug: the ReLU gradient taken as 1 at XW == 0 (autograd takes 0)."""
    return _masked_formulas(X, W, Y, lambda Z: Z >= 0)


def no_mask(X, W, Y):
    """Masking bug: G = 2 R everywhere, the ReLU mask forgotten."""
    return _masked_formulas(X, W, Y, lambda Z: torch.ones_like(Z))


def integer_inputs(seed, shape, dtype, device="cpu"):
    """X, W in {-1, 0, 1} and Y in -3..3: XW is exact in every dtype and often exactly 0."""
    M, K, N = shape
    g = torch.Generator().manual_seed(seed)
    X = torch.randint(-1, 2, (M, K), generator=g)
    W = torch.randint(-1, 2, (K, N), generator=g)
    Y = torch.randint(-3, 4, (M, N), generator=g)
    return tuple(t.to(device=device, dtype=dtype) for t in (X, W, Y))


def expected_tolerances(seed, shape, dtype):
    """{quantity: (rtol, atol)} the check must use, from autograd's values."""
    X, W, Y = cli.make_inputs(seed, shape, dtype)
    e = relufrob.reference.autograd_grads(X, W, Y)
    return {q: parity_tolerance(q, getattr(e, "loss" if q == "f" else q), shape)
            for q in QUANTITIES}


# ---------------------------------------------------------------- subprocess

def test_check_defaults_all_match():
    p = run_cli("check")
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert out.rstrip().splitlines()[-1] == "ALL MATCH"
    assert "Traceback" not in p.stderr
    # the objective and the three formulas, in plain text
    for key in ("f", "dW", "dX", "dY"):
        assert relufrob.reference.FORMULAS[key] in out
    assert "torch.manual_seed(0); X = randn(10, 4); W = randn(4, 4); Y = randn(10, 4)" in out
    # one verdict per quantity and method, all matching, each with its quantity's
    # tolerance: float32's defaults for the loss, atol widened for the gradients
    v = verdicts(out)
    assert v == {(q, m): "MATCH" for q in QUANTITIES for m in CANDIDATES}
    tol = expected_tolerances(0, (10, 4, 4), torch.float32)
    assert tol["f"] == (1.3e-6, 1e-5)
    assert tol["dW"][1] > 1e-5   # max|dW| 27: 2 * eps * sqrt(14) * 27 = 2.4e-5
    for m in VERDICT.findall(out):
        rtol, atol = tol[m[0]]
        assert m[5:] == (f"{rtol:.2g}", f"{atol:.2g}"), m
    assert ("Tolerance: rtol 1.3e-06, atol 1e-05 "
            "(torch.testing.assert_close defaults for float32);") in out
    # small matrices in full: dX is 10 x 4, printed by all three methods
    row = re.compile(r"^ {4}(?: *-?\d+\.\d{6}){4}$", re.M)
    assert len(row.findall(out)) == 3 * (4 + 10 + 10)  # dW 4 rows, dX 10, dY 10


def test_check_json_has_every_figure():
    p = run_cli("check", "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["command"] == "check"
    assert (doc["seed"], doc["shape"], doc["dtype"], doc["device"]) == (
        0, {"M": 10, "K": 4, "N": 4}, "float32", "cpu")
    assert doc["tolerance"]["defaults"] == {"rtol": 1.3e-6, "atol": 1e-5}
    assert doc["tolerance"]["source"] == "torch.testing.assert_close defaults for float32"
    assert doc["tolerance"]["rule"] == cli.tolerance_rule(torch.float32)
    assert "2 * eps * sqrt(L)" in doc["tolerance"]["rule"]
    tol = expected_tolerances(0, (10, 4, 4), torch.float32)
    for q in QUANTITIES:
        want = {"rtol": tol[q][0], "atol": tol[q][1]}
        assert doc["tolerance"]["per_quantity"][q] == want
        assert doc["quantities"][q]["tolerance"] == want
    assert doc["objective"] == relufrob.reference.FORMULAS["f"]
    assert set(doc["formulas"]) == {"dW", "dX", "dY"}
    assert doc["all_match"] is True and doc["verdict"] == "ALL MATCH"
    assert doc["relufrob_version"] == relufrob.__version__
    for q in QUANTITIES:
        for m in CANDIDATES:
            c = doc["quantities"][q]["vs_autograd"][m]
            assert c["match"] is True
            assert isinstance(c["max_abs_diff"], float) and isinstance(c["max_rel_diff"], float)
    # the loss values always; no matrices without --show-matrices
    assert set(doc["quantities"]["f"]["values"]) == {"autograd", "formulas", "relufrob"}
    assert all("values" not in doc["quantities"][q] for q in ("dW", "dX", "dY"))


def test_check_json_show_matrices_float64():
    p = run_cli("check", "--json", "--show-matrices", "--dtype", "float64", "--seed", "3",
                "--shape", "5", "3", "2")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["dtype"] == "float64" and doc["seed"] == 3
    assert doc["tolerance"]["defaults"] == {"rtol": 1e-7, "atol": 1e-7}
    assert doc["tolerance"]["source"] == "torch.testing.assert_close defaults for float64"
    # float64: 2 * eps * sqrt(L) * max|expected| is far below 1e-7 here
    assert all(doc["quantities"][q]["tolerance"] == {"rtol": 1e-7, "atol": 1e-7}
               for q in QUANTITIES)
    assert doc["all_match"] is True
    X, W, Y = cli.make_inputs(3, (5, 3, 2), torch.float64)
    expected = relufrob.reference.autograd_grads(X, W, Y)
    for q, shape in (("dW", [3, 2]), ("dX", [5, 3]), ("dY", [5, 2])):
        values = doc["quantities"][q]["values"]
        assert set(values) == {"autograd", "formulas", "relufrob"}
        assert [len(values["relufrob"]), len(values["relufrob"][0])] == shape
        assert torch.tensor(values["autograd"], dtype=torch.float64).equal(
            getattr(expected, q))


def test_check_large_shape_is_summarised():
    p = run_cli("check", "--shape", "300", "20", "10")
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert out.rstrip().endswith("ALL MATCH")
    assert len(verdicts(out)) == 8
    assert out.count("shape 300 x 20  min ") == 3   # dX, one summary per method
    assert out.count("shape 300 x 10  min ") == 3   # dY
    assert out.count("shape 20 x 10  min ") == 3    # dW (20 rows: too many to print)
    assert len(out.splitlines()) < 60                # nothing printed in full


@pytest.mark.parametrize("args, needle", [
    (["--shape", "10", "four", "4"], "argument --shape"),
    (["--device", "cuda"], "argument --device"),
])
def test_check_bad_arguments_subprocess(args, needle):
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("a GPU is available, so --device cuda is not an error here")
    p = run_cli("check", *args)
    assert p.returncode == 2
    assert p.stdout == ""
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("python -m relufrob check: error: ") and needle in lines[0]


def test_info():
    p = run_cli("info")
    assert p.returncode == 0, p.stderr
    out = p.stdout
    info = relufrob.build_info()
    assert f"relufrob version:       {relufrob.__version__}" in out
    assert f"torch version:          {torch.__version__}" in out
    cuda = f"yes (archs {info['cuda_archs']})" if info["cuda"] else "no"
    assert f"CUDA kernels compiled:  {cuda}" in out
    assert f"CPU threads (torch):    {torch.get_num_threads()} of" in out
    assert "OpenMP:" in out and "CUDA available:" in out


# ------------------------------------------------------------------ in-process

@pytest.mark.parametrize("args, needle", [
    (["check", "--shape", "10", "-4", "4"], "invalid dimension '-4'"),
    (["check", "--shape", "10", "4.5", "4"], "invalid dimension '4.5'"),
    (["check", "--shape", "10", "4"], "expected 3 arguments"),
    (["check", "--dtype", "float8"], "invalid choice: 'float8'"),
    (["check", "--device", "tpu"], "invalid device 'tpu'"),
    (["check", "--device", "meta"], "unsupported device 'meta'"),
    (["check", "--seed", "x"], "invalid seed 'x'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    ([], "required"),
])
def test_bad_arguments_are_one_line_usage_errors(capsys, args, needle):
    assert cli.main(args) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and needle in err and ": error: " in err


def test_cuda_without_gpu_is_a_usage_error(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["check", "--device", "cuda:0"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no GPU is available" in err


def test_wrong_implementation_is_a_mismatch(capsys):
    assert cli.main(["check"], implementation=wrong_dW) == 1
    out = capsys.readouterr().out
    v = verdicts(out)
    assert v.pop(("dW", "relufrob")) == "MISMATCH"
    assert set(v.values()) == {"MATCH"}
    assert out.rstrip().splitlines()[-1] == "MISMATCH: dW relufrob vs autograd"


def test_large_float32_shape_matches(capsys):
    """Entries of dW that cancel to ~0 differ by summation order alone (no false MISMATCH)."""
    assert cli.main(["check", "--shape", "3000", "200", "100", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["all_match"] is True and doc["verdict"] == "ALL MATCH"
    # the loss keeps float32's defaults; dW's atol is widened, but stays a tiny
    # fraction of dW itself: 2 * eps * sqrt(3200) = 1.3e-5 of max|dW|
    assert doc["quantities"]["f"]["tolerance"] == {"rtol": 1.3e-6, "atol": 1e-5}
    X, W, Y = cli.make_inputs(0, (3000, 200, 100), torch.float32)
    max_dW = relufrob.reference.autograd_grads(X, W, Y).dW.abs().max().item()
    atol = doc["quantities"]["dW"]["tolerance"]["atol"]
    assert 1e-5 < atol < 2e-5 * max_dW


@pytest.mark.parametrize("implementation, wrong", [
    (wrong_dW, {"dW"}),
    (no_mask, {"dW", "dX"}),
], ids=["dW*1.01", "no-mask"])
def test_large_float32_shape_still_catches_bugs(capsys, implementation, wrong):
    assert cli.main(["check", "--shape", "3000", "200", "100"],
                    implementation=implementation) == 1
    v = verdicts(capsys.readouterr().out)
    assert {q for (q, m), word in v.items() if word == "MISMATCH"} == wrong
    assert all(v[(q, "formulas")] == "MATCH" for q in QUANTITIES)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("implementation, wrong", [
    (None, set()),
    (no_mask, {"dW", "dX"}),
], ids=["relufrob", "no-mask"])
def test_large_low_precision_shape(capsys, dtype, implementation, wrong):
    """No false MISMATCH at 3000 x 200 x 100, yet a forgotten ReLU mask still fails.

    The mask moves dW by 2.3% of max|dW| there: inside bfloat16's 4 * eps (3.1%), so
    bfloat16 shows the bug in dX (7%) only.
    """
    status = cli.main(["check", "--shape", "3000", "200", "100", "--dtype", dtype],
                      implementation=implementation)
    assert status == (1 if wrong else 0)
    v = verdicts(capsys.readouterr().out)
    if dtype == "bfloat16":
        wrong = wrong - {"dW"}
    assert {q for (q, m), word in v.items() if word == "MISMATCH"} == wrong


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_defaults_all_match(capsys, dtype):
    """autograd rounds XW to the low precision, relufrob keeps float32: within the rule."""
    assert cli.main(["check", "--dtype", dtype]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().splitlines()[-1] == "ALL MATCH"
    assert verdicts(out) == {(q, m): "MATCH" for q in QUANTITIES for m in CANDIDATES}
    assert "may exceed" not in out and f"allow for the few {dtype} ulps" in out
    tol = expected_tolerances(0, (10, 4, 4), cli.DTYPES[dtype])
    for m in VERDICT.findall(out):
        assert m[5:] == (f"{tol[m[0]][0]:.2g}", f"{tol[m[0]][1]:.2g}"), m
        assert tol[m[0]][0] == ASSERT_CLOSE_DEFAULTS[cli.DTYPES[dtype]][0]  # rtol unchanged


@pytest.mark.parametrize("dtype, implementation, wrong", [
    # float16 resolves a 1% error in the loss and in dW at 10 x 4 x 4 ...
    ("float16", scaled_loss(1.01), {"f"}),
    ("float16", wrong_dW, {"dW"}),
    # ... bfloat16 does not (1% of the loss is 2 of its ulps, inside even the default
    # rtol 1.6e-2; dW's allowance is 4 * eps = 3.1% of max|dW|), so there it is 10%
    ("bfloat16", scaled_loss(1.1), {"f"}),
    ("bfloat16", scaled_dW(1.1), {"dW"}),
], ids=["float16-loss*1.01", "float16-dW*1.01", "bfloat16-loss*1.1", "bfloat16-dW*1.1"])
def test_low_precision_still_catches_errors(capsys, dtype, implementation, wrong):
    assert cli.main(["check", "--dtype", dtype, "--json"], implementation=implementation) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["verdict"] == "MISMATCH"
    got = {q for q in QUANTITIES if not doc["quantities"][q]["vs_autograd"]["relufrob"]["match"]}
    assert got == wrong
    assert all(doc["quantities"][q]["vs_autograd"]["formulas"]["match"] for q in QUANTITIES)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float64"])
def test_mask_bug_at_zero_is_a_mismatch(capsys, monkeypatch, dtype):
    """A ReLU mask that passes XW == 0 fails even with the widened tolerances."""
    monkeypatch.setattr(cli, "make_inputs", integer_inputs)
    X, W, _ = integer_inputs(0, (10, 4, 4), torch.float32)
    assert ((X @ W) == 0).sum() > 5  # precondition: the bug has entries to show on
    assert cli.main(["check", "--dtype", dtype]) == 0   # relufrob itself: exact zeros handled
    capsys.readouterr()
    assert cli.main(["check", "--dtype", dtype], implementation=mask_at_zero) == 1
    out = capsys.readouterr().out
    v = verdicts(out)
    assert {q for (q, m), word in v.items() if word == "MISMATCH"} == {"dW", "dX"}
    assert out.rstrip().splitlines()[-1] == (
        "MISMATCH: dW relufrob vs autograd, dX relufrob vs autograd")


def test_patched_grads_is_checked_too(capsys, monkeypatch):
    """The default implementation is relufrob.grads, looked up when the check runs."""
    monkeypatch.setattr(relufrob, "grads", wrong_dW)
    assert cli.main(["check", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["all_match"] is False and doc["verdict"] == "MISMATCH"
    dW = doc["quantities"]["dW"]["vs_autograd"]
    assert dW["relufrob"]["match"] is False and dW["formulas"]["match"] is True
    assert dW["relufrob"]["max_rel_diff"] == pytest.approx(0.01, rel=1e-3)
    assert doc["quantities"]["dX"]["vs_autograd"]["relufrob"]["match"] is True


def test_implementation_that_raises_is_reported_not_raised(capsys):
    def broken(X, W, Y):
        raise RuntimeError("kernel exploded")

    assert cli.main(["check"], implementation=broken) == 1
    out = capsys.readouterr().out
    assert "ERROR: relufrob raised RuntimeError: kernel exploded" in out
    assert out.rstrip().splitlines()[-1].startswith("MISMATCH")


def test_inputs_are_the_classic_exercise_and_leave_the_rng_alone():
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    X, W, Y = cli.make_inputs(7, (6, 3, 2), torch.float64)
    assert torch.get_rng_state().equal(before)
    torch.manual_seed(7)
    classic = torch.randn(6, 3), torch.randn(3, 2), torch.randn(6, 2)
    for got, want in zip((X, W, Y), classic):
        assert got.dtype == torch.float64 and got.equal(want.double())


def test_compare_follows_assert_close():
    nan, inf = float("nan"), float("inf")
    e = torch.tensor([1.0, 0.0, nan, inf, -2.0])
    c = cli.compare(e.clone(), e, 1.3e-6, 1e-5)
    assert (c.max_abs, c.max_rel, c.match) == (0.0, 0.0, True)
    a = e.clone()
    a[1] = 1e-6                                   # within atol of an exact 0
    c = cli.compare(a, e, 1.3e-6, 1e-5)
    assert c.match and c.max_rel == inf
    a[0] = 1.001                                  # beyond rtol
    c = cli.compare(a, e, 1.3e-6, 1e-5)
    assert not c.match and c.max_abs == pytest.approx(1e-3, rel=1e-3)
    a = e.clone()
    a[2] = 0.0                                    # NaN on one side only
    assert not cli.compare(a, e, 1.3e-6, 1e-5).match
    assert not cli.compare(e.double(), e, 1.3e-6, 1e-5).match   # dtype differs
    c = cli.compare(e[:2], e, 1.3e-6, 1e-5)                     # shape differs
    assert not c.match and "shape" in c.note
    assert not cli.compare(None, e, 1.3e-6, 1e-5).match


def test_info_json_in_process(capsys):
    assert cli.main(["info", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["relufrob_version"] == relufrob.__version__
    assert doc["cuda_kernels_compiled"] == bool(relufrob.build_info()["cuda"])
    assert doc["cpu_threads"] == torch.get_num_threads()


@pytest.mark.skipif(not (torch.cuda.is_available() and relufrob.build_info()["cuda"]),
                    reason="needs a GPU and relufrob's CUDA kernels")
def test_check_on_cuda_uses_the_cpu_numbers(capsys):
    assert cli.main(["check", "--device", "cuda", "--json", "--show-matrices"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["device"] == "cuda" and "moved to cuda" in doc["inputs"]
    X, W, Y = cli.make_inputs(0, (10, 4, 4), torch.float32)
    expected = relufrob.reference.autograd_grads(X, W, Y)
    got = torch.tensor(doc["quantities"]["dY"]["values"]["autograd"])
    torch.testing.assert_close(got, expected.dY)
