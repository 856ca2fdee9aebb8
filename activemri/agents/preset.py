"""Agent presets: YAML recipes of an RL sampling agent (``agents/*.yaml``).

A preset names the algorithm, the environment it trains on, what the agent observes, the
training length and the algorithm's hyperparameters, in the spirit of rl-baselines3-zoo's
``hyperparams/`` files. Example (``agents/ddqn-builtin.yaml``)::

    algorithm: ddqn              # ddqn | maskable_ppo
    env: ActiveMRI/Builtin-v0
    observation: [reconstruction, mask]
    n_envs: 16
    total_steps: 60000
    hyperparameters: {buffer_size: 100000, gamma: 0.9, ...}   # the algorithm's kwargs
    features: {features_dim: 256}                            # ActiveMRIExtractor kwargs
    net_arch: [256]
    eval: {every: 10000, split: val, slices: 32}
    checkpoint_every: 10000
    joint: {every: 2048, recon_steps: 50, lr: 1.0e-4}   # optional: see JointTraining

With a ``joint`` section (or ``activemri agent train --joint``, which adds the defaults)
the env's reconstructor is fine-tuned on the masks the policy produces while the policy
trains (:mod:`activemri.agents.joint`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from activemri._config import from_mapping
from activemri._io import read_yaml_mapping

__all__ = [
    "ALGORITHMS",
    "AgentPreset",
    "EvalSchedule",
    "JointCheck",
    "JointTraining",
    "load_agent_preset",
]

ALGORITHMS = ("ddqn", "maskable_ppo")
"""``ddqn``: :class:`~activemri.agents.ddqn.DoubleDQN` (with
:class:`~activemri.agents.buffer.CompactReplayBuffer`); ``maskable_ppo``: sb3-contrib's
``MaskablePPO`` with the env's action masks."""


@dataclass(frozen=True)
class EvalSchedule:
    """Periodic evaluation during training (greedy actions, one pass over held-out slices).

    Attributes:
        every: Evaluate every this many env steps (0: never).
        split: Split evaluated: ``val`` (held out from training), or ``None`` for every
            slice of the data (small test data without a validation split).
        slices: Seeded subset size of that split (``None``: all of it).
    """

    every: int = 10_000
    split: str | None = "val"
    slices: int | None = 32


@dataclass(frozen=True)
class JointCheck:
    """The held-out check after every joint fine-tuning round.

    The fine-tuned reconstructor is run on a seeded sample of the env's ``split`` with fixed
    masks (every ``masks`` type at every ``accelerations``, fastMRI's ACS fraction, per-volume
    seeds; :func:`~activemri.recon_models.evaluate.fixed_mask_rule`). It must beat zero-filled
    on each of them (mean per-image SSIM above zero-filled's by more than ``margin``), and,
    when ``max_drop`` is set, its mean over them may not fall more than ``max_drop`` below
    that of the weights it started the round from; otherwise the round is reverted.

    Attributes:
        split: Split of the env's data checked: ``val`` or ``test`` (held out from the
            agent's and the reconstructor's training), or ``None`` for every slice (small
            test data without a validation split).
        slices: Seeded subset size of that split (``None``: all of it).
        seed: Seed of the subset and of the masks.
        masks: Fixed mask types (:data:`~activemri.masks.MASK_TYPES`; for ky-kz planes of
            3-D volumes :data:`~activemri.masks2d.MASK_TYPES_2D`).
        accelerations: Accelerations of the fixed masks.
        margin: SSIM by which the model must beat zero-filled on every mask.
        max_drop: Largest fall of the mean check SSIM a round may cause (``None``: no limit).
        batch_size: Slices per forward pass of the check.
    """

    split: str | None = "val"
    slices: int | None = 16
    seed: int = 0
    masks: tuple[str, ...] = ("random", "equispaced")
    accelerations: tuple[float, ...] = (4.0, 8.0)
    margin: float = 0.0
    max_drop: float | None = None
    batch_size: int = 8

    def __post_init__(self) -> None:
        from activemri.masks import FASTMRI_MASK_TYPES, MASK_TYPES
        from activemri.masks2d import MASK_TYPES_2D

        if self.split not in (None, "val", "test"):
            raise ValueError(
                f"joint.check.split must be val, test or null (every slice), got {self.split!r}: "
                "the check must not run on the slices the reconstructor is fine-tuned on"
            )
        if self.slices is not None and self.slices < 1:
            raise ValueError(f"joint.check.slices must be >= 1 or null, got {self.slices}")
        known = {*MASK_TYPES, *FASTMRI_MASK_TYPES, *MASK_TYPES_2D}
        unknown = sorted(set(self.masks) - known)
        if not self.masks or unknown:
            raise ValueError(
                f"joint.check.masks must be a non-empty list of mask types among {sorted(known)}, "
                f"got {list(self.masks)}"
            )
        object.__setattr__(self, "accelerations", tuple(float(a) for a in self.accelerations))
        if not self.accelerations or not all(a >= 1 for a in self.accelerations):
            raise ValueError(
                f"joint.check.accelerations must be a non-empty list of numbers >= 1, "
                f"got {list(self.accelerations)}"
            )
        if not math.isfinite(self.margin):
            raise ValueError(f"joint.check.margin must be finite, got {self.margin}")
        if self.max_drop is not None and not self.max_drop >= 0:
            raise ValueError(f"joint.check.max_drop must be >= 0 or null, got {self.max_drop}")
        if self.batch_size < 1:
            raise ValueError(f"joint.check.batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class JointTraining:
    """Joint sampler-reconstructor training (the ``joint`` section; L2SR-style alternation).

    Every ``every`` env steps (at the next rollout boundary) the env's reconstructor is
    fine-tuned for ``recon_steps`` gradient steps on masks the current policy produced
    (drawn from a replay of the last ``replay`` steps' acquired sets), with the supervised
    loss of reconstructor training, then checked on held-out slices
    (:class:`JointCheck`) and reverted if the check fails. See :mod:`activemri.agents.joint`.

    Attributes:
        every: Env steps (transitions) between fine-tuning rounds.
        recon_steps: Gradient steps per round.
        batch_size: Masks (slices) per gradient step.
        lr: Adam learning rate of the fine-tuning (its state carries over between rounds).
        weight_decay: Adam weight decay.
        replay: Capacity of the mask replay: the acquired sets of the latest this many steps.
        loss: Image loss, ``l1`` or ``ssim`` (:func:`~activemri.recon_models.losses.image_loss`).
        nll_weight: Weight of the Gaussian NLL of an uncertainty head (0: image loss only).
        bf16: bf16 autocast during the fine-tuning where the device runs bf16 natively.
        check: The held-out check.
    """

    every: int = 2048
    recon_steps: int = 50
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.0
    replay: int = 2000
    loss: str = "l1"
    nll_weight: float = 0.1
    bf16: bool = False
    check: JointCheck = field(default_factory=JointCheck)

    def __post_init__(self) -> None:
        for name in ("every", "recon_steps", "batch_size", "replay"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"joint.{name} must be >= 1, got {getattr(self, name)}")
        if self.replay < self.batch_size:
            raise ValueError(
                f"joint.replay ({self.replay}) must hold at least joint.batch_size "
                f"({self.batch_size}) masks"
            )
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"joint.lr must be a positive number, got {self.lr}")
        if not self.weight_decay >= 0 or not self.nll_weight >= 0:
            raise ValueError("joint.weight_decay and joint.nll_weight must be >= 0")
        if self.loss not in ("l1", "ssim"):
            raise ValueError(f"joint.loss must be 'l1' or 'ssim', got {self.loss!r}")


