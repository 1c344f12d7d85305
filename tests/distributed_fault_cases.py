"""Cases of tests/test_distributed.py on agreement and coordinated failure.

Every argument that decides the summed loss is compared across ranks, and
a failure on ONE rank ends the call on every rank at once: the failing rank
joins the call's next collective with its flag up, so no rank waits for the
process group's timeout. Failures are injected on the last rank only, at
each stage of a call, by replacing a function of relufrob.distributed
inside that rank's process (undone when the case ends). Each case also
records how long every rank took to end, which the case bounds by a few
seconds: the group's timeout in these ranks is 60 s, so a call that waited
for a peer would take a minute.
"""

import contextlib
import time

import torch
from distributed_cases import DIRECT, case, problem, raises, run_sharded_grads

import relufrob.distributed as rd
from relufrob.distributed import _agreement, _compute

# Far under the group's 60 s timeout, far over a coordinated failure's time.
ENDS_WITHIN_S = 10.0


def _is_last(ctx) -> bool:
    return ctx.rank == ctx.world - 1


@contextlib.contextmanager
def _replaced(module, name, replacement, when: bool):
    """module.name = replacement inside the block, where `when` is true."""
    original = getattr(module, name)
    if when:
        setattr(module, name, replacement)
    try:
        yield
    finally:
        setattr(module, name, original)


def _injected(kind, text):
    def fail(*args, **kwargs):
        raise kind(text)

    return fail


def _ends_coordinated(ctx, call, *, kind_name: str, text: str, injected: type) -> None:
    """call() raises, on every rank, a DistributedCallError naming the last
    rank and the injected error, within ENDS_WITHIN_S; on the last rank the
    injected error is its cause."""
    last = ctx.world - 1
    start = time.monotonic()
    try:
        call()
    except rd.DistributedCallError as e:
        elapsed = time.monotonic() - start
        message = str(e)
        for needle in (f"rank {last} failed", kind_name, text):
            assert needle in message, f"{message!r} lacks {needle!r}"
        assert e.ranks == (last,), e.ranks
        if _is_last(ctx):
            assert isinstance(e.__cause__, injected), repr(e.__cause__)
        else:
            assert e.__cause__ is None, repr(e.__cause__)
        assert elapsed < ENDS_WITHIN_S, f"ended after {elapsed:.1f} s"
        ctx.timings.setdefault(ctx.case, []).append(elapsed)
        return
    raise AssertionError("expected DistributedCallError, nothing raised")


@case
def agreement_every_argument(ctx):
    """Each argument that decides the summed result, different on the last
    rank only: a ValueError naming it on every rank, before any all-reduce
    (a differing activation used to return a mix of two losses)."""
    X, W, Y, b = problem(*DIRECT, exact=True, bias="row")
    last = _is_last(ctx)
    calls = {
        "activation": lambda: rd.grads(X, W, Y, activation=None if last else "relu"),
        "reduction": lambda: rd.grads(X, W, Y, reduction="mean" if last else "sum"),
        "wrt": lambda: rd.grads(X, W, Y, wrt=("W",) if last else ("W", "X")),
        "X's dtype": lambda: rd.grads(X.float() if last else X, W.float() if last else W, None),
        "bias's kind": lambda: rd.grads(X, W, Y, bias=b if last else None),
        "Y (given or None)": lambda: rd.grads(X, W, None if last else Y),
        "requires_grad": lambda: rd.loss(X, W.clone().requires_grad_(not last), Y),
    }
    for needle, call in calls.items():
        raises(ValueError, needle, "same on every rank", fn=call)
    for mode in ("rows", "cols"):
        raises(
            ValueError,
            "activation",
            fn=lambda mode=mode: rd.loss(
                X, W, Y, parallel=mode, activation=None if last else "relu"
            ),
        )


@case
def agreement_autocast_state(ctx):
    """torch.autocast on some ranks only (or in another dtype) decides the
    GEMMs' precision: a ValueError naming the autocast state on every rank."""
    X, W, Y, _ = problem(*DIRECT, exact=False)
    dtypes = {"off": None, "bf16": torch.bfloat16, "f16": torch.float16}
    for here, there in (("bf16", "off"), ("f16", "bf16")):
        dtype = dtypes[here] if _is_last(ctx) else dtypes[there]
        guard = torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext()
        with guard:
            raises(ValueError, "autocast state", "same on every rank", fn=lambda: rd.grads(X, W, Y))
    # The same autocast on every rank is agreed.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = rd.grads(X, W, Y)
    assert torch.isfinite(got.loss)


