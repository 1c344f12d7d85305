"""Command-line interface: ``python -m relufrob check`` and ``python -m relufrob info``.

``check`` runs the exercise of relufrob.check and prints its report;
``info`` prints what a bug report needs: versions, how the kernels were
built, and the CPU thread count. :func:`main` takes ``argv`` and returns the
exit status: 0 when everything matches, 1 when anything does not, 2 (with a
one-line message) for bad arguments.
"""

import argparse
import dataclasses
import json
import os
import platform
from collections.abc import Sequence
from typing import Optional

import torch

from ._types import FLOAT_DTYPES
from ._version import __version__
from .check import EXERCISES, Variant, format_report, per_sample, report_json, run_check
from .ops import build_info, cpu_kernels

PROG = "python -m relufrob"


# --------------------------------------------------------------------------
# info
# --------------------------------------------------------------------------


def gather_info() -> dict:
    """Versions, how the kernels were built, and the threads -- for bug reports."""
    build = build_info()
    cuda_available = torch.cuda.is_available()
    return {
        "relufrob_version": __version__,
        "torch_version": torch.__version__,
        "torch_cuda_version": torch.version.cuda,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "cuda_kernels_compiled": bool(build.get("cuda")),
        "cuda_archs": build.get("cuda_archs") or "",
        "openmp": bool(build.get("openmp")),
        "built_with_torch": build.get("torch_version"),
        "cuda_available": cuda_available,
        "cuda_devices": (
            [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            if cuda_available
            else []
        ),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_kernels": cpu_kernels(),
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }


def format_info(info: dict) -> str:
    cuda = (
        f"yes (archs {info['cuda_archs'] or 'unknown'})" if info["cuda_kernels_compiled"] else "no"
    )
    devices = ", ".join(info["cuda_devices"]) if info["cuda_devices"] else "none"
    available = "yes" if info["cuda_available"] else "no"
    torch_cuda = info["torch_cuda_version"] or "none"
    kernels = info["cpu_kernels"]
    return "\n".join(
        [
            f"relufrob version:       {info['relufrob_version']}",
            f"torch version:          {info['torch_version']} (CUDA {torch_cuda})",
            f"built against torch:    {info['built_with_torch']}",
            f"CUDA kernels compiled:  {cuda}",
            f"CUDA available:         {available} (devices: {devices})",
            f"OpenMP:                 {'yes' if info['openmp'] else 'no'}",
            f"CPU threads (torch):    {info['cpu_threads']} of {info['cpu_count']} CPUs",
            f"CPU kernels:            {kernels['isa']} (torch capability "
            f"{info['cpu_capability']}), {kernels['gemm']} GEMMs",
            f"python:                 {info['python_version']} on {info['platform']}",
        ]
    )


# --------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are a single line on stderr (exit status 2)."""

    def error(self, message):
        message = " ".join(str(message).split())
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _dimension(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"invalid dimension {text!r}: expected a non-negative integer"
        )
    return value


def _seed(text: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seed {text!r}: expected an integer") from None


def _device(text: str) -> str:
    """A usable device: cpu, or cuda[:i] when a GPU and relufrob's CUDA kernels exist."""
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"invalid device {text!r}: expected cpu, cuda or cuda:<index>"
        ) from None
    if device.type == "cpu":
        return "cpu"
    if device.type != "cuda":
        raise argparse.ArgumentTypeError(
            f"unsupported device {text!r}: expected cpu, cuda or cuda:<index>"
        )
    if not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(
            f"{text!r} requested but no GPU is available (torch.cuda.is_available() is False)"
        )
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(
            f"{text!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist"
        )
    if not build_info().get("cuda"):
        raise argparse.ArgumentTypeError(
            f"{text!r} requested but this build of relufrob has no CUDA kernels"
        )
    return str(device)


def _add_variant_arguments(check: argparse.ArgumentParser) -> None:
    """--exercise and the three settings it bundles.

    The settings default to None so that :func:`variant_from_args` can tell
    an explicit one, which overrides the exercise's, from an absent one.
    """
    check.add_argument(
        "--exercise",
        choices=[*EXERCISES, per_sample.NAME],
        default="relu",
        help="a named form, overridable by the options below: relu is "
        "f = ||relu(X W) - Y||_F^2 (the default); linear-bias is "
        "f = ||X W + b||_F^2 with b of the output's shape, no target, the "
        "exercise torch.manual_seed(0); x = randn(10, 4); w = randn(4, 4); "
        "b = randn(10, 4); (x.mm(w) + b).pow(2).sum(); per-sample treats each row "
        "of X as a sample and prints the per-sample gradient norms by the identity "
        "||x_b|| ||g_b|| next to autograd's per-sample gradients and relufrob's",
    )
    check.add_argument(
        "--max-norm",
        type=float,
        default=1.0,
        metavar="C",
        help="per-sample only: the clipping norm of the clipped sum (default 1)",
    )
    check.add_argument(
        "--activation",
        choices=["relu", "identity"],
        help="act in f = ||act(X W + b) - Y||_F^2 (default: the exercise's, relu)",
    )
    check.add_argument(
        "--bias",
        choices=["none", "row", "full"],
        help="b: row is an (N,) vector added to every row, as nn.Linear's; full "
        "is an M x N matrix (default: the exercise's, none)",
    )
    check.add_argument(
        "--target",
        action=argparse.BooleanOptionalAction,
        help="--no-target: no Y, a target of zeros (so no dY); --target: draw Y "
        "(default: the exercise's, a target)",
    )


def variant_from_args(args: argparse.Namespace) -> Variant:
    """The exercise's variant, with the settings given explicitly put in."""
    explicit = {
        name: getattr(args, name)
        for name in ("activation", "bias", "target")
        if getattr(args, name) is not None
    }
    base = EXERCISES.get(args.exercise, Variant())  # per-sample starts from the classic form
    return dataclasses.replace(base, **explicit)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="relufrob: f = ||act(X W + b) - Y||_F^2 and its gradients, fused.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{check,info}", required=True)

    check = sub.add_parser(
        "check",
        help="verify the hand-derived gradients against autograd",
        description="Draw X, W, Y as the classic exercise does (torch.manual_seed(S); "
        "X = randn(M, K); W = randn(K, N); Y = randn(M, N)) and compare the loss "
        "and the gradients by autograd, by the closed-form formulas and by "
        "relufrob. --activation, --bias and --no-target choose another form of "
        "f = ||act(X W + b) - Y||_F^2; the inputs are then drawn in the order "
        "X, W, [Y], [b] from the one seed. Exit status 0 when everything "
        "matches, 1 otherwise.",
    )
    check.add_argument(
        "--seed", type=_seed, default=0, metavar="S", help="torch.manual_seed value (default 0)"
    )
    check.add_argument(
        "--shape",
        type=_dimension,
        nargs=3,
        default=[10, 4, 4],
        metavar=("M", "K", "N"),
        help="X is M x K, W is K x N (default 10 4 4)",
    )
    check.add_argument(
        "--dtype",
        choices=list(FLOAT_DTYPES),
        default="float32",
        help="dtype of the inputs (default float32)",
    )
    check.add_argument(
        "--device",
        type=_device,
        default="cpu",
        metavar="DEV",
        help="cpu or cuda[:i]; inputs are drawn on the CPU, then moved (default cpu)",
    )
    _add_variant_arguments(check)
    check.add_argument("--json", action="store_true", help="print one JSON document")
    check.add_argument(
        "--show-matrices",
        action="store_true",
        help="include the matrices in the JSON; print them in full even when large",
    )

    info = sub.add_parser(
        "info",
        help="versions and build details for a bug report",
        description="Print relufrob's and torch's versions, whether CUDA "
        "kernels were compiled and for which architectures, "
        "and the CPU thread count.",
    )
    info.add_argument("--json", action="store_true", help="print one JSON document")
    return parser


# --------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI with ``argv`` (default sys.argv[1:]); return the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    if args.command == "info":
        info = gather_info()
        print(json.dumps(info, indent=2) if args.json else format_info(info))
        return 0
    if args.exercise == per_sample.NAME:
        r = per_sample.run_per_sample_check(
            args.seed,
            tuple(args.shape),
            FLOAT_DTYPES[args.dtype],
            args.device,
            variant_from_args(args),
            args.max_norm,
        )
        print(
            json.dumps(per_sample.per_sample_json(r), indent=2)
            if args.json
            else per_sample.format_per_sample_report(r)
        )
        return 0 if r.all_match else 1
    result = run_check(
        args.seed,
        tuple(args.shape),
        FLOAT_DTYPES[args.dtype],
        args.device,
        variant_from_args(args),
    )
    if args.json:
        print(json.dumps(report_json(result, args.show_matrices), indent=2))
    else:
        print(format_report(result, args.show_matrices))
    return 0 if result.all_match else 1
