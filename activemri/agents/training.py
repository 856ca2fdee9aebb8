"""Train an RL sampling agent from a preset: checkpoints, resume, logs, periodic evaluation.

:func:`train_agent` (``activemri agent train``) writes into one output folder:

- ``checkpoint.zip`` (+ ``replay-STEP.pt`` for Double DQN): the latest resumable state,
  written atomically every ``checkpoint_every`` env steps and at the end. The replay memory
  is written first, under a name holding its step, and the checkpoint names the file it
  belongs to; older replay files are removed only after the checkpoint is in place, so a run
  killed at any moment resumes with a matching pair. Nothing is pickled: the replay memory
  is tensors read back with ``torch.load(weights_only=True)``;
- ``agent.zip``: the agent at the end of training (what ``activemri evaluate`` plays);
- ``best.zip``: the agent with the best periodic-evaluation SSIM AUC so far;
- ``progress.csv`` (SB3's logger; ``progress-resumed-N.csv`` after a resume at step N) and,
  with ``tensorboard=True``, TensorBoard event files;
- ``eval.csv``: step, wall time, mean SSIM AUC and final SSIM on the held-out slices.

A resumed run continues the step count, schedules (exploration, learning rate) and replay
memory of the checkpoint; episodes in flight at the interruption are restarted, so a resumed
run is not bit-identical to an uninterrupted one. It must use the same preset and seed, except
for what does not change what is learned (``total_steps``, ``checkpoint_every``, ``eval``).
A time-limit stop happens inside an env step, before SB3 stores it: that one batched step is
counted but not in the replay memory.

**Joint training** (a ``joint`` preset section, or ``--joint``; :mod:`activemri.agents.joint`)
fine-tunes the env's reconstructor on the policy's masks every ``joint.every`` env steps, at
a rollout boundary, checks it on held-out slices and reverts a round that fails. It adds:

- ``joint.csv``: one row per round (round 0 is the check of the starting weights): step, wall
  time, status (``initial``, ``accepted``, ``reverted``, ``skipped``) and why, the mean
  training loss, the replay size, and the check's mean per-image SSIM of the model and of
  zero-filled on every fixed mask;
- ``reconstructor-HASH.pt``: the reconstructor checkpoint(s), named by a hash of the weights.
  ``checkpoint.zip``, ``agent.zip`` and ``best.zip`` each name (with size and SHA-256) the one
  they were trained and evaluated with, written before the agent file; files no agent file
  names any more are removed;
- ``joint-STEP.pt``: Adam state, mask replay and round counters, named by
  ``checkpoint.zip`` like the replay memory, so ``--resume`` continues the agent and the
  reconstructor together.

The periodic evaluation (``eval.csv``, ``best.zip``) runs with the current reconstructor.
``activemri agent eval`` plays such an agent with its own reconstructor, and ``agent:PATH``
in ``activemri evaluate`` refuses an env whose reconstructor is not the agent's.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import CSVOutputFormat, KVWriter, Logger
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn
from tqdm import tqdm

from activemri._io import atomic_path, atomic_write_text
from activemri._version import __version__
from activemri.agents.buffer import CompactReplayBuffer
from activemri.agents.joint import (
    RECONSTRUCTOR_PREFIX,
    JointTrainer,
    MaskRecorder,
    active_env,
    joint_state_name,
    save_reconstructor_file,
)
from activemri.agents.preset import AgentPreset
from activemri.agents.sb3_agent import (
    AgentPolicy,
    build_model,
    check_hyperparameters,
    checkpoint_info,
    load_agent,
    paired_reconstructor,
    save_agent,
)
from activemri.envs.config import resolve_device
from activemri.envs.sb3 import make_sb3_vec_env
from activemri.envs.vector import ActiveMRIVectorEnv

__all__ = [
    "ScaledReward",
    "TrainResult",
    "evaluate_policy_auc",
    "load_replay",
    "replay_name",
    "require_tensorboard",
    "train_agent",
]

CHECKPOINT, FINAL, BEST, EVAL_CSV = ("checkpoint.zip", "agent.zip", "best.zip", "eval.csv")
JOINT_CSV = "joint.csv"
_LEGACY_REPLAY = "replay_buffer.pkl"
# Preset fields a resumed run may change: they decide when to stop, save and evaluate only.
_RESUMABLE_CHANGES = ("total_steps", "checkpoint_every", "eval")
_EVAL_FIELDS = ("step", "wall_seconds", "ssim_auc", "final_ssim", "slices")


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes:
        out: The output folder.
        steps: Env steps trained (over all runs of a resumed training).
        wall_seconds: Training wall time (over all runs).
        evaluations: Rows of ``eval.csv``.
        stopped_early: True if a time limit ended the run before ``total_steps``.
        joint: Rows of ``joint.csv`` (joint training; empty otherwise).
    """

    out: Path
    steps: int
    wall_seconds: float
    evaluations: list[dict[str, float]]
    stopped_early: bool = False
    joint: list[dict[str, Any]] = field(default_factory=list)

    @property
    def final(self) -> Path:
        """Path of ``agent.zip``."""
        return self.out / FINAL


