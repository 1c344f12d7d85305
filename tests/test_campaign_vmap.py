"""Issue #18's hostile campaign under vmap: one or two nested levels, each
mapping any non-empty subset of the inputs (X, W, Y, bias: in_dims over X,
over W, over both, ...) at any position of their dimensions, over batches
of 0 to 3 problems, of relufrob.grads (any wrt), relufrob.loss, per-sample
grad(relufrob.loss), and grad of the summed vmapped loss. Every problem of
the batch is judged against the float64 reference on its own inputs.
"""

import itertools
import math

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
    expected_dtypes,
    judge_one,
    representable,
    term_scales,
    tolerance,
    truth,
)
from hypothesis import assume, given
from hypothesis import strategies as st
from torch import func

import relufrob

FNS = ("grads", "loss", "grad", "grad-of-vmap")


@st.composite
def batches(draw):
    p = draw(problems(defects=0.12, max_lead_dims=2))
    *args, options = make(p)
    present = [n for n, t in zip(NAMES, args) if t is not None]
    levels = []
    for _ in range(draw(st.integers(1, 2))):
        mapped = draw(st.lists(st.sampled_from(present), min_size=1, unique=True))
        levels.append((draw(st.sampled_from([0, 1, 2, 2, 3, 3])), tuple(mapped)))
    positions = {}  # (level, arg) -> the batch dim's position at that level
    for i, (_, mapped) in enumerate(levels):
        for n in mapped:
            inner = sum(n in m for _, m in levels[i + 1 :])
            logical = args[NAMES.index(n)].dim() + inner
            positions[i, n] = draw(st.integers(0, logical))
    fn = draw(st.sampled_from(FNS))
    chosen = draw(st.lists(st.sampled_from(present), unique=True))
    if fn in ("grad", "grad-of-vmap") and not chosen:
        fn = "loss"
    return p, args, options, levels, positions, fn, chosen


def _variant(name, t, gen, p):
    """Another problem's values for the input `name`: t's shape and dtype,
    drawn as campaign.make draws them."""
    if p.integer_valued or not (t.is_floating_point() or t.is_complex()):
        return torch.randint(-2, 3, t.shape, generator=gen).to(t.dtype)
    scale = 1.0 / math.sqrt(max(p.K, 1)) if name == "X" else 1.0
    return (torch.randn(t.shape, generator=gen) * scale).to(t.dtype)


def build(p, args, levels, positions):
    """(batched arguments, per-problem arguments by index tuple)."""
    gen = torch.Generator().manual_seed(p.seed + 1)
    sizes = [s for s, _ in levels]
    batched, bases = [], {}
    for n, t in zip(NAMES, args):
        own = [i for i, (_, m) in enumerate(levels) if n in m]
        if t is None or not own:
            batched.append(t)
            continue
        shape = tuple(sizes[i] for i in own)
        count = math.prod(shape)
        base = torch.stack([_variant(n, t, gen, p) for _ in range(count)]) if count else t[None][:0]
        base = base.reshape(*shape, *t.shape)
        bases[n] = (own, base)
        # Dims are (own levels, outermost first, *logical); each level's
        # dim goes to its position within what that level sees.
        for k in reversed(range(len(own))):
            base = base.movedim(k, k + positions[own[k], n])
        batched.append(base)

    def one(index):
        out = []
        for n, t in zip(NAMES, args):
            if n in bases:
                own, base = bases[n]
                out.append(base[tuple(index[i] for i in own)])
            else:
                out.append(t)
        return out

    return batched, one