@dataclass(frozen=True)
class AgentPreset:
    """An agent recipe (see the module docstring for the YAML layout).

    Attributes:
        algorithm: One of :data:`ALGORITHMS`.
        env: Registered env id (or env preset) the agent trains on.
        env_overrides: Env config overrides (as for ``gymnasium.make``).
        observation: Observation entries the agent sees (``None``: all).
        n_envs: Episodes stepped together.
        total_steps: Env steps (transitions) of a full training run.
        seed: Seed of the env, the networks and exploration.
        reward_scale: The algorithm learns from ``reward_scale * reward`` (SSIM gains are
            ~0.01 per line; scaling them to ~1 suits value regression). Logged episode
            returns (``rollout/ep_rew_mean``) stay in the env's units.
        hyperparameters: Keyword arguments of the algorithm (SB3's names).
        features: Keyword arguments of
            :class:`~activemri.agents.features.ActiveMRIExtractor`.
        net_arch: Hidden layers after the features (Q-network or policy/value heads).
        eval: Periodic evaluation.
        checkpoint_every: Save a resumable checkpoint every this many env steps.
        joint: Joint sampler-reconstructor training (``None``: the env's reconstructor
            stays frozen).
        description: One line about the preset.
        source: The YAML file read, if any.
    """

    algorithm: str
    env: str = "ActiveMRI/Builtin-v0"
    env_overrides: Mapping[str, Any] = field(default_factory=dict)
    observation: tuple[str, ...] | None = None
    n_envs: int = 16
    total_steps: int = 50_000
    seed: int = 0
    reward_scale: float = 1.0
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    features: Mapping[str, Any] = field(default_factory=dict)
    net_arch: tuple[int, ...] = (256,)
    eval: EvalSchedule = field(default_factory=EvalSchedule)
    checkpoint_every: int = 10_000
    joint: JointTraining | None = None
    description: str = ""
    source: str | None = None

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")
        for name in ("n_envs", "total_steps", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.reward_scale > 0:
            raise ValueError(f"reward_scale must be > 0, got {self.reward_scale}")
        if self.eval.every < 0:
            raise ValueError(f"eval.every must be >= 0, got {self.eval.every}")
        if self.observation is not None and "mask" not in self.observation:
            raise ValueError("the agent's observation must include 'mask'")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able copy (stored in checkpoints)."""
        doc = asdict(self)
        doc["observation"] = None if self.observation is None else list(self.observation)
        doc["net_arch"] = list(self.net_arch)
        return doc

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], source: str | None = None) -> AgentPreset:
        """Build from a mapping (a parsed YAML file or :meth:`to_dict`).

        Raises:
            ValueError: For unknown keys or invalid values.
        """
        values = dict(doc)
        if values.get("eval") is None:
            values.pop("eval", None)
        for key in ("env_overrides", "hyperparameters", "features"):
            given = values.get(key)
            if given is None or isinstance(given, Mapping):  # own copies
                values[key] = dict(given or {})
        values["source"] = source if source is not None else values.get("source")
        return from_mapping(cls, values, source=source)

    def replace(self, **changes: Any) -> AgentPreset:
        """A copy with some fields changed (validated again)."""
        doc = self.to_dict()
        doc.update(changes)
        return AgentPreset.from_dict(doc)


def load_agent_preset(path: str | Path) -> AgentPreset:
    """Read an agent preset YAML file.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it is not a mapping or has unknown or invalid entries.
    """
    path = Path(path)
    doc = read_yaml_mapping(path, "agent preset")
    try:
        return AgentPreset.from_dict(doc, source=str(path))
    except (TypeError, ValueError) as exc:
        if str(exc).startswith(f"{path}: "):  # already names the file
            raise
        raise ValueError(f"agent preset {path}: {exc}") from exc