def replay_name(steps: int) -> str:
    """File name of the replay memory saved with the checkpoint at ``steps``."""
    return f"replay-{steps}.pt"


def load_replay(out: Path, info: dict[str, Any], buffer: CompactReplayBuffer) -> None:
    """Fill ``buffer`` with the replay memory the checkpoint ``info`` names (no unpickling).

    Raises:
        FileNotFoundError: If the named file is missing.
        ValueError: If it does not match the checkpoint or the buffer, or needs code to load.
    """
    record = info.get("replay")
    if (out / _LEGACY_REPLAY).exists() and not isinstance(record, dict):
        raise ValueError(
            f"{out / _LEGACY_REPLAY} is a pickle from an older activemri; it is not loaded "
            "(unpickling can run code). Start the run again in a new folder"
        )
    if not isinstance(record, dict) or not isinstance(record.get("file"), str):
        raise ValueError(f"{out / CHECKPOINT} names no replay memory; cannot resume it")
    name = record["file"]
    steps = info.get("num_timesteps")
    if name != replay_name(int(steps or 0)) or Path(name).name != name:
        raise ValueError(f"{out / CHECKPOINT} names replay memory {name!r} for step {steps}")
    path = out / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; cannot resume the replay memory")
    if path.stat().st_size != record.get("bytes"):
        raise ValueError(f"{path} is not the replay memory {out / CHECKPOINT} was saved with")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the weights-only unpickler raises several types
        raise ValueError(f"{path} is not a readable replay memory: {exc}") from exc
    try:
        buffer.load_state_dict(state)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def _comparable(preset: AgentPreset) -> AgentPreset:
    defaults = AgentPreset.from_dict({"algorithm": preset.algorithm})
    return preset.replace(source=None, **{k: getattr(defaults, k) for k in _RESUMABLE_CHANGES})


def evaluate_policy_auc(policy: AgentPolicy, venv: ActiveMRIVectorEnv) -> tuple[float, float]:
    """Mean normalized SSIM AUC and mean final SSIM of ``policy`` over one pass of ``venv``."""
    from activemri.agents.rollout import run_policy
    from activemri.metrics import normalized_auc

    runs = run_policy(venv, policy, seed=0)
    # one row per slice; rows differ in length when budgets are drawn per episode
    pairs = zip(runs.lines, runs.metrics["ssim"], strict=True)
    aucs = [normalized_auc(np.asarray(x, np.float64), np.asarray(y, np.float64)) for x, y in pairs]
    finals = [row[-1] for row in runs.metrics["ssim"]]
    return float(np.mean(aucs)), float(np.mean(finals))


