"""Stable-Baselines3 ``VecEnv`` adapter over the native batched env.

SB3 algorithms take a ``VecEnv``; wrapping :class:`ActiveMRIVectorEnv` directly (instead of
``DummyVecEnv`` over B single envs) keeps one batched reconstructor forward per step::

    from activemri.envs import make_sb3_vec_env
    from sb3_contrib import MaskablePPO

    venv = make_sb3_vec_env("ActiveMRI/Builtin-v0", n_envs=16, seed=0)
    model = MaskablePPO("MultiInputPolicy", venv).learn(10_000)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env import VecEnv, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from activemri.envs.vector import ActiveMRIVectorEnv

__all__ = [
    "ACTION_MASK",
    "BUDGET_LEFT",
    "BUDGET_USED",
    "ActiveMRISB3VecEnv",
    "extra_observation_spaces",
    "extra_observations",
    "make_sb3_vec_env",
]

_ACTION_MASKS = "action_masks"
ACTION_MASK = "action_mask"
"""Optional observation entry: the measured lines not yet acquired (see the adapter)."""
BUDGET_USED = "budget_used"
"""Optional observation entry: the fraction of the episode's steps taken (see the adapter)."""
BUDGET_LEFT = "budget_left"
"""Optional observation entry: steps left over measured lines (see the adapter)."""


def extra_observation_spaces(width: int) -> dict[str, spaces.Space[np.ndarray]]:
    """Spaces of the optional entries ``action_mask``, ``budget_used`` and ``budget_left``."""
    return {
        ACTION_MASK: spaces.MultiBinary(width),
        BUDGET_USED: spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32),
        BUDGET_LEFT: spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32),
    }


