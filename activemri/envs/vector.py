"""The native batched Gymnasium ``VectorEnv``, with a torch-native API beside the NumPy one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from activemri.data import SliceDataset
from activemri.envs.config import EnvConfig
from activemri.envs.core import EnvState, Timer, _no_timer
from activemri.envs.env import render_slot
from activemri.envs.simulator import Episode, PolicyEpisode, Simulator
from activemri.recon_models.base import Reconstructor

__all__ = ["ActiveMRIVectorEnv"]

TensorObs = dict[str, torch.Tensor]
NumpyObs = dict[str, np.ndarray]


def _numpy(obs: TensorObs) -> NumpyObs:
    return {k: v.cpu().numpy() for k, v in obs.items()}


_AUTORESET_NAMES = {mode.name.lower(): mode for mode in AutoresetMode} | {
    mode.value.lower(): mode for mode in AutoresetMode
}


def _autoreset_mode(mode: AutoresetMode | str) -> AutoresetMode:
    """``mode`` as an :class:`AutoresetMode` (names like ``"next_step"`` accepted)."""
    if not isinstance(mode, AutoresetMode):
        key = str(mode).lower()
        if key not in _AUTORESET_NAMES:
            raise ValueError(
                f"autoreset_mode must be AutoresetMode.SAME_STEP or NEXT_STEP, got {mode!r}"
            )
        mode = _AUTORESET_NAMES[key]
    if mode == AutoresetMode.DISABLED:
        raise ValueError("autoreset_mode DISABLED is not offered; use SAME_STEP or NEXT_STEP")
    return mode


def _check_integer(values: torch.Tensor, name: str) -> None:
    """Refuse tensors that are not integer indices (a cast would hide the mistake)."""
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor, got {type(values).__name__}")
    dtype = values.dtype
    if dtype == torch.bool or dtype.is_floating_point or dtype.is_complex:
        raise TypeError(f"{name} must be an integer tensor (torch.long), got {dtype}")


class ActiveMRIVectorEnv(VectorEnv[NumpyObs, np.ndarray, np.ndarray]):
    """B active-acquisition episodes stepped together in one batched reconstructor forward.

    Each sub-environment behaves exactly like :class:`~activemri.envs.env.ActiveMRIEnv`
    (same spaces, rewards and episode rules; see its docstring); sub-environment ``i`` of a
    vector env reset with ``seed=s`` plays the same episodes as a single env reset with
    ``seed=s + i`` (in ``"sequential"`` order the slices are instead dealt round-robin:
    sub-env ``i`` takes slices ``i, i + B, ...``, so B sub-envs cover one pass together).

    Autoreset (``metadata["autoreset_mode"]``) follows Gymnasium's conventions for either mode:

    - ``AutoresetMode.SAME_STEP`` (default; what the SB3 adapter and the evaluation harness
      read): when an episode ends, the returned observation is already the first of the
      next episode; the last observation and info of the finished one are in
      ``infos["final_obs"]`` / ``infos["final_info"]`` (with the ``_final_obs`` mask).
    - ``AutoresetMode.NEXT_STEP`` (what Gymnasium's stateful vector wrappers such as
      ``NormalizeObservation`` require): the terminal step returns the episode's last
      observation and info; on the next step that sub-env ignores its action, starts the
      next episode and returns its first observation with reward 0 and ``terminated``
      False. The other sub-envs step as usual, all in the same batched forward.

    Torch-native API, for policies on the same device that must not copy to the host:
    :meth:`torch_reset`, :meth:`torch_step` and :meth:`torch_action_masks` take and return
    tensors on :attr:`device`. The only device-to-host transfer per step is ``(2, B)`` flags
    (which episodes ended, which rewards are not finite), needed to load the next slices and
    to stop on a broken reconstructor before it corrupts a reset.

    Args:
        num_envs: Number of episodes B.
        preset: Env preset name, YAML path, mapping or :class:`EnvConfig`.
        render_mode: ``"rgb_array"`` (``render()`` returns a tuple of frames) or ``None``.
        autoreset_mode: ``AutoresetMode.SAME_STEP`` or ``AutoresetMode.NEXT_STEP`` (or
            their names, e.g. ``"next_step"``); ``DISABLED`` is not offered.
        **overrides: :class:`EnvConfig` field overrides (as for the single env).
    """

    metadata: dict[str, Any] = {  # noqa: RUF012 (Gymnasium declares it so)
        "autoreset_mode": AutoresetMode.SAME_STEP,
        "render_modes": ["rgb_array"],
        "render_fps": 4,
    }

    def __init__(
        self,
        num_envs: int = 1,
        preset: str | Path | Mapping[str, Any] | EnvConfig | None = None,
        render_mode: str | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.SAME_STEP,
        **overrides: Any,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}")
        self.render_mode = render_mode
        self.autoreset_mode = _autoreset_mode(autoreset_mode)
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode}
        self._pending_reset: list[int] = []  # NEXT_STEP: rows whose episode ended last step
        self.sim = Simulator.build(preset, num_envs, overrides)
        self.config = self.sim.config
        self.num_envs = num_envs
        self.single_observation_space = self.sim.observation_space()
        self.single_action_space = spaces.Discrete(self.sim.width)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)

    @property
    def device(self) -> torch.device:
        """Where the torch-native API's tensors live."""
        return self.sim.device

    @property
    def core(self) -> Any:
        """The batched :class:`~activemri.envs.core.AcquisitionCore` (for oracle policies)."""
        return self.sim.core

    @property
    def reconstructor(self) -> Reconstructor:
        """The reconstructor the rewards are computed with (in eval mode, on :attr:`device`)."""
        return self.sim.core.reconstructor

    @property
    def width(self) -> int:
        """Number of phase-encode lines ``W`` (the action count)."""
        return self.sim.width

    @property
    def state(self) -> EnvState:
        """The privileged batch state (fully sampled k-space, targets; on :attr:`device`).

        For tools and tests, never for policies: what a policy may see is
        :meth:`torch_policy_observation`; an oracle scores lines through
        :meth:`torch_score_candidates`.

        Raises:
            ResetNeededError: Before the first reset.
        """
        return self.sim.require_state()

    @property
    def episodes(self) -> list[Episode]:
        """Host-side facts (file, slice, pass, data range, lines) of each row's episode.

        Raises:
            ResetNeededError: Before the first reset.
        """
        self.sim.require_state()
        return [e for e in self.sim.episodes if e is not None]

    @property
    def dataset(self) -> SliceDataset:
        """The slices' dataset (files, metadata; reading it reads targets: not for policies)."""
        return self.sim.dataset

    @property
    def kspace_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the env's k-space."""
        return self.sim.kspace_shape

    @property
    def recon_size(self) -> tuple[int, int]:
        """``(h, w)`` of reconstructions and targets."""
        return self.sim.recon_size

    @property
    def domain_check(self) -> dict[str, Any] | None:
        """The reconstructor's domain check on this data, if one ran (see ``EnvConfig``)."""
        return self.sim.domain_check

    @property
    def slice_indices(self) -> list[int]:
        """Dataset indices of the slices episodes draw from (one pass in sequential order)."""
        return list(self.sim.indices)

    @property
    def bad_slices(self) -> dict[int, str]:
        """Slices skipped because they could not be read: dataset index -> reason."""
        return dict(self.sim.bad_slices)

    def slice_name(self, index: int) -> tuple[str, int]:
        """``(file name, slice index)`` of dataset index ``index``."""
        meta = self.sim.dataset.slice_meta(index)
        return meta.file.name, int(meta.slice_index)

    def torch_policy_observation(self, obs: TensorObs) -> TensorObs:
        """What a policy is given at a step: ``obs`` and what follows from acquired data.

        Adds ``action_mask``, ``valid``, ``budget``, ``steps``, ``budget_used`` and
        ``num_low``; see :meth:`~activemri.envs.simulator.Simulator.policy_observation`.
        """
        return self.sim.policy_observation(obs)

    def policy_episodes(self, rows: Sequence[int]) -> list[PolicyEpisode]:
        """What a policy is told about the episodes that start in ``rows``."""
        episodes = self.episodes
        return [episodes[row].public() for row in rows]

    to_host = staticmethod(Simulator.to_host)

    @property
    def actual_acceleration(self) -> float:
        """Measured lines / lines at the episode end, averaged over the env's slices.

        See :attr:`~activemri.envs.simulator.Simulator.actual_acceleration`; per slice in
        ``sim.actual_accelerations``, per episode in ``info["actual_acceleration"]``.
        """
        return self.sim.actual_acceleration

    # ------------------------------------------------------------------ torch API
    def torch_reset(
        self, seed: int | Sequence[int | None] | None = None, timer: Timer = _no_timer
    ) -> tuple[TensorObs, dict[str, torch.Tensor]]:
        """Reset every sub-environment; tensors on :attr:`device`.

        Args:
            seed: ``s`` seeds sub-env ``i`` with ``s + i``; a list seeds each; ``None`` keeps
                the generators (fresh random ones on the first reset).
            timer: Profiling hook (see :mod:`activemri.envs.core`).
        """
        if seed is not None or self.sim.state is None:
            seeds: Sequence[int | None]
            if seed is None or isinstance(seed, int):
                seeds = [None if seed is None else seed + i for i in range(self.num_envs)]
            else:
                seeds = list(seed)
                if len(seeds) != self.num_envs:
                    raise ValueError(f"expected {self.num_envs} seeds, got {len(seeds)}")
            for slot, s in enumerate(seeds):
                rng, _ = seeding.np_random(s)
                self.sim.reseed(slot, rng)
            if isinstance(seed, int):
                self._np_random, self._np_random_seed = seeding.np_random(seed)
        self.sim.reset_slots(list(range(self.num_envs)), timer=timer)
        self._pending_reset = []
        return self.sim.observation(), self.sim.step_info(None)

    def torch_step(
        self, actions: torch.Tensor, check: bool = True, timer: Timer = _no_timer
    ) -> tuple[TensorObs, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Step every sub-environment with integer ``(B,)`` actions; tensors on :attr:`device`.

        Args:
            actions: Column per sub-env, an integer tensor (``torch.long``).
            check: Verify the actions are in ``[0, W)`` (one device-to-host transfer).
            timer: Profiling hook.

        Returns:
            ``(obs, reward, terminated, truncated, info)``: reward float32 ``(B,)``, flags
            bool ``(B,)``; ``info`` holds the metric tensors of the step and, in
            ``SAME_STEP`` mode when an episode ended, ``final_obs`` / ``final_info``
            (full-batch tensors, meaningful at rows where ``terminated``) before those rows
            were reset. In ``NEXT_STEP`` mode rows that ended on the previous step are reset
            instead (reward 0, ``terminated`` False; see the class docstring).

        Raises:
            TypeError: For a float, bool or complex action tensor.
            ValueError: For a wrong shape or (with ``check``) an out-of-range action.
            FloatingPointError: If a reward is not finite.
        """
        _check_integer(actions, "actions")
        if actions.shape != (self.num_envs,):
            raise ValueError(
                f"actions must have shape ({self.num_envs},), got {tuple(actions.shape)}"
            )
        if check and bool(((actions < 0) | (actions >= self.sim.width)).any()):
            raise ValueError(f"actions must be in [0, {self.sim.width}), got {actions.tolist()}")
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            return self._step_next(actions, timer)
        result = self.sim.step(actions, timer=timer)
        info: dict[str, Any] = self.sim.step_info(result)
        obs = self.sim.observation()
        # One transfer for both: which rows ended, and whether any reward is not finite.
        flags = torch.stack([result.terminated, ~torch.isfinite(result.reward)]).cpu()
        if flags[1].any():
            raise FloatingPointError(
                f"non-finite rewards {result.reward.tolist()}: the reconstructor returned NaN/inf"
            )
        done_rows = torch.nonzero(flags[0]).flatten().tolist()
        if done_rows:
            final: dict[str, Any] = {
                "final_obs": obs,
                "final_info": info,
                "final_episodes": list(self.sim.episodes),
            }
            self.sim.reset_slots(done_rows, timer=timer)
            obs = self.sim.observation()
            fresh = self.sim.step_info(result)
            fresh["repeated"] = result.repeated & ~result.terminated  # reset rows: a fresh start
            info = {**fresh, **final}
        truncated = torch.zeros_like(result.terminated)
        return obs, result.reward, result.terminated, truncated, info

    def _step_next(
        self, actions: torch.Tensor, timer: Timer
    ) -> tuple[TensorObs, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """``NEXT_STEP`` autoreset: rows that ended last step restart instead of stepping."""
        pending = self._pending_reset
        # Every row goes through the one batched forward; the ended rows' results are
        # discarded and their slots restarted below, so no second forward is needed.
        result = self.sim.step(actions, timer=timer)
        reward, terminated, repeated = result.reward, result.terminated, result.repeated
        if pending:
            rows = torch.tensor(pending, device=self.device)
            reward, terminated, repeated = reward.clone(), terminated.clone(), repeated.clone()
            reward[rows] = 0.0
            terminated[rows] = False
            repeated[rows] = False
        flags = torch.stack([terminated, ~torch.isfinite(reward)]).cpu()
        if flags[1].any():
            raise FloatingPointError(
                f"non-finite rewards {reward.tolist()}: the reconstructor returned NaN/inf"
            )
        if pending:
            self.sim.reset_slots(pending, timer=timer)
        info: dict[str, Any] = self.sim.step_info(result)
        info["repeated"] = repeated
        self._pending_reset = torch.nonzero(flags[0]).flatten().tolist()
        truncated = torch.zeros_like(terminated)
        return self.sim.observation(), reward, terminated, truncated, info

    def torch_score_candidates(
        self, lines: torch.Tensor, metric: str | None = None
    ) -> torch.Tensor:
        """Scores ``(B, K)`` after acquiring each candidate line ``(B, K)``; state unchanged.

        See :meth:`activemri.envs.core.AcquisitionCore.score_candidates`. The range check of
        ``lines`` costs one device-to-host transfer.
        """
        _check_integer(lines, "lines")
        if lines.ndim != 2 or bool(((lines < 0) | (lines >= self.sim.width)).any()):
            raise ValueError(f"lines must be (B, K) indices in [0, {self.sim.width})")
        return self.sim.core.score_candidates(self.sim.require_state(), lines, metric)

    def torch_action_masks(self) -> torch.Tensor:
        """Bool ``(B, W)`` on :attr:`device`: measured lines not yet acquired."""
        return self.sim.action_masks()

    # ------------------------------------------------------------------ NumPy API
    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[NumpyObs, dict[str, Any]]:
        """Reset every sub-environment.

        Args:
            seed: As in :meth:`torch_reset`.
            options: Unused (Gymnasium signature).

        Returns:
            Batched observations and Gymnasium-layout infos.
        """
        obs, info = self.torch_reset(seed)
        return _numpy(obs), self._infos(info, list(range(self.num_envs)), self.sim.episodes)

    def step(
        self, actions: np.ndarray
    ) -> tuple[NumpyObs, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every sub-environment; ended ones are reset as ``autoreset_mode`` says.

        Args:
            actions: ``(B,)`` integer columns in ``[0, W)``.

        Returns:
            ``(obs, rewards, terminated, truncated, infos)``; see the class docstring for
            ``final_obs`` / ``final_info`` (``SAME_STEP`` mode).
        """
        arr = self.sim.check_actions(np.asarray(actions).reshape(-1))
        obs, reward, terminated, truncated, info = self.torch_step(
            torch.from_numpy(arr).to(self.device), check=False
        )
        done = terminated.cpu().numpy()
        rewards = reward.double().cpu().numpy()
        infos = self._infos(info, list(range(self.num_envs)), self.sim.episodes)
        if "final_obs" in info:
            rows = np.flatnonzero(done).tolist()
            final_obs = _numpy(info["final_obs"])
            final = np.full(self.num_envs, None, dtype=object)
            for row in rows:
                final[row] = {k: v[row] for k, v in final_obs.items()}
            infos["final_obs"], infos["_final_obs"] = final, done.copy()
            infos["final_info"] = self._infos(info["final_info"], rows, info["final_episodes"])
            infos["_final_info"] = done.copy()
        return _numpy(obs), rewards, done, truncated.cpu().numpy(), infos

    def _infos(
        self, tensors: Mapping[str, Any], rows: list[int], episodes: Sequence[Episode | None]
    ) -> dict[str, Any]:
        """Gymnasium's vector info layout: arrays with ``_key`` masks marking ``rows``."""
        present = np.zeros(self.num_envs, dtype=bool)
        present[rows] = True
        columns = Simulator.to_host(
            {k: v for k, v in tensors.items() if isinstance(v, torch.Tensor)}
        )
        columns["file"] = np.full(self.num_envs, None, dtype=object)
        columns["slice"] = np.zeros(self.num_envs, dtype=np.int64)
        columns["pass_index"] = np.zeros(self.num_envs, dtype=np.int64)
        for row in rows:
            episode = episodes[row]
            if episode is not None:
                columns["file"][row] = str(episode.meta.file)
                columns["slice"][row] = episode.meta.slice_index
                columns["pass_index"][row] = episode.pass_index
        out: dict[str, Any] = {}
        for key, arr in columns.items():
            out[key], out[f"_{key}"] = arr, present.copy()
        return out

    def action_masks(self) -> np.ndarray:
        """Bool ``(B, W)``: measured lines not yet acquired."""
        return self.torch_action_masks().cpu().numpy()

    def render(self) -> tuple[np.ndarray, ...] | None:
        """One RGB frame per sub-environment (``render_mode="rgb_array"``)."""
        if self.render_mode is None:
            return None
        return tuple(render_slot(self.sim, i) for i in range(self.num_envs))
