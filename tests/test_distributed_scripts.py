"""The scripts around relufrob.distributed keep working: the torchrun example
fits (its loss goes down) and the distributed benchmark prints its table."""

import re

import torch

from helpers import REPO, run_python

EXAMPLE = REPO / "examples" / "distributed_fit.py"
BENCH = REPO / "bench" / "distributed.py"


# A gloo rank of torch 2.14.1 sometimes aborts at exit, after
# destroy_process_group and after its last line of output: "terminate called
# without an active exception", exit -6. Seen in 1 run of 8-16 of this
# example, at earlier commits too: a gloo worker thread drops the last
# collective's tensors while the interpreter finalizes (docs/distributed.md,
# "Known issues"; pytorch/pytorch#179291).
TEARDOWN_ABORT = "terminate called without an active exception"


def _run_example(steps: int):
    return run_python(
        "-m",
        "torch.distributed.run",
        "--standalone",  # a free port, so parallel runs never collide
        "--nproc-per-node",
        "2",
        str(EXAMPLE),
        "--steps",
        str(steps),
        "--shape",
        "512",
        "16",
        "8",
        timeout=180,
        env={"OMP_NUM_THREADS": "1"},
    )


def test_torchrun_example_fits():
    steps = 20
    proc = _run_example(steps)
    finished = re.search(rf"^step +{steps} +loss ", proc.stdout, re.M)
    if proc.returncode != 0 and TEARDOWN_ABORT in proc.stderr and finished:
        proc = _run_example(steps)  # that teardown abort only: the fit itself completed
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    losses = [float(x) for x in re.findall(r"^step +\d+ +loss (\S+)$", proc.stdout, re.M)]
    assert len(losses) >= 2, proc.stdout
    assert losses[-1] < 0.5 * losses[0], losses  # 20 Adam steps: well below the start
    assert "2 ranks on gloo" in proc.stdout or not torch.cuda.is_available()


def test_bench_smoke_prints_the_table():
    proc = run_python(
        str(BENCH), "--sizes", "64x32x32", "--processes", "1", "2", "--repeat", "3", timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout.splitlines()
    assert torch.__version__ in out[0]
    assert f"CPU capability {torch.backends.cpu.get_cpu_capability()}" in out[0]
    rows = [line for line in out if line.startswith("| 64x32x32 |")]
    assert len(rows) == 4, proc.stdout  # rows and cols, at 1 and 2 processes
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        size, mode, procs, call, local, reduce, share, nbytes = cells
        assert mode in ("rows", "cols") and procs in ("1", "2")
        assert re.fullmatch(r"[\d.]+ (ns|µs|ms|s)", call), call
        assert re.fullmatch(r"\d+%", share), share
        # rows packs the loss and dW (1 + 32*32 floats), cols the loss and dX (1 + 64*32)
        expected = 4 * (1 + (32 * 32 if mode == "rows" else 64 * 32))
        assert nbytes == f"{expected / 1024:.3g} KiB", (mode, nbytes)
