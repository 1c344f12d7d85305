"""Issue #18's hostile campaign under torch.func's reverse transforms:
grad (with its value), jacrev and vjp of relufrob.loss with respect to any
non-empty subset of its inputs, over the whole space of tests/campaign.py,
against the float64 reference."""

import pytest
from campaign import (
    FIELDS,
    NAMES,
    assert_names_the_argument,
    campaign_settings,
    eager_error,
    make,
    problems,
)
from campaign_judge import (
    assert_matches,
    expected_dtypes,
    representable,
    term_scales,
    truth,
)
from hypothesis import assume, event, given
from hypothesis import strategies as st
from torch import func

import relufrob


def transformed(how, idx, args, options):
    """{field: result} of one reverse transform of the loss."""

    def f(*a):
        return relufrob.loss(a[0], a[1], a[2], bias=a[3], **options)

    if how == "grad":
        grads, value = func.grad_and_value(f, argnums=tuple(idx))(*args)
        return {"loss": value, **dict(zip(idx, grads))}
    if how == "jacrev":
        return dict(zip(idx, func.jacrev(f, argnums=tuple(idx))(*args)))

    def of_chosen(*chosen):
        full = list(args)
        for i, t in zip(idx, chosen):
            full[i] = t
        return f(*full)

    value, pullback = func.vjp(of_chosen, *(args[i] for i in idx))
    # A cotangent of 2, exact in every dtype: halving the result is exact too.
    grads = pullback(value.new_full((), 2.0))
    return {"loss": value, **{i: g / 2 for i, g in zip(idx, grads)}}


@campaign_settings(250)
@given(
    p=problems(),
    how=st.sampled_from(["grad", "jacrev", "vjp"]),
    chosen=st.lists(st.sampled_from(NAMES), unique=True),
)
def test_reverse_transforms(p, how, chosen):
    *args, options = make(p)
    # A defect's call differentiates W (a float tensor in every defect).
    names = (
        ["W"]
        if p.defect
        else [n for n in NAMES if n in chosen and args[NAMES.index(n)] is not None]
    )
    idx = [NAMES.index(n) for n in names or ["W"]]
    event(f"{how}, {'defect' if p.defect else 'valid'}")
    if p.defect == "X-complex" and how == "jacrev":
        # torch refuses it first, for every input, before relufrob runs.
        with pytest.raises(RuntimeError, match="jacrev: Expected all inputs to be real"):
            transformed(how, idx, args, options)
        return
    if p.defect is not None:
        expected = eager_error(*args, options)
        assert_names_the_argument(expected, p)
        try:
            transformed(how, idx, args, options)
        except (ValueError, TypeError) as e:
            assert type(e) is type(expected) and str(e) == str(expected)
        else:
            raise AssertionError(f"{p.defect}: no error under {how}")
        return
    expected = truth(*args, options)
    dtypes = expected_dtypes(*args)
    assume(representable(expected, dtypes))
    got = transformed(how, idx, args, options)
    got = {k if k == "loss" else FIELDS[NAMES[k]]: v for k, v in got.items()}
    assert_matches(got, expected, p.mkn, p.dtype, dtypes, term_scales(*args, options, expected))
