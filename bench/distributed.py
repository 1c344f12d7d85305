#!/usr/bin/env python
"""Time relufrob.distributed.grads at 1 and 2 processes, rows and cols.

Usage:
  python bench/distributed.py                         # 4096x512x512, 1 and 2 processes
  python bench/distributed.py --sizes 1024x256x256 --processes 1 2 3 --repeat 21
  make bench-distributed

Each process count spawns one gloo group on this machine, one thread per
process. The problem is split evenly: rows mode gives each rank M / P rows
of X and Y and all of W; cols mode N / P columns of W and Y and all of X.
Every rank times three things, interleaved round after round
(bench/timing.py), and rank 0's medians are reported:

* call: relufrob.distributed.grads (all gradients), which is one small
  all_gather of the shard shapes, the fused op on the shard and one packed
  all-reduce;
* local op: the fused op on the same shard alone;
* all-reduce: dist.all_reduce of a buffer the size of the call's packed one
  (rows: the loss and dW, 1 + K*N values; cols: the loss and dX, 1 + M*K).

"all-reduce share" is the all-reduce's median over the call's median; the
bytes are those of the packed buffer, per call, as each rank hands it to the
all-reduce. The processes share the machine's cores and memory bandwidth,
so on a small machine 2 processes are not 2 machines.

Progress goes to stderr, the table (markdown) to stdout.
"""

import argparse
import datetime
import json
import math
import sys
import tempfile
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # As in bench/throughput.py: the checkout provides `bench`, not bench/.
    sys.path.pop(0)
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import relufrob.distributed as rd
from bench import timing
from bench.report import format_time, log
from bench.sizes import Size, parse_size, size_str

DEFAULT_SIZE: Size = (4096, 512, 512)
MODES = ("rows", "cols")
LEGEND = (
    "call: relufrob.distributed.grads (shape all_gather + fused op + one packed "
    "all-reduce). local op: the fused op on the rank's shard alone. all-reduce: "
    "dist.all_reduce of the packed buffer alone; share = its median / the call's. "
    "Medians of rank 0's samples; one thread per process, gloo, processes on one machine."
)


def shard(X, W, Y, mode: str, rank: int, world: int):
    """This rank's (X, W, Y): even splits, as copies."""
    dim = 0 if mode == "rows" else 1

    def mine(t):
        return t.tensor_split(world, dim=dim)[rank].clone()

    return (mine(X), W, mine(Y)) if mode == "rows" else (X, mine(W), mine(Y))


def packed_numel(mode: str, size: Size) -> int:
    M, K, N = size
    return 1 + (K * N if mode == "rows" else M * K)


def agreed_batch(fn) -> int:
    """Calls per sample, the same on every rank (their collectives must pair up).

    Not timing.choose_batch: how often it calls fn depends on the rank's own
    timings, and a collective in fn would then wait for a call that never comes.
    """
    per_call = timing.time_batch(fn, timing.WARMUP_CALLS, lambda: None)
    batch = torch.tensor([min(timing.MAX_BATCH, max(1, math.ceil(timing.MIN_SAMPLE_S / per_call)))])
    dist.all_reduce(batch, op=dist.ReduceOp.MAX)
    return int(batch)


def bench_rank(rank: int, world: int, rendezvous: str, out: str, sizes, repeat: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{rendezvous}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=300),
    )
    op = torch.ops.relufrob.grads.default
    records = []
    for size in sizes:
        torch.manual_seed(0)
        X, W, Y = (
            torch.randn(size[0], size[1]),
            torch.randn(size[1], size[2]),
            torch.randn(size[0], size[2]),
        )
        for mode in MODES:
            Xs, Ws, Ys = shard(X, W, Y, mode, rank, world)
            buffer = torch.zeros(packed_numel(mode, size))
            fns = {
                "call": lambda: rd.grads(Xs, Ws, Ys, parallel=mode),  # noqa: B023
                "local op": lambda: op(Xs, Ws, Ys),  # noqa: B023
                "all-reduce": lambda: dist.all_reduce(buffer),  # noqa: B023
            }
            for fn in fns.values():
                timing.warm_up(fn, lambda: None)
            batches = {k: agreed_batch(fn) for k, fn in fns.items()}
            samples = timing.run_rounds(fns, batches, repeat, lambda: None)
            figures = {k: timing.summarize_samples(v) for k, v in samples.items()}
            records.append(
                {
                    "size": size_str(size),
                    "mode": mode,
                    "processes": world,
                    "bytes": buffer.numel() * buffer.element_size(),
                    **{k: f["median_s"] for k, f in figures.items()},
                }
            )
            if rank == 0:
                log(f"{size_str(size)} {mode} x{world}: {format_time(figures['call']['median_s'])}")
    dist.barrier()
    dist.destroy_process_group()
    if rank == 0:
        Path(out).write_text(json.dumps(records))


def run_group(world: int, sizes, repeat: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/records.json"
        mp.spawn(bench_rank, args=(world, f"{tmp}/rdv", out, sizes, repeat), nprocs=world)
        return json.loads(Path(out).read_text())


def format_bytes(n: int) -> str:
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


def header_line() -> str:
    return (
        f"torch {torch.__version__} · CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()} · float32 · 1 thread per process · gloo"
    )


def render_table(records: list[dict]) -> str:
    lines = [
        "| size | split | processes | call (median) | local op | all-reduce | "
        "all-reduce share | all-reduce bytes/call |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        lines.append(
            f"| {r['size']} | {r['mode']} | {r['processes']} | {format_time(r['call'])} | "
            f"{format_time(r['local op'])} | {format_time(r['all-reduce'])} | "
            f"{100 * r['all-reduce'] / r['call']:.0f}% | {format_bytes(r['bytes'])} |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[DEFAULT_SIZE])
    parser.add_argument("--processes", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--repeat", type=int, default=timing.MIN_REPEAT, help="rounds")
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    if min(args.processes) < 1:
        raise SystemExit("--processes: each count must be at least 1")
    records = []
    for world in args.processes:
        log(f"{world} process(es)...")
        records += run_group(world, args.sizes, args.repeat)
    records.sort(key=lambda r: (r["size"], r["mode"], r["processes"]))
    print("\n".join([header_line(), "", LEGEND, "", render_table(records)]))


if __name__ == "__main__":
    main()
