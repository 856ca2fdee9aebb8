"""``activemri demo``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from activemri.cli._common import CommandError, _positive_int

if TYPE_CHECKING:
    from activemri.cli._common import Commands


def add_parser(commands: Commands) -> None:
    """Add ``demo`` to ``commands``."""
    from activemri.evaluation.demo import CPU_ORACLE_SLICES, CPU_SLICES

    demo = commands.add_parser(
        "demo",
        help="the baselines compared on built-in data (the main job; a few minutes on CPU)",
        description=(
            "Build (and cache) the built-in default data, load the shipped U-Net and learned "
            "ordering, evaluate random, low-to-high, equispaced, learned fixed mask, "
            "uncertainty-driven and greedy oracle at 4x and 8x on the test split, print the "
            f"table and write the plots. On CPU: a seeded subset of {CPU_SLICES} test slices, "
            f"the oracle on the first {CPU_ORACLE_SLICES} of them; on CUDA: every test slice."
        ),
    )
    demo.add_argument("--out", default="outputs/demo", help="output folder (default outputs/demo)")
    demo.add_argument("--device", default="auto", help="auto, cpu or cuda")
    demo.add_argument(
        "--max-slices",
        type=_positive_int,
        default=-1,
        help="test slices per policy (default: per device)",
    )
    demo.add_argument(
        "--oracle-slices",
        type=_positive_int,
        default=-1,
        help="test slices for the greedy oracle (default: per device)",
    )
    demo.add_argument(
        "--learn",
        action="store_true",
        help="learn the fixed mask here (about 30 min on a 2-core CPU)",
    )
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from activemri.evaluation.demo import run_demo

    try:
        run_demo(
            args.out,
            device=args.device,
            max_slices=args.max_slices,
            oracle_slices=args.oracle_slices,
            learn=args.learn,
            show_progress=not args.quiet,
        )
    except (OSError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    return 0
