"""Issue #18's hostile campaign under torch.compile: relufrob.grads and
relufrob.loss (backward through the compiled graph) traced with dynamic
shapes over the whole space of tests/campaign.py, against the float64
reference; a defect must fail the trace with the eager message.

Few examples (each traces afresh: one compiled function per example, reset
before it, so no cache or recompile limit decides what runs); fullgraph so
that a graph break cannot quietly run eager instead. Inductor's on-disk
cache (tests/conftest.py) makes repeated structures cheap.
"""

import re

import pytest
import torch
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

import relufrob


@pytest.fixture
def fresh_dynamo():
    torch.compiler.reset()
    yield
    torch.compiler.reset()


def compiled_run(path, chosen, args, options):
    if path == "grads":
        wrt = tuple("b" if n == "bias" else n for n in chosen)

        def step(X, W, Y, b):
            return relufrob.grads(X, W, Y, bias=b, wrt=wrt, **options)

        out = torch.compile(step, fullgraph=True, dynamic=True)(*args)
        return {"loss": out.loss, **{FIELDS[n]: getattr(out, FIELDS[n]) for n in chosen}}

    def step(X, W, Y, b):
        return relufrob.loss(X, W, Y, bias=b, **options)

    leaves = [
        None if t is None else t.detach().requires_grad_(n in chosen and t.is_floating_point())
        for n, t in zip(NAMES, args)
    ]
    f = torch.compile(step, fullgraph=True, dynamic=True)(*leaves)
    if f.requires_grad:
        f.backward()
    return {"loss": f.detach(), **{FIELDS[n]: leaves[NAMES.index(n)].grad for n in chosen}}


@campaign_settings(12)
@given(
    p=problems(defects=0.2),
    path=st.sampled_from(["grads", "loss"]),
    chosen=st.sets(st.sampled_from(NAMES)),
)
def test_compiled(fresh_dynamo, p, path, chosen):
    torch.compiler.reset()
    *args, options = make(p)
    chosen = [n for n in NAMES if n in chosen and args[NAMES.index(n)] is not None]
    event(f"{path}, {'defect' if p.defect else 'valid'}")
    if p.defect is not None:
        expected = eager_error(*args, options)
        assert_names_the_argument(expected, p)
        # Dynamo re-raises the fake kernel's error inside its own; traced
        # with dynamic shapes, sizes may read as symbols (s27) there.
        with pytest.raises(Exception) as err:
            compiled_run(path, chosen, args, options)
        # Its report quotes the message in a repr (X\'s): compared without backslashes.
        sized = re.sub(r"\\?-?\d+", lambda _: r"[^,\[\]()]+", re.escape(str(expected)))
        seen = str(err.value).replace("\\", "")
        assert re.search(sized, seen), f"{str(expected)!r} not in {seen!r}"
        return
    expected = truth(*args, options)
    dtypes = expected_dtypes(*args)
    assume(representable(expected, dtypes))
    got = compiled_run(path, chosen, args, options)
    assert_matches(got, expected, p.mkn, p.dtype, dtypes, term_scales(*args, options, expected))
