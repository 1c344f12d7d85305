"""The calls of `make soak` (tests/soak.py): random problems from the hostile
campaign's space (tests/campaign.py) over every path, each returning a judge
that holds it against the float64 reference (tests/campaign_judge.py).
"""

import math
import random
from dataclasses import replace

import torch
from campaign import (
    DEFECTS,
    DTYPES,
    F32,
    F64,
    FIELDS,
    LAYOUTS,
    LOW,
    NAMES,
    Problem,
    assert_names_the_argument,
    eager_error,
    make,
)
from campaign_judge import (
    assert_matches,
    expected_dtypes,
    judge_one,
    largest_error,
    representable,
    term_scales,
    tolerance,
    truth,
)
from torch import func

import relufrob
from relufrob.testing import parity_tolerance, reference

PER_SAMPLE = hasattr(relufrob, "per_sample_grad_norms") and hasattr(relufrob, "clipped_grads")
PATHS = [
    "grads",
    "loss-backward",
    "autocast-grads",
    "autocast-loss-backward",
    "vmap-grads",
    "vmap-loss",
    "vmap-per-sample-grad",
    "func-grad",
] + (["per-sample-norms", "clipped-grads"] if PER_SAMPLE else [])
DEFECT_RATE = 1 / 30


def random_shape(rng: random.Random):
    """(lead, K, N): from one row to a few hundred, the direct kernel's
    sizes and the blocked one's (K or N > 256)."""
    kind = rng.choice(["small", "small", "medium", "large", "blocked"])
    if kind == "small":
        return (
            tuple(rng.randint(0, 6) for _ in range(rng.randint(0, 2))),
            rng.randint(0, 8),
            rng.randint(0, 8),
        )
    if kind == "medium":
        return (rng.randint(8, 96),), rng.randint(1, 48), rng.randint(1, 48)
    if kind == "large":
        return (rng.randint(100, 512),), rng.randint(16, 128), rng.randint(16, 128)
    big, small = rng.randint(257, 320), rng.randint(1, 16)
    return (
        ((rng.randint(1, 64),), big, small)
        if rng.random() < 0.5
        else ((rng.randint(1, 64),), small, big)
    )


def random_problem(rng: random.Random, shapes, *, batchable=False) -> Problem:
    """A campaign Problem of one of `shapes` (of its own shape without a
    pool), everything else drawn afresh."""
    lead, K, N = rng.choice(shapes) if shapes else random_shape(rng)
    if batchable and not lead:
        lead = (2,)
    dtype = rng.choice(DTYPES)
    mixed = dtype in LOW and rng.random() < 0.5
    return Problem(
        lead=lead,
        K=K,
        N=N,
        bias=rng.choice([None, "row", "full"]),
        activation=rng.choice(["relu", "relu", None]),
        target=rng.random() < 0.7,
        reduction=rng.choice(["sum", "mean"]),
        dtype=dtype,
        target_dtype=F32 if mixed else dtype,
        layouts=tuple(rng.choice(LAYOUTS) for _ in NAMES),
        integer_valued=rng.random() < 0.1 and math.prod(lead) * K * N < 4096,
        seed=rng.randrange(2**31),
    )


def with_defect(rng, p: Problem) -> Problem:
    applicable = [
        d
        for d in DEFECTS
        if not (d.startswith("Y-") and not p.target) and not (d.startswith("bias-") and not p.bias)
    ]
    return replace(p, defect=rng.choice(applicable))


# --------------------------------------------------------------------------
# The paths. Each returns a judge: a callable that raises AssertionError on a
# mismatch (run for a sample of the calls only).
# --------------------------------------------------------------------------


def _chosen(rng, args):
    return [n for n, t in zip(NAMES, args) if t is not None and rng.random() < 0.6]


