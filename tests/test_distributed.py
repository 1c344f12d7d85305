"""relufrob.distributed on CPU with gloo, against single-process relufrob.

Each world size (2 and 3) spawns one process group, whose ranks run every
case of the tests/distributed_*_cases.py modules; each case is then its own test here,
failing with every rank's traceback. A join timeout turns a hung collective
into a failure instead of a hung CI job.
"""

import json
import re
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from distributed_cases import CASES, import_case_modules, run_rank

import relufrob.distributed as rd

import_case_modules()  # every case joins CASES

WORLD_SIZES = (2, 3)
JOIN_TIMEOUT_S = 240  # spawning, every case, and the gloo timeouts of a hang


def _spawn(world: int, tmp) -> dict:
    """{case name: {rank: traceback or None}} of one spawned group."""
    ctx = mp.spawn(run_rank, args=(world, str(tmp / "rdv"), str(tmp)), nprocs=world, join=False)
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    try:
        while not ctx.join(timeout=5):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"world size {world}: ranks still running after "
                    f"{JOIN_TIMEOUT_S} s (a collective hung?)"
                )
    finally:
        for proc in ctx.processes:
            if proc.is_alive():
                proc.kill()
    outcomes = {}
    for rank in range(world):
        for name, error in json.loads((tmp / f"rank{rank}.json").read_text()).items():
            outcomes.setdefault(name, {})[rank] = error
        for name, seconds in json.loads((tmp / f"rank{rank}.timings.json").read_text()).items():
            _timings.setdefault(world, {}).setdefault(name, {})[rank] = seconds
    return outcomes


_results: dict = {}
_timings: dict = {}  # world -> case -> rank -> seconds of each coordinated failure


@pytest.fixture(scope="module")
def group_results(tmp_path_factory):
    def results(world):
        if world not in _results:
            _results[world] = _spawn(world, tmp_path_factory.mktemp(f"world{world}"))
        return _results[world]

    return results


@pytest.mark.parametrize("world", WORLD_SIZES)
@pytest.mark.parametrize("name", list(CASES))
def test_case(group_results, name, world):
    outcomes = group_results(world)[name]
    assert sorted(outcomes) == list(range(world)), f"ranks that reported: {sorted(outcomes)}"
    failed = {rank: tb for rank, tb in outcomes.items() if tb}
    if failed:
        report = "\n".join(f"--- rank {r} of {world} ---\n{tb}" for r, tb in failed.items())
        pytest.fail(f"{name} failed on ranks {sorted(failed)}:\n{report}", pytrace=False)


def test_without_a_process_group_says_to_initialise_one():
    assert not dist.is_initialized()
    X, W, Y = torch.ones(2, 3), torch.ones(3, 4), torch.ones(2, 4)
    for fn in (rd.grads, rd.loss):
        with pytest.raises(RuntimeError, match=re.escape("torch.distributed.init_process_group")):
            fn(X, W, Y)


@pytest.mark.parametrize("world", WORLD_SIZES)
def test_fault_cases_report_their_time_on_every_rank(group_results, world):
    """The fault cases ran to their end on every rank, each failure timed
    (pytest -s prints the table the docs quote)."""
    group_results(world)
    fault_cases = [n for n in CASES if n.startswith("fault_")]
    table = _timings.get(world, {})
    assert sorted(table) == sorted(fault_cases), sorted(table)
    print(f"\nworld size {world}: seconds for each coordinated failure to end, per rank")
    for name in fault_cases:
        assert sorted(table[name]) == list(range(world)), (name, sorted(table[name]))
        cells = "  ".join(
            f"rank {r}: " + ", ".join(f"{t:.3f}" for t in table[name][r]) for r in range(world)
        )
        print(f"  {name:28s} {cells}")
