"""`python -m relufrob check` on the general form f = ||act(XW + b) - Y||^2:
the linear-bias exercise (checked against the exercise written out by hand),
every variant of activation, bias and target, the objective as printed, how
the inputs are drawn, and db judged like the other gradients. The command's
contract (arguments, exit status, JSON, info) is in test_cli.py.
"""

import itertools
import json
import re

import pytest
import torch
from cli_cases import CANDIDATES, QUANTITIES, run_cli, verdicts

import relufrob
from relufrob import cli
from relufrob.check import exercise
from relufrob.testing import make_inputs, reference


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
