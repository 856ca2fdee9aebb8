"""``activemri mask learn``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from activemri.cli._common import (
    CommandError,
    _acceleration,
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
        help="learn a fixed mask (greedy line ordering or LOUPE)",
        description="Fixed masks learned from data.",
    )
    mask_commands = mask.add_subparsers(dest="mask_command", metavar="SUBCOMMAND", required=True)
    learn = mask_commands.add_parser(
        "learn",
        help="greedy (LBCS-style) ordering of lines, or a LOUPE mask, on the training split",
        description=(
            "--method greedy (default): from the env preset's initial (ACS) lines, repeatedly "
            "add the line that maximizes the mean metric over a seeded sample of training "
            "slices with the preset's reconstructor, up to --max-lines. Writes an ordering "
            "(every smaller budget is a prefix) as JSON with its provenance after every line; "
            "rerun the same command to resume. Cost: one reconstructor forward per sample slice "
            "per free line per step. Under torchrun (e.g. `torchrun --nproc-per-node 2 -m "
            "activemri.cli mask learn ...`) the candidate lines are split across the processes "
            "(gloo on CPU, nccl on CUDA, one GPU per process) and the ordering is the same. "
            "--method loupe: learn per-line (per ky-kz point on 3-D data) sampling "
            "probabilities jointly with the reconstructor (LOUPE), --steps Adam steps on "
            "batches of training slices, each with its own mask of exactly the budget "
            "(--acceleration or --max-lines, from the same initial lines as the env). Writes "
            "the top-budget mask as a learned ordering JSON (played by `learned:OUT`, with "
            "scores on held-out val slices), the jointly trained reconstructor as OUT.recon.pt "
            "(evaluate with --set reconstructor=OUT.recon.pt) and, every --checkpoint-every "
            "steps, a resumable state OUT.loupe.pt; rerun the same command to resume (only "
            "--steps may change). One process; no torchrun."
        ),
    )
    learn.add_argument(
        "--env", default="builtin-v0", help="env preset name or YAML (default builtin-v0)"
    )
    learn.add_argument("--out", required=True, help="output JSON file")
    learn.add_argument("--data", help="a folder of fastMRI h5 files to learn on (data_root)")
    learn.add_argument(
        "--method",
        choices=["greedy", "loupe"],
        default="greedy",
        help="greedy ordering (default) or LOUPE mask learned with the reconstructor",
    )
    learn.add_argument(
        "--sample-size",
        type=_positive_int,
        help="greedy: training slices in the sample (default 16)",
    )
    learn.add_argument(
        "--max-lines",
        type=_positive_int,
        help="lines (ky-kz points on 3-D data) at the end, initial ones included (default: "
        "the preset's episode end)",
    )
    learn.add_argument(
        "--metric",
        default="ssim",
        choices=["ssim", "psnr", "nmse", "mse"],
        help="score to maximize (greedy) or of the held-out scores (loupe) (default ssim)",
    )
    learn.add_argument(
        "--seed", type=int, default=0, help="seed of the slice sample (loupe: of every draw)"
    )
    learn.add_argument("--device", help="cpu or cuda (default: the preset's)")
    add_set_option(learn, "env config override, repeatable (e.g. --set data_root=/data/knee)")
    learn.add_argument("--quiet", action="store_true", help="no progress bar")
    loupe = learn.add_argument_group("LOUPE (--method loupe)")
    loupe.add_argument(
        "--acceleration",
        type=_acceleration,
        help="budget as an acceleration: ends at round(measured / A) lines, the env's rule "
        "(alternative to --max-lines)",
    )
    loupe.add_argument("--steps", type=_positive_int, help="Adam steps (2000)")
    loupe.add_argument("--batch-size", type=_positive_int, help="training slices per step (8)")
    loupe.add_argument(
        "--lr",
        type=_positive_float,
        help="reconstructor learning rate (default 1e-4 fine-tuning, 1e-3 --from-scratch)",
    )
    loupe.add_argument("--mask-lr", type=_positive_float, help="logits learning rate (0.01)")
    loupe.add_argument("--slope", type=_positive_float, help="p = sigmoid(slope * logit) (5)")
    loupe.add_argument(
        "--sample-slope",
        type=_positive_float,
        help="relaxed Bernoulli sample sigmoid(s * (p - u)) (12)",
    )
    loupe.add_argument(
        "--from-scratch",
        action="store_true",
        help="train a fresh model of the preset reconstructor's class instead of fine-tuning it",
    )
    loupe.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        help="augment training slices (default: as the reconstructor preset's train.augment)",
    )
    loupe.add_argument(
        "--val-size",
        type=_positive_int,
        help="held-out (val split) slices the scores are computed on (32)",
    )
    loupe.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        help="steps between resumable states and history records (100)",
    )
    learn.set_defaults(func=_mask_learn)


def _positive_float(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


_LOUPE_ONLY = {
    "acceleration": None, "lr": None, "from_scratch": False, "augment": None, "steps": None,
    "batch_size": None, "mask_lr": None, "slope": None, "sample_slope": None, "val_size": None,
    "checkpoint_every": None,
}  # fmt: skip
"""Options only LOUPE reads, with their defaults (given otherwise, greedy refuses them)."""


def _mask_learn(args: argparse.Namespace) -> int:
    if args.method == "loupe":
        return _mask_learn_loupe(args)
    given = [
        f"--{name.replace('_', '-')}"
        for name, default in _LOUPE_ONLY.items()
        if getattr(args, name) != default
    ]
    if given:
        raise CommandError(f"{', '.join(given)}: only with --method loupe")
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
                sample_size=16 if args.sample_size is None else args.sample_size,
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
        f"of {ordering.width}; mean {ordering.metric} on {ordering.settings['sample_size']} "
        "training slices "
        f"{ordering.scores[0]:.4f} -> {ordering.scores[-1]:.4f} "
        f"({ordering.provenance.get('elapsed_s', 0.0):.0f} s)"
    )
    return 0


def _mask_learn_loupe(args: argparse.Namespace) -> int:
    import os

    from tqdm import tqdm

    from activemri.agents.loupe import LoupeConfig, learn_loupe, loupe_paths

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise CommandError("--method loupe runs in one process; launch it without torchrun")
    if args.sample_size is not None:
        raise CommandError("--sample-size is for --method greedy (loupe: --val-size)")
    overrides = {**data_override(args), **parse_overrides(args.set)}
    if args.device:
        overrides["device"] = args.device
    with tqdm(desc="learning LOUPE mask", unit="step", disable=args.quiet) as bar:

        def progress(step: int, total: int, loss: float) -> None:
            bar.total = total
            bar.update(step - bar.n)
            bar.set_postfix({"loss": f"{loss:.4f}"})

        try:
            given = {name: getattr(args, name) for name in _LOUPE_ONLY}
            config = LoupeConfig(
                max_lines=args.max_lines,
                metric=args.metric,
                seed=args.seed,
                # an option left out takes LoupeConfig's default (what --help says)
                **{name: value for name, value in given.items() if value is not None},
            )
            result = learn_loupe(args.env, config, out=args.out, progress=progress, **overrides)
        except (OSError, ValueError, FloatingPointError) as exc:
            raise CommandError(str(exc)) from exc
    ordering = result.ordering
    settings = ordering.settings
    start = result.history[0] if result.history else {}
    random_start = float(start.get(f"val_random_{ordering.metric}", float("nan")))
    print(
        f"{args.out}: LOUPE mask of {len(ordering.initial)} initial + {len(ordering.order)} "
        f"learned of {ordering.width} actions ({settings['actual_acceleration']:.3g}x); "
        f"{ordering.metric} on {settings['val_size']} held-out slices "
        f"{random_start:.4f} (random masks, initial model) -> {ordering.scores[-1]:.4f}; "
        f"reconstructor {loupe_paths(args.out)[0]} "
        f"({ordering.provenance.get('elapsed_s', 0.0):.0f} s)"
    )
    return 0
