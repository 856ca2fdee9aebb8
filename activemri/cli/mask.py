"""``activemri mask learn``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from activemri.cli._common import (
    CommandError,
    _positive_int,
    add_set_option,
    data_override,
    parse_overrides,
)

if TYPE_CHECKING:
    from activemri.cli._common import Commands


def add_parser(commands: Commands) -> None:
    """Add ``mask`` and its subcommand ``learn`` to ``commands``."""
    mask = commands.add_parser(
        "mask",
        help="learn a fixed mask (greedy line ordering)",
        description="Fixed masks learned from data.",
    )
    mask_commands = mask.add_subparsers(dest="mask_command", metavar="SUBCOMMAND", required=True)
    learn = mask_commands.add_parser(
        "learn",
        help="greedy (LBCS-style) ordering of lines on a training sample",
        description=(
            "From the env preset's initial (ACS) lines, repeatedly add the line that maximizes "
            "the mean metric over a seeded sample of training slices with the preset's "
            "reconstructor, up to --max-lines. Writes an ordering (every smaller budget is a "
            "prefix) as JSON with its provenance after every line; rerun the same command to "
            "resume. Cost: one reconstructor forward per sample slice per free line per step. "
            "Under torchrun (e.g. `torchrun --nproc-per-node 2 -m activemri.cli mask learn ...`) "
            "the candidate lines are split across the processes (gloo on CPU, nccl on CUDA, "
            "one GPU per process) and the ordering is the same."
        ),
    )
    learn.add_argument(
        "--env", default="builtin-v0", help="env preset name or YAML (default builtin-v0)"
    )
    learn.add_argument("--out", required=True, help="output JSON file")
    learn.add_argument("--data", help="a folder of fastMRI h5 files to learn on (data_root)")
    learn.add_argument(
        "--sample-size",
        type=_positive_int,
        default=16,
        help="training slices in the sample (default 16)",
    )
    learn.add_argument(
        "--max-lines",
        type=_positive_int,
        help="lines at the end (default: the preset's episode end)",
    )
    learn.add_argument(
        "--metric",
        default="ssim",
        choices=["ssim", "psnr", "nmse", "mse"],
        help="score to maximize (default ssim)",
    )
    learn.add_argument("--seed", type=int, default=0, help="seed of the slice sample")
    learn.add_argument("--device", help="cpu or cuda (default: the preset's)")
    add_set_option(learn, "env config override, repeatable (e.g. --set data_root=/data/knee)")
    learn.add_argument("--quiet", action="store_true", help="no progress bar")
    learn.set_defaults(func=_mask_learn)


def _mask_learn(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from activemri._dist import init_from_env, local_device
    from activemri.agents.learned_mask import learn_ordering

    overrides = {**data_override(args), **parse_overrides(args.set)}
    if args.device:
        overrides["device"] = args.device
    rank, _ = init_from_env(str(overrides.get("device", "cpu")))
    if "device" in overrides:
        overrides["device"] = local_device(str(overrides["device"]))  # one GPU per process
    quiet = args.quiet or rank != 0
    with tqdm(desc="learning ordering", unit="line", disable=quiet) as bar:

        def progress(done: int, total: int, score: float) -> None:
            bar.total = total
            bar.update(done - bar.n)
            bar.set_postfix({args.metric: f"{score:.4f}"})

        try:
            ordering = learn_ordering(
                args.env,
                sample_size=args.sample_size,
                max_lines=args.max_lines,
                metric=args.metric,
                seed=args.seed,
                out=args.out,
                progress=progress,
                **overrides,
            )
        except (OSError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
    if rank != 0:
        return 0
    print(
        f"{args.out}: {len(ordering.initial)} initial + {len(ordering.order)} learned lines "
        f"of {ordering.width}; mean {ordering.metric} on {args.sample_size} training slices "
        f"{ordering.scores[0]:.4f} -> {ordering.scores[-1]:.4f} "
        f"({ordering.provenance.get('elapsed_s', 0.0):.0f} s)"
    )
    return 0