def extra_observations(obs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The optional observation entries of a policy observation, on its device.

    ``obs`` is :meth:`ActiveMRIVectorEnv.torch_policy_observation`'s.

    ``action_mask``: ``(B, W)`` int8, measured lines not yet acquired; ``budget_used``:
    ``(B, 1)`` float32, steps taken / steps allowed; ``budget_left``: ``(B, 1)`` float32,
    steps left / measured lines.
    """
    return {
        ACTION_MASK: obs["action_mask"].to(torch.int8),
        BUDGET_USED: obs["budget_used"],
        BUDGET_LEFT: obs["budget_left"],
    }


class ActiveMRISB3VecEnv(VecEnv):
    """SB3 view of an :class:`ActiveMRIVectorEnv`.

    Follows SB3's conventions: ``reset()`` takes no arguments (seed with :meth:`seed`),
    finished episodes are reset automatically and their last observation is in
    ``infos[i]["terminal_observation"]``, ``dones = terminated | truncated`` with
    ``infos[i]["TimeLimit.truncated"]``. ``env_method("action_masks")`` returns each
    sub-env's ``(W,)`` mask, as sb3-contrib's ``MaskablePPO`` expects.

    Args:
        venv: The batched env.
        observation_keys: Keep only these observation entries (e.g.
            ``["reconstruction", "mask"]`` for an agent that ignores the uncertainty map);
            ``None`` keeps all. Two extra entries can be asked for
            (:func:`extra_observations`): ``"action_mask"`` (``MultiBinary(W)``: the measured
            lines not yet acquired, i.e. :meth:`action_masks`), so agents that read masks
            from observations (Double DQN) skip zero-padded columns, and ``"budget_used"``
            (``Box(0, 1, (1,))``: steps taken / steps allowed), and ``"budget_left"`` (steps
            left / measured lines, which tells budgets drawn from a range apart). In a
            terminal observation they are the complement of ``mask``, 1 and 0 (the finished
            episode is gone from the batch by then; episodes terminate, so no target
            bootstraps from them).

    Raises:
        ValueError: If ``observation_keys`` names an entry the env does not have, or the env
            does not autoreset in the same step (SB3's convention).
    """

    def __init__(
        self, venv: ActiveMRIVectorEnv, observation_keys: Sequence[str] | None = None
    ) -> None:
        if venv.autoreset_mode != AutoresetMode.SAME_STEP:
            raise ValueError(
                f"SB3 resets finished episodes in the same step; this env autoresets "
                f"{venv.autoreset_mode.name}: build it with the default SAME_STEP"
            )
        self.venv = venv
        space = venv.single_observation_space
        assert isinstance(space, spaces.Dict)
        keys = list(space.spaces) if observation_keys is None else list(observation_keys)
        entries = {**space.spaces, **extra_observation_spaces(venv.num_actions)}
        unknown = sorted(set(keys) - set(entries))
        if unknown or not keys:
            raise ValueError(
                f"observation_keys {keys} must be a non-empty subset of {list(entries)}"
            )
        self.observation_keys = keys
        self._extra = [k for k in keys if k not in space.spaces]
        observation_space = spaces.Dict({k: entries[k] for k in keys})
        super().__init__(venv.num_envs, observation_space, venv.single_action_space)
        self._actions: np.ndarray | None = None

    def _select(self, obs: dict[str, np.ndarray], terminal: bool = False) -> dict[str, np.ndarray]:
        if not self._extra:
            return {k: obs[k] for k in self.observation_keys}
        extra: dict[str, np.ndarray]
        if terminal:
            extra = {
                ACTION_MASK: (1 - np.asarray(obs["mask"])).astype(np.int8),
                BUDGET_USED: np.ones(1, dtype=np.float32),
                BUDGET_LEFT: np.zeros(1, dtype=np.float32),
            }
        else:
            values = extra_observations(self.venv.torch_policy_observation({}))
            extra = {k: values[k].cpu().numpy() for k in self._extra}
        full = {**obs, **extra}
        return {k: full[k] for k in self.observation_keys}

    def reset(self) -> dict[str, np.ndarray]:
        """Reset every episode, using seeds set by :meth:`seed` once."""
        seeds = None if all(s is None for s in self._seeds) else list(self._seeds)
        obs, infos = self.venv.reset(seed=seeds)
        keys = [k for k in infos if not k.startswith("_")]
        self.reset_infos = [{k: _scalar(infos[k][i]) for k in keys} for i in range(self.num_envs)]
        self._reset_seeds()
        self._reset_options()
        return self._select(obs)

    def step_async(self, actions: np.ndarray) -> None:
        """Store the actions for :meth:`step_wait`."""
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        """Step all episodes; see the class docstring for the info layout."""
        if self._actions is None:
            raise RuntimeError("step_async() must be called before step_wait()")
        obs, reward, terminated, truncated, infos = self.venv.step(self._actions)
        self._actions = None
        dones = terminated | truncated
        keys = [k for k in infos if not k.startswith("_") and k not in ("final_obs", "final_info")]
        per_env: list[dict[str, Any]] = []
        for i in range(self.num_envs):
            info = {k: _scalar(infos[k][i]) for k in keys}
            if dones[i]:
                final = infos["final_info"]
                info = {k: _scalar(final[k][i]) for k in keys if k in final}
                info["terminal_observation"] = self._select(infos["final_obs"][i], terminal=True)
                info["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            per_env.append(info)
        return self._select(obs), reward.astype(np.float32), dones, per_env

    def close(self) -> None:
        """Close the underlying env."""
        self.venv.close()

    def _indices(self, indices: int | Iterable[int] | None) -> list[int]:
        return list(self._get_indices(indices))

    def get_attr(self, attr_name: str, indices: int | Iterable[int] | None = None) -> list[Any]:
        """The attribute of the (shared) vector env, once per index."""
        value = getattr(self.venv, attr_name)
        return [value for _ in self._indices(indices)]

    def set_attr(
        self, attr_name: str, value: Any, indices: int | Iterable[int] | None = None
    ) -> None:
        """Set an attribute of the vector env (shared by every index)."""
        setattr(self.venv, attr_name, value)

    def env_method(
        self,
        method_name: str,
        *method_args: Any,
        indices: int | Iterable[int] | None = None,
        **method_kwargs: Any,
    ) -> list[Any]:
        """Call a method; ``action_masks`` and ``render`` are answered per sub-env.

        Other methods belong to the batched env as a whole, so they are only called for all
        indices at once (the result repeated per index).

        Raises:
            NotImplementedError: For another method on a subset of the sub-envs.
        """
        rows = self._indices(indices)
        if method_name == _ACTION_MASKS:
            masks = self.venv.action_masks()
            return [masks[i] for i in rows]
        if method_name != "render" and sorted(rows) != list(range(self.num_envs)):
            raise NotImplementedError(
                f"{method_name!r} acts on the whole batched env; call it for every index"
            )
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        if method_name == "render" and isinstance(result, tuple):
            return [result[i] for i in rows]
        return [result for _ in rows]

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper], indices: int | Iterable[int] | None = None
    ) -> list[bool]:
        """Sub-envs are never wrapped by Gymnasium wrappers."""
        return [False for _ in self._indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        """One RGB frame per sub-env (``render_mode="rgb_array"``)."""
        frames = self.venv.render()
        return [None] * self.num_envs if frames is None else list(frames)

    def action_masks(self) -> np.ndarray:
        """Bool ``(B, W)``: measured lines not yet acquired."""
        return self.venv.action_masks()


def _scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def make_sb3_vec_env(
    env_id: str = "ActiveMRI/Builtin-v0",
    n_envs: int = 1,
    seed: int | None = None,
    monitor: bool = True,
    observation_keys: Sequence[str] | None = None,
    **overrides: Any,
) -> VecEnv:
    """Build the batched env of a registered id and wrap it for SB3.

    Args:
        env_id: A registered activemri id.
        n_envs: Number of episodes stepped together.
        seed: Seeds sub-env ``i`` with ``seed + i`` at the first reset.
        monitor: Wrap in SB3's ``VecMonitor``, so episode returns and lengths reach SB3's
            logger (``ep_rew_mean``) and ``evaluate_policy``.
        observation_keys: Observation entries to keep (``None``: all).
        **overrides: Env config overrides (as for ``gymnasium.make``).

    Returns:
        The :class:`ActiveMRISB3VecEnv` (inside a ``VecMonitor`` when ``monitor``).
    """
    venv = gym.make_vec(
        env_id, num_envs=n_envs, vectorization_mode="vector_entry_point", **overrides
    )
    if not isinstance(venv.unwrapped, ActiveMRIVectorEnv):
        raise TypeError(f"{env_id} is not an activemri environment")
    adapter: VecEnv = ActiveMRISB3VecEnv(venv.unwrapped, observation_keys)
    if monitor:
        adapter = VecMonitor(adapter)
    if seed is not None:
        adapter.seed(seed)
    return adapter
