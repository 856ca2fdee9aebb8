"""``activemri evaluate``, and :func:`run_evaluate`, which ``activemri agent eval`` shares."""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from activemri.cli._common import (
    CommandError,
    EvalOptions,
    add_eval_options,
    data_override,
    parse_overrides,
)

if TYPE_CHECKING:
    from activemri.cli._common import Commands

EVAL_OWNED = {"split", "order", "max_slices", "subset_seed", "device", "acceleration", "budget"}
"""Env settings an evaluation sets itself (a trained agent's values for them do not apply)."""


def add_parser(commands: Commands) -> None:
    """Add ``evaluate`` to ``commands``."""
    from activemri.agents.policy_specs import POLICY_FACTORIES

    ev = commands.add_parser(
        "evaluate",
        help="compare policies x env presets x budgets, with CIs, paired tests and plots",
        description=(
            "Play every policy on the slices of a split (batched, sequential order) and record "
            "SSIM/PSNR/NMSE after every acquired line. Writes OUT/results.json (mean and 95% CI "
            "per line, normalized SSIM AUC, final metrics, conventions), OUT/results.csv (long "
            "format), OUT/paired_tests.csv (Wilcoxon signed-rank on per-slice SSIM AUC, Holm-"
            "corrected) and PNG plots. Every run is saved in OUT/runs/ and skipped when rerun "
            "with the same settings (resume)."
        ),
        epilog=(
            "policy specs: NAME, NAME:ARG or LABEL=NAME[:ARG] with NAME one of "
            f"{', '.join(sorted(POLICY_FACTORIES))}; e.g. learned:path/ordering.json, "
            "mask:variable_density, vd=mask:variable_density_polynomial"
        ),
    )
    ev.add_argument("--policies", nargs="+", required=True, metavar="SPEC", help="policies")
    ev.add_argument("--presets", nargs="+", default=["builtin-v0"], help="env presets")
    add_eval_options(ev, accelerations=[4.0, 8.0])
    ev.set_defaults(func=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    options = EvalOptions.from_args(args)
    overrides = {**data_override(args), **parse_overrides(args.set)}
    return run_evaluate(args.policies, args.presets, options, overrides)


def run_evaluate(
    policies: Sequence[str],
    presets: Sequence[str],
    options: EvalOptions,
    overrides: Mapping[str, object],
) -> int:
    """Evaluate ``policies`` on ``presets``, print the table and say what was written.

    Args:
        policies: Policy specs (``NAME``, ``NAME:ARG`` or ``LABEL=NAME[:ARG]``).
        presets: Env presets (names, YAML files or registered ids).
        options: The evaluation's settings (:func:`~activemri.cli._common.add_eval_options`).
        overrides: Env config overrides applied to every preset.

    Returns:
        The exit status, 0.
    """
    from activemri._dist import init_from_env, local_device
    from activemri.evaluation import EvalSettings, evaluate, format_table

    start = time.perf_counter()
    # Under torchrun every process plays the same episodes and the greedy oracle's candidate
    # scoring is split between them; rank 0 writes and prints.
    rank, _ = init_from_env(options.device)
    main = rank == 0
    try:
        settings = EvalSettings(
            policies=tuple(policies),
            presets=tuple(presets),
            accelerations=options.accelerations,
            split=options.split,
            max_slices=options.max_slices,
            policy_slices=options.policy_slices,
            subset_seed=options.subset_seed,
            seed=options.seed,
            batch_size=options.batch_size,
            device=local_device(options.device),
            overrides=dict(overrides),
        )
        doc = evaluate(
            settings,
            options.out,
            plots=options.plots,
            log=None if options.quiet or not main else print,
            show_progress=main and not options.quiet,
        )
    except (OSError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    if not main:
        return 0
    print(format_table(doc))
    plots = " and plots" if options.plots else ""
    elapsed = time.perf_counter() - start
    print(
        f"wrote {options.out}/results.json, results.csv, paired_tests.csv{plots} in {elapsed:.0f} s"
    )
    return 0
