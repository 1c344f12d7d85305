"""Bitwise snapshot of relufrob's CPU outputs, to prove a refactor changed nothing.

    python bench/snapshot.py save before.pt     # on the old build
    python bench/snapshot.py save after.pt      # on the new build
    python bench/snapshot.py compare before.pt after.pt

`save` runs a fixed spread of problems (both CPU kernels, every dtype pair,
bias kind, activation, target, reduction and wrt, per-sample norms and
clipped sums) at 1 and 2 threads, once per CPU capability this machine has
(each in a subprocess, ATEN_CPU_CAPABILITY forced), and stores every output.
`compare` asserts the two files hold bitwise-equal tensors and prints a count.
"""

import argparse
import os
import subprocess
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAPABILITIES = ("default", "avx2", "avx512")
# 1x1x1, 10x4x4 and 100x24x40 take the direct kernel, the others (K or N
# over 256, or many multiply-adds) the blocked one.
SHAPES = [(1, 1, 1), (10, 4, 4), (100, 24, 40), (37, 5, 300), (300, 96, 72), (1100, 260, 130)]
DTYPES = [
    (torch.float32, torch.float32),
    (torch.float64, torch.float64),
    (torch.float16, torch.float16),
    (torch.bfloat16, torch.bfloat16),
    (torch.float16, torch.float32),
    (torch.bfloat16, torch.float32),
]


def _problems():
    """(key, function, args, kwargs) of every call in the snapshot."""
    import relufrob

    grads = relufrob.grads
    for M, K, N in SHAPES:
        for x_dtype, y_dtype in DTYPES:
            g = torch.Generator().manual_seed(M * 7 + K * 3 + N)
            X = torch.randn(M, K, generator=g).to(x_dtype)
            W = (torch.randn(K, N, generator=g) / K**0.5).to(x_dtype)
            Y = torch.randn(M, N, generator=g).to(y_dtype)
            b_row = torch.randn(N, generator=g).to(y_dtype)
            b_full = torch.randn(M, N, generator=g).to(y_dtype)
            # Column-major X and W: the kernels' strided paths.
            Xt, Wt = X.t().contiguous().t(), W.t().contiguous().t()
            tag = f"{M}x{K}x{N}/{x_dtype}/{y_dtype}"
            for bias_name, bias in (("none", None), ("row", b_row), ("full", b_full)):
                for act in ("relu", None):
                    for y_name, y in (("Y", Y), ("noY", None)):
                        key = f"{tag}/{bias_name}/{act}/{y_name}"
                        kw = {"bias": bias, "activation": act}
                        y3 = None if y is None else y.reshape(1, M, N)
                        b3 = b_full.reshape(1, M, N) if bias_name == "full" else bias
                        yield key + "/sum", grads, (X, W, y), kw
                        mean_w = {**kw, "reduction": "mean", "wrt": ("W",)}
                        yield key + "/mean/W", grads, (X, W, y), mean_w
                        lead_x = {**kw, "bias": b3, "wrt": ("X",)}
                        yield key + "/X3/dX", grads, (X.reshape(1, M, K), W, y3), lead_x
                        yield key + "/Xt/loss", grads, (Xt, Wt, y), {**kw, "wrt": ()}
            if x_dtype == y_dtype and x_dtype in (torch.float32, torch.float64) and M >= 2:
                X3 = X[: M // 2 * 2].reshape(M // 2, 2, K)
                Y3 = Y[: M // 2 * 2].reshape(M // 2, 2, N)
                norms, clipped = relufrob.per_sample_grad_norms, relufrob.clipped_grads
                yield tag + "/norms", norms, (X, W, Y), {"bias": b_row}
                yield tag + "/norms3", norms, (X3, W, Y3), {}
                yield tag + "/clipped", clipped, (X, W, Y), {"max_norm": 1.0, "bias": b_row}
                yield tag + "/clipped3", clipped, (X3, W, Y3), {"max_norm": 1.0}


def _run_here() -> dict:
    out = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for key, fn, args, kwargs in _problems():
            result = fn(*args, **kwargs)
            out[f"{threads}t/{key}"] = [t.clone() if t is not None else None for t in result]
    return out


def save(path: str) -> None:
    if os.environ.get("_RELUFROB_SNAPSHOT_CHILD"):
        torch.save(_run_here(), path)
        return
    merged = {}
    for cap in CAPABILITIES:
        env = dict(os.environ, ATEN_CPU_CAPABILITY=cap, _RELUFROB_SNAPSHOT_CHILD="1")
        part = f"{path}.{cap}"
        probe = subprocess.run(
            [sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if probe.lower() != cap and not (cap == "default" and probe == "DEFAULT"):
            print(f"skipping {cap}: this CPU runs {probe}")
            continue
        subprocess.run([sys.executable, __file__, "save", part], env=env, check=True, cwd=ROOT)
        for key, value in torch.load(part).items():
            merged[f"{cap}/{key}"] = value
        os.remove(part)
    torch.save(merged, path)
    print(f"{len(merged)} results saved to {path}")


def compare(a_path: str, b_path: str) -> None:
    a, b = torch.load(a_path), torch.load(b_path)
    if a.keys() != b.keys():
        sys.exit(f"different problems: {sorted(a.keys() ^ b.keys())[:5]} ...")
    tensors = differ = 0
    for key in a:
        for x, y in zip(a[key], b[key]):
            if x is None or y is None:
                if (x is None) != (y is None):
                    differ += 1
                    print(f"{key}: None in one file only")
                continue
            tensors += 1
            same = (
                x.dtype == y.dtype
                and x.shape == y.shape
                and torch.equal(x.reshape(-1).view(torch.uint8), y.reshape(-1).view(torch.uint8))
            )
            if not same:
                differ += 1
                print(f"{key}: differs")
    print(f"{len(a)} calls, {tensors} tensors compared bitwise, {differ} differ")
    sys.exit(1 if differ else 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("save").add_argument("path")
    cmp = sub.add_parser("compare")
    cmp.add_argument("a")
    cmp.add_argument("b")
    args = parser.parse_args()
    if args.cmd == "save":
        save(args.path)
    else:
        compare(args.a, args.b)


if __name__ == "__main__":
    main()
