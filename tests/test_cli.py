"""`python -m relufrob check` and `python -m relufrob info`, as a user runs them.

What a user relies on: the exit status (0 all match, 1 a mismatch, 2 bad
arguments), the printed sections and verdicts, and the JSON document's shape.
A few runs go through a subprocess, as typed at a shell; the rest call
relufrob.cli.main(argv) and read its output. How strict the verdicts are is
relufrob.testing.tolerance's business, tested in test_tolerance.py.
"""

import itertools
import json
import re

import pytest
import torch

import relufrob
from relufrob import cli
from relufrob.check import exercise
from relufrob.testing import make_inputs, reference
from relufrob.testing.tolerance import parity_tolerance

from helpers import run_python

QUANTITIES = ("f", "dW", "dX", "dY")
CANDIDATES = ("formulas", "relufrob")
VERDICT = re.compile(
    r"^(f|dW|dX|dY|db) +(formulas|relufrob) vs autograd: max\|Δ\| (\S+)  max rel (\S+)  "
    r"(MATCH|MISMATCH) \(rtol (\S+), atol (\S+)\)",
    re.M,
)
ALL_MATCH = {(q, m): "MATCH" for q in QUANTITIES for m in CANDIDATES}
CLASSIC_VARIANT = {"activation": "relu", "bias": "none", "target": True, "exercise": "relu"}


def run_cli(*args):
    return run_python("-m", "relufrob", *args, timeout=120)


def verdicts(text):
    """{(quantity, method): 'MATCH' | 'MISMATCH'} from a text report."""
    return {(m[0], m[1]): m[4] for m in VERDICT.findall(text)}


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


# ------------------------------------------- the general form f = ||act(XW + b) - Y||^2


def the_exercise_by_hand():
    """The f = ||XW + b||^2 exercise, written out as it is usually given: x, w, b and y."""
    torch.manual_seed(0)
    x = torch.randn(10, 4)
    w = torch.randn(4, 4)
    b = torch.randn(10, 4)
    y = (x.mm(w) + b).pow(2).sum()
    return x, w, b, y


def test_the_linear_bias_exercise_at_a_shell():
    p = run_cli("check", "--exercise", "linear-bias")
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert out.rstrip().splitlines()[-1] == "ALL MATCH"
    # its closed forms in the exercise's notation, and its inputs as it draws them
    for formula in ("df/dW = 2Xᵀ(XW+b)", "df/dX = 2(XW+b)Wᵀ", "df/db = 2(XW+b)"):
        assert f"\n  {formula}\n" in out
    assert "f = sum((XW+b)^2)      i.e. f = ||XW+b||_F^2" in out
    assert "torch.manual_seed(0); X = randn(10, 4); W = randn(4, 4); b = randn(10, 4)  --" in out
    assert "Variant: activation identity, bias full (10 x 4), no target (Y = 0)" in out
    # f, dW, dX and db, judged twice each; no target, so no dY
    assert "db = df/db (10 x 4):" in out and "df/dY" not in out
    assert verdicts(out) == {(q, m): "MATCH" for q in ("f", "dW", "dX", "db") for m in CANDIDATES}
    # the loss: the 162.5566, from the exercise's own expression
    *_, y = the_exercise_by_hand()
    assert f"{y.item():.4f}" == "162.5566"
    losses = dict(re.findall(r"^  (autograd|formulas|relufrob) +(\S+)$", out, re.M))
    assert set(losses) == {"autograd", "formulas", "relufrob"}
    for printed in losses.values():
        assert f"{float(printed):.4f}" == "162.5566"
        assert float(printed) == pytest.approx(y.item(), rel=1e-6)


