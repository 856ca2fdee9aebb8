"""The ``activemri`` command line.

Each subcommand is a thin layer over a library function; ``activemri COMMAND --help`` says
what it does. Exit status: 0 on success, 1 when a check finds problems, 2 on bad usage or
bad input (with a one-line error, no traceback).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from activemri import __version__

__all__ = ["build_parser", "main"]


class CommandError(Exception):
    """A user-facing failure: printed as ``activemri: error: ...`` with exit status 2."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _data_make(args: argparse.Namespace) -> int:
    from tqdm import tqdm

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

        paths = make_builtin(args.out, spec, seed=args.seed, progress=progress)
    elapsed = time.perf_counter() - start
    kind = "single-coil" if spec.num_coils == 1 else f"{spec.num_coils}-coil"
    print(
        f"wrote {len(paths)} volumes x {spec.slices_per_volume} slices ({kind}, k-space "
        f"{spec.kspace_shape[0]}x{spec.kspace_shape[1]}, targets "
        f"{spec.recon_size[0]}x{spec.recon_size[1]}) to {args.out} in {elapsed:.1f} s"
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


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the ``activemri`` command."""
    from activemri.data.builtin import PRESETS

    parser = argparse.ArgumentParser(
        prog="activemri",
        description="Active MRI acquisition: simulator, reconstructors, policies, evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"activemri {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    data = commands.add_parser(
        "data", help="make built-in data or check a folder of fastMRI h5 files",
        description="Built-in data and checks of fastMRI-format h5 folders.",
    )  # fmt: skip
    data_commands = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    preset_lines = "\n".join(
        f"  {p.name:<15} {p.num_volumes} volumes x {p.slices_per_volume} slices, k-space "
        f"{p.kspace_shape[0]}x{p.kspace_shape[1]}, targets {p.recon_size[0]}x{p.recon_size[1]}, "
        f"{p.num_coils} coil(s), padding {p.padding}"
        for p in PRESETS.values()
    )
    make = data_commands.add_parser(
        "make",
        help="write simulated knee volumes in fastMRI's h5 format",
        description=(
            "Write simulated coronal knee volumes as fastMRI-format h5 files (kspace, "
            "reconstruction_esc/_rss, attrs, ISMRMRD header). Deterministic per seed; files "
            "are written atomically and an interrupted run resumes."
        ),
        epilog=f"presets:\n{preset_lines}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    make.add_argument("--preset", default="default", choices=sorted(PRESETS), help="data preset")
    make.add_argument("--out", required=True, help="output folder")
    make.add_argument("--seed", type=int, default=0, help="data-set seed (default 0)")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``activemri`` command line.

    Args:
        argv: Arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns:
        The exit status.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.func(args)
    except CommandError as exc:
        print(f"activemri: error: {exc}", file=sys.stderr)
        return 2
    return status


if __name__ == "__main__":
    sys.exit(main())
