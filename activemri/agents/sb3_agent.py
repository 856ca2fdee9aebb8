"""SB3 agents from presets: build, save and load checkpoints, and play them as policies.

A checkpoint is SB3's zip (``model.save``) written atomically, with the preset and training
facts stored in the model attribute ``activemri_agent`` (a JSON-able mapping, schema
:data:`CHECKPOINT_SCHEMA`), so one file says what the agent is, how it was trained and which
observation entries it reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from gymnasium import spaces
from sb3_contrib import MaskablePPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.vec_env import VecEnv

from activemri._io import atomic_path
from activemri.agents.buffer import CompactReplayBuffer
from activemri.agents.ddqn import DoubleDQN
from activemri.agents.features import ActiveMRIExtractor
from activemri.agents.policies import Obs, Policy, free_lines
from activemri.agents.preset import AgentPreset
from activemri.envs.core import EnvState
from activemri.envs.sb3 import extra_observation_spaces, extra_observations
from activemri.envs.vector import ActiveMRIVectorEnv

__all__ = [
    "CHECKPOINT_SCHEMA",
    "AgentPolicy",
    "build_model",
    "checkpoint_info",
    "load_agent",
    "save_agent",
]

CHECKPOINT_SCHEMA = "activemri.agent/1"
_META = "activemri_agent"
_CLASSES: dict[str, type[BaseAlgorithm]] = {"ddqn": DoubleDQN, "maskable_ppo": MaskablePPO}


def build_model(preset: AgentPreset, env: VecEnv, device: str, seed: int) -> BaseAlgorithm:
    """A fresh SB3 model of the preset's algorithm on ``env``.

    Raises:
        ValueError: If the hyperparameters set what the preset owns (policy, env, seed,
            device, policy_kwargs, replay buffer class).
    """
    owned = {"policy", "env", "seed", "device", "policy_kwargs", "replay_buffer_class"}
    clash = sorted(owned & set(preset.hyperparameters))
    if clash:
        raise ValueError(f"hyperparameters must not set {clash}; the preset owns them")
    policy_kwargs = {
        "features_extractor_class": ActiveMRIExtractor,
        "features_extractor_kwargs": dict(preset.features),
        "net_arch": list(preset.net_arch),
    }
    kwargs: dict[str, Any] = dict(preset.hyperparameters)
    if preset.algorithm == "ddqn":
        kwargs["replay_buffer_class"] = CompactReplayBuffer
    cls = _CLASSES[preset.algorithm]
    model = cls(
        "MultiInputPolicy",
        env,
        policy_kwargs=policy_kwargs,
        seed=seed,
        device=device,
        verbose=0,
        **kwargs,
    )
    return model


def save_agent(model: BaseAlgorithm, path: str | Path, info: Mapping[str, Any]) -> None:
    """Save ``model`` atomically, with ``info`` (preset, timesteps, ...) inside the zip."""
    setattr(model, _META, {"schema": CHECKPOINT_SCHEMA, **info})
    with atomic_path(path) as tmp:
        model.save(tmp)


def checkpoint_info(path: str | Path) -> dict[str, Any]:
    """The ``activemri_agent`` facts of a checkpoint, without building the model.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If it is not an activemri agent checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"agent checkpoint {path} not found")
    try:
        data, _, _ = load_from_zip_file(path, load_data=True, device="cpu")
    except Exception as exc:
        raise ValueError(f"{path} is not a readable SB3 checkpoint: {exc}") from exc
    info = (data or {}).get(_META)
    if not isinstance(info, dict) or info.get("schema") != CHECKPOINT_SCHEMA:
        raise ValueError(f"{path} is not an activemri agent checkpoint ({CHECKPOINT_SCHEMA})")
    return info


def load_agent(
    path: str | Path, env: VecEnv | None = None, device: str = "auto"
) -> tuple[BaseAlgorithm, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_agent`.

    Args:
        path: The checkpoint zip.
        env: Env to continue training on (optional for inference).
        device: Torch device of the networks.

    Returns:
        The model and its ``activemri_agent`` facts.
    """
    info = checkpoint_info(path)
    preset = AgentPreset.from_dict(info["preset"])
    model = _CLASSES[preset.algorithm].load(path, env=env, device=device)
    return model, info


class AgentPolicy(Policy):
    """A trained SB3 agent as a sequential policy (greedy/deterministic actions).

    Acquired and non-measured lines are never chosen: Double DQN's Q-values and
    MaskablePPO's logits are masked with the env's free lines.

    Args:
        model: The SB3 model.
        observation_keys: Observation entries the model reads (``None``: all of its space's).
        name: Name in reports.

    Raises:
        ValueError: In :meth:`check_env` for an env whose observations or actions differ from
            those the agent was trained on.
    """

    budget_aware = True

    def __init__(
        self,
        model: BaseAlgorithm,
        observation_keys: Sequence[str] | None = None,
        name: str = "agent",
    ) -> None:
        self.model = model
        space = model.observation_space
        assert isinstance(space, spaces.Dict)
        self.keys = list(space.spaces) if observation_keys is None else list(observation_keys)
        self.name = name

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto") -> AgentPolicy:
        """Load a checkpoint of :func:`save_agent` as a policy."""
        model, info = load_agent(path, device=device)
        keys = info["preset"].get("observation")
        return cls(model, keys, name=str(info.get("name", "agent")))

    def check_env(self, venv: ActiveMRIVectorEnv) -> None:
        """Raise ``ValueError`` unless ``venv`` gives the observations the agent expects."""
        env_space = venv.single_observation_space
        assert isinstance(env_space, spaces.Dict)
        given = {**extra_observation_spaces(venv.sim.width), **env_space.spaces}
        space = self.model.observation_space
        assert isinstance(space, spaces.Dict)
        for key in self.keys:
            mine, theirs = space.spaces.get(key), given.get(key)
            if theirs is None or mine is None or mine.shape != theirs.shape:
                raise ValueError(
                    f"the agent reads {key!r} of shape {None if mine is None else mine.shape}, "
                    f"the env gives {None if theirs is None else theirs.shape}"
                )
        n = getattr(self.model.action_space, "n", None)
        if n != venv.sim.width:
            raise ValueError(f"the agent chooses among {n} lines, the env has {venv.sim.width}")

    def act(self, obs: Obs, state: EnvState) -> torch.Tensor:
        """The agent's greedy choice among the free lines of every episode.

        Runs on the env's tensors (no host round trip): SB3's feature extraction
        preprocesses torch observations itself.
        """
        free = free_lines(state)
        device = self.model.device
        extra = extra_observations(state) if set(self.keys) - set(obs) else {}
        inputs = {k: (obs[k] if k in obs else extra[k]).to(device) for k in self.keys}
        allowed = free.to(device)
        with torch.no_grad():
            if isinstance(self.model, MaskablePPO):
                # sb3-contrib types the masks as NumPy; it converts them with torch.as_tensor.
                dist = self.model.policy.get_distribution(
                    inputs,
                    action_masks=allowed,  # type: ignore[arg-type]
                )
                actions: torch.Tensor = dist.get_actions(deterministic=True)
            else:
                assert isinstance(self.model, DoubleDQN)
                q: torch.Tensor = self.model.q_net(inputs)
                actions = q.masked_fill(~allowed, float("-inf")).argmax(dim=1)
        return actions.long().to(free.device)
