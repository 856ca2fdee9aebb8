"""The ``activemri`` command line.

Each subcommand is a thin layer over a library function; ``activemri COMMAND --help`` says
what it does. Exit status: 0 on success; 1 when a check finds problems or the data are
unusable (a damaged or absurd slice, no readable slice); 2 on bad usage or bad input (a
missing or malformed file, an invalid setting); 3 on an unexpected error, which is a bug.
Failures print one line, ``activemri: error: ...``; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from activemri import __version__

__all__ = ["build_parser", "describe_failure", "main"]


class CommandError(Exception):
    """A user-facing failure: printed as ``activemri: error: ...`` with exit status 2."""


class _TensorBoardFlag(argparse.Action):
    """``--tensorboard``: refused at parsing when the package is missing, not after setup."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
        values: object, option_string: str | None = None,
    ) -> None:  # fmt: skip
        from importlib.util import find_spec

        if find_spec("tensorboard") is None:
            parser.error(f"{option_string} needs the tensorboard package: "
                         "pip install 'activemri[tensorboard]'")  # fmt: skip
        setattr(namespace, self.dest, True)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _seed(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


def _acceleration(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not (math.isfinite(value) and value >= 1.0):
        raise argparse.ArgumentTypeError(
            f"must be a finite number >= 1 (measured lines / acquired lines), got {text}"
        )
    return value


def _data_make(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from activemri.data.brain import MissingDataDependency
    from activemri.data.builtin import make_builtin, resolve_preset

    try:
        spec = resolve_preset(
            args.preset, num_volumes=args.volumes, slices_per_volume=args.slices,
            num_coils=args.coils,
        )  # fmt: skip
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    start = time.perf_counter()
    with tqdm(total=spec.num_volumes, unit="vol", disable=args.quiet, desc=spec.name) as bar:

        def progress(done: int, total: int) -> None:
            bar.update(done - bar.n)

        try:
            paths = make_builtin(args.out, spec, seed=args.seed, progress=progress,
                                 overwrite=args.overwrite, log=tqdm.write)  # fmt: skip
        except FileExistsError as exc:
            message = str(exc).replace("overwrite=True (--overwrite)", "--overwrite")
            raise CommandError(message) from exc
        except MissingDataDependency as exc:
            raise CommandError(str(exc)) from exc
    elapsed = time.perf_counter() - start
    kind = "single-coil" if spec.num_coils == 1 else f"{spec.num_coils}-coil"
    print(
        f"{args.out}: {len(paths)} volumes x {spec.slices_per_volume} slices ({kind}, k-space "
        f"{spec.kspace_shape[0]}x{spec.kspace_shape[1]}, targets "
        f"{spec.recon_size[0]}x{spec.recon_size[1]}) complete in {elapsed:.1f} s"
    )
    return 0


def _data_check(args: argparse.Namespace) -> int:
    from activemri.data.check import check_folder

    try:
        report = check_folder(args.dir, scan=not args.quick)
    except FileNotFoundError as exc:
        raise CommandError(str(exc)) from exc
    print(report.format())
    return 0 if report.ok else 1


def _recon_train(args: argparse.Namespace) -> int:
    from activemri.recon_models.training import train

    overrides: dict[str, object] = {}
    for key in ("seed", "epochs", "batch_size", "max_train_slices", "max_val_slices"):
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
    if args.bf16:
        overrides["bf16"] = True
    overrides.update(_parse_overrides(args.set))
    out = args.out or f"outputs/{Path(args.preset).stem}"
    try:
        result = train(args.preset, out, data=args.data, device=args.device, resume=args.resume,
                       overwrite=args.overwrite, overrides=overrides,
                       progress=not args.quiet)  # fmt: skip
    except (FileNotFoundError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    if result["history"]:
        print(
            f"best validation SSIM {result['best_val_ssim']:.4f}; model written to {out}/model.pt"
        )
    return 0


def _model_and_data(args: argparse.Namespace) -> tuple[Any, Any]:
    """The reconstructor of ``--checkpoint``/``--preset`` and the ``--data``/``--split`` slices."""
    from activemri.data import SliceDataset
    from activemri.recon_models import Reconstructor, reconstructor_from_preset
    from activemri.recon_models.training import resolve_data

    if args.checkpoint:
        model = Reconstructor.load(args.checkpoint, trust_class_path=args.trust_class_path)
    else:
        model = reconstructor_from_preset(args.preset)
    split = None if args.split == "all" else args.split
    return model, SliceDataset(resolve_data(args.data), split=split)


def _add_model_and_data(parser: argparse.ArgumentParser, default_split: str) -> None:
    """The options :func:`_model_and_data` reads."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="checkpoint file (model.pt)")
    source.add_argument("--preset", help="reconstructor preset: YAML path or name (unet_default)")
    parser.add_argument("--data", required=True, help="data folder or builtin:PRESET")
    parser.add_argument("--split", default=default_split, choices=["train", "val", "test", "all"],
                        help=f"split (all: every volume, e.g. a test-set folder; default "
                             f"{default_split})")  # fmt: skip
    parser.add_argument(
        "--trust-class-path", action="store_true",
        help="import a non-built-in class named in the checkpoint (runs its module's code)",
    )  # fmt: skip


def _recon_eval(args: argparse.Namespace) -> int:
    import json

    from activemri._io import atomic_write_text
    from activemri.recon_models.evaluate import evaluate_reconstructor

    try:
        model, dataset = _model_and_data(args)
        result = evaluate_reconstructor(
            model, dataset, args.mask_type, args.acceleration, seed=args.seed,
            device=args.device, batch_size=args.batch_size, max_slices=args.max_slices,
            fastmri_seeding=args.fastmri_seeding,
        )  # fmt: skip
    except (FileNotFoundError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    result["reconstructor"] = args.checkpoint or args.preset
    result["data"] = args.data
    result["split"] = args.split
    print(
        f"{result['num_slices']} slices, {args.mask_type} mask, {args.acceleration:g}x "
        f"requested, {result['actual_acceleration']:.3g}x run ({args.split} split of "
        f"{args.data})"
    )
    print(f"{'':<12} {'SSIM':>16} {'PSNR (dB)':>16} {'NMSE':>18}")
    for name in ("model", "zero_filled"):
        row = result[name]
        print(
            f"{name:<12} {row['ssim']['mean']:>8.4f} ± {row['ssim']['std']:<6.4f}"
            f"{row['psnr']['mean']:>8.2f} ± {row['psnr']['std']:<6.2f}"
            f"{row['nmse']['mean']:>9.4f} ± {row['nmse']['std']:<6.4f}"
        )
    images = result["model"]["per_image_ssim"], result["zero_filled"]["per_image_ssim"]
    print(
        f"per image: SSIM {images[0]['mean']:.4f} (median {images[0]['median']:.4f}) vs "
        f"zero-filled {images[1]['mean']:.4f}; model better on "
        f"{100 * result['model']['beats_zero_filled']:.0f}% of slices"
    )
    for kind, row in result["by_anatomy"].items():
        print(
            f"  {kind:<10} {row['num_slices']:>5} slices: SSIM {row['ssim']['mean']:.4f} vs "
            f"zero-filled {row['ssim_zero_filled']['mean']:.4f}"
        )
    unc = result.get("uncertainty")
    if unc and unc["spearman_per_image"]:
        print(
            f"uncertainty per image over tissue: Spearman(sigma, |error|) "
            f"{unc['spearman_per_image']['mean']:.3f}, 1.96-sigma coverage "
            f"{unc['coverage_1.96_per_image']['mean']:.3f}"
        )
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0


def _recon_check(args: argparse.Namespace) -> int:
    import json

    from activemri._io import atomic_write_text
    from activemri.recon_models.domain import check_domain, in_training_domain

    try:
        model, dataset = _model_and_data(args)
        folder = Path(dataset.root)
        if any(v.target_key is None for v in dataset.volumes):
            raise ValueError(f"{folder}: the check needs fully sampled targets")
        sizes = {dataset.slice_meta(i).recon_size for i in range(len(dataset))}
        indices = [i for i in range(len(dataset))
                   if dataset.slice_meta(i).recon_size == tuple(model.recon_size)]  # fmt: skip
        if not indices:
            raise ValueError(
                f"the reconstructor outputs {tuple(model.recon_size)} images but the targets in "
                f"{folder} are {sorted(sizes)}"
            )
        check = check_domain(model, dataset, indices=indices, num_slices=args.slices,
                             seed=args.seed, device=args.device)  # fmt: skip
    except (FileNotFoundError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    domain = model.training_domain or {}
    trained = in_training_domain(model, args.data, folder)
    print(f"reconstructor: {args.checkpoint or args.preset} ({type(model).__name__})")
    if domain:
        print(
            f"trained on: {domain.get('data')} (anatomies {domain.get('anatomies')}, coils "
            f"{domain.get('num_coils')}, k-space {domain.get('kspace_shapes')})"
            + ("; this is its training data" if trained else "")
        )
    else:
        print("trained on: not recorded in the checkpoint")
    print(check.summary())
    if args.json:
        doc = {**check.to_dict(), "reconstructor": args.checkpoint or args.preset,
               "training_domain": domain or None}  # fmt: skip
        atomic_write_text(args.json, json.dumps(doc, indent=2))
        print(f"wrote {args.json}")
    return 0 if check.helps else 1


def _data_override(args: argparse.Namespace) -> dict[str, object]:
    """``--data DIR`` as the env override ``data_root``."""
    data = getattr(args, "data", None)
    return {} if data is None else {"data_root": data}


def _parse_overrides(pairs: Sequence[str]) -> dict[str, object]:
    """``KEY=VALUE`` pairs; values are parsed as YAML scalars (``budget=10``, ``split=null``)."""
    import yaml

    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CommandError(f"--set takes KEY=VALUE, got {pair!r}")
        out[key] = yaml.safe_load(value)
    return out


def _env_list(args: argparse.Namespace) -> int:
    from activemri.envs.config import load_env_config
    from activemri.envs.registration import ENV_IDS

    for env_id, preset in ENV_IDS.items():
        try:
            description = load_env_config(preset).description
        except (OSError, ValueError) as exc:
            description = f"(preset unreadable: {exc})"
        print(f"{env_id:<30} {description}")
    return 0


def _env_check(args: argparse.Namespace) -> int:
    from activemri.envs.check import check_env_id
    from activemri.envs.registration import ENV_IDS

    if args.env_id not in ENV_IDS:
        raise CommandError(f"unknown env id {args.env_id!r}; choose from {sorted(ENV_IDS)}")
    report = check_env_id(args.env_id, **_parse_overrides(args.set))
    for name in report.passed:
        print(f"  ok    {name}")
    for note in report.explained:
        print(f"  note  {note}")
    for name, message in report.failed:
        print(f"  FAIL  {name}: {message}")
    for key, value in report.summary.items():
        print(f"  {key}: {value}")
    status = "passed" if report.ok else f"FAILED ({len(report.failed)} check(s))"
    print(f"{args.env_id}: {status}")
    return 0 if report.ok else 1


def _bench(args: argparse.Namespace) -> int:
    import torch

    from activemri.envs.bench import run_bench

    if args.device == "all":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    elif args.device == "cuda" and not torch.cuda.is_available():
        raise CommandError("--device cuda requested but CUDA is not available")
    else:
        devices = [args.device]
    run_bench(devices, args.sizes, args.reconstructors, args.batch_sizes, args.steps,
              reference=not args.no_reference, full=args.full)  # fmt: skip
    return 0


def _mask_learn(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from activemri.agents.learned_mask import learn_ordering

    overrides = {**_data_override(args), **_parse_overrides(args.set)}
    if args.device:
        overrides["device"] = args.device
    with tqdm(desc="learning ordering", unit="line", disable=args.quiet) as bar:

        def progress(done: int, total: int, score: float) -> None:
            bar.total = total
            bar.update(done - bar.n)
            bar.set_postfix({args.metric: f"{score:.4f}"})

        try:
            ordering = learn_ordering(
                args.env, sample_size=args.sample_size, max_lines=args.max_lines,
                metric=args.metric, seed=args.seed, out=args.out, progress=progress, **overrides,
            )  # fmt: skip
        except (OSError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
    print(
        f"{args.out}: {len(ordering.initial)} initial + {len(ordering.order)} learned lines "
        f"of {ordering.width}; mean {ordering.metric} on {args.sample_size} training slices "
        f"{ordering.scores[0]:.4f} -> {ordering.scores[-1]:.4f} "
        f"({ordering.provenance.get('elapsed_s', 0.0):.0f} s)"
    )
    return 0


def _agent_train(args: argparse.Namespace) -> int:
    from activemri.agents.preset import load_agent_preset
    from activemri.agents.training import train_agent

    try:
        preset = load_agent_preset(args.preset)
        if args.set:
            overrides = {**preset.env_overrides, **_parse_overrides(args.set)}
            preset = preset.replace(env_overrides=overrides, source=preset.source)
        out = args.out or str(Path("outputs") / "agents" / Path(args.preset).stem)
        result = train_agent(
            preset, out, total_steps=args.total_steps, device=args.device, seed=args.seed,
            resume=args.resume, tensorboard=args.tensorboard,
            time_limit=None if args.time_limit is None else 60.0 * args.time_limit,
            log=None if args.quiet else print, progress=not args.quiet,
        )  # fmt: skip
    except (OSError, ValueError, RuntimeError) as exc:
        raise CommandError(str(exc)) from exc
    best = max(result.evaluations, key=lambda r: r["ssim_auc"], default=None)
    summary = f"{result.final}: {result.steps} steps in {result.wall_seconds:.0f} s"
    if best is not None:
        summary += f"; best held-out SSIM AUC {best['ssim_auc']:.4f} at step {best['step']:.0f}"
    print(summary)
    return 0


def _agent_eval(args: argparse.Namespace) -> int:
    from activemri.agents.sb3_agent import check_stored_env, checkpoint_info
    from activemri.envs.registration import ENV_IDS

    try:
        info = checkpoint_info(args.checkpoint)
        check_stored_env(info, trust_class_path=args.trust_class_path)
    except (OSError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    preset = info["preset"]
    args.policies = [f"{args.label}=agent:{args.checkpoint}", *args.baselines]
    env = str(preset["env"])
    args.presets = [args.preset or ENV_IDS.get(env, env)]
    # The agent's env settings (its data, reconstructor, ...) apply, except what an
    # evaluation sets itself; --set wins.
    trained = {k: v for k, v in preset["env_overrides"].items() if k not in _EVAL_OWNED}
    return _evaluate(args, base_overrides=trained)


def _parse_counts(pairs: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for pair in pairs:
        label, sep, value = pair.partition("=")
        if not sep or not value.isdigit() or int(value) < 1:
            raise CommandError(f"--policy-slices takes LABEL=N with N >= 1, got {pair!r}")
        out[label] = int(value)
    return out


_EVAL_OWNED = {"split", "order", "max_slices", "subset_seed", "device", "acceleration", "budget"}


def _evaluate(args: argparse.Namespace, base_overrides: dict[str, Any] | None = None) -> int:
    from activemri.evaluation import EvalSettings, evaluate, format_table

    start = time.perf_counter()
    try:
        settings = EvalSettings(
            policies=tuple(args.policies), presets=tuple(args.presets),
            accelerations=tuple(args.accelerations), split=args.split,
            max_slices=args.max_slices, policy_slices=_parse_counts(args.policy_slices),
            subset_seed=args.subset_seed, seed=args.seed, batch_size=args.batch_size,
            device=args.device,
            overrides={**(base_overrides or {}), **_data_override(args),
                       **_parse_overrides(args.set)},
        )  # fmt: skip
        doc = evaluate(settings, args.out, plots=not args.no_plots,
                       log=None if args.quiet else print, show_progress=not args.quiet)  # fmt: skip
    except (OSError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    print(format_table(doc))
    plots = "" if args.no_plots else " and plots"
    elapsed = time.perf_counter() - start
    print(f"wrote {args.out}/results.json, results.csv, paired_tests.csv{plots} in {elapsed:.0f} s")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from activemri.evaluation.demo import run_demo

    try:
        run_demo(args.out, device=args.device, max_slices=args.max_slices,
                 oracle_slices=args.oracle_slices, learn=args.learn,
                 show_progress=not args.quiet)  # fmt: skip
    except (OSError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the ``activemri`` command."""
    from activemri.data.builtin import PRESETS
    from activemri.masks import FASTMRI_MASK_TYPES, MASK_TYPES

    parser = argparse.ArgumentParser(
        prog="activemri",
        description="Active MRI acquisition: simulator, reconstructors, policies, evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"activemri {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="on failure show the traceback instead of a one-line error "
                        "(accepted anywhere on the command line)")  # fmt: skip
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    data = commands.add_parser(
        "data", help="make built-in data or check a folder of fastMRI h5 files",
        description="Built-in data and checks of fastMRI-format h5 folders.",
    )  # fmt: skip
    data_commands = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    preset_lines = "\n".join(
        f"  {p.name:<15} {p.num_volumes} volumes x {p.slices_per_volume} slices, k-space "
        f"{p.kspace_shape[0]}x{p.kspace_shape[1]}, targets {p.recon_size[0]}x{p.recon_size[1]}, "
        f"{p.num_coils} coil(s), padding {p.padding}, anatomies {', '.join(p.anatomies)}"
        for p in PRESETS.values()
    )
    make = data_commands.add_parser(
        "make",
        help="write simulated volumes (brain, knee, abdomen) in fastMRI's h5 format",
        description=(
            "Write simulated volumes as fastMRI-format h5 files (kspace, "
            "reconstruction_esc/_rss, attrs, ISMRMRD header). Anatomies: brain (the MNI152 "
            "template shipped in nilearn, deformed per volume; needs pip install "
            "'activemri[data]'), a procedural coronal knee and a procedural axial abdomen. "
            "Deterministic per seed; files are written atomically and an interrupted run "
            "resumes."
        ),
        epilog=f"presets:\n{preset_lines}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    make.add_argument("--preset", default="default", choices=sorted(PRESETS), help="data preset")
    make.add_argument("--out", required=True, help="output folder")
    make.add_argument("--seed", type=_seed, default=0, help="data-set seed, >= 0 (default 0)")
    make.add_argument("--overwrite", action="store_true",
                      help="delete h5 files in OUT that are not volumes of this data set "
                      "(otherwise such a folder is refused)")  # fmt: skip
    make.add_argument("--coils", type=_positive_int, help="number of coils (1 = single-coil)")
    make.add_argument("--volumes", type=_positive_int, help="number of volumes")
    make.add_argument("--slices", type=_positive_int, help="slices per volume")
    make.add_argument("--quiet", action="store_true", help="no progress bar")
    make.set_defaults(func=_data_make)

    check = data_commands.add_parser(
        "check",
        help="check a folder of fastMRI h5 files and list every problem",
        description=(
            "Report files, slices, shapes, widths, measured columns (padding) and acquisitions "
            "of a folder of fastMRI h5 files, and every problem found. Exit status 1 if any "
            "file is broken or any slice holds NaN/inf."
        ),
    )
    check.add_argument("dir", help="folder of *.h5 files")
    check.add_argument(
        "--quick", action="store_true", help="check metadata only; do not read slice data"
    )
    check.set_defaults(func=_data_check)

    recon = commands.add_parser(
        "recon", help="train or evaluate reconstructors",
        description="Train reconstructors from presets and evaluate them against zero-filled.",
    )  # fmt: skip
    recon_commands = recon.add_subparsers(dest="recon_command", metavar="SUBCOMMAND", required=True)
    tr = recon_commands.add_parser(
        "train",
        help="train a reconstructor preset (supervised or SSDU)",
        description=(
            "Train the reconstructor of a YAML preset (recon_models/*.yaml) with the recipe in "
            "its 'train' section. Writes checkpoint.pt (resumable), model.pt (best by "
            "validation SSIM) and history.json to --out. Multi-process: launch with "
            "'torchrun --nproc_per_node N -m activemri.cli recon train ...'."
        ),
    )
    tr.add_argument("--preset", required=True, help="reconstructor preset YAML")
    tr.add_argument("--data", help="data folder or builtin:PRESET (default: the preset's)")
    tr.add_argument("--out", help="output folder (default outputs/PRESET_NAME)")
    tr.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    tr.add_argument("--overwrite", action="store_true",
                    help="replace the run in OUT (without --resume or --overwrite a folder that "
                    "holds one is refused)")  # fmt: skip
    tr.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    tr.add_argument("--seed", type=int, help="override the preset's seed")
    tr.add_argument("--epochs", type=_positive_int, help="override the number of epochs")
    tr.add_argument("--batch-size", type=_positive_int, help="override the batch size")
    tr.add_argument("--max-train-slices", type=_positive_int, help="train on the first N slices")
    tr.add_argument("--max-val-slices", type=_positive_int, help="validate on the first N slices")
    tr.add_argument("--bf16", action="store_true",
                    help="bf16 autocast (CUDA, or CPUs with native bf16)")  # fmt: skip
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a train setting of the preset (YAML value), e.g. "
                         "--set augment=false; repeatable")  # fmt: skip
    tr.add_argument("--quiet", action="store_true", help="no progress output")
    tr.set_defaults(func=_recon_train)

    ev = recon_commands.add_parser(
        "eval",
        help="SSIM/PSNR/NMSE of a reconstructor next to zero-filled",
        description=(
            "Evaluate a checkpoint (or a parameter-free preset such as recon_models/tv.yaml) "
            "on fixed, per-volume seeded masks; print mean ± std of SSIM, PSNR and NMSE for "
            "the model and for zero-filled, and optionally write them as JSON."
        ),
    )
    _add_model_and_data(ev, default_split="test")
    ev.add_argument("--mask-type", default="random", help="mask",
                    choices=[*sorted(MASK_TYPES), *FASTMRI_MASK_TYPES])  # fmt: skip
    ev.add_argument("--acceleration", type=_acceleration, default=4.0,
                    help="acceleration, >= 1 (default 4)")  # fmt: skip
    ev.add_argument("--seed", type=int, default=0, help="mask seed")
    ev.add_argument("--fastmri-seeding", action="store_true",
                    help="seed each volume's mask from its file name as fastMRI does, so "
                         "fastmri_* mask types give fastMRI's exact masks (--seed "
                         "unused)")  # fmt: skip
    ev.add_argument("--device", default="cpu", help="cpu or cuda")
    ev.add_argument("--batch-size", type=_positive_int, default=16,
                    help="slices per forward (default 16)")  # fmt: skip
    ev.add_argument("--max-slices", type=_positive_int, help="evaluate the first N slices")
    ev.add_argument("--json", help="write the results to this JSON file")
    ev.set_defaults(func=_recon_eval)

    ck = recon_commands.add_parser(
        "check",
        help="does a reconstructor help on this data? (exit 1 if not better than zero-filled)",
        description=(
            "Reconstruct a seeded sample of slices of DIR at 4x and 8x (random masks, fastMRI "
            "ACS fractions, volume max as data range), compare the per-image SSIM with "
            "zero-filled on the same masks, and say whether the model helps there. Exit "
            "status 0 if it beats zero-filled at every acceleration, 1 if not."
        ),
    )
    _add_model_and_data(ck, default_split="all")
    ck.add_argument("--slices", type=_positive_int, default=32, help="sample size (default 32)")
    ck.add_argument("--seed", type=int, default=0, help="seed of the sample and the masks")
    ck.add_argument("--device", default="cpu", help="cpu or cuda")
    ck.add_argument("--json", help="write the check to this JSON file")
    ck.set_defaults(func=_recon_check)

    env = commands.add_parser(
        "env", help="list and check the registered environments",
        description="The registered ActiveMRI/* Gymnasium environments.",
    )  # fmt: skip
    env_commands = env.add_subparsers(dest="env_command", metavar="SUBCOMMAND", required=True)
    ls = env_commands.add_parser("list", help="registered ids with their presets' descriptions")
    ls.set_defaults(func=_env_list)
    ck = env_commands.add_parser(
        "check",
        help="Gymnasium and SB3 check_env, a seeded rollout, a summary",
        description=(
            "Make the env, run Gymnasium's check_env and SB3's check_env (only the documented "
            "float-image warnings are allowed), roll out seed 0 twice (must be identical, "
            "rewards must telescope), render a frame, and print a summary. Exit 1 on failure."
        ),
    )
    ck.add_argument("env_id", nargs="?", default="ActiveMRI/Builtin-v0", help="registered id")
    ck.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="config override, repeatable (e.g. --set data_root=/data/knee --set device=cpu)",
    )  # fmt: skip
    ck.set_defaults(func=_env_check)

    mask = commands.add_parser(
        "mask", help="learn a fixed mask (greedy line ordering)",
        description="Fixed masks learned from data.",
    )  # fmt: skip
    mask_commands = mask.add_subparsers(dest="mask_command", metavar="SUBCOMMAND", required=True)
    learn = mask_commands.add_parser(
        "learn",
        help="greedy (LBCS-style) ordering of lines on a training sample",
        description=(
            "From the env preset's initial (ACS) lines, repeatedly add the line that maximizes "
            "the mean metric over a seeded sample of training slices with the preset's "
            "reconstructor, up to --max-lines. Writes an ordering (every smaller budget is a "
            "prefix) as JSON with its provenance after every line; rerun the same command to "
            "resume. Cost: one reconstructor forward per sample slice per free line per step."
        ),
    )
    learn.add_argument("--env", default="builtin-v0", help="env preset name or YAML (default "
                       "builtin-v0)")  # fmt: skip
    learn.add_argument("--out", required=True, help="output JSON file")
    learn.add_argument("--data", help="a folder of fastMRI h5 files to learn on (data_root)")
    learn.add_argument("--sample-size", type=_positive_int, default=16,
                       help="training slices in the sample (default 16)")  # fmt: skip
    learn.add_argument("--max-lines", type=_positive_int,
                       help="lines at the end (default: the preset's episode end)")  # fmt: skip
    learn.add_argument("--metric", default="ssim", choices=["ssim", "psnr", "nmse", "mse"],
                       help="score to maximize (default ssim)")  # fmt: skip
    learn.add_argument("--seed", type=int, default=0, help="seed of the slice sample")
    learn.add_argument("--device", help="cpu or cuda (default: the preset's)")
    learn.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="env config override, repeatable (e.g. --set data_root=/data/knee)",
    )  # fmt: skip
    learn.add_argument("--quiet", action="store_true", help="no progress bar")
    learn.set_defaults(func=_mask_learn)

    from activemri.evaluation.demo import CPU_ORACLE_SLICES, CPU_SLICES
    from activemri.evaluation.policies import POLICY_FACTORIES

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
    _add_eval_options(ev, accelerations=[4.0, 8.0])
    ev.set_defaults(func=_evaluate)

    _add_agent_parser(commands)

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
    demo.add_argument("--max-slices", type=_positive_int, default=-1,
                      help="test slices per policy (default: per device)")  # fmt: skip
    demo.add_argument("--oracle-slices", type=_positive_int, default=-1,
                      help="test slices for the greedy oracle (default: per device)")  # fmt: skip
    demo.add_argument("--learn", action="store_true",
                      help="learn the fixed mask here (about 30 min on a 2-core CPU)")  # fmt: skip
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_demo)

    bench = commands.add_parser(
        "bench",
        help="env step time, breakdown, overhead over the bare forward, reference ratio",
        description=(
            "Time the batched env step (random valid actions, reset cost amortized over the "
            "episode) split into "
            "data / mask_fft / forward / metric / other, the bare reconstructor forward, "
            "steps/s, peak memory, and the reference per-image pipeline "
            "(benchmarks/reference_pipeline.py) on the same batch. The knee size builds the "
            "built-in knee data on first use (~20 s)."
        ),
    )
    bench.add_argument("--device", default="all", help="cpu, cuda or all (default: all present)")
    bench.add_argument("--sizes", nargs="+", default=["builtin", "knee"],
                       choices=["builtin", "knee"], help="data sizes")  # fmt: skip
    bench.add_argument("--reconstructors", nargs="+", default=["zero_filled", "unet"],
                       choices=["zero_filled", "unet"], help="reconstructors")  # fmt: skip
    bench.add_argument("--batch-sizes", nargs="+", type=_positive_int, default=[1, 16, 64],
                       help="episodes per batched step (default 1 16 64)")  # fmt: skip
    bench.add_argument("--steps", type=_positive_int, default=20, help="timed steps per row")
    bench.add_argument("--no-reference", action="store_true", help="skip the reference")
    bench.add_argument("--full", action="store_true", help="also the knee-size U-Net on CPU")
    bench.set_defaults(func=_bench)
    return parser


def _add_eval_options(ev: argparse.ArgumentParser, accelerations: Sequence[float]) -> None:
    ev.add_argument("--accelerations", nargs="+", type=_acceleration, default=list(accelerations),
                    help="budgets as accelerations (default "
                    f"{' '.join(f'{a:g}' for a in accelerations)})")  # fmt: skip
    ev.add_argument("--split", default="test", choices=["train", "val", "test", "all"],
                    help="split (all: every volume, e.g. a test-set folder)")  # fmt: skip
    ev.add_argument("--data", help="a folder of fastMRI h5 files to evaluate on (data_root)")
    ev.add_argument("--max-slices", type=_positive_int, help="seeded subset of N slices")
    ev.add_argument("--policy-slices", nargs="+", default=[], metavar="LABEL=N",
                    help="smaller nested subsets per policy, e.g. greedy_oracle=16")  # fmt: skip
    ev.add_argument("--subset-seed", type=int, default=0, help="seed of the subsets")
    ev.add_argument("--seed", type=int, default=0, help="seed of the policies and resets")
    ev.add_argument("--batch-size", type=_positive_int, default=16, help="episodes at once")
    ev.add_argument("--device", default="auto",
                    help="auto, cpu or cuda (--set device=... does the same; giving both, "
                    "differently, is an error)")  # fmt: skip
    ev.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="env config override for every preset (e.g. data_root=/data/knee)",
    )  # fmt: skip
    ev.add_argument("--out", required=True, help="output folder")
    ev.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    ev.add_argument("--quiet", action="store_true", help="no progress output")


def _add_agent_parser(commands: Any) -> None:
    agent = commands.add_parser(
        "agent", help="train and evaluate RL sampling agents (Double DQN, MaskablePPO)",
        description="RL sampling agents from the presets in agents/ (see agents/README.md).",
    )  # fmt: skip
    agent_commands = agent.add_subparsers(dest="agent_command", metavar="SUBCOMMAND",
                                          required=True)  # fmt: skip
    tr = agent_commands.add_parser(
        "train",
        help="train an agent from a preset (checkpoints, resume, logs, periodic evaluation)",
        description=(
            "Train the preset's agent on its env. OUT gets checkpoint.zip (+ replay-STEP.pt "
            "for Double DQN; atomic, every checkpoint_every steps), agent.zip (final), best.zip "
            "(best held-out SSIM AUC), eval.csv, progress.csv (SB3 logger) and training.json. "
            "Rerun with --resume to continue an interrupted run."
        ),
    )
    tr.add_argument("--preset", required=True,
                    help="agent preset YAML (e.g. agents/ddqn-builtin.yaml)")  # fmt: skip
    tr.add_argument("--out", help="output folder (default outputs/agents/PRESET_NAME)")
    tr.add_argument("--total-steps", type=_positive_int, help="env steps (default: the preset's)")
    tr.add_argument("--device", help="auto, cpu or cuda (default: the preset's, else auto)")
    tr.add_argument("--seed", type=int, help="seed (default: the preset's)")
    tr.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.zip")
    tr.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="env config override on top of the preset's, repeatable (e.g. --set "
        "data_root=/data/knee); stored in the checkpoint, repeat it with --resume",
    )  # fmt: skip
    tr.add_argument("--time-limit", type=float, metavar="MINUTES",
                    help="stop (with a checkpoint) after this much training time")  # fmt: skip
    tr.add_argument("--tensorboard", action=_TensorBoardFlag, nargs=0, default=False,
                    help="also write TensorBoard logs (needs activemri[tensorboard])")  # fmt: skip
    tr.add_argument("--quiet", action="store_true", help="no progress bar or lines")
    tr.set_defaults(func=_agent_train)

    ev = agent_commands.add_parser(
        "eval",
        help="evaluate a trained agent next to baselines (same results as activemri evaluate)",
        description=(
            "Run `activemri evaluate` with the checkpoint as policy agent:PATH (greedy actions) "
            "and the given baselines, on the checkpoint's env preset unless --preset is given."
        ),
    )
    ev.add_argument("--checkpoint", required=True, help="agent zip (e.g. OUT/agent.zip)")
    ev.add_argument("--label", default="agent", help="the agent's name in reports")
    ev.add_argument("--baselines", nargs="*", default=["random", "low_to_high", "learned"],
                    metavar="SPEC", help="policies to compare with (default random "
                    "low_to_high learned)")  # fmt: skip
    ev.add_argument("--preset", help="env preset to evaluate on (default: the agent's)")
    ev.add_argument("--trust-class-path", action="store_true",
                    help="allow module names stored in the checkpoint's env settings (an env "
                    "id or reconstructor module:Class): importing them runs their code, so only "
                    "for files you trust")  # fmt: skip
    _add_eval_options(ev, accelerations=[4.0])
    ev.set_defaults(func=_agent_eval)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def describe_failure(exc: BaseException) -> tuple[int, str]:
    """The exit status and one-line message the CLI gives for an exception.

    Args:
        exc: What a subcommand raised.

    Returns:
        ``(status, message)``: 1 for unusable data, 2 for bad usage or input (including
        missing files, unreadable checkpoints, invalid settings, non-finite results and
        missing optional packages), 3 for anything else (a bug).
    """
    import zipfile

    from activemri.data.dataset import CorruptSliceError, InvalidVolumeError
    from activemri.envs.simulator import NoReadableSliceError

    data_errors = (CorruptSliceError, InvalidVolumeError, NoReadableSliceError)
    if isinstance(exc, data_errors) or isinstance(exc.__cause__, data_errors):
        return 1, _one_line(str(exc))
    if isinstance(exc, CommandError):
        return 2, _one_line(str(exc))
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        return 2, _one_line(f"{exc.filename}: {exc.strerror}")
    expected = (ValueError, OSError, FloatingPointError, RuntimeError, ImportError, EOFError,
                zipfile.BadZipFile)  # fmt: skip
    gym_error = getattr(sys.modules.get("gymnasium.error"), "Error", None)
    if isinstance(exc, expected) or (gym_error is not None and isinstance(exc, gym_error)):
        return 2, _one_line(str(exc) or type(exc).__name__)
    return 3, _one_line(
        f"unexpected {type(exc).__name__}: {exc} (this is a bug in activemri: rerun with "
        "--debug for the traceback and report it)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``activemri`` command line.

    Args:
        argv: Arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns:
        The exit status (see the module docstring).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug is accepted anywhere on the line, not only before the subcommand.
    end = argv.index("--") if "--" in argv else len(argv)
    if "--debug" in argv[:end]:
        argv = ["--debug", *[a for i, a in enumerate(argv) if not (a == "--debug" and i < end)]]
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.func(args)
    except Exception as exc:
        if args.debug:
            raise
        status, message = describe_failure(exc)
        print(f"activemri: error: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
