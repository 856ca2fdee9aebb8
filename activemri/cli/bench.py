"""``activemri bench`` (the timing itself is :mod:`activemri.bench`)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from activemri.cli._common import CommandError, _non_negative_int, _positive_int

if TYPE_CHECKING:
    from activemri.cli._common import Commands


def add_parser(commands: Commands) -> None:
    """Add ``bench`` to ``commands``."""
    bench = commands.add_parser(
        "bench",
        help="env step time, breakdown, overhead over the bare forward, reference ratio",
        description=(
            "Time the batched env step (random valid actions, reset cost amortized over the "
            "episode) split into "
            "data / mask_fft / forward / metric / other, the bare reconstructor forward, "
            "steps/s, peak memory, and the reference per-image pipeline "
            "(activemri.bench_reference) on the same batch. The knee size builds the "
            "built-in knee data on first use (~20 s)."
        ),
    )
    bench.add_argument("--device", default="all", help="cpu, cuda or all (default: all present)")
    bench.add_argument(
        "--sizes",
        nargs="+",
        default=["builtin", "knee"],
        choices=["builtin", "knee"],
        help="data sizes",
    )
    bench.add_argument(
        "--reconstructors",
        nargs="+",
        default=["zero_filled", "unet"],
        choices=["zero_filled", "unet"],
        help="reconstructors",
    )
    bench.add_argument(
        "--batch-sizes",
        nargs="+",
        type=_positive_int,
        default=[1, 16, 64],
        help="episodes per batched step (default 1 16 64)",
    )
    bench.add_argument("--steps", type=_positive_int, default=20, help="timed steps per row")
    bench.add_argument(
        "--threads",
        nargs="+",
        type=_positive_int,
        default=None,
        help="torch intra-op thread counts to run every row at (default: as set)",
    )
    bench.add_argument(
        "--load",
        nargs="+",
        type=_non_negative_int,
        default=[0],
        help="run every row under these concurrent CPU loads: numbers of busy-looping "
        "processes the bench starts beside itself (default 0, idle)",
    )
    bench.add_argument(
        "--precisions",
        nargs="+",
        default=["fp32"],
        choices=["fp32", "bf16", "fp32-cl", "bf16-cl"],
        help="U-Net precisions: bf16 autocast (where the device runs bf16 natively: CUDA, "
        "CPUs with AVX512-BF16/AMX) and/or channels-last weights (-cl); each non-fp32 row "
        "reports its largest SSIM change against float32 (default fp32)",
    )
    bench.add_argument("--no-reference", action="store_true", help="skip the reference")
    bench.add_argument("--full", action="store_true", help="also the knee-size U-Net on CPU")
    bench.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    import torch

    from activemri.bench import run_bench

    if args.device == "all":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    elif args.device == "cuda" and not torch.cuda.is_available():
        raise CommandError("--device cuda requested but CUDA is not available")
    else:
        devices = [args.device]
    run_bench(
        devices,
        args.sizes,
        args.reconstructors,
        args.batch_sizes,
        args.steps,
        reference=not args.no_reference,
        full=args.full,
        threads=args.threads,
        loads=args.load,
        precisions=args.precisions,
    )
    return 0
