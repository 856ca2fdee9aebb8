"""SB3 agents from presets: build, save and load checkpoints, and play them as policies.

A checkpoint is SB3's zip (``model.save``) written atomically, with the preset and training
facts stored in the model attribute ``activemri_agent`` (a JSON mapping, schema
:data:`CHECKPOINT_SCHEMA`), so one file says what the agent is, how it was trained and which
observation entries it reads. SB3 can still read these files itself.

Loading never unpickles: SB3's ``load`` would restore the settings in the zip's ``data`` entry
with cloudpickle, which runs any code a crafted file carries. :func:`load_agent` instead reads
``data`` as plain JSON, takes only the ``activemri_agent`` entry (the preset, the spaces and
the step counters, all JSON), rebuilds the model from the preset, and loads the weights with
``torch.load(weights_only=True)``. A file that would need code execution to read is refused
with :class:`UnsafeAgentFileError`; so are module names stored in it (an env id
``module:Id`` or a reconstructor ``module:Class``), unless the caller trusts the file.

An agent trained jointly with its reconstructor (``activemri agent train --joint``) names,
in ``activemri_agent["joint"]["reconstructor"]``, the reconstructor checkpoint next to it that
it was trained and evaluated with (file name, size, SHA-256). :func:`paired_reconstructor`
finds and verifies it, :func:`agent_env_overrides` points the agent's stored env settings at
it (what ``activemri agent eval`` plays with), and :meth:`AgentPolicy.check_env` refuses an
env whose reconstructor holds other weights.
"""

from __future__ import annotations

import inspect
import json
import math
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
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
from activemri.envs.sb3 import extra_observation_spaces, extra_observations
from activemri.envs.vector import ActiveMRIVectorEnv

__all__ = [
    "CHECKPOINT_SCHEMA",
    "AgentPolicy",
    "UnsafeAgentFileError",
    "agent_env_overrides",
    "build_model",
    "check_hyperparameters",
    "check_stored_env",
    "checkpoint_info",
    "load_agent",
    "paired_reconstructor",
    "save_agent",
]

CHECKPOINT_SCHEMA = "activemri.agent/2"
_META = "activemri_agent"
_CLASSES: dict[str, type[BaseAlgorithm]] = {"ddqn": DoubleDQN, "maskable_ppo": MaskablePPO}
# Counters a resumed run continues from (everything else is rebuilt from the preset).
_STATE = (
    "num_timesteps",
    "_n_updates",
    "_episode_num",
    "_current_progress_remaining",
    "_n_calls",
    "exploration_rate",
)


class UnsafeAgentFileError(ValueError):
    """An agent file that cannot be read without running code it names or carries."""


def _policy_kwargs(preset: AgentPreset) -> dict[str, Any]:
    return {
        "features_extractor_class": ActiveMRIExtractor,
        "features_extractor_kwargs": dict(preset.features),
        "net_arch": list(preset.net_arch),
    }


def check_hyperparameters(preset: AgentPreset) -> None:
    """Raise ``ValueError`` unless the preset's hyperparameters are its algorithm's own.

    Raises:
        ValueError: For a name the preset owns or the algorithm does not take.
    """
    _algorithm_kwargs(preset)


def _algorithm_kwargs(preset: AgentPreset) -> dict[str, Any]:
    owned = {"policy", "env", "seed", "device", "policy_kwargs", "replay_buffer_class"}
    clash = sorted(owned & set(preset.hyperparameters))
    if clash:
        raise ValueError(f"hyperparameters must not set {clash}; the preset owns them")
    cls = _CLASSES[preset.algorithm]
    known: set[str] = set()
    for klass in cls.__mro__:  # up to the first constructor that takes no **kwargs
        params = (
            inspect.signature(vars(klass)["__init__"]).parameters
            if "__init__" in vars(klass)
            else {}
        )
        known |= {n for n, p in params.items() if p.kind is not p.VAR_KEYWORD}
        if params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            break
    known -= owned | {"self", "_init_setup_model", "verbose"}
    unknown = sorted(set(preset.hyperparameters) - known)
    if unknown:
        raise ValueError(
            f"unknown {preset.algorithm} hyperparameters {unknown}; known: {sorted(known)}"
        )
    kwargs: dict[str, Any] = dict(preset.hyperparameters)
    if preset.algorithm == "ddqn":
        kwargs["replay_buffer_class"] = CompactReplayBuffer
    return kwargs


