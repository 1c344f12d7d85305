"""The per-sample functions at the edges: empty dimensions, zero and NaN
gradients, bad arguments, inputs left alone, torch.compile and opcheck."""

import math

import pytest
import torch
from test_per_sample_parity import problem

import relufrob
from relufrob.testing import reference


@pytest.mark.parametrize(
    "shape,K,N", [((0,), 4, 3), ((5,), 0, 3), ((5,), 4, 0), ((3, 0), 4, 3), ((0, 2), 4, 3)], ids=str
)
@pytest.mark.parametrize("bias", [None, "row", "full"])
def test_empty_dimensions(shape, K, N, bias):
    X, W, Y, kw = problem(shape, K, N, bias=bias)
    got = relufrob.clipped_grads(X, W, Y, max_norm=1.0, **kw)
    ref = reference.clipped_grads(X, W, Y, max_norm=1.0, **kw)
    assert got.norms.shape == (shape[0],)
    torch.testing.assert_close(got.norms, ref.norms)
    torch.testing.assert_close(got.dW, ref.dW)
    torch.testing.assert_close(got.loss, ref.loss)
    if bias:
        torch.testing.assert_close(got.db, ref.db)


def test_a_zero_gradient_has_norm_zero_and_no_division_by_zero():
    X = torch.zeros(4, 3, dtype=torch.float64)  # Z = 0: the ReLU masks everything
    W = torch.randn(3, 2, dtype=torch.float64)
    Y = torch.randn(4, 2, dtype=torch.float64)
    got = relufrob.clipped_grads(X, W, Y, max_norm=1.0)
    assert torch.equal(got.norms, torch.zeros(4, dtype=torch.float64))
    assert torch.equal(got.dW, torch.zeros(3, 2, dtype=torch.float64))


def test_a_nan_sample_behaves_as_in_the_reference():
    X, W, Y, kw = problem((6,), 4, 3, bias="row")
    X[2, 1] = math.nan
    got = relufrob.clipped_grads(X, W, Y, max_norm=1.0, **kw)
    ref = reference.clipped_grads(X, W, Y, max_norm=1.0, **kw)
    # Sample 2's norm is NaN, its clip factor NaN (clamp lets NaN through),
    # and the sums NaN wherever it contributes: everywhere.
    assert got.norms[2].isnan() and not got.norms[[0, 1, 3, 4, 5]].isnan().any()
    torch.testing.assert_close(got.norms, ref.norms, equal_nan=True)
    torch.testing.assert_close(got.dW, ref.dW, equal_nan=True)
    torch.testing.assert_close(got.db, ref.db, equal_nan=True)
    norms = relufrob.per_sample_grad_norms(X, W, Y, **kw)
    torch.testing.assert_close(norms.norms, ref.norms, equal_nan=True)


@pytest.mark.parametrize(
    "kw,error,match",
    [
        ({"max_norm": 0.0}, ValueError, "max_norm must be a finite number > 0, got 0.0"),
        ({"max_norm": -1.0}, ValueError, "max_norm must be"),
        ({"max_norm": math.nan}, ValueError, "max_norm must be .* got nan"),
        ({"max_norm": math.inf}, ValueError, "max_norm must be .* got inf"),
        ({"max_norm": "1"}, TypeError, "max_norm must be a real number, got str"),
        ({"max_norm": True}, TypeError, "max_norm must be a real number, got bool"),
        ({"max_norm": 1.0, "noise_multiplier": -0.1}, ValueError, "noise_multiplier must be"),
        ({"max_norm": 1.0, "noise_multiplier": math.inf}, ValueError, "noise_multiplier must be"),
        ({"max_norm": 1.0, "generator": 3}, TypeError, "generator must be a torch.Generator"),
        ({"max_norm": 1.0, "route": "fast"}, ValueError, "route must be 'auto', 'ghost' or"),
    ],
    ids=str,
)
def test_bad_arguments_name_themselves(kw, error, match):
    X, W, Y, _ = problem((4,), 3, 2)
    with pytest.raises(error, match=match):
        relufrob.clipped_grads(X, W, Y, **kw)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device for the generator")
