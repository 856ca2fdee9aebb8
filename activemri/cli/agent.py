"""``activemri agent train`` and ``activemri agent eval``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from activemri.cli._common import (
    CommandError,
    EvalOptions,
    _positive_int,
    add_eval_options,
    add_set_option,
    data_override,
    parse_overrides,
)
from activemri.cli.evaluate import EVAL_OWNED, run_evaluate

if TYPE_CHECKING:
    from activemri.cli._common import Commands


class _TensorBoardFlag(argparse.Action):
    """``--tensorboard``: refused at parsing when the package is missing, not after setup."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        from importlib.util import find_spec

        if find_spec("tensorboard") is None:
            parser.error(
                f"{option_string} needs the tensorboard package: "
                "pip install 'activemri[tensorboard]'"
            )
        setattr(namespace, self.dest, True)


def add_parser(commands: Commands) -> None:
    """Add ``agent`` and its subcommands to ``commands``."""
    agent = commands.add_parser(
        "agent",
        help="train and evaluate RL sampling agents (Double DQN, MaskablePPO)",
        description="RL sampling agents from the presets in agents/ (see agents/README.md).",
    )
    agent_commands = agent.add_subparsers(dest="agent_command", metavar="SUBCOMMAND", required=True)
    _add_train(agent_commands)
    _add_eval(agent_commands)


def _add_train(agent_commands: Commands) -> None:
    tr = agent_commands.add_parser(
        "train",
        help="train an agent from a preset (checkpoints, resume, logs, periodic evaluation)",
        description=(
            "Train the preset's agent on its env. OUT gets checkpoint.zip (+ replay-STEP.pt "
            "for Double DQN; atomic, every checkpoint_every steps), agent.zip (final), best.zip "
            "(best held-out SSIM AUC), eval.csv, progress.csv (SB3 logger) and training.json. "
            "With joint training (the preset's joint section, or --joint) the env's "
            "reconstructor is also fine-tuned on the policy's masks every joint.every steps and "
            "checked against zero-filled on held-out slices (a failing round is reverted); OUT "
            "then also gets joint.csv (every round), reconstructor-HASH.pt (the reconstructor "
            "each agent file was trained and evaluated with) and joint-STEP.pt (the joint "
            "optimizer state and mask replay, for --resume). "
            "Rerun with --resume to continue an interrupted run."
        ),
    )
    tr.add_argument(
        "--preset", required=True, help="agent preset YAML (e.g. agents/ddqn-builtin.yaml)"
    )
    tr.add_argument("--out", help="output folder (default outputs/agents/PRESET_NAME)")
    tr.add_argument("--total-steps", type=_positive_int, help="env steps (default: the preset's)")
    tr.add_argument("--device", help="auto, cpu or cuda (default: the preset's, else auto)")
    tr.add_argument("--seed", type=int, help="seed (default: the preset's)")
    tr.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.zip")
    tr.add_argument(
        "--joint",
        action="store_true",
        help=(
            "train the policy and the env's reconstructor together (L2SR-style): the preset's "
            "joint section, or its defaults when the preset has none (see agents/README.md); "
            "repeat it with --resume"
        ),
    )
    add_set_option(
        tr,
        "env config override on top of the preset's, repeatable (e.g. --set "
        "data_root=/data/knee); stored in the checkpoint, repeat it with --resume",
    )
    tr.add_argument(
        "--time-limit",
        type=float,
        metavar="MINUTES",
        help="stop (with a checkpoint) after this much training time",
    )
    tr.add_argument(
        "--tensorboard",
        action=_TensorBoardFlag,
        nargs=0,
        default=False,
        help="also write TensorBoard logs (needs activemri[tensorboard])",
    )
    tr.add_argument("--quiet", action="store_true", help="no progress bar or lines")
    tr.set_defaults(func=_agent_train)


