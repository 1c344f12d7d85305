"""Fit W by gradient descent with relufrob.loss, beside the same loop on autograd.

    python examples/fit.py [--shape M K N] [--steps S] [--lr LR] [--seed S]

A teacher W* makes targets Y = relu(X W*); both loops start from the same
random W and take the same torch.optim.Adam steps on
f(W) = ||relu(X W) - Y||_F^2 / (M N), one with relufrob.loss, one with the
pure-PyTorch reference expression. It prints each loop's final loss and time.
"""

import argparse
import time

import torch

import relufrob
from relufrob.testing import reference


def make_problem(M, K, N, seed):
    torch.manual_seed(seed)
    X = torch.randn(M, K)
    W_true = torch.randn(K, N)
    Y = torch.relu(X @ W_true)
    W0 = torch.randn(K, N)
    return X, Y, W0


def fit(loss_fn, X, Y, W0, steps, lr):
    """Adam on W alone; returns (final loss, seconds)."""
    W = W0.clone().requires_grad_(True)
    opt = torch.optim.Adam([W], lr=lr)
    start = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        f = loss_fn(X, W, Y)
        f.backward()
        opt.step()
    elapsed = time.perf_counter() - start
    with torch.no_grad():
        final = loss_fn(X, W, Y).item()
    return final, elapsed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shape", nargs=3, type=int, default=[4096, 64, 32], metavar=("M", "K", "N")
    )
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    X, Y, W0 = make_problem(*args.shape, args.seed)
    runs = {
        "relufrob.loss": lambda X, W, Y: relufrob.loss(X, W, Y, reduction="mean"),
        "autograd reference": lambda X, W, Y: reference.loss(X, W, Y, reduction="mean"),
    }
    M, K, N = args.shape
    print(f"fitting W ({K}x{N}) to {M} rows, {args.steps} Adam steps, lr {args.lr}")
    with torch.no_grad():
        print(f"initial loss: {reference.loss(X, W0, Y, reduction='mean').item():.6g}")
    for name, fn in runs.items():
        final, seconds = fit(fn, X, Y, W0, args.steps, args.lr)
        print(f"{name:>20}: final loss {final:.6g}  time {seconds:.3f} s")


if __name__ == "__main__":
    main()
