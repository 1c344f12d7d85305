"""Issue #18: torch.func composes in every order. Every chain of up to two of
grad, vjp, jacrev and vmap over relufrob.loss, differentiating the shared W,
the bias, Y and the batched X, equals the same chain over the reference
expression, on each variant of the general form; so does plain autograd
outside one transform, vmap with W batched too, and vmap over an empty
batch. The chains are built in tests/func_compositions.py.

float64 throughout, compared with assert_close's defaults: both sides run
the same small sums, so nothing here needs a long-sum allowance.
"""

import pytest
import torch
from func_compositions import (
    ARGS,
    VARIANTS,
    batched_args,
    build,
    chain_id,
    chains,
    inputs,
    same_level_chains,
    wrt_choices,
)
from torch import func

import relufrob
from relufrob.testing import reference


def assert_chain_matches(chain, variant, over="inputs", batch=(3, 2)):
    args = inputs(chain, variant, over, batch)
    got = build(chain, "ours", variant, over)(*args)
    expected = build(chain, "ref", variant, over)(*args)
    # assert_close also fails a result of zeros where the reference's is not.
    torch.testing.assert_close(got, expected, msg=lambda m: f"{chain_id(chain)}: {m}")
    return got, expected


def cases(depths, keep=lambda chain: True, variants=VARIANTS):
    return [
        pytest.param(v, c, id=f"{v}-{chain_id(c)}")
        for v in variants
        for d in depths
        for c in chains(v, d)
        if keep(c)
    ]


def has_vmap(chain) -> bool:
    return any(kind == "vmap" for kind, _ in chain)


@pytest.mark.parametrize("variant,chain", cases((1, 2)))
def test_chain_matches_the_reference(variant, chain):
    assert_chain_matches(chain, variant)


def _autograd_cases():
    return [
        pytest.param(v, (("autograd", w), *c), id=f"{v}-autograd_{w}.{chain_id(c)}")
        for v in VARIANTS
        for c in chains(v, 1)
        for w in wrt_choices(v)
    ]


@pytest.mark.parametrize("variant,chain", _autograd_cases())
def test_plain_autograd_outside_a_transform(variant, chain):
    # torch.autograd.grad from outside, through one transform's result: the
    # issue's .backward() through vmap(relufrob.loss) dropped the graph.
    assert_chain_matches(chain, variant)


@pytest.mark.parametrize(
    "variant,chain",
    [pytest.param(v, c, id=f"{v}-{chain_id(c)}") for v in VARIANTS for c in same_level_chains(v)],
)
def test_second_order_within_one_level(variant, chain):
    # torch.autograd.grad(create_graph=True) inside torch.func.grad (a
    # gradient penalty in a functional training step): the level that took
    # the first gradient differentiates it again. The second derivative
    # came back as zeros.
    got, expected = assert_chain_matches(chain, variant)
    if VARIANTS[variant].get("activation", "relu") is None or chain[-1][1] in ("X", "W"):
        assert expected.abs().sum() > 0


@pytest.mark.parametrize("over", ["W", "all"])
@pytest.mark.parametrize(
    "variant,chain", cases((1, 2), keep=has_vmap, variants=("plain", "row-bias"))
)
def test_chain_with_batched_weights(variant, chain, over):
    # Each problem its own W (and, with "all", its own (N,) bias): the vmap
    # rule runs one fused call each instead of one stacked call.
    assert "W" in batched_args(variant, over)
    assert_chain_matches(chain, variant, over)


@pytest.mark.parametrize("batch", [(0, 2), (2, 0)], ids=["outer-empty", "inner-empty"])
@pytest.mark.parametrize("variant,chain", cases((1, 2), keep=has_vmap))
def test_chain_over_an_empty_batch(variant, chain, batch):
    got, _ = assert_chain_matches(chain, variant, batch=batch)
    if chain[0][0] == "vmap":
        assert got.shape[0] == batch[0]


def test_grad_of_a_vjp_whose_cotangent_is_made_inside():
    # Regression: the backward took its transform level from the cotangent.
    # ones_like(out) inside the outer grad is wrapped at the outer level, so
    # the outer derivative of the pullback came back as zeros.
    X, W, Y, _ = inputs((), "plain")

    def pullback_sum(loss):
        def f(w):
            out, pullback = func.vjp(lambda t: loss(X, t, Y), w)
            return pullback(torch.ones_like(out))[0].sum()

        return f

    got = func.grad(pullback_sum(relufrob.loss))(W)
    expected = func.grad(pullback_sum(lambda x, w, y: reference.loss(x, w, y)))(W)
    assert expected.abs().sum() > 0
    torch.testing.assert_close(got, expected)


def test_issue_examples():
    # The issue's reports, as written there.
    X, W, Y, _ = inputs((("vmap", None),), "plain")

    def ours(w):
        return func.vmap(lambda x, y: relufrob.loss(x, w, y))(X, Y).sum()

    def ref(w):
        return func.vmap(lambda x, y: reference.loss(x, w, y))(X, Y).sum()

    torch.testing.assert_close(func.grad(ours)(W), func.grad(ref)(W))
    torch.testing.assert_close(func.jacrev(ours)(W), func.jacrev(ref)(W))
    w = W.clone().requires_grad_(True)
    func.vmap(lambda x, y: relufrob.loss(x, w, y))(X, Y).sum().backward()
    torch.testing.assert_close(w.grad, func.grad(ref)(W))
    per_sample = func.vmap(func.grad(relufrob.loss, argnums=1), in_dims=(0, None, 0))
    assert per_sample(X[:0], W, Y[:0]).shape == (0, *W.shape)


def test_every_argument_is_differentiated_somewhere():
    # The matrix's own coverage: a typo in wrt_choices would quietly drop one.
    seen = {arg for v in VARIANTS for c in chains(v, 2) for _, arg in c if arg}
    assert seen == set(ARGS)