def build_model(preset: AgentPreset, env: VecEnv, device: str, seed: int) -> BaseAlgorithm:
    """A fresh SB3 model of the preset's algorithm on ``env``.

    Raises:
        ValueError: If the hyperparameters set what the preset owns (policy, env, seed,
            device, policy_kwargs, replay buffer class) or are not the algorithm's.
    """
    kwargs = _algorithm_kwargs(preset)
    cls = _CLASSES[preset.algorithm]
    try:
        return cls(
            "MultiInputPolicy", env, policy_kwargs=_policy_kwargs(preset), seed=seed,
            device=device, verbose=0, **kwargs,
        )  # fmt: skip
    except (TypeError, AssertionError) as exc:
        raise ValueError(f"{preset.algorithm} rejects the preset's hyperparameters: {exc}") from exc


# ----------------------------------------------------------------------------- spaces as JSON
def _bound(values: np.ndarray) -> Any:
    flat = values.reshape(-1)
    if flat.size and np.all(flat == flat[0]):
        return float(flat[0])
    return values.tolist()


def _space_to_json(space: spaces.Space[Any]) -> dict[str, Any]:
    if isinstance(space, spaces.Dict):
        return {"type": "dict", "spaces": {k: _space_to_json(v) for k, v in space.spaces.items()}}
    if isinstance(space, spaces.Box):
        return {
            "type": "box", "shape": list(space.shape), "dtype": str(space.dtype),
            "low": _bound(space.low), "high": _bound(space.high),
        }  # fmt: skip
    if isinstance(space, spaces.MultiBinary):
        return {"type": "multi_binary", "n": np.asarray(space.n).tolist()}
    if isinstance(space, spaces.Discrete):
        return {"type": "discrete", "n": int(space.n), "start": int(space.start)}
    raise TypeError(f"cannot store observation/action space {space}")


def _space_from_json(doc: Any) -> spaces.Space[Any]:
    kind = doc.get("type") if isinstance(doc, Mapping) else None
    if kind == "dict":
        return spaces.Dict({str(k): _space_from_json(v) for k, v in doc["spaces"].items()})
    if kind == "box":
        dtype = np.dtype(doc["dtype"])
        if dtype.kind not in "fiub":
            raise ValueError(f"invalid Box dtype {dtype}")
        shape = tuple(int(n) for n in doc["shape"])
        # A uniform bound is stored as one number; Box broadcasts a scalar, not a 0-d array.
        low = np.full(shape, doc["low"], dtype=dtype)
        high = np.full(shape, doc["high"], dtype=dtype)
        return spaces.Box(low=low, high=high, shape=shape, dtype=dtype)
    if kind == "multi_binary":
        n = doc["n"]
        return spaces.MultiBinary(int(n) if isinstance(n, int) else [int(x) for x in n])
    if kind == "discrete":
        return spaces.Discrete(int(doc["n"]), start=int(doc.get("start", 0)))
    raise ValueError(f"invalid space description {doc!r}")