def _grads_or_loss(path, rng, p, args, options):
    chosen = _chosen(rng, args)
    autocast = path.startswith("autocast")
    ac = rng.choice(LOW)
    X, W, Y, b = args
    effective = args
    if autocast and X.dtype != F64:
        effective = (X.to(ac), W.to(ac), Y, b)
    with torch.autocast("cpu", dtype=ac, enabled=autocast):
        if path.endswith("grads"):
            wrt = tuple("b" if n == "bias" else n for n in chosen)
            out = relufrob.grads(X, W, Y, bias=b, wrt=wrt, **options)
            got = {"loss": out.loss, **{FIELDS[n]: getattr(out, FIELDS[n]) for n in chosen}}
        else:
            leaves = [
                None
                if t is None
                else t.detach().requires_grad_(n in chosen and t.is_floating_point())
                for n, t in zip(NAMES, args)
            ]
            f = relufrob.loss(leaves[0], leaves[1], leaves[2], bias=leaves[3], **options)
            if f.requires_grad:
                f.backward()
            got = {"loss": f.detach(), **{FIELDS[n]: leaves[NAMES.index(n)].grad for n in chosen}}

    def judge():
        expected = truth(*effective, options)
        if autocast:
            with torch.autocast("cpu", dtype=ac):
                ref = reference.autograd_grads(
                    X, W, Y, options["reduction"], bias=b, activation=options["activation"]
                )
            dtypes = {f: None if t is None else t.dtype for f, t in zip(ref._fields, ref)}
        else:
            dtypes = expected_dtypes(*args)
        if representable(expected, dtypes):
            terms = term_scales(*effective, options, expected)
            assert_matches(got, expected, p.mkn, effective[0].dtype, dtypes, terms)

    return judge


def _batch(rng, t, B):
    # Powers of two keep an integer-valued problem's products exact. A
    # random factor made x*w - x*w cancel, under FMA, to the rounding error
    # of x*w instead of 0: a ReLU tie then falls either side, a whole term
    # of G that the float64 judge cannot attribute (docs/math.md, Precision).
    return (
        torch.stack([t * rng.choice([0.5, 1.0, 2.0, 4.0]) for _ in range(B)]) if B else t[None][:0]
    )


def _vmap(path, rng, p, args, options):
    B = rng.choice([0, 1, 2, 3, 4])
    over = rng.choice(["inputs", "W", "both"])
    mapped = {"inputs": ("X", "Y", "bias"), "W": ("W",), "both": NAMES}[over]
    mapped = [n for n, t in zip(NAMES, args) if t is not None and n in mapped]
    if not mapped:
        mapped = ["X"]
    batched = [_batch(rng, t, B) if n in mapped else t for n, t in zip(NAMES, args)]
    dims = tuple(0 if n in mapped else None for n in NAMES)

    def call(x, w, y, b):
        if path == "vmap-grads":
            out = relufrob.grads(x, w, y, bias=b, **options)
            return {f: v for f, v in out._asdict().items() if v is not None}
        if path == "vmap-loss":
            return {"loss": relufrob.loss(x, w, y, bias=b, **options)}
        g, value = func.grad_and_value(lambda w: relufrob.loss(x, w, y, bias=b, **options))(w)
        return {"loss": value, "dW": g}

    got = func.vmap(call, in_dims=dims)(*batched)

    def judge():
        dtypes = expected_dtypes(*args)
        for i in range(B):
            problem = [t[i] if n in mapped else t for n, t in zip(NAMES, batched)]
            got_i = {k: v[i] for k, v in got.items()}
            judge_one(got_i, problem, p, options, dtypes, context=f"[{i}] ")

    return judge


def _func_grad(path, rng, p, args, options):
    idx = [NAMES.index(n) for n in _chosen(rng, args)] or [1]
    grads, value = func.grad_and_value(
        lambda *a: relufrob.loss(a[0], a[1], a[2], bias=a[3], **options), argnums=tuple(idx)
    )(*args)
    got = {"loss": value, **{FIELDS[NAMES[i]]: g for i, g in zip(idx, grads)}}

    def judge():
        expected = truth(*args, options)
        dtypes = expected_dtypes(*args)
        if representable(expected, dtypes):
            terms = term_scales(*args, options, expected)
            assert_matches(got, expected, p.mkn, p.dtype, dtypes, terms)

    return judge


