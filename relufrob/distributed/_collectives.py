"""The collectives of a relufrob.distributed call, and how a failure reaches every rank.

A call's ranks meet in a fixed sequence of collectives: the agreement's
all_gather, the packed all-reduce, and (loss in cols mode) the backward's
all-reduce of dX. A rank whose own work fails must still take its part in
the next collective of that sequence, or its peers block there until the
process group's timeout. So a failing rank joins it carrying a flag (a
status in the all_gather, one element of the all-reduced buffer), and when
a flag is up every rank runs one more collective, only then, to share what
went wrong, and raises the same DistributedCallError.

A collective that fails outright (a peer has exited, or never answers) is
re-raised as a DistributedCallError naming the call and the collective, with
the backend's error as its cause.
"""

import re
from typing import Callable, Optional, TypeVar

import torch
import torch.distributed as dist

__all__ = [
    "DistributedCallError",
    "collective",
    "collective_device",
    "raise_shared_failure",
    "type_name",
]

T = TypeVar("T")

# Room for one rank's failure text in the failure-path all_gather; longer
# messages are cut (the failing rank's own exception keeps the whole text).
_TEXT_BYTES = 2048
# Sockets to a process that has exited are closed by its kernel, so gloo
# says so at once; a peer that is alive but not in the call is only noticed
# when the group's timeout runs out.
_GONE = ("closed by peer", "reset by peer", "broken pipe", "connection refused", "eof")
_TIMED_OUT = ("timed out", "timeout", "deadline")
_PEER = re.compile(r"\[([^\]]+)\]:(\d+)")


class DistributedCallError(RuntimeError):
    """A relufrob.distributed call that failed as a whole, raised on every rank.

    ``ranks``: the ranks (of the call's group) whose own work raised, the
    same tuple on every rank; empty when a collective itself failed, as when
    a peer has exited. On a failing rank ``__cause__`` is its own exception.
    """

    def __init__(self, message: str, ranks: tuple = ()):
        super().__init__(message)
        self.ranks = tuple(ranks)


def type_name(error: BaseException) -> str:
    """'torch.OutOfMemoryError', 'ValueError': the name a user would catch."""
    kind = type(error)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


def collective_device(group, X) -> torch.device:
    """Where the small flag and text tensors travel: NCCL takes CUDA tensors only,
    and for any other backend the CPU is always valid, whatever device X is on
    (a rank's X may be on a device the call then refuses)."""
    if dist.get_backend(group) == "nccl":
        if isinstance(X, torch.Tensor) and X.device.type == "cuda":
            return X.device
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _why(error: BaseException) -> str:
    text = str(error)
    low = text.lower()
    peer = _PEER.search(text)
    where = f" (the backend names the peer at {peer.group(1)}:{peer.group(2)})" if peer else ""
    if any(k in low for k in _GONE):
        return f"a peer is gone: its connection closed{where}, so it has exited or crashed"
    if any(k in low for k in _TIMED_OUT):
        return (
            "a peer did not answer within the process group's timeout (the timeout= of "
            f"init_process_group){where}: it has exited, hangs, or is not making this call"
        )
    return "the backend raised"


def collective(fn: str, what: str, run: Callable[[], T]) -> T:
    """run(), a collective, with its failure re-raised naming the call `fn`."""
    try:
        return run()
    except Exception as e:
        first_line = (str(e).strip().splitlines() or [""])[0]
        raise DistributedCallError(
            f"{fn}: {what} failed: {_why(e)}; no rank returns a result from this call, and "
            f"the process group may be unusable. {type_name(e)}: {first_line}"
        ) from e


def _encode(text: str, device) -> torch.Tensor:
    """The text in a fixed-size buffer: its length in two bytes, then UTF-8.
    Every rank must reach the all_gather with this buffer, so nothing here
    may raise (gloo aborts the process on a collective of mismatched size)."""
    data = text.encode("utf-8", "replace")[: _TEXT_BYTES - 2]
    raw = bytes([len(data) // 256, len(data) % 256]) + data
    raw += bytes(_TEXT_BYTES - len(raw))
    return torch.tensor(list(raw), dtype=torch.uint8, device=device)


def _decode(t: torch.Tensor) -> str:
    raw = bytes(t.cpu().tolist())
    n = raw[0] * 256 + raw[1]
    return raw[2 : 2 + n].decode("utf-8", "replace")


def _share_texts(fn: str, group, device, mine: str) -> list[str]:
    """Every rank's failure text ('' where it did not fail), by one all_gather."""
    t = _encode(mine, device)
    gathered = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
    collective(
        fn, "sharing a failure (all_gather)", lambda: dist.all_gather(gathered, t, group=group)
    )
    return [_decode(g) for g in gathered]


def raise_shared_failure(fn: str, group, device, own: Optional[BaseException], stage: str) -> None:
    """Called by EVERY rank once a failure flag is up: share the failing ranks'
    texts and raise the same DistributedCallError everywhere (on a failing
    rank from its own exception). `stage` says where this rank's `own` error
    arose."""
    mine = "" if own is None else f"{stage}: {type_name(own)}: {own}"
    texts = _share_texts(fn, group, device, mine)
    failed = [(rank, text) for rank, text in enumerate(texts) if text]
    ranks = tuple(rank for rank, _ in failed)
    if not failed:  # the flag was up but no rank says why: a flag corrupted in transit
        failed = [(-1, "a failure flag arrived, but no rank reported an error")]
    word = "rank" if len(ranks) == 1 else "ranks"
    parts = "; ".join(f"rank {rank} failed {text}" for rank, text in failed)
    message = (
        f"{fn}: {word} {', '.join(map(str, ranks))} failed, so no rank returns a result "
        f"(every rank raises this error; the failing rank's own exception is its cause). {parts}"
    )
    raise DistributedCallError(message, ranks) from own