def test_a_generator_on_another_device():
    X, W, Y, _ = problem((4,), 3, 2)
    with pytest.raises(ValueError, match="generator must be on X's device"):
        relufrob.clipped_grads(X, W, Y, max_norm=1.0, generator=torch.Generator("cuda"))


def test_x_needs_a_batch_dimension():
    W = torch.randn(3, 2)
    with pytest.raises(ValueError, match=r"X must have shape \(B, \*, K\).*got shape \[3\]"):
        relufrob.per_sample_grad_norms(torch.randn(3), W, torch.randn(2))


def test_shape_errors_are_relufrobs():
    X, W, Y, _ = problem((4,), 3, 2)
    with pytest.raises(ValueError, match="relufrob: W must have shape"):
        relufrob.per_sample_grad_norms(X, W.T, Y)


def test_inputs_unmodified_and_outputs_not_aliased():
    X, W, Y, kw = problem((5, 2), 4, 3, bias="full")
    before = [t.clone() for t in (X, W, Y, kw["bias"])]
    got = relufrob.clipped_grads(X, W, Y, max_norm=0.3, **kw)
    for t, b in zip((X, W, Y, kw["bias"]), before):
        assert torch.equal(t, b)
    inputs = {t.data_ptr() for t in (X, W, Y, kw["bias"])}
    assert not inputs & {t.data_ptr() for t in (got.dW, got.db, got.norms)}


def test_results_carry_no_graph_and_grad_of_them_is_refused():
    X, W, Y, _ = problem((5,), 4, 3)
    W = W.requires_grad_()
    assert relufrob.clipped_grads(X, W, Y, max_norm=1.0).dW.grad_fn is None
    with pytest.raises(RuntimeError, match="per_sample_grad_norms: W is being differentiated"):
        torch.func.grad(lambda w: relufrob.per_sample_grad_norms(X, w, Y).loss)(W.detach())


def test_opcheck():
    X, W, Y, kw = problem((6, 2), 4, 3, dtype=torch.float32, bias="row")
    op = torch.ops.relufrob.per_sample_grads.default
    for extra in ({"max_norm": 1.0}, {"max_norm": None, "need_dW": False, "need_db": False}):
        torch.library.opcheck(op, (X, W, Y, kw["bias"]), {"route": "ghost", **extra})


def test_compiled_matches_eager():
    X, W, Y, kw = problem((8, 3), 4, 3, dtype=torch.float32, bias="row")
    fn = torch.compile(
        lambda x, w, y, b: relufrob.clipped_grads(x, w, y, max_norm=0.5, bias=b), fullgraph=True
    )
    got = fn(X, W, Y, kw["bias"])
    eager = relufrob.clipped_grads(X, W, Y, max_norm=0.5, **kw)
    for a, e in zip(got, eager):
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bias", [None, "row"])
def test_direct_binding_equals_the_op(dtype, bias):
    """The functions' direct binding (relufrob._C.per_sample_fast) and the
    op through torch.ops give the same bits; float16/bfloat16 take the
    widening path, which the binding declines."""
    X, W, Y, kw = problem((7, 3), 5, 4, dtype=dtype, bias=bias)
    fast = relufrob._C.per_sample_fast(
        X, W, Y, kw["bias"], "relu", 1.0, "auto", True, bias is not None
    )
    if dtype in (torch.float16, torch.bfloat16):
        assert fast is None
        return
    op = torch.ops.relufrob.per_sample_grads(
        X, W, Y, kw["bias"], max_norm=1.0, need_db=bias is not None
    )
    got = relufrob.clipped_grads(X, W, Y, max_norm=1.0, **kw)
    assert type(fast) is type(got)
    assert fast.db is None if bias is None else torch.equal(fast.db, op[3])
    for a, b in ((fast.loss, op[0]), (fast.norms, op[1]), (fast.dW, op[2])):
        assert torch.equal(a, b)
    assert torch.equal(got.dW, op[2]) and torch.equal(got.norms, op[1])
    norms = relufrob._C.per_sample_fast(X, W, Y, kw["bias"], "relu", None, "auto", False, False)
    op = torch.ops.relufrob.per_sample_grads(X, W, Y, kw["bias"])
    assert type(norms) is relufrob.PerSampleNorms
    assert torch.equal(norms.loss, op[0]) and torch.equal(norms.norms, op[1])
