"""``activemri recon train``, ``activemri recon eval`` and ``activemri recon check``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from activemri.cli._common import (
    CommandError,
    _acceleration,
    _positive_int,
    add_set_option,
    parse_overrides,
)

if TYPE_CHECKING:
    from activemri.cli._common import Commands


def add_parser(commands: Commands) -> None:
    """Add ``recon`` and its subcommands to ``commands``."""
    recon = commands.add_parser(
        "recon",
        help="train or evaluate reconstructors",
        description="Train reconstructors from presets and evaluate them against zero-filled.",
    )
    recon_commands = recon.add_subparsers(dest="recon_command", metavar="SUBCOMMAND", required=True)
    _add_train(recon_commands)
    _add_eval(recon_commands)
    _add_check(recon_commands)


def _add_train(recon_commands: Commands) -> None:
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
    tr.add_argument(
        "--overwrite",
        action="store_true",
        help=(
            "replace the run in OUT (without --resume or --overwrite a folder that holds one "
            "is refused)"
        ),
    )
    tr.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    tr.add_argument("--seed", type=int, help="override the preset's seed")
    tr.add_argument("--epochs", type=_positive_int, help="override the number of epochs")
    tr.add_argument("--batch-size", type=_positive_int, help="override the batch size")
    tr.add_argument("--max-train-slices", type=_positive_int, help="train on the first N slices")
    tr.add_argument("--max-val-slices", type=_positive_int, help="validate on the first N slices")
    tr.add_argument(
        "--bf16", action="store_true", help="bf16 autocast (CUDA, or CPUs with native bf16)"
    )
    add_set_option(
        tr,
        "override a train setting of the preset (YAML value), e.g. --set augment=false; repeatable",
    )
    tr.add_argument("--quiet", action="store_true", help="no progress output")
    tr.set_defaults(func=_recon_train)


def _add_eval(recon_commands: Commands) -> None:
    from activemri.masks import FASTMRI_MASK_TYPES, MASK_TYPES
    from activemri.masks2d import MASK_TYPES_2D

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
    ev.add_argument(
        "--mask-type",
        default="random",
        help="mask: a line mask, or for 3-D volumes (ky-kz planes) a point mask (poisson, "
        "variable_density, random, equispaced, low_to_high)",
        choices=sorted({*MASK_TYPES, *FASTMRI_MASK_TYPES, *MASK_TYPES_2D}),
    )
    ev.add_argument(
        "--acceleration",
        type=_acceleration,
        default=4.0,
        help="acceleration, >= 1 (default 4)",
    )
    ev.add_argument("--seed", type=int, default=0, help="mask seed")
    ev.add_argument(
        "--fastmri-seeding",
        action="store_true",
        help=(
            "seed each volume's mask from its file name as fastMRI does, so fastmri_* mask "
            "types give fastMRI's exact masks (--seed unused)"
        ),
    )
    ev.add_argument("--device", default="cpu", help="cpu or cuda")
    ev.add_argument(
        "--batch-size", type=_positive_int, default=16, help="slices per forward (default 16)"
    )
    ev.add_argument("--max-slices", type=_positive_int, help="evaluate the first N slices")
    ev.add_argument("--json", help="write the results to this JSON file")
    ev.set_defaults(func=_recon_eval)


def _add_check(recon_commands: Commands) -> None:
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


def _add_model_and_data(parser: argparse.ArgumentParser, default_split: str) -> None:
    """The options :func:`_model_and_data` reads."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="checkpoint file (model.pt)")
    source.add_argument("--preset", help="reconstructor preset: YAML path or name (unet_default)")
    parser.add_argument("--data", required=True, help="data folder or builtin:PRESET")
    parser.add_argument(
        "--split",
        default=default_split,
        choices=["train", "val", "test", "all"],
        help=f"split (all: every volume, e.g. a test-set folder; default {default_split})",
    )
    parser.add_argument(
        "--trust-class-path",
        action="store_true",
        help="import a non-built-in class named in the checkpoint (runs its module's code)",
    )


