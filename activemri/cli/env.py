"""``activemri env list`` and ``activemri env check``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from activemri.cli._common import CommandError, add_set_option, parse_overrides

if TYPE_CHECKING:
    from activemri.cli._common import Commands


def add_parser(commands: Commands) -> None:
    """Add ``env`` and its subcommands to ``commands``."""
    env = commands.add_parser(
        "env",
        help="list and check the registered environments",
        description="The registered ActiveMRI/* Gymnasium environments.",
    )
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
    add_set_option(
        ck, "config override, repeatable (e.g. --set data_root=/data/knee --set device=cpu)"
    )
    ck.set_defaults(func=_env_check)


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
    report = check_env_id(args.env_id, **parse_overrides(args.set))
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
