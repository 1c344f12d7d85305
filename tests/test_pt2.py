"""torch.export and AOTInductor: a module that calls relufrob exports, and its
AOT-compiled package gives what eager gives."""

import pytest
import torch

import relufrob
from relufrob.testing import make_inputs


class Fit(torch.nn.Module):
    """A linear layer's weights and bias trained with relufrob's loss."""

    def __init__(self, K, N):
        super().__init__()
        gen = torch.Generator().manual_seed(5)
        self.W = torch.nn.Parameter(torch.randn(K, N, generator=gen))
        self.b = torch.nn.Parameter(torch.randn(N, generator=gen))

    def forward(self, X, Y):
        loss = relufrob.loss(X, self.W, Y, bias=self.b, reduction="mean")
        dW = relufrob.grads(X, self.W, Y, bias=self.b, wrt=("W",)).dW
        return loss, dW


@pytest.mark.parametrize("op", [torch.ops.relufrob.grads.default, torch.ops.relufrob.loss.default])
def test_ops_are_tagged_pt2_compliant(op):
    assert torch.Tag.pt2_compliant_tag in op.tags


def _inputs(M=37):
    X, _, Y = make_inputs(M, 6, 5)
    return X, Y


def test_export_matches_eager():
    model = Fit(6, 5)
    dims = {"X": {0: torch.export.Dim("M")}, "Y": {0: torch.export.Dim("M")}}
    exported = torch.export.export(model, _inputs(), dynamic_shapes=dims)
    for M in (37, 80):
        X, Y = _inputs(M)
        for got, want in zip(exported.module()(X, Y), model(X, Y)):
            torch.testing.assert_close(got, want)


def test_aoti_package_matches_eager(tmp_path):
    model = Fit(6, 5)
    with torch.no_grad():
        exported = torch.export.export(model, _inputs())
        path = torch._inductor.aoti_compile_and_package(
            exported, package_path=str(tmp_path / "fit.pt2")
        )
        compiled = torch._inductor.aoti_load_package(path)
        X, Y = _inputs()
        for got, want in zip(compiled(X, Y), model(X, Y)):
            torch.testing.assert_close(got, want)
