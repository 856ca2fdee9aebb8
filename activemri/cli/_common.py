"""What the ``activemri`` subcommands share: argument types, ``--set`` overrides, options.

Nothing here imports a heavy module at import time: ``activemri --help`` builds every parser.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    Commands = argparse._SubParsersAction[argparse.ArgumentParser]
    """The ``add_subparsers`` object a command module adds its parser to."""


class CommandError(Exception):
    """A user-facing failure: printed as ``activemri: error: ...`` with exit status 2."""


# The names of the argument types show in argparse's errors ("invalid _positive_int value").
def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


def _seed(text: str) -> int:
    return _non_negative_int(text)


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


def add_set_option(parser: argparse.ArgumentParser, help: str) -> None:
    """A repeatable ``--set KEY=VALUE`` (read with :func:`parse_overrides`)."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=help)


def parse_overrides(pairs: Sequence[str]) -> dict[str, object]:
    """``KEY=VALUE`` pairs; values are parsed as YAML scalars (``budget=10``, ``split=null``)."""
    import yaml

    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CommandError(f"--set takes KEY=VALUE, got {pair!r}")
        out[key] = yaml.safe_load(value)
    return out


def data_override(args: argparse.Namespace) -> dict[str, object]:
    """``--data DIR`` as the env override ``data_root``."""
    data = getattr(args, "data", None)
    return {} if data is None else {"data_root": data}


def _parse_counts(pairs: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for pair in pairs:
        label, sep, value = pair.partition("=")
        if not sep or not value.isdigit() or int(value) < 1:
            raise CommandError(f"--policy-slices takes LABEL=N with N >= 1, got {pair!r}")
        out[label] = int(value)
    return out


def add_eval_options(ev: argparse.ArgumentParser, accelerations: Sequence[float]) -> None:
    """The options of an evaluation, read with :meth:`EvalOptions.from_args`."""
    default = " ".join(f"{a:g}" for a in accelerations)
    ev.add_argument(
        "--accelerations",
        nargs="+",
        type=_acceleration,
        default=list(accelerations),
        help=f"budgets as accelerations (default {default})",
    )
    ev.add_argument(
        "--split",
        default="test",
        choices=["train", "val", "test", "all"],
        help="split (all: every volume, e.g. a test-set folder)",
    )
    ev.add_argument("--data", help="a folder of fastMRI h5 files to evaluate on (data_root)")
    ev.add_argument("--max-slices", type=_positive_int, help="seeded subset of N slices")
    ev.add_argument(
        "--policy-slices",
        nargs="+",
        default=[],
        metavar="LABEL=N",
        help="smaller nested subsets per policy, e.g. greedy_oracle=16",
    )
    ev.add_argument("--subset-seed", type=int, default=0, help="seed of the subsets")
    ev.add_argument("--seed", type=int, default=0, help="seed of the policies and resets")
    ev.add_argument("--batch-size", type=_positive_int, default=16, help="episodes at once")
    ev.add_argument(
        "--device",
        default="auto",
        help=(
            "auto, cpu or cuda (--set device=... does the same; giving both, differently, is "
            "an error)"
        ),
    )
    add_set_option(ev, "env config override for every preset (e.g. data_root=/data/knee)")
    ev.add_argument("--out", required=True, help="output folder")
    ev.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    ev.add_argument("--quiet", action="store_true", help="no progress output")


@dataclass(frozen=True)
class EvalOptions:
    """The settings of :func:`add_eval_options` other than the env overrides.

    ``--data`` and ``--set`` are the overrides: :func:`data_override`, :func:`parse_overrides`.
    """

    accelerations: tuple[float, ...]
    split: str
    max_slices: int | None
    policy_slices: dict[str, int]
    subset_seed: int
    seed: int
    batch_size: int
    device: str
    out: str
    plots: bool
    quiet: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> EvalOptions:
        """The options parsed from the command line; a bad ``--policy-slices`` is refused."""
        return cls(
            accelerations=tuple(args.accelerations),
            split=args.split,
            max_slices=args.max_slices,
            policy_slices=_parse_counts(args.policy_slices),
            subset_seed=args.subset_seed,
            seed=args.seed,
            batch_size=args.batch_size,
            device=args.device,
            out=args.out,
            plots=not args.no_plots,
            quiet=args.quiet,
        )