def _per_sample(path, rng, p, args, options):
    X, W, Y, b = args
    kw = {"bias": b, "activation": options["activation"]}
    max_norm = rng.choice([0.1, 1.0, 10.0])
    if path == "per-sample-norms":
        got = relufrob.per_sample_grad_norms(X, W, Y, **kw)._asdict()
    else:
        got = relufrob.clipped_grads(X, W, Y, max_norm=max_norm, **kw)._asdict()

    terms_options = {**options, "reduction": "sum"}

    def reference_at(dtype_of):
        a = [None if t is None else dtype_of(t) for t in args]
        kw_a = {"bias": a[3], "activation": options["activation"]}
        if path == "per-sample-norms":
            return reference.per_sample_grad_norms(a[0], a[1], a[2], **kw_a)._asdict()
        return reference.clipped_grads(a[0], a[1], a[2], max_norm=max_norm, **kw_a)._asdict()

    def judge():
        ref = reference_at(lambda t: t.to(F64))
        # Plain PyTorch in float32, on the same float32 inputs: how far
        # that precision alone lands from the float64 truth. Constant,
        # expanded inputs make every sample's rounding the same, so errors
        # add over the samples instead of cancelling, and a clip factor
        # C / norm_b carries its norm's relative error into every entry
        # (measured: float32 (61, 45, 27), expanded X and W, db 4.8e-6
        # relative off, relufrob and the float32 reference alike). Twice
        # that error is allowed on top of the parity rule; a wrong clip
        # factor or a missed sample is still far outside it.
        ref_same = reference_at(lambda t: t) if X.dtype == F32 else None
        mkn = (math.prod(X.shape[:-1]), X.shape[-1], W.shape[1])  # as tests/test_per_sample_*
        for name, g in got.items():
            e = ref[name]
            if e is None or g is None:
                assert e is None and g is None, name
                continue
            if g.dtype in LOW and e.numel() and e.abs().max() > 0.25 * torch.finfo(g.dtype).max:
                continue  # beyond the dtype's range: inf there is right
            if name == "loss":
                # Against float64 the loss's error through Z need not cancel
                # across its squares (a constant, expanded X and W: every
                # entry of Z carries the same rounding), so the campaign
                # judge's allowance for the size of its terms.
                rtol, atol = tolerance(name, e, mkn, X.dtype, term_scales(*args, terms_options))
            else:
                rtol, atol = parity_tolerance(name, e, mkn, dtype=X.dtype)
            if ref_same is not None and e.numel():
                atol = max(atol, 2 * largest_error(ref_same[name], e))
            torch.testing.assert_close(
                g.to(F64),
                e,
                rtol=rtol,
                atol=atol,
                equal_nan=True,
                msg=lambda m, n=name: f"{n} (max_norm={max_norm}): {m}",
            )

    return judge


def run_call(path, rng, shapes):
    """One random call of `path`: (outcome, judge or None)."""
    batchable = path.startswith(("vmap", "per-sample", "clipped"))
    p = random_problem(rng, shapes, batchable=batchable)
    if path in ("per-sample-norms", "clipped-grads"):
        p = replace(p, reduction="sum", lead=p.lead or (1,))
    defect = path in ("grads", "loss-backward") and rng.random() < DEFECT_RATE * len(PATHS) / 2
    if defect:
        p = with_defect(rng, p)
    *args, options = make(p)
    if defect:
        expected = eager_error(*args, options)
        assert_names_the_argument(expected, p)
        try:
            _grads_or_loss(path, rng, p, args, options)
        except (ValueError, TypeError) as e:
            assert str(e) == str(expected), f"{e} != {expected}"
            return "refused", None
        raise AssertionError(f"{p.defect}: no error")
    runner = {
        "vmap-grads": _vmap,
        "vmap-loss": _vmap,
        "vmap-per-sample-grad": _vmap,
        "func-grad": _func_grad,
        "per-sample-norms": _per_sample,
        "clipped-grads": _per_sample,
    }.get(path, _grads_or_loss)
    judge = runner(path, rng, p, args, options)
    if judge is None:
        return "ok", None

    def judge_naming_the_problem():
        # make(p) rebuilds the inputs bit for bit: the message is a replay.
        try:
            judge()
        except AssertionError as e:
            raise AssertionError(f"{p}: {e}") from None

    return "ok", judge_naming_the_problem
