"""The ``activemri`` command line.

Each subcommand is a thin layer over a library function; ``activemri COMMAND --help`` says
what it does. Exit status: 0 on success; 1 when a check finds problems or the data are
unusable (a damaged or absurd slice, no readable slice); 2 on bad usage or bad input (a
missing or malformed file, an invalid setting); 3 on an unexpected error, which is a bug.
Failures print one line, ``activemri: error: ...``; ``--debug`` shows the traceback instead.

Each command group builds its parser next to its code, in a module of this package
(``data``, ``recon``, ``env``, ``mask``, ``evaluate``, ``agent``, ``demo``, ``bench``) with an
``add_parser(commands)``; what they share is in ``_common``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from activemri._version import __version__
from activemri.cli import agent, bench, data, demo, env, evaluate, mask, recon
from activemri.cli._common import CommandError

__all__ = ["build_parser", "describe_failure", "main"]

_COMMANDS = (data, recon, env, mask, evaluate, agent, demo, bench)
"""The command modules, in the order ``activemri --help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the ``activemri`` command."""
    parser = argparse.ArgumentParser(
        prog="activemri",
        description="Active MRI acquisition: simulator, reconstructors, policies, evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"activemri {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help=(
            "on failure show the traceback instead of a one-line error (accepted anywhere on "
            "the command line)"
        ),
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _COMMANDS:
        module.add_parser(commands)
    return parser


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
    from activemri.envs.source import NoReadableSliceError

    data_errors = (CorruptSliceError, InvalidVolumeError, NoReadableSliceError)
    if isinstance(exc, data_errors) or isinstance(exc.__cause__, data_errors):
        return 1, _one_line(str(exc))
    if isinstance(exc, CommandError):
        return 2, _one_line(str(exc))
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        return 2, _one_line(f"{exc.filename}: {exc.strerror}")
    expected = (
        ValueError,
        OSError,
        FloatingPointError,
        RuntimeError,
        ImportError,
        EOFError,
        zipfile.BadZipFile,
    )
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