def _model_and_data(args: argparse.Namespace) -> tuple[Any, Any]:
    """The reconstructor of ``--checkpoint``/``--preset`` and the ``--data``/``--split`` slices."""
    from activemri.data import SliceDataset
    from activemri.recon_models import load_preset, resolve
    from activemri.recon_models.training import resolve_data

    if args.checkpoint:  # a Path: always read as a checkpoint, whatever its suffix
        model = resolve(Path(args.checkpoint), trust_class_path=args.trust_class_path)
    else:  # evaluating an untrained model is allowed: it shows what training brings
        model = resolve(load_preset(args.preset), allow_untrained=True)
    split = None if args.split == "all" else args.split
    return model, SliceDataset(resolve_data(args.data), split=split)


def _recon_train(args: argparse.Namespace) -> int:
    from activemri.recon_models.training import train

    overrides: dict[str, object] = {}
    for key in ("seed", "epochs", "batch_size", "max_train_slices", "max_val_slices"):
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
    if args.bf16:
        overrides["bf16"] = True
    overrides.update(parse_overrides(args.set))
    out = args.out or f"outputs/{Path(args.preset).stem}"
    try:
        result = train(
            args.preset,
            out,
            data=args.data,
            device=args.device,
            resume=args.resume,
            overwrite=args.overwrite,
            overrides=overrides,
            progress=not args.quiet,
        )
    except (FileNotFoundError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    if result["history"]:
        print(
            f"best validation SSIM {result['best_val_ssim']:.4f}; model written to {out}/model.pt"
        )
    return 0


def _recon_eval(args: argparse.Namespace) -> int:
    import json

    from activemri._io import atomic_write_text
    from activemri.recon_models.evaluate import evaluate_reconstructor

    try:
        model, dataset = _model_and_data(args)
        result = evaluate_reconstructor(
            model,
            dataset,
            args.mask_type,
            args.acceleration,
            seed=args.seed,
            device=args.device,
            batch_size=args.batch_size,
            max_slices=args.max_slices,
            fastmri_seeding=args.fastmri_seeding,
        )
    except (FileNotFoundError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    result["reconstructor"] = args.checkpoint or args.preset
    result["data"] = args.data
    result["split"] = args.split
    _print_recon_eval(args, result)
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0


def _print_recon_eval(args: argparse.Namespace, result: dict[str, Any]) -> None:
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


def _recon_check(args: argparse.Namespace) -> int:
    import json

    from activemri._io import atomic_write_text
    from activemri.recon_models.domain import check_domain, in_training_domain

    try:
        model, dataset = _model_and_data(args)
        folder = Path(dataset.root)
        indices = _matching_slices(model, dataset, folder)
        check = check_domain(
            model,
            dataset,
            indices=indices,
            num_slices=args.slices,
            seed=args.seed,
            device=args.device,
        )
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
        doc = {
            **check.to_dict(),
            "reconstructor": args.checkpoint or args.preset,
            "training_domain": domain or None,
        }
        atomic_write_text(args.json, json.dumps(doc, indent=2))
        print(f"wrote {args.json}")
    return 0 if check.helps else 1


def _matching_slices(model: Any, dataset: Any, folder: Path) -> list[int]:
    """The slices whose fully sampled targets have the reconstructor's output size."""
    if any(v.target_key is None for v in dataset.volumes):
        raise ValueError(f"{folder}: the check needs fully sampled targets")
    sizes = {dataset.slice_meta(i).recon_size for i in range(len(dataset))}
    recon_size = tuple(model.recon_size)
    indices = [i for i in range(len(dataset)) if dataset.slice_meta(i).recon_size == recon_size]
    if not indices:
        raise ValueError(
            f"the reconstructor outputs {recon_size} images but the targets in "
            f"{folder} are {sorted(sizes)}"
        )
    return indices