def _eval_env(preset: AgentPreset, device: str) -> ActiveMRIVectorEnv:
    schedule = preset.eval
    # every step's metrics are the curve: dense whatever the agent trains with
    overrides = {**preset.env_overrides, "device": device, "split": schedule.split,
                 "reward_timing": "dense"}  # fmt: skip
    overrides.update(order="sequential", max_slices=schedule.slices)
    if overrides.get("reward") == "self_supervised":
        # the curves are the info metrics against the target; the held-out
        # reconstructions of the training reward would only add forwards
        overrides["reward"] = "ssim"
    n = preset.n_envs if schedule.slices is None else min(preset.n_envs, schedule.slices)
    venv = gym.make_vec(
        preset.env, num_envs=n, vectorization_mode="vector_entry_point", **overrides
    )
    assert isinstance(venv.unwrapped, ActiveMRIVectorEnv)
    return venv.unwrapped


class ScaledReward(VecEnvWrapper):
    """Multiplies rewards by ``scale`` (outside ``VecMonitor``, which logs the raw ones)."""

    def __init__(self, venv: VecEnv, scale: float) -> None:
        super().__init__(venv)
        self.scale = float(scale)

    def reset(self) -> Any:
        """Reset the wrapped env."""
        return self.venv.reset()

    def step_wait(self) -> VecEnvStepReturn:
        """Step the wrapped env, scaling its rewards."""
        obs, reward, done, infos = self.venv.step_wait()
        return obs, (reward * self.scale).astype(np.float32), done, infos


class _Hooks(BaseCallback):
    """Periodic evaluation and the time limit after env steps; checkpoints between rollouts.

    SB3 calls ``on_step`` before the step's transitions are stored, and ``on_rollout_start``
    after the previous rollout was stored and learned from: a checkpoint taken there holds
    every transition its step count includes, and a joint fine-tuning round there changes the
    reconstructor between rollouts, never within one.
    """

    def __init__(self, trainer: _Trainer) -> None:
        super().__init__()
        self.trainer = trainer

    def _on_step(self) -> bool:
        return self.trainer.on_step(self.num_timesteps)

    def _on_rollout_start(self) -> None:
        self.trainer.maybe_joint_round(self.num_timesteps)
        self.trainer.maybe_checkpoint(self.num_timesteps)


