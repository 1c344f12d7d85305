"""Issue #18's hostile campaign, eager paths: relufrob.grads (any wrt),
relufrob.loss's backward (any inputs requiring grad) and both under
torch.autocast, over the whole space of tests/campaign.py, against the
float64 reference. Every case is a match or relufrob's error naming the
argument."""

import pytest
import torch
from campaign import (
    BF16,
    F32,
    F64,
    FIELDS,
    LOW,
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
from hypothesis import assume, given
from hypothesis import strategies as st

import relufrob
from relufrob.testing import reference


def present(X, W, Y, b):
    return [n for n, t in zip(NAMES, (X, W, Y, b)) if t is not None]


def run(path, chosen, X, W, Y, b, options):
    """{field: result} of one path; `chosen` names the inputs whose
    gradients are asked for (wrt, or requires_grad)."""
    if path == "grads":
        wrt = tuple("b" if n == "bias" else n for n in chosen)
        out = relufrob.grads(X, W, Y, bias=b, wrt=wrt, **options)
        skipped = [FIELDS[n] for n in NAMES if n not in chosen]
        assert all(getattr(out, f, None) is None for f in skipped), "an unasked gradient"
        return {"loss": out.loss, **{FIELDS[n]: getattr(out, FIELDS[n]) for n in chosen}}
    args = dict(zip(NAMES, (X, W, Y, b)))
    # (An integer X, a defect, cannot require grad: it is passed as it is.)
    leaves = {
        n: args[n].detach().requires_grad_(n in chosen and args[n].is_floating_point())
        for n in present(X, W, Y, b)
    }
    f = relufrob.loss(leaves["X"], leaves["W"], leaves.get("Y"), bias=leaves.get("bias"), **options)
    assert f.dim() == 0
    if f.requires_grad:
        f.backward()
    return {"loss": f.detach(), **{FIELDS[n]: leaves[n].grad for n in chosen}}


def judge(p, path, chosen, args, options, compute_dtype=None, effective=None):
    """Run the path on `args` and judge it against the reference on
    `effective` (the arguments after autocast's casts; `args` without one).
    A defect must raise relufrob.grads' eager error on `args`; under autocast
    (`effective` given), which casts before checking, an error naming the
    argument."""
    if p.defect is not None:
        expected = eager_error(*args, options)
        assert_names_the_argument(expected, p)
        with pytest.raises((ValueError, TypeError)) as got:
            run(path, chosen, *args, options)
        if effective is None:
            assert type(got.value) is type(expected) and str(got.value) == str(expected)
        assert_names_the_argument(got.value, p)
        return
    effective = effective or args
    X, W, Y, b = effective
    expected = truth(X, W, Y, b, options)
    if effective is args:
        dtypes = expected_dtypes(*args)
    else:
        # Autocast's dtypes are the reference's under the same autocast (its
        # promotions: a bfloat16 XW plus a float16 bias is float32).
        ref = reference.autograd_grads(
            *args[:3], options["reduction"], bias=args[3], activation=options["activation"]
        )
        dtypes = {f: None if t is None else t.dtype for f, t in zip(ref._fields, ref)}
    assume(representable(expected, dtypes))
    got = run(path, chosen, *args, options)
    terms = term_scales(X, W, Y, b, options, expected)
    assert_matches(got, expected, p.mkn, compute_dtype or X.dtype, dtypes, terms)


@campaign_settings(600)
@given(
    p=problems(),
    path=st.sampled_from(["grads", "loss"]),
    chosen=st.sets(st.sampled_from(NAMES)),
)
def test_plain_calls(p, path, chosen):
    *args, options = make(p)
    chosen = [n for n in NAMES if n in chosen and args[NAMES.index(n)] is not None]
    judge(p, path, chosen, args, options)


@campaign_settings(200)
@given(
    # Not the dtype defects: the autocast kernel casts before it checks, and
    # its messages then name a dtype, or an argument, the caller did not
    # pass (test_autocast_dtype_errors_name_what_was_passed, for C++).
    p=problems(exclude=("W-dtype", "Y-dtype", "bias-dtype")),
    path=st.sampled_from(["grads", "loss"]),
    autocast_dtype=st.sampled_from(LOW),
    chosen=st.sets(st.sampled_from(NAMES)),
)
def test_under_autocast(p, path, autocast_dtype, chosen):
    # Autocast runs the GEMMs in its dtype: X and W are cast to it unless
    # float64 (autocast leaves float64 alone); Y and bias keep theirs.
    *args, options = make(p)
    X, W, Y, b = args
    effective = args
    if X.dtype != F64 and X.dtype.is_floating_point and W.dtype != F64:
        effective = (X.to(autocast_dtype), W.to(autocast_dtype), Y, b)
    chosen = [n for n in NAMES if n in chosen and args[NAMES.index(n)] is not None]
    if p.defect is not None:
        with torch.autocast("cpu", dtype=autocast_dtype):
            judge(p, path, chosen, args, options, effective=effective)
        return
    with torch.autocast("cpu", dtype=autocast_dtype):
        judge(p, path, chosen, args, options, effective[0].dtype, effective)


AUTOCAST_DTYPE_ERRORS = {
    # A float32 W beside a float64 X: "W must ... got torch.bfloat16".
    "W": ((4, 3, F64), (3, 2, F32), None, None, "got torch.float32"),
    # A float64 bias beside bfloat16 X and Y under float16 autocast: the
    # error is about Y ("Y must ... got torch.bfloat16"), which is valid.
    "bias": ((4, 3, BF16), (3, 2, BF16), (4, 2, BF16), (2, F64), "relufrob: bias must"),
}


@pytest.mark.xfail(
    strict=True,
    reason="needs C++: the autocast kernel casts X and W to the autocast dtype before "
    "the dtype checks, whose messages then report the cast dtypes",
)
@pytest.mark.parametrize("arg", list(AUTOCAST_DTYPE_ERRORS))
def test_autocast_dtype_errors_name_what_was_passed(arg):
    *shapes, wanted = AUTOCAST_DTYPE_ERRORS[arg]
    X, W, Y, b = (None if s is None else torch.zeros(s[:-1], dtype=s[-1]) for s in shapes)
    autocast_dtype = torch.float16 if arg == "bias" else torch.bfloat16
    with torch.autocast("cpu", dtype=autocast_dtype), pytest.raises(TypeError) as err:
        relufrob.grads(X, W, Y, bias=b)
    assert wanted in str(err.value)