def vmapped(fn, chosen, options, levels, positions):
    idx = [NAMES.index(n) for n in chosen]

    def call(x, w, y, b):
        if fn == "grads":
            wrt = tuple("b" if n == "bias" else n for n in chosen)
            out = relufrob.grads(x, w, y, bias=b, wrt=wrt, **options)
            return {f: v for f, v in out._asdict().items() if v is not None}
        if fn == "grad":
            grads, value = func.grad_and_value(
                lambda *a: relufrob.loss(a[0], a[1], a[2], bias=a[3], **options), argnums=tuple(idx)
            )(x, w, y, b)
            return {"loss": value, **{FIELDS[n]: g for n, g in zip(chosen, grads)}}
        return {"loss": relufrob.loss(x, w, y, bias=b, **options)}

    f = call
    for i in reversed(range(len(levels))):
        dims = tuple(positions.get((i, n)) for n in NAMES)
        f = func.vmap(f, in_dims=dims)
    if fn != "grad-of-vmap":
        return f
    return lambda *a: dict(
        zip(
            [FIELDS[n] for n in chosen],
            func.grad(lambda *a: f(*a)["loss"].sum(), argnums=tuple(idx))(*a),
        )
    )


@campaign_settings(400)
@given(case=batches())
def test_vmap(case):
    p, args, options, levels, positions, fn, chosen = case
    batched, one = build(p, args, levels, positions)
    run = vmapped(fn, chosen, options, levels, positions)
    sizes = [s for s, _ in levels]
    indices = list(itertools.product(*map(range, sizes)))
    if p.defect == "X-int" and "X" in chosen and fn in ("grad", "grad-of-vmap"):
        # torch refuses to differentiate an integer X before relufrob runs.
        with pytest.raises(RuntimeError, match="only Tensors of floating point dtype"):
            run(*batched)
        return
    if p.defect is not None:
        # The eager error of one problem, whatever the batch (empty too).
        first = one(indices[0]) if indices else args
        expected = eager_error(*first, options)
        assert_names_the_argument(expected, p)
        try:
            run(*batched)
        except (ValueError, TypeError) as e:
            assert type(e) is type(expected) and str(e) == str(expected)
        else:
            raise AssertionError(f"{p.defect}: no error under vmap")
        return
    dtypes = expected_dtypes(*args)
    shape_only = truth(*args, options)  # the logical shapes (the batch may be empty)
    assume(representable(shape_only, dtypes))
    got = run(*batched)
    if fn == "grad-of-vmap":
        judge_summed(got, p, args, options, levels, positions, one, indices, chosen, dtypes)
        return
    for name, g in got.items():
        assert g.shape == (*sizes, *getattr(shape_only, name).shape), name
    for index in indices:
        got_i = {name: g[index] for name, g in got.items()}
        assume(judge_one(got_i, one(index), p, options, dtypes, context=f"problem {index}: "))


def judge_summed(got, p, args, options, levels, positions, one, indices, chosen, dtypes):
    """grad of the summed losses: a mapped argument's gradient is its own
    problems' (summed over the levels that share it), a shared one's the sum
    over every problem. The allowance adds up each problem's."""
    sizes = [s for s, _ in levels]
    for n in chosen:
        field = FIELDS[n]
        own = [i for i, (_, m) in enumerate(levels) if n in m]
        g = got[field]
        assert g.dtype == dtypes[field], field
        # Undo the arrangement: own levels' dims to the front, outermost first.
        for k in range(len(own)):
            g = g.movedim(k + positions[own[k], n], k)
        groups = {}
        for index in indices:
            key = tuple(index[i] for i in own)
            problem = one(index)
            expected = truth(*problem, options)
            e = getattr(expected, field)
            terms = term_scales(*problem, options, expected)
            rtol, atol = tolerance(field, e, p.mkn, p.dtype, terms)
            total, allowed = groups.get(key, (0, 0.0))
            largest = e.abs().max().item() if e.numel() else 0.0
            groups[key] = (total + e, allowed + atol + rtol * largest)
        assert g.shape == (*[sizes[i] for i in own], *args[NAMES.index(n)].shape), field
        if not indices and not own:  # a shared input, no problems: nothing to sum
            assert torch.count_nonzero(g) == 0, field
        for key, (e, allowed) in groups.items():
            torch.testing.assert_close(
                g[key].to(torch.float64), e, rtol=0, atol=allowed, equal_nan=True
            )
