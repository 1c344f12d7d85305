"""GPU-only behaviour: streams, CUDA graphs, device indices. Skipped without a GPU."""

import pytest
import torch

import relufrob
from relufrob.testing import make_inputs, reference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")


def inputs(device, M=257, K=33, N=65, seed=0):
    return make_inputs(M, K, N, device=device, seed=seed)


def assert_same(got, expected):
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)


def test_runs_on_a_non_default_stream():
    X, W, Y = inputs("cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        out = relufrob.grads(X, W, Y)
        # A burst of work queued behind it on the same stream must not race it.
        for _ in range(3):
            out = relufrob.grads(X, W, Y)
    torch.cuda.current_stream().wait_stream(stream)
    assert_same(out, reference.autograd_grads(X, W, Y))


def test_cuda_graph_capture_and_replay():
    X, W, Y = inputs("cuda")
    static = [t.clone() for t in (X, W, Y)]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        relufrob.grads(*static)  # warm-up outside capture (cuBLAS handles, workspaces)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = relufrob.grads(*static)
    for seed in (1, 2):
        for dst, src in zip(static, inputs("cuda", seed=seed)):
            dst.copy_(src)
        graph.replay()
        torch.cuda.synchronize()
        assert_same(out, reference.autograd_grads(*static))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs a second GPU")
def test_second_device_index():
    X, W, Y = inputs("cuda:1")
    out = relufrob.grads(X, W, Y)
    assert all(t.device == torch.device("cuda:1") for t in out)
    assert_same(out, reference.autograd_grads(X, W, Y))


@pytest.mark.parametrize("moved", ["W", "Y"])
def test_mixed_devices_rejected(moved):
    X, W, Y = inputs("cuda")
    args = {"X": X, "W": W.cpu() if moved == "W" else W, "Y": Y.cpu() if moved == "Y" else Y}
    with pytest.raises(ValueError, match=f"{moved} must be on the same device as X"):
        relufrob.grads(**args)


def test_cpu_x_with_cuda_weights_rejected():
    X, W, Y = inputs("cuda")
    with pytest.raises(ValueError, match="must be on the same device as X"):
        relufrob.grads(X.cpu(), W, Y.cpu())


def test_loss_backward_on_cuda():
    X, W, Y = inputs("cuda")
    W.requires_grad_(True)
    relufrob.loss(X, W, Y, reduction="mean").backward()
    torch.testing.assert_close(W.grad, reference.autograd_grads(X, W, Y, "mean").dW)


def test_deterministic_loss_on_cuda():
    X, W, Y = inputs("cuda", M=4099, K=64, N=300)
    first = relufrob.grads(X, W, Y, wrt=())
    for _ in range(3):
        assert torch.equal(relufrob.grads(X, W, Y, wrt=()).loss, first.loss)


@pytest.mark.parametrize("bias", [None, "row", "full"])
@pytest.mark.parametrize("activation", ["relu", None])
@pytest.mark.parametrize("target", [True, False])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_general_form_on_cuda(bias, activation, target, reduction):
    X, W, Y = inputs("cuda")
    b = {None: None, "row": torch.randn(65), "full": torch.randn(257, 65)}[bias]
    b = None if b is None else b.cuda()
    Y = Y if target else None
    got = relufrob.grads(X, W, Y, bias=b, activation=activation, reduction=reduction)
    expected = reference.autograd_grads(X, W, Y, reduction, bias=b, activation=activation)
    assert type(got) is type(expected)
    for name in expected._fields:
        e = getattr(expected, name)
        if e is None:
            assert getattr(got, name) is None
        else:
            torch.testing.assert_close(getattr(got, name), e, msg=name)


def test_row_bias_gradient_deterministic_on_cuda():
    X, W, Y = inputs("cuda", M=70001, K=16, N=33)
    b = torch.randn(33, device="cuda")
    first = relufrob.grads(X, W, Y, bias=b, wrt=("b",)).db
    for _ in range(3):
        assert torch.equal(relufrob.grads(X, W, Y, bias=b, wrt=("b",)).db, first)


def test_general_loss_backward_on_cuda():
    X, W, Y = inputs("cuda")
    b = torch.randn(65, device="cuda", requires_grad=True)
    W.requires_grad_(True)
    relufrob.loss(X, W, None, bias=b, activation=None).backward()
    ref = reference.autograd_grads(X, W, None, bias=b, activation=None)
    torch.testing.assert_close(W.grad, ref.dW)
    torch.testing.assert_close(b.grad, ref.db)
