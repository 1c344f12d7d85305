"""`python -m relufrob check` and `python -m relufrob info`, as a user runs them.

What a user relies on: the exit status (0 all match, 1 a mismatch, 2 bad
arguments), the printed sections and verdicts, and the JSON document's shape.
A few runs go through a subprocess, as typed at a shell; the rest call
relufrob.cli.main(argv) and read its output. How strict the verdicts are is
relufrob.testing.tolerance's business, tested in test_tolerance.py; the
general form's exercises and variants are in test_check.py.
"""

import json
import re

import pytest
import torch
from cli_cases import CANDIDATES, QUANTITIES, VERDICT, run_cli, verdicts

import relufrob
from relufrob import cli
from relufrob.check import exercise
from relufrob.testing import make_inputs, reference
from relufrob.testing.tolerance import parity_tolerance

ALL_MATCH = {(q, m): "MATCH" for q in QUANTITIES for m in CANDIDATES}
CLASSIC_VARIANT = {"activation": "relu", "bias": "none", "target": True, "exercise": "relu"}


def expected_tolerances(seed, shape, dtype):
    """{quantity: (rtol, atol)} the check must use: the parity rule on autograd's values."""
    e = reference.autograd_grads(*make_inputs(*shape, dtype=dtype, seed=seed))
    return {
        q: parity_tolerance(q, getattr(e, "loss" if q == "f" else q), shape) for q in QUANTITIES
    }


# ---------------------------------------------------------------- at a shell


def test_check_defaults_all_match():
    p = run_cli("check")
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert out.rstrip().splitlines()[-1] == "ALL MATCH"
    assert "Traceback" not in p.stderr
    # the sections, in order
    sections = [
        "Objective:",
        "Closed-form gradients:",
        "Inputs: ",
        "Tolerance: ",
        "loss f (scalar):",
        "dW = df/dW (4 x 4):",
        "dX = df/dX (10 x 4):",
        "dY = df/dY (10 x 4):",
    ]
    positions = [out.index(s) for s in sections]
    assert positions == sorted(positions)
    # the objective and the three formulas, in plain text
    for key in QUANTITIES:
        assert reference.FORMULAS[key] in out
    assert "torch.manual_seed(0); X = randn(10, 4); W = randn(4, 4); Y = randn(10, 4)" in out
    # one verdict per quantity and method, all matching, each with its quantity's
    # tolerance: float32's defaults for the loss, atol widened for the gradients
    assert verdicts(out) == ALL_MATCH
    tol = expected_tolerances(0, (10, 4, 4), torch.float32)
    assert tol["f"] == (1.3e-6, 1e-5)
    assert tol["dW"][1] > 1e-5  # max|dW| 27: 2 * eps * sqrt(14) * 27 = 2.4e-5
    for m in VERDICT.findall(out):
        rtol, atol = tol[m[0]]
        assert m[5:] == (f"{rtol:.2g}", f"{atol:.2g}"), m
    assert (
        "Tolerance: rtol 1.3e-06, atol 1e-05 (torch.testing.assert_close defaults for float32);"
    ) in out
    # small matrices in full: dX is 10 x 4, printed by all three methods
    row = re.compile(r"^ {4}(?: *-?\d+\.\d{6}){4}$", re.M)
    assert len(row.findall(out)) == 3 * (4 + 10 + 10)  # dW 4 rows, dX 10, dY 10


def test_bad_arguments_at_a_shell():
    p = run_cli("check", "--shape", "10", "four", "4")
    assert p.returncode == 2
    assert p.stdout == ""
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("python -m relufrob check: error: argument --shape")


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


# ----------------------------------------------------------- through main()


