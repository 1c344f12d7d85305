"""Fit W with row-parallel relufrob: each process holds a slice of the rows.

    torchrun --nproc-per-node 2 examples/distributed_fit.py [--steps S] [--lr LR]

A teacher W* makes targets Y = relu(X W*). Every rank draws the same problem
from the same seed and keeps its own rows of X and Y (uneven slices) and a
full copy of W. relufrob.distributed.loss returns the global mean loss on
every rank, and its backward leaves the global gradient in W.grad, so the
ranks' Adam steps stay identical. Runs on gloo, or nccl when CUDA is there.
"""

import argparse
import os

import torch
import torch.distributed as dist

import relufrob.distributed


def my_rows(M: int, rank: int, world: int) -> slice:
    """Uneven slices: rank r's share grows with r (1 : 2 : 3 ...)."""
    total = world * (world + 1) // 2
    start = M * (rank * (rank + 1) // 2) // total
    stop = M * ((rank + 1) * (rank + 2) // 2) // total
    return slice(start, stop)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", nargs=3, type=int, default=[4096, 64, 32], metavar="M K N")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=0.05)
    args = parser.parse_args(argv)

    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(device)

    M, K, N = args.shape
    torch.manual_seed(0)  # the same problem on every rank
    X, W_true, W0 = torch.randn(M, K), torch.randn(K, N), torch.randn(K, N)
    Y = torch.relu(X @ W_true)
    rows = my_rows(M, rank, world)
    X, Y = X[rows].to(device), Y[rows].to(device)
    W = W0.to(device).requires_grad_(True)
    opt = torch.optim.Adam([W], lr=args.lr)

    if rank == 0:
        print(f"{world} ranks on {dist.get_backend()}, rank 0 holds {X.shape[0]} of {M} rows")
    for step in range(args.steps + 1):
        opt.zero_grad(set_to_none=True)
        loss = relufrob.distributed.loss(X, W, Y, parallel="rows", reduction="mean")
        if step % max(1, args.steps // 4) == 0 and rank == 0:
            print(f"step {step:4d}  loss {loss.item():.6g}")
        if step < args.steps:
            loss.backward()
            opt.step()
    dist.barrier()  # no rank tears down the group while another still uses it
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