# ----------------------------------------------------------------------------- files
def save_agent(model: BaseAlgorithm, path: str | Path, info: Mapping[str, Any]) -> None:
    """Save ``model`` atomically, with ``info`` (preset, timesteps, ...) inside the zip.

    The zip also records the model's spaces and step counters as JSON, which is all
    :func:`load_agent` reads besides the weights.
    """
    state = {}
    for name in _STATE:
        value = getattr(model, name, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            state[name] = value
    meta = {
        "schema": CHECKPOINT_SCHEMA,
        **info,
        "n_envs": int(model.n_envs),
        "observation_space": _space_to_json(model.observation_space),
        "action_space": _space_to_json(model.action_space),
        "state": state,
    }
    json.dumps(meta)  # refuse anything SB3 would have to pickle
    setattr(model, _META, meta)
    with atomic_path(path) as tmp:
        model.save(tmp)


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        with zipfile.ZipFile(path) as archive:
            raw = archive.read("data")
        data = json.loads(raw.decode("utf-8"))
    except (zipfile.BadZipFile, KeyError, OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path} is not a readable SB3 checkpoint: {exc}") from exc
    info = data.get(_META) if isinstance(data, dict) else None
    if isinstance(info, dict) and ":serialized:" in info:
        raise UnsafeAgentFileError(
            f"{path}: its {_META} entry is pickled; reading it would run code from the file"
        )
    if not isinstance(info, dict) or info.get("schema") != CHECKPOINT_SCHEMA:
        found = info.get("schema") if isinstance(info, dict) else None
        hint = (
            " (written by an older activemri that stored pickled settings; retrain it)"
            if found == "activemri.agent/1"
            else ""
        )
        raise ValueError(f"{path} is not an activemri agent checkpoint ({CHECKPOINT_SCHEMA}){hint}")
    return info


def checkpoint_info(path: str | Path) -> dict[str, Any]:
    """The ``activemri_agent`` facts of a checkpoint, read as JSON (nothing unpickled).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        UnsafeAgentFileError: If the facts are stored pickled.
        ValueError: If it is not an activemri agent checkpoint, or its preset is invalid.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"agent checkpoint {path} not found")
    info = _read_meta(path)
    try:
        AgentPreset.from_dict(info["preset"])
        for key in ("observation_space", "action_space"):
            _space_from_json(info[key])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: invalid activemri agent facts: {exc}") from exc
    return info


def check_stored_env(info: Mapping[str, Any], trust_class_path: bool = False) -> None:
    """Refuse module names in a checkpoint's env settings unless the caller trusts the file.

    ``gymnasium.make("pkg.mod:Env-v0")`` imports ``pkg.mod``, and a reconstructor
    ``module:Class`` or ``trust_class_path: true`` imports the named module: running its
    code. Built-in names, registered env ids and paths of files are fine.

    Raises:
        UnsafeAgentFileError: For a stored module name without ``trust_class_path``.
    """
    if trust_class_path:
        return
    from activemri.recon_models.classes import needs_trust

    preset = info["preset"]
    env, overrides = str(preset.get("env", "")), dict(preset.get("env_overrides") or {})
    named: list[str] = []
    if ":" in env:
        named.append(f"env {env!r}")
    recon = overrides.get("reconstructor")
    if isinstance(recon, str) and needs_trust(recon):
        named.append(f"reconstructor {recon!r}")
    if overrides.get("trust_class_path"):
        named.append("trust_class_path: true")
    if named:
        raise UnsafeAgentFileError(
            f"the agent checkpoint names {', '.join(named)}; importing it would run that "
            "module's code. Pass --trust-class-path (trust_class_path=True) for a file you trust"
        )


def paired_reconstructor(path: str | Path, info: Mapping[str, Any]) -> Path | None:
    """The reconstructor checkpoint a jointly trained agent file plays with, verified.

    Args:
        path: The agent file.
        info: Its facts (:func:`checkpoint_info`).

    Returns:
        The checkpoint's path (next to the agent file), or ``None`` for an agent trained
        against a frozen reconstructor.

    Raises:
        ValueError: If the named file is missing, outside the agent's folder, or not the one
            the agent was saved with (size or SHA-256 differ).
    """
    joint = info.get("joint")
    if joint is None:
        return None
    record = joint.get("reconstructor") if isinstance(joint, Mapping) else None
    name = record.get("file") if isinstance(record, Mapping) else None
    if not isinstance(name, str) or not name or Path(name).name != name:
        raise ValueError(f"{path}: invalid joint reconstructor record {record!r}")
    assert isinstance(record, Mapping)
    file = Path(path).resolve().parent / name
    if not file.is_file():
        raise ValueError(
            f"{path} was trained jointly with the reconstructor {name}, which is missing from "
            f"{file.parent}: keep the agent file and its reconstructor together"
        )
    from activemri.agents.joint import file_digest  # hashing only when an agent names one

    if file.stat().st_size != record.get("bytes") or file_digest(file) != record.get("sha256"):
        raise ValueError(f"{file} is not the reconstructor {path} was saved with")
    return file


def agent_env_overrides(path: str | Path, info: Mapping[str, Any]) -> dict[str, Any]:
    """The env settings an agent file was trained with, pointed at its own reconstructor.

    For a jointly trained agent the ``reconstructor`` setting becomes the verified path of
    :func:`paired_reconstructor`; otherwise the stored settings are returned unchanged.

    Raises:
        ValueError: As :func:`paired_reconstructor`.
    """
    overrides = dict(info["preset"].get("env_overrides") or {})
    paired = paired_reconstructor(path, info)
    if paired is not None:
        overrides["reconstructor"] = str(paired)
    return overrides


def _fresh_model(
    preset: AgentPreset, info: Mapping[str, Any], env: VecEnv | None, device: str
) -> BaseAlgorithm:
    obs_space = _space_from_json(info["observation_space"])
    act_space = _space_from_json(info["action_space"])
    steps = int(info.get("state", {}).get("num_timesteps", 0))
    if env is not None:
        # A resumed run draws new random numbers, deterministically per seed and step.
        model = build_model(preset, env, device, int(info.get("seed", 0)) + steps)
        if model.observation_space != obs_space or model.action_space != act_space:
            raise ValueError(
                "the env's observation/action spaces differ from the checkpoint's: "
                f"{model.observation_space} / {model.action_space} vs {obs_space} / {act_space}"
            )
        return model
    cls = _CLASSES[preset.algorithm]
    kwargs = {**_algorithm_kwargs(preset), "_init_setup_model": False}
    model = cls(
        "MultiInputPolicy", None, policy_kwargs=_policy_kwargs(preset), device=device,
        verbose=0, **kwargs,
    )  # fmt: skip
    model.observation_space, model.action_space = obs_space, act_space
    model.n_envs = int(info.get("n_envs", 1))
    model._setup_model()
    return model


def load_agent(
    path: str | Path, env: VecEnv | None = None, device: str = "auto"
) -> tuple[BaseAlgorithm, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_agent`, without unpickling anything.

    Args:
        path: The checkpoint zip.
        env: Env to continue training on (optional for inference).
        device: Torch device of the networks.

    Returns:
        The model and its ``activemri_agent`` facts.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        UnsafeAgentFileError: If reading it would need code execution.
        ValueError: If it is not an activemri checkpoint or its weights do not fit.
    """
    path = Path(path)
    info = checkpoint_info(path)
    preset = AgentPreset.from_dict(info["preset"])
    model = _fresh_model(preset, info, env, device)
    try:
        _, params, variables = load_from_zip_file(path, load_data=False, device=model.device)
        if variables:
            raise ValueError(f"unexpected PyTorch variables {sorted(variables)}")
        model.set_parameters(params, exact_match=True, device=model.device)
    except Exception as exc:  # torch's weights-only unpickler raises several types
        raise ValueError(f"{path}: cannot load the agent's weights: {exc}") from exc
    for name, value in dict(info.get("state") or {}).items():
        if name in _STATE and isinstance(value, (int, float)) and math.isfinite(value):
            setattr(model, name, value)
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
        #: The reconstructor checkpoint a jointly trained agent plays with (else ``None``).
        self.reconstructor_file: Path | None = None

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto") -> AgentPolicy:
        """Load a checkpoint of :func:`save_agent` as a policy.

        Raises:
            ValueError: Also for a jointly trained agent whose reconstructor file is missing
                or altered (:func:`paired_reconstructor`).
        """
        model, info = load_agent(path, device=device)
        keys = info["preset"].get("observation")
        policy = cls(model, keys, name=str(info.get("name", "agent")))
        policy.reconstructor_file = paired_reconstructor(path, info)
        return policy

    def _check_reconstructor(self, venv: ActiveMRIVectorEnv) -> None:
        file = self.reconstructor_file
        if file is None:
            return
        from activemri.recon_models.checkpoint import read_checkpoint

        saved = read_checkpoint(file)["state_dict"]
        mine = venv.reconstructor.state_dict()
        same = set(saved) == set(mine) and all(
            torch.equal(saved[k], v.detach().cpu()) for k, v in mine.items()
        )
        if not same:
            raise ValueError(
                f"the agent was trained jointly with its reconstructor {file}, but this env "
                "reconstructs with other weights, so its numbers would not be the agent's: "
                f"evaluate it with --set reconstructor={file} (activemri agent eval does so)"
            )

    def check_env(self, venv: ActiveMRIVectorEnv) -> None:
        """Raise ``ValueError`` unless ``venv`` gives the observations the agent expects.

        A jointly trained agent also needs the env to reconstruct with its own reconstructor
        (the weights of :attr:`reconstructor_file`).
        """
        env_space = venv.single_observation_space
        assert isinstance(env_space, spaces.Dict)
        given = {**extra_observation_spaces(venv.num_actions), **env_space.spaces}
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
        if n != venv.num_actions:
            raise ValueError(f"the agent chooses among {n} actions, the env has {venv.num_actions}")
        self._check_reconstructor(venv)

    def act(self, obs: Obs) -> torch.Tensor:
        """The agent's greedy choice among the free lines of every episode.

        Runs on the env's tensors (no host round trip): SB3's feature extraction
        preprocesses torch observations itself.
        """
        free = free_lines(obs)
        device = self.model.device
        given = {**obs, **extra_observations(obs)}
        inputs = {k: given[k].to(device) for k in self.keys}
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
