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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from activemri._config import from_mapping
from activemri._io import read_yaml_mapping

__all__ = ["ALGORITHMS", "AgentPreset", "EvalSchedule", "load_agent_preset"]

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
