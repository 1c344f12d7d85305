"""Problem sizes M×K×N: the defaults, parsing, printing and flop counts."""

import argparse

Size = tuple[int, int, int]

DEFAULT_SIZES: list[Size] = [
    (10, 4, 4),
    (128, 64, 64),
    (1024, 256, 256),
    (4096, 512, 512),
    (8192, 512, 512),
]
QUICK_SIZES: list[Size] = [(10, 4, 4), (64, 32, 32)]


def parse_size(text: str) -> Size:
    """'1024x256x256' -> (1024, 256, 256); argparse type."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) <= 0:
        raise argparse.ArgumentTypeError(
            f"size must be MxKxN with positive integers, e.g. 1024x256x256, got {text!r}"
        )
    return dims  # type: ignore[return-value]


def size_str(size: Size) -> str:
    return "x".join(str(d) for d in size)


def macs(size: Size) -> int:
    """Multiply-adds of one M×K×N GEMM."""
    M, K, N = size
    return M * K * N


def gemm_flops(size: Size) -> int:
    """Flops of the three GEMMs X W, Xᵀ G, G Wᵀ: 3 · 2·M·K·N."""
    return 6 * macs(size)