def _add_eval(agent_commands: Commands) -> None:
    ev = agent_commands.add_parser(
        "eval",
        help="evaluate a trained agent next to baselines (same results as activemri evaluate)",
        description=(
            "Run `activemri evaluate` with the checkpoint as policy agent:PATH (greedy actions) "
            "and the given baselines, on the checkpoint's env preset unless --preset is given. "
            "An agent trained with --joint is played (and the baselines with it) with the "
            "reconstructor it was trained with, the reconstructor-HASH.pt it names next to it."
        ),
    )
    ev.add_argument("--checkpoint", required=True, help="agent zip (e.g. OUT/agent.zip)")
    ev.add_argument("--label", default="agent", help="the agent's name in reports")
    ev.add_argument(
        "--baselines",
        nargs="*",
        default=["random", "low_to_high", "learned"],
        metavar="SPEC",
        help="policies to compare with (default random low_to_high learned)",
    )
    ev.add_argument("--preset", help="env preset to evaluate on (default: the agent's)")
    ev.add_argument(
        "--trust-class-path",
        action="store_true",
        help=(
            "allow module names stored in the checkpoint's env settings (an env id or "
            "reconstructor module:Class): importing them runs their code, so only for files "
            "you trust"
        ),
    )
    add_eval_options(ev, accelerations=[4.0])
    ev.set_defaults(func=_agent_eval)


def _agent_train(args: argparse.Namespace) -> int:
    from activemri.agents.preset import load_agent_preset
    from activemri.agents.training import train_agent

    try:
        preset = load_agent_preset(args.preset)
        if args.set:
            overrides = {**preset.env_overrides, **parse_overrides(args.set)}
            preset = preset.replace(env_overrides=overrides, source=preset.source)
        if args.joint and preset.joint is None:
            preset = preset.replace(joint={}, source=preset.source)  # the defaults
        out = args.out or str(Path("outputs") / "agents" / Path(args.preset).stem)
        result = train_agent(
            preset,
            out,
            total_steps=args.total_steps,
            device=args.device,
            seed=args.seed,
            resume=args.resume,
            tensorboard=args.tensorboard,
            time_limit=None if args.time_limit is None else 60.0 * args.time_limit,
            log=None if args.quiet else print,
            progress=not args.quiet,
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise CommandError(str(exc)) from exc
    best = max(result.evaluations, key=lambda r: r["ssim_auc"], default=None)
    summary = f"{result.final}: {result.steps} steps in {result.wall_seconds:.0f} s"
    if best is not None:
        summary += f"; best held-out SSIM AUC {best['ssim_auc']:.4f} at step {best['step']:.0f}"
    rounds = [r for r in result.joint if r["status"] in ("accepted", "reverted")]
    if result.joint:
        kept = sum(r["status"] == "accepted" for r in rounds)
        summary += f"; joint rounds: {kept} of {len(rounds)} kept (joint.csv)"
    print(summary)
    return 0


def _agent_eval(args: argparse.Namespace) -> int:
    from activemri.agents.sb3_agent import agent_env_overrides, check_stored_env, checkpoint_info
    from activemri.envs.registration import ENV_IDS

    try:
        info = checkpoint_info(args.checkpoint)
        check_stored_env(info, trust_class_path=args.trust_class_path)
        stored = agent_env_overrides(args.checkpoint, info)  # its own reconstructor, if joint
    except (OSError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    preset = info["preset"]
    policies = [f"{args.label}=agent:{args.checkpoint}", *args.baselines]
    env = str(preset["env"])
    presets = [args.preset or ENV_IDS.get(env, env)]
    options = EvalOptions.from_args(args)
    # The agent's env settings (its data, reconstructor, ...) apply, except what an
    # evaluation sets itself; --set wins.
    trained = {k: v for k, v in stored.items() if k not in EVAL_OWNED}
    overrides = {**trained, **data_override(args), **parse_overrides(args.set)}
    return run_evaluate(policies, presets, options, overrides)
