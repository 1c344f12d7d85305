"""`python -m relufrob check --exercise per-sample`: the per-sample norms by
the identity ||x_b|| ||g_b|| beside autograd's per-sample gradients."""

import json

import pytest
import torch

from relufrob import cli
from relufrob.testing import make_inputs, reference


def run(capsys, *argv):
    status = cli.main(["check", "--exercise", "per-sample", *argv])
    return status, capsys.readouterr().out


def test_the_report_shows_the_identity_and_matches(capsys):
    status, out = run(capsys)
    assert status == 0
    assert "||df_b/dW||^2 = ||x_b||^2 ||g_b||^2" in out
    assert "norms identity vs autograd" in out and "clipped dW relufrob vs autograd" in out
    assert "All match." in out
    # The first sample's autograd norm, computed here independently.
    X, W, Y = make_inputs(10, 4, 4, seed=0)
    expected = reference.per_sample_grad_norms(X, W, Y).norms[0].item()
    row = next(line for line in out.splitlines() if line.split()[:1] == ["0"])
    assert float(row.split()[4]) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("bias", ["row", "full"])
def test_with_a_bias_the_identity_adds_g(capsys, bias):
    status, out = run(capsys, "--bias", bias, "--json")
    doc = json.loads(out)
    assert status == 0 and doc["all_match"]
    X, W, Y, b = make_inputs(10, 4, 4, seed=0, bias=bias)
    expected = reference.per_sample_grad_norms(X, W, Y, bias=b).norms
    identity = torch.tensor(doc["norms"]["identity"], dtype=torch.float32)
    torch.testing.assert_close(identity, expected)


def test_a_wrong_norm_is_a_mismatch(capsys, monkeypatch):
    from relufrob.check import per_sample

    real = per_sample.per_sample_grad_norms

    def off_by_a_bit(*args, **kwargs):
        loss, norms = real(*args, **kwargs)
        return type(real(*args, **kwargs))(loss, norms * 1.01)

    monkeypatch.setattr(per_sample, "per_sample_grad_norms", off_by_a_bit)
    status, out = run(capsys)
    assert status == 1 and "norms relufrob vs autograd" in out and "MISMATCH" in out