class _Trainer:
    def __init__(
        self,
        preset: AgentPreset,
        out: Path,
        device: str,
        seed: int,
        time_limit: float | None,
        log: Callable[[str], None],
    ) -> None:
        self.preset, self.out, self.device, self.seed = preset, out, device, seed
        self.time_limit, self.log = time_limit, log
        self.model: BaseAlgorithm | None = None
        self.eval_env: ActiveMRIVectorEnv | None = None
        self.evaluations: list[dict[str, float]] = []
        self.previous_seconds = 0.0
        self.started = time.perf_counter()
        self.next_checkpoint = preset.checkpoint_every
        self.next_eval = preset.eval.every or None
        self.stopped_early = False
        self.bar: tqdm[Any] | None = None
        self.joint: JointTrainer | None = None
        self.joint_rows: list[dict[str, Any]] = []

    # ----------------------------------------------------------------- bookkeeping
    def wall(self) -> float:
        return self.previous_seconds + time.perf_counter() - self.started

    def info(self, steps: int) -> dict[str, Any]:
        return {
            "preset": self.preset.to_dict(),
            "name": Path(self.preset.source).stem if self.preset.source else "agent",
            "seed": self.seed,
            "device": self.device,
            "num_timesteps": steps,
            "wall_seconds": round(self.wall(), 1),
            "activemri_version": __version__,
            "torch_version": torch.__version__,
        }

    def agent_info(self, steps: int, state: bool = False) -> dict[str, Any]:
        """:meth:`info`, with joint training the reconstructor file the agent pairs with.

        Writes that file first (and, with ``state``, the joint training state): an agent
        file never names a file that is not there.
        """
        info = self.info(steps)
        joint = self.joint
        if joint is None:
            return info
        recon = save_reconstructor_file(
            joint.model, self.out,
            extra={"joint_training": json.dumps({"agent": info["name"], **joint.summary()})},
        )  # fmt: skip
        record: dict[str, Any] = {"reconstructor": recon, **joint.summary()}
        if state:
            name = joint_state_name(steps)
            with atomic_path(self.out / name) as tmp:
                torch.save(joint.state_dict(), tmp)
            record["state"] = {"file": name, "bytes": (self.out / name).stat().st_size}
        info["joint"] = record
        return info

    def save(self, name: str, steps: int) -> None:
        """Save the agent as ``name`` (paired with its reconstructor under joint training)."""
        model = self.model
        assert model is not None
        save_agent(model, self.out / name, self.agent_info(steps, state=name == CHECKPOINT))
        if self.joint is not None:
            self._remove_unnamed_joint_files()

    def _remove_unnamed_joint_files(self) -> None:
        """Remove reconstructor and joint state files no agent file of the run names."""
        named: set[str] = set()
        for agent in (CHECKPOINT, FINAL, BEST):
            path = self.out / agent
            if not path.exists():
                continue
            try:
                joint = checkpoint_info(path).get("joint") or {}
            except ValueError:  # not ours to judge here; keep every file it might name
                return
            for key in ("reconstructor", "state"):
                entry = joint.get(key) if isinstance(joint, dict) else None
                if isinstance(entry, dict) and isinstance(entry.get("file"), str):
                    named.add(entry["file"])
        for pattern in (f"{RECONSTRUCTOR_PREFIX}*.pt", "joint-*.pt"):
            for old in self.out.glob(pattern):
                if old.name not in named:
                    old.unlink(missing_ok=True)

    def checkpoint(self, steps: int) -> None:
        model = self.model
        assert model is not None
        info = self.agent_info(steps, state=True)
        replay = None
        if isinstance(model, OffPolicyAlgorithm):
            buffer = model.replay_buffer
            assert isinstance(buffer, CompactReplayBuffer)
            replay = replay_name(steps)
            with atomic_path(self.out / replay) as tmp:
                torch.save(buffer.state_dict(), tmp)
            info["replay"] = {"file": replay, "bytes": (self.out / replay).stat().st_size}
        save_agent(model, self.out / CHECKPOINT, info)
        for old in self.out.glob("replay-*.pt"):
            if old.name != replay:
                old.unlink(missing_ok=True)
        if self.joint is not None:
            self._remove_unnamed_joint_files()
        self.log(f"step {steps}: checkpoint saved ({self.wall():.0f} s)")

    # ----------------------------------------------------------------- joint training
    def joint_start(self) -> None:
        """Check the starting reconstructor (round 0 of ``joint.csv``)."""
        joint = self.joint
        assert joint is not None
        row = joint.start()
        self._add_joint_row(row)
        where = f"{row['check_ssim']:.4f} vs zero-filled {row['check_zf_ssim']:.4f}"
        self.log(f"joint training: the starting reconstructor scores {where} on the check")
        if row["reason"]:
            self.log(
                f"joint training: warning: the starting reconstructor {row['reason']}; "
                "rounds are kept only if they beat zero-filled"
            )

    def joint_resume(self, info: dict[str, Any]) -> None:
        """Load the reconstructor and joint state ``checkpoint.zip`` names."""
        joint = self.joint
        assert joint is not None
        path = self.out / CHECKPOINT
        record = info.get("joint")
        state = record.get("state") if isinstance(record, dict) else None
        if not isinstance(state, dict) or not isinstance(state.get("file"), str):
            raise ValueError(f"{path} holds no joint training state; cannot resume it jointly")
        steps = int(info.get("num_timesteps") or 0)
        name = state["file"]
        if name != joint_state_name(steps):
            raise ValueError(f"{path} names joint state {name!r} for step {steps}")
        file = self.out / name
        if not file.is_file():
            raise FileNotFoundError(f"{file} is missing; cannot resume the joint training")
        if file.stat().st_size != state.get("bytes"):
            raise ValueError(f"{file} is not the joint state {path} was saved with")
        recon = paired_reconstructor(path, info)
        assert recon is not None
        try:
            saved = torch.load(file, map_location=joint.device, weights_only=True)
            joint.load_state_dict(saved)
        except Exception as exc:  # the weights-only unpickler raises several types
            raise ValueError(f"{file} is not a readable joint training state: {exc}") from exc
        joint.load_weights(recon)
        if (self.out / JOINT_CSV).exists():
            with open(self.out / JOINT_CSV, newline="") as f:
                rows = [_read_joint_row(r) for r in csv.DictReader(f)]
            # rounds after the checkpoint (an interrupted run's) are not in the resumed state
            self.joint_rows = [r for r in rows if int(r["round"]) <= joint.rounds]
            self._write_joint()

    def _add_joint_row(self, row: dict[str, Any]) -> None:
        self.joint_rows.append({**row, "wall_seconds": round(self.wall(), 1)})
        self._write_joint()

    def _write_joint(self) -> None:
        assert self.joint is not None
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self.joint.fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.joint_rows)
        atomic_write_text(self.out / JOINT_CSV, text.getvalue())

    def maybe_joint_round(self, steps: int) -> None:
        joint = self.joint
        if joint is None or not joint.due(steps):
            return
        started = time.perf_counter()
        row = joint.run_round(steps)
        self._add_joint_row(row)
        model = self.model
        if model is not None:
            for key in ("check_ssim", "check_zf_ssim"):
                model.logger.record(f"joint/{key}", row[key])
            model.logger.record("joint/accepted", float(row["status"] == "accepted"))
        took = time.perf_counter() - started
        loss = row["train_loss"]
        shown = f", loss {loss:.4f}" if isinstance(loss, float) else ""
        why = f": {row['reason']}" if row["reason"] else ""
        self.log(
            f"step {steps}: joint round {row['round']} {row['status']}{why}{shown}; check SSIM "
            f"{row['check_ssim']:.4f} vs zero-filled {row['check_zf_ssim']:.4f} ({took:.0f} s)"
        )

    def evaluate(self, steps: int) -> None:
        model = self.model
        assert model is not None
        if self.eval_env is None:
            self.eval_env = _eval_env(self.preset, self.device)
        if self.joint is not None:  # evaluate with the current joint reconstructor
            self.eval_env.reconstructor.load_state_dict(self.joint.model.state_dict())
            self.eval_env.reconstructor.eval()
        policy = AgentPolicy(model, self.preset.observation)
        training = model.policy.training
        model.policy.set_training_mode(False)
        auc, final = evaluate_policy_auc(policy, self.eval_env)
        model.policy.set_training_mode(training)
        row = {
            "step": float(steps),
            "wall_seconds": round(self.wall(), 1),
            "ssim_auc": auc,
            "final_ssim": final,
            "slices": float(len(self.eval_env.slice_indices)),
        }
        best = max((r["ssim_auc"] for r in self.evaluations), default=-np.inf)
        self.evaluations.append(row)
        self._write_evaluations()
        model.logger.record("eval/ssim_auc", auc)
        model.logger.record("eval/final_ssim", final)
        if auc > best:
            self.save(BEST, steps)
        self.log(f"step {steps}: held-out SSIM AUC {auc:.4f}, final SSIM {final:.4f}")

    def _write_evaluations(self) -> None:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=_EVAL_FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in self.evaluations:
            writer.writerow({k: int(v) if k in ("step", "slices") else v for k, v in row.items()})
        atomic_write_text(self.out / EVAL_CSV, text.getvalue())

    def maybe_checkpoint(self, steps: int) -> None:
        if steps >= self.next_checkpoint:
            self.checkpoint(steps)
            every = self.preset.checkpoint_every
            self.next_checkpoint = (steps // every + 1) * every

    def on_step(self, steps: int) -> bool:
        if self.bar is not None:
            self.bar.update(steps - self.bar.n)
        if self.next_eval is not None and steps >= self.next_eval:
            self.evaluate(steps)
            self.next_eval = (steps // self.preset.eval.every + 1) * self.preset.eval.every
        if self.time_limit is not None and self.wall() >= self.time_limit:
            self.stopped_early = True
            self.log(f"step {steps}: time limit of {self.time_limit:.0f} s reached")
            return False
        return True


def _read_joint_row(raw: dict[str, str]) -> dict[str, Any]:
    """A ``joint.csv`` row with its numbers as numbers."""
    row: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("round", "step", "replay_masks"):
            row[key] = int(value)
        elif key in ("status", "reason") or value == "":
            row[key] = value
        else:
            row[key] = float(value)
    return row


def _logger(out: Path, steps: int, tensorboard: bool) -> Logger:
    name = "progress.csv" if steps == 0 else f"progress-resumed-{steps}.csv"
    formats: list[KVWriter] = [CSVOutputFormat(str(out / name))]
    if tensorboard:
        from stable_baselines3.common.logger import TensorBoardOutputFormat

        formats.append(TensorBoardOutputFormat(str(out / "tensorboard")))
    return Logger(str(out), formats)


def require_tensorboard() -> None:
    """Raise ``RuntimeError`` (naming the extra to install) if TensorBoard is missing."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        raise RuntimeError(
            "TensorBoard logging needs the tensorboard package: "
            "pip install 'activemri[tensorboard]'"
        )


def _start(trainer: _Trainer, env: VecEnv, resume: bool) -> int:
    """Build the model, or load it (and its replay memory) to resume; returns the step."""
    preset, out = trainer.preset, trainer.out
    if not resume:
        trainer.model = build_model(preset, env, trainer.device, trainer.seed)
        if trainer.joint is not None:
            trainer.joint_start()
        return 0
    model, info = load_agent(out / CHECKPOINT, env=env, device=trainer.device)
    if isinstance(model, OffPolicyAlgorithm):
        assert isinstance(model.replay_buffer, CompactReplayBuffer)
        load_replay(out, info, model.replay_buffer)
    if trainer.joint is not None:
        trainer.joint_resume(info)
    trainer.model = model
    steps = int(model.num_timesteps)
    trainer.previous_seconds = float(info.get("wall_seconds", 0.0))
    if (out / EVAL_CSV).exists():
        with open(out / EVAL_CSV, newline="") as f:
            trainer.evaluations = [
                {k: float(v) for k, v in row.items()} for row in csv.DictReader(f)
            ]
    every = preset.eval.every
    trainer.next_eval = (steps // every + 1) * every if every else None
    trainer.next_checkpoint = (steps // preset.checkpoint_every + 1) * preset.checkpoint_every
    trainer.log(f"resuming {out} at step {steps}")
    return steps


def train_agent(
    preset: AgentPreset,
    out: str | Path,
    *,
    total_steps: int | None = None,
    device: str | None = None,
    seed: int | None = None,
    resume: bool = False,
    tensorboard: bool = False,
    time_limit: float | None = None,
    log: Callable[[str], None] | None = print,
    progress: bool = False,
) -> TrainResult:
    """Train (or resume training) an agent; see the module docstring for the files.

    Args:
        preset: The recipe.
        out: Output folder.
        total_steps: Env steps of the whole run (default: the preset's).
        device: ``auto``, ``cpu`` or ``cuda`` for the env and the networks (default: the
            env preset's device setting, else ``auto``).
        seed: Seed (default: the preset's).
        resume: Continue from ``OUT/checkpoint.zip``.
        tensorboard: Also write TensorBoard event files (needs ``tensorboard``).
        time_limit: Stop (and checkpoint) after this many seconds of training wall time.
        log: Progress lines (``None``: silent).
        progress: Show a tqdm progress bar of the env steps (log lines print above it).

    Returns:
        The run's :class:`TrainResult`.

    Raises:
        FileExistsError: If ``out`` already holds a run and ``resume`` is off.
        FileNotFoundError: If ``resume`` is on but there is no checkpoint.
        ValueError: If the checkpoint was trained from another preset or seed, or the
            preset is invalid (checked before anything is trained or written); with joint
            training, also if the env's reconstructor cannot be fine-tuned or the check's
            split has no slice.
        RuntimeError: If ``tensorboard`` is on but the package is missing.
    """
    out = Path(out)
    if tensorboard:
        require_tensorboard()
    total = int(preset.total_steps if total_steps is None else total_steps)
    if total < 1:
        raise ValueError(f"total_steps must be >= 1, got {total}")
    seed = preset.seed if seed is None else int(seed)
    dev = str(resolve_device(device or str(preset.env_overrides.get("device", "auto"))))
    if (out / CHECKPOINT).exists() and not resume:
        raise FileExistsError(f"{out} already holds a training run; pass resume=True (--resume)")
    if resume and not (out / CHECKPOINT).exists():
        raise FileNotFoundError(f"no checkpoint to resume in {out}")
    if resume:
        saved = checkpoint_info(out / CHECKPOINT)
        before = AgentPreset.from_dict(saved["preset"])
        if (before.joint is None) != (preset.joint is None):
            done = "with" if before.joint is not None else "without"
            hint = " (pass --joint again)" if before.joint is not None else ""
            raise ValueError(f"{out} was trained {done} joint training{hint}; not resuming")
        if _comparable(before) != _comparable(preset) or saved["seed"] != seed:
            raise ValueError(f"{out} was trained with another preset or seed; not resuming")
    say: Callable[[str], None] = (
        (lambda _: None) if log is None else (tqdm.write if progress and log is print else log)
    )
    check_hyperparameters(preset)
    trainer = _Trainer(preset, out, dev, seed, time_limit, say)
    env: VecEnv | None = None
    try:
        # The held-out env first: a bad eval split or slice count fails before any training.
        if preset.eval.every:
            try:
                trainer.eval_env = _eval_env(preset, dev)
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"the preset's eval settings {preset.eval}: {exc}") from exc
        env = make_sb3_vec_env(
            preset.env,
            n_envs=preset.n_envs,
            seed=seed,
            observation_keys=preset.observation,
            **{**preset.env_overrides, "device": dev},
        )
        if preset.joint is not None:
            inner = active_env(env)
            trainer.joint = JointTrainer(preset.joint, inner, seed)
            env = MaskRecorder(env, inner, trainer.joint.replay)
        if preset.reward_scale != 1.0:
            env = ScaledReward(env, preset.reward_scale)
        out.mkdir(parents=True, exist_ok=True)
        steps = _start(trainer, env, resume)
        model = trainer.model
        assert model is not None
        model.set_logger(_logger(out, steps, tensorboard))
        say(
            f"training {preset.algorithm} on {preset.env} ({dev}, seed {seed}): "
            f"{total - steps} of {total} steps to go"
        )
        trainer.bar = tqdm(
            total=total, initial=steps, unit="step", desc=preset.algorithm, disable=not progress
        )
        if steps < total:
            model.learn(
                total - steps,
                callback=_Hooks(trainer),
                reset_num_timesteps=not resume,
                progress_bar=False,
            )
        steps = int(model.num_timesteps)
        if trainer.next_eval is not None and (
            not trainer.evaluations or trainer.evaluations[-1]["step"] < steps
        ):
            trainer.evaluate(steps)
        trainer.checkpoint(steps)  # the last rollout was learned from after its rollout start
        trainer.save(FINAL, steps)
    finally:
        if trainer.bar is not None:
            trainer.bar.close()
        if env is not None:
            env.close()
        if trainer.eval_env is not None:
            trainer.eval_env.close()
    summary = {**trainer.info(steps), "stopped_early": trainer.stopped_early}
    if trainer.joint is not None:
        summary["joint"] = trainer.joint.summary()
    atomic_write_text(out / "training.json", json.dumps(summary, indent=2) + "\n")
    say(f"done: {steps} steps in {trainer.wall():.0f} s; agent in {out / FINAL}")
    return TrainResult(out, steps, trainer.wall(), trainer.evaluations, trainer.stopped_early,
                       trainer.joint_rows)  # fmt: skip
