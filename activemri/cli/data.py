"""``activemri data make`` and ``activemri data check``."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from activemri.cli._common import CommandError, _positive_int, _seed

if TYPE_CHECKING:
    from activemri.cli._common import Commands


def add_parser(commands: Commands) -> None:
    """Add ``data`` and its subcommands to ``commands``."""
    data = commands.add_parser(
        "data",
        help="make built-in data or check a folder of fastMRI h5 files",
        description="Built-in data and checks of fastMRI-format h5 folders.",
    )
    data_commands = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    _add_make(data_commands)
    _add_check(data_commands)


def _add_make(data_commands: Commands) -> None:
    from activemri.data.builtin import PRESETS

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
    make.add_argument(
        "--overwrite",
        action="store_true",
        help=(
            "delete h5 files in OUT that are not volumes of this data set (otherwise such a "
            "folder is refused)"
        ),
    )
    make.add_argument("--coils", type=_positive_int, help="number of coils (1 = single-coil)")
    make.add_argument("--volumes", type=_positive_int, help="number of volumes")
    make.add_argument("--slices", type=_positive_int, help="slices per volume")
    make.add_argument("--quiet", action="store_true", help="no progress bar")
    make.set_defaults(func=_data_make)


def _add_check(data_commands: Commands) -> None:
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


def _data_make(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from activemri.data.brain import MissingDataDependency
    from activemri.data.builtin import make_builtin, resolve_preset

    try:
        spec = resolve_preset(
            args.preset,
            num_volumes=args.volumes,
            slices_per_volume=args.slices,
            num_coils=args.coils,
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    start = time.perf_counter()
    with tqdm(total=spec.num_volumes, unit="vol", disable=args.quiet, desc=spec.name) as bar:

        def progress(done: int, total: int) -> None:
            bar.update(done - bar.n)

        try:
            paths = make_builtin(
                args.out,
                spec,
                seed=args.seed,
                progress=progress,
                overwrite=args.overwrite,
                log=tqdm.write,
            )
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