def test_check_json_has_every_figure(capsys):
    assert cli.main(["check", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["command"] == "check"
    assert (doc["seed"], doc["shape"], doc["dtype"], doc["device"]) == (
        0,
        {"M": 10, "K": 4, "N": 4},
        "float32",
        "cpu",
    )
    assert doc["tolerance"]["defaults"] == {"rtol": 1.3e-6, "atol": 1e-5}
    assert doc["tolerance"]["source"] == "torch.testing.assert_close defaults for float32"
    assert "2 * eps * sqrt(L)" in doc["tolerance"]["rule"]
    tol = expected_tolerances(0, (10, 4, 4), torch.float32)
    for q in QUANTITIES:
        want = {"rtol": tol[q][0], "atol": tol[q][1]}
        assert doc["tolerance"]["per_quantity"][q] == want
        assert doc["quantities"][q]["tolerance"] == want
    assert doc["objective"] == reference.FORMULAS["f"]
    assert set(doc["formulas"]) == {"dW", "dX", "dY"}
    assert doc["variant"] == CLASSIC_VARIANT
    assert set(doc["quantities"]) == set(QUANTITIES)  # no db without a bias
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


def test_check_json_show_matrices_float64(capsys):
    argv = [
        "check",
        "--json",
        "--show-matrices",
        "--dtype",
        "float64",
        "--seed",
        "3",
        "--shape",
        "5",
        "3",
        "2",
    ]
    assert cli.main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["dtype"] == "float64" and doc["seed"] == 3
    assert doc["tolerance"]["defaults"] == {"rtol": 1e-7, "atol": 1e-7}
    # float64: 2 * eps * sqrt(L) * max|expected| is far below 1e-7 here
    assert all(
        doc["quantities"][q]["tolerance"] == {"rtol": 1e-7, "atol": 1e-7} for q in QUANTITIES
    )
    assert doc["all_match"] is True
    # the classic exercise's inputs, drawn by hand
    torch.manual_seed(3)
    X, W, Y = (torch.randn(*s).double() for s in ((5, 3), (3, 2), (5, 2)))
    expected = reference.autograd_grads(X, W, Y)
    for q, shape in (("dW", [3, 2]), ("dX", [5, 3]), ("dY", [5, 2])):
        values = doc["quantities"][q]["values"]
        assert set(values) == {"autograd", "formulas", "relufrob"}
        assert [len(values["relufrob"]), len(values["relufrob"][0])] == shape
        assert torch.tensor(values["autograd"], dtype=torch.float64).equal(getattr(expected, q))


def test_check_large_shape_is_summarised(capsys):
    assert cli.main(["check", "--shape", "300", "20", "10"]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("ALL MATCH")
    assert len(verdicts(out)) == 8
    assert out.count("shape 300 x 20  min ") == 3  # dX, one summary per method
    assert out.count("shape 300 x 10  min ") == 3  # dY
    assert out.count("shape 20 x 10  min ") == 3  # dW (20 rows: too many to print)
    assert len(out.splitlines()) < 60  # nothing printed in full


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_all_match(capsys, dtype):
    """autograd rounds XW to the low precision, relufrob keeps float32: within the rule."""
    assert cli.main(["check", "--dtype", dtype]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().splitlines()[-1] == "ALL MATCH"
    assert verdicts(out) == ALL_MATCH
    assert f"allow for the few {dtype} ulps" in out
    tol = expected_tolerances(0, (10, 4, 4), getattr(torch, dtype))
    for m in VERDICT.findall(out):
        assert m[5:] == (f"{tol[m[0]][0]:.2g}", f"{tol[m[0]][1]:.2g}"), m


@pytest.mark.parametrize(
    "args, needle",
    [
        (["check", "--shape", "10", "-4", "4"], "invalid dimension '-4'"),
        (["check", "--shape", "10", "4.5", "4"], "invalid dimension '4.5'"),
        (["check", "--shape", "10", "4"], "expected 3 arguments"),
        (["check", "--dtype", "float8"], "invalid choice: 'float8'"),
        (["check", "--device", "tpu"], "invalid device 'tpu'"),
        (["check", "--device", "meta"], "unsupported device 'meta'"),
        (["check", "--seed", "x"], "invalid seed 'x'"),
        (["check", "--bias", "diag"], "invalid choice: 'diag'"),
        (["check", "--activation", "tanh"], "invalid choice: 'tanh'"),
        (["check", "--exercise", "linear"], "invalid choice: 'linear'"),
        (["check", "--no-target=1"], "ignored explicit argument '1'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "required"),
    ],
)
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


def test_a_wrong_relufrob_is_a_mismatch(capsys, monkeypatch):
    """As with a broken build: relufrob's dW off by 1%."""

    def wrong_dW(X, W, Y):
        g = relufrob.grads(X, W, Y)
        return g._replace(dW=g.dW * 1.01)

    monkeypatch.setattr(exercise, "grads", wrong_dW)
    assert cli.main(["check"]) == 1
    out = capsys.readouterr().out
    v = verdicts(out)
    assert v.pop(("dW", "relufrob")) == "MISMATCH"
    assert set(v.values()) == {"MATCH"}
    assert out.rstrip().splitlines()[-1] == "MISMATCH: dW relufrob vs autograd"
    assert cli.main(["check", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["all_match"] is False and doc["verdict"] == "MISMATCH"
    dW = doc["quantities"]["dW"]["vs_autograd"]
    assert dW["relufrob"]["match"] is False and dW["formulas"]["match"] is True
    assert dW["relufrob"]["max_rel_diff"] == pytest.approx(0.01, rel=1e-3)


def test_a_relufrob_that_raises_is_reported_not_raised(capsys, monkeypatch):
    def broken(X, W, Y):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(exercise, "grads", broken)
    assert cli.main(["check"]) == 1
    out = capsys.readouterr().out
    assert "ERROR: relufrob raised RuntimeError: kernel exploded" in out
    assert out.rstrip().splitlines()[-1].startswith("MISMATCH")


def test_info_json(capsys):
    assert cli.main(["info", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["relufrob_version"] == relufrob.__version__
    assert doc["cuda_kernels_compiled"] == bool(relufrob.build_info()["cuda"])
    assert doc["cpu_threads"] == torch.get_num_threads()


@pytest.mark.skipif(
    not (torch.cuda.is_available() and relufrob.build_info()["cuda"]),
    reason="needs a GPU and relufrob's CUDA kernels",
)
def test_check_on_cuda_uses_the_cpu_numbers(capsys):
    assert cli.main(["check", "--device", "cuda", "--json", "--show-matrices"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["device"] == "cuda" and "moved to cuda" in doc["inputs"]
    expected = reference.autograd_grads(*make_inputs(10, 4, 4))
    got = torch.tensor(doc["quantities"]["dY"]["values"]["autograd"])
    torch.testing.assert_close(got, expected.dY)