@case
def agreement_meta_tensor(ctx):
    """A meta X on one rank: a ValueError naming X there (it used to be
    "could not parse dispatch key: META"), one naming that rank elsewhere."""
    X, W, Y, _ = problem(*DIRECT, exact=True)
    last = ctx.world - 1
    if _is_last(ctx):
        Xr, Wr, Yr = X.to("meta"), W.to("meta"), Y.to("meta")
        raises(ValueError, "X is on meta", fn=lambda: rd.grads(Xr, Wr, Yr))
    else:
        raises(ValueError, f"rank {last}", "invalid X", fn=lambda: rd.grads(X, W, Y))


@case
def fault_before_the_agreement(ctx):
    """The last rank's own checks raise a RuntimeError (not an argument
    error): every rank raises DistributedCallError at the agreement."""
    X, W, Y, _ = problem(*DIRECT, exact=True)
    fail = _injected(RuntimeError, "injected before the agreement")
    with _replaced(_agreement, "check_args", fail, _is_last(ctx)):
        for api in (rd.grads, rd.loss):
            _ends_coordinated(
                ctx,
                lambda api=api: api(X, W, Y),
                kind_name="RuntimeError",
                text="injected before the agreement",
                injected=RuntimeError,
            )


@case
def fault_inside_the_op(ctx):
    """The last rank's fused op raises torch.OutOfMemoryError after the
    agreement passed: every rank raises at the packed all-reduce, in both
    modes and for loss, instead of waiting there for the group's timeout."""
    X, W, Y, _ = problem(*DIRECT, exact=True)
    fail = _injected(torch.OutOfMemoryError, "injected inside the op")
    with _replaced(_compute, "_grads_op", fail, _is_last(ctx)):
        for parallel in ("rows", "cols"):
            for api in (rd.grads, rd.loss):
                _ends_coordinated(
                    ctx,
                    lambda api=api, parallel=parallel: api(X, W, Y, parallel=parallel),
                    kind_name="torch.OutOfMemoryError",
                    text="injected inside the op",
                    injected=torch.OutOfMemoryError,
                )


@case
def fault_a_real_allocation(ctx):
    """No injection: the last rank's X and Y are expanded to 2**31 rows
    (shapes that agree), so its op cannot allocate dX. Every rank raises,
    at once, naming relufrob's OutOfMemoryError and X."""
    X, W, Y, _ = problem(*DIRECT, exact=True)
    if _is_last(ctx):
        X = X[:1].expand(2**31, X.shape[1])
        Y = Y[:1].expand(2**31, Y.shape[1])
    _ends_coordinated(
        ctx,
        lambda: rd.grads(X, W, Y),
        kind_name="OutOfMemoryError",
        text="X has 2147483648 rows",
        injected=torch.OutOfMemoryError,
    )


@case
def fault_after_the_op(ctx):
    """The copy into the packed buffer fails on the last rank."""
    X, W, Y, _ = problem(*DIRECT, exact=True)
    fail = _injected(RuntimeError, "injected after the op")
    with _replaced(_compute, "pack", fail, _is_last(ctx)):
        _ends_coordinated(
            ctx,
            lambda: rd.grads(X, W, Y, parallel="rows"),
            kind_name="RuntimeError",
            text="injected after the op",
            injected=RuntimeError,
        )


@case
def fault_in_the_backward(ctx):
    """cols mode all-reduces dX in loss's backward; a failure there on the
    last rank ends the backward on every rank."""
    X, W, Y, _ = problem(*DIRECT, exact=True)
    X = X.clone().requires_grad_(True)
    s = slice(ctx.rank, W.shape[1], ctx.world)
    loss = rd.loss(X, W[:, s], Y[:, s], parallel="cols")
    fail = _injected(RuntimeError, "injected in the backward")
    with _replaced(_compute, "pack", fail, _is_last(ctx)):
        _ends_coordinated(
            ctx,
            loss.backward,
            kind_name="(backward)",
            text="injected in the backward",
            injected=RuntimeError,
        )


@case
def still_works_after_faults(ctx):
    """After every coordinated failure the group is intact and in step."""
    run_sharded_grads(ctx, DIRECT, "rows", exact=True, split="uneven", bias="row")
    run_sharded_grads(ctx, DIRECT, "cols", exact=True, split="uneven", bias="row")