def test_the_linear_bias_exercise_json_has_db(capsys):
    assert cli.main(["check", "--exercise", "linear-bias", "--json", "--show-matrices"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["variant"] == {
        "activation": "identity",
        "bias": "full",
        "target": False,
        "exercise": "linear-bias",
    }
    assert doc["objective"] == "f = sum((XW+b)^2)"
    assert doc["formulas"] == {
        "dW": "df/dW = 2Xᵀ(XW+b)",
        "dX": "df/dX = 2(XW+b)Wᵀ",
        "db": "df/db = 2(XW+b)",
    }
    assert set(doc["quantities"]) == {"f", "dW", "dX", "db"}
    assert set(doc["tolerance"]["per_quantity"]) == {"f", "dW", "dX", "db"}
    assert doc["quantities"]["db"]["shape"] == [10, 4]
    assert doc["all_match"] is True
    # autograd's figures are the exercise's, by hand: y.backward() on x, w, b
    x, w, b, y = the_exercise_by_hand()
    for t in (x, w, b):
        t.requires_grad_(True)
    (x.mm(w) + b).pow(2).sum().backward()
    assert doc["quantities"]["f"]["values"]["autograd"] == y.item()
    for q, leaf in (("dX", x), ("dW", w), ("db", b)):
        got = torch.tensor(doc["quantities"][q]["values"]["autograd"])
        assert got.equal(leaf.grad), q


VARIANTS = list(itertools.product(("relu", "identity"), ("none", "row", "full"), (True, False)))


def present(bias, target):
    """The quantities a variant has: dY only with a target, db only with a bias."""
    return ["f", "dW", "dX"] + ["dY"] * target + ["db"] * (bias != "none")


@pytest.mark.parametrize("activation, bias, target", VARIANTS)
def test_every_variant_runs_and_matches(capsys, activation, bias, target):
    argv = ["check", "--activation", activation, "--bias", bias]
    argv.append("--target" if target else "--no-target")
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out.rstrip().splitlines()[-1] == "ALL MATCH"
    quantities = present(bias, target)
    assert verdicts(out) == {(q, m): "MATCH" for q in quantities for m in CANDIDATES}
    closed_forms = reference.formulas(
        bias=False if bias == "none" else bias,
        activation="relu" if activation == "relu" else None,
        target=target,
    )
    assert set(closed_forms) == set(quantities)
    for q in quantities:
        assert f"\n  {closed_forms[q]}" in out
    assert ("Y = randn(10, 4)" in out) == target
    db_title = {"row": "db = df/db (4):", "full": "db = df/db (10 x 4):"}
    assert db_title[bias] in out if bias != "none" else "df/db" not in out


@pytest.mark.parametrize("activation, bias, target", VARIANTS)
def test_every_variant_json(capsys, activation, bias, target):
    argv = ["check", "--json", "--activation", activation, "--bias", bias]
    argv.append("--target" if target else "--no-target")
    assert cli.main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {k: doc["variant"][k] for k in ("activation", "bias", "target")} == {
        "activation": activation,
        "bias": bias,
        "target": target,
    }
    quantities = set(present(bias, target))
    assert set(doc["quantities"]) == quantities
    assert set(doc["formulas"]) == quantities - {"f"}
    if bias != "none":
        assert doc["quantities"]["db"]["shape"] == ([4] if bias == "row" else [10, 4])
    assert doc["all_match"] is True


@pytest.mark.parametrize(
    "argv, objective",
    [
        ([], "f = sum((relu(X W) - Y)^2)      i.e. f = ||relu(X W) - Y||_F^2"),
        (["--no-target"], "f = sum(relu(X W)^2)      i.e. f = ||relu(X W)||_F^2"),
        (
            ["--bias", "row"],
            "f = sum((relu(X W + b) - Y)^2)      i.e. f = ||relu(X W + b) - Y||_F^2",
        ),
        (["--activation", "identity"], "f = sum((XW-Y)^2)      i.e. f = ||XW-Y||_F^2"),
        (["--exercise", "linear-bias"], "f = sum((XW+b)^2)      i.e. f = ||XW+b||_F^2"),
    ],
)
def test_the_objective_as_a_sum_and_as_a_norm(capsys, argv, objective):
    assert cli.main(["check", *argv]) == 0
    assert f"Objective:\n  {objective}\n" in capsys.readouterr().out


def test_explicit_settings_override_the_exercise(capsys):
    """linear-bias with an (N,) bias and a target: nn.Linear's bias, fitted to Y."""
    argv = ["check", "--exercise", "linear-bias", "--bias", "row", "--target", "--json"]
    assert cli.main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["variant"] == {
        "activation": "identity",
        "bias": "row",
        "target": True,
        "exercise": None,
    }
    assert set(doc["quantities"]) == set(QUANTITIES) | {"db"}
    assert "Y = randn(10, 4); b = randn(4)" in doc["inputs"]


def test_inputs_are_drawn_x_w_y_b_from_one_seed(capsys):
    argv = ["check", "--bias", "row", "--seed", "5", "--shape", "6", "3", "2"]
    assert cli.main([*argv, "--json", "--show-matrices", "--dtype", "float64"]) == 0
    doc = json.loads(capsys.readouterr().out)
    torch.manual_seed(5)
    X, W, Y, b = (torch.randn(*s).double() for s in ((6, 3), (3, 2), (6, 2), (2,)))
    expected = reference.autograd_grads(X, W, Y, bias=b)
    for q in ("dW", "dX", "dY", "db"):
        got = torch.tensor(doc["quantities"][q]["values"]["autograd"], dtype=torch.float64)
        assert got.equal(getattr(expected, q)), q
    assert doc["quantities"]["f"]["values"]["autograd"] == expected.loss.item()


def test_make_inputs_keeps_its_three_values_and_adds_b_last():
    X, W, Y = make_inputs(10, 4, 4)
    X2, W2, Y2, b = make_inputs(10, 4, 4, bias="full")
    assert all(s.equal(t) for s, t in ((X, X2), (W, W2), (Y, Y2)))
    x, w, b_hand, _ = the_exercise_by_hand()
    X3, W3, no_Y, b3 = make_inputs(10, 4, 4, target=False, bias="full")
    assert no_Y is None and X3.equal(x) and W3.equal(w) and b3.equal(b_hand)
    assert make_inputs(10, 4, 4, bias="row")[3].shape == (4,)
    with pytest.raises(ValueError, match="bias must be None, 'row' or 'full'"):
        make_inputs(10, 4, 4, bias="diag")


def test_a_wrong_db_is_a_mismatch(capsys, monkeypatch):
    """db is judged, not only printed: relufrob's db off by 1%."""

    def wrong_db(X, W, Y, **options):
        g = relufrob.grads(X, W, Y, **options)
        return g._replace(db=g.db * 1.01)

    monkeypatch.setattr(exercise, "grads", wrong_db)
    assert cli.main(["check", "--exercise", "linear-bias"]) == 1
    out = capsys.readouterr().out
    v = verdicts(out)
    assert v.pop(("db", "relufrob")) == "MISMATCH"
    assert set(v.values()) == {"MATCH"}
    assert out.rstrip().splitlines()[-1] == "MISMATCH: db relufrob vs autograd"


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_with_a_bias_matches(capsys, dtype):
    # relufrob rounds X W to the low precision as autograd does, so a bias
    # that nearly cancels X W flips autograd's ReLU mask and relufrob's alike.
    for args in (["--bias", "full"], ["--exercise", "linear-bias"]):
        assert cli.main(["check", *args, "--dtype", dtype]) == 0
        out = capsys.readouterr().out
        assert set(verdicts(out).values()) == {"MATCH"}
        assert "relufrob rounds X W as they do" in out
