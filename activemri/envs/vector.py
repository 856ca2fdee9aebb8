"""The native batched Gymnasium ``VectorEnv``: an episode source plus the functional core.

:class:`ActiveMRIVectorEnv` is the one public batched interface of the package: the
single env is one of it with one sub-env (and autoreset disabled), and the SB3 adapter, the
rollout loop, the mask learner and the bench drive it through its torch-native API. Inside,
an :class:`~activemri.envs.source.EpisodeSource` decides which slice each sub-env plays and
how it starts, and the :class:`~activemri.envs.core.AcquisitionCore` computes the state,
observations, rewards, terminations and info; the env holds the state, checks what comes in,
moves what goes out to the host and restarts ended episodes as its autoreset mode says.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.error import ResetNeeded
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from activemri.data import SliceDataset
from activemri.envs.config import (
    DEFAULT_CANDIDATE_CHUNK,
    EnvConfig,
    build_reconstructor_for_env,
    load_env_config,
    resolve_device,
)
from activemri.envs.core import AcquisitionCore, EnvState, Timer, _no_timer
from activemri.envs.observation import observation_space, resolve_keys
from activemri.envs.render import render_state
from activemri.envs.source import Episode, EpisodeSource, PolicyEpisode
from activemri.geometry import Geometry
from activemri.recon_models.base import Reconstructor
from activemri.recon_models.domain import guarded_domain_check

__all__ = ["ActiveMRIVectorEnv", "ResetNeededError", "row_info", "to_host"]

TensorObs = dict[str, torch.Tensor]
NumpyObs = dict[str, np.ndarray]


class ResetNeededError(ResetNeeded, RuntimeError):
    """``step()`` before the first ``reset()``, or on an episode that has ended.

    Gymnasium's :class:`~gymnasium.error.ResetNeeded`, and a ``RuntimeError`` as before.
    """


def _numpy(obs: TensorObs) -> NumpyObs:
    return {k: v.cpu().numpy() for k, v in obs.items()}


def to_host(values: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """``(B,)`` tensors to NumPy in one device-to-host transfer (float64 holds them exactly)."""
    if not values:
        return {}
    stacked = torch.stack([v.double() for v in values.values()]).cpu().numpy()
    return {
        key: row.astype(torch.empty(0, dtype=v.dtype).numpy().dtype)
        for (key, v), row in zip(values.items(), stacked, strict=True)
    }


def row_info(infos: Mapping[str, Any], row: int) -> dict[str, Any]:
    """One sub-env's info (Python scalars) from Gymnasium's vector info layout."""
    out: dict[str, Any] = {}
    for key, column in infos.items():
        if key.startswith("_") or key in ("final_obs", "final_info"):
            continue
        value = column[row]
        out[key] = value.item() if isinstance(value, np.generic) else value
    return out


_AUTORESET_NAMES = {mode.name.lower(): mode for mode in AutoresetMode} | {
    mode.value.lower(): mode for mode in AutoresetMode
}


def _autoreset_mode(mode: AutoresetMode | str) -> AutoresetMode:
    """``mode`` as an :class:`AutoresetMode` (names like ``"next_step"`` accepted)."""
    if not isinstance(mode, AutoresetMode):
        key = str(mode).lower()
        if key not in _AUTORESET_NAMES:
            raise ValueError(
                "autoreset_mode must be AutoresetMode.SAME_STEP, NEXT_STEP or DISABLED, "
                f"got {mode!r}"
            )
        mode = _AUTORESET_NAMES[key]
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

    Autoreset (``metadata["autoreset_mode"]``) follows Gymnasium's conventions for each mode:

    - ``AutoresetMode.SAME_STEP`` (default; what the SB3 adapter and the evaluation harness
      read): when an episode ends, the returned observation is already the first of the
      next episode; the last observation and info of the finished one are in
      ``infos["final_obs"]`` / ``infos["final_info"]`` (with the ``_final_obs`` mask).
    - ``AutoresetMode.NEXT_STEP`` (what Gymnasium's stateful vector wrappers such as
      ``NormalizeObservation`` require): the terminal step returns the episode's last
      observation and info; on the next step that sub-env ignores its action, starts the
      next episode and returns its first observation with reward 0 and ``terminated``
      False. The other sub-envs step as usual, all in the same batched forward.
    - ``AutoresetMode.DISABLED``: nothing restarts by itself; restart ended sub-envs with
      ``reset(options={"reset_mask": mask})`` (or :meth:`torch_reset` with ``rows``).
      Stepping while a sub-env's episode has ended raises :class:`ResetNeededError` (the
      single env's rule); the terminal step's observation and info are the returned ones.

    Torch-native API, for policies on the same device that must not copy to the host:
    :meth:`torch_reset`, :meth:`torch_step`, :meth:`torch_action_masks`,
    :meth:`torch_policy_observation` and (for oracles) :meth:`torch_score_candidates` take and
    return tensors on :attr:`device`. The only device-to-host transfer per step is ``(2, B)``
    flags (which episodes ended, which rewards are not finite), needed to load the next
    slices and to stop on a broken reconstructor before it corrupts a reset.

    Args:
        num_envs: Number of episodes B.
        preset: Env preset name, YAML path, mapping or :class:`EnvConfig`.
        render_mode: ``"rgb_array"`` (``render()`` returns a tuple of frames) or ``None``.
        autoreset_mode: ``AutoresetMode.SAME_STEP``, ``NEXT_STEP`` or ``DISABLED`` (or their
            names, e.g. ``"next_step"``).
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
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.render_mode = render_mode
        self.autoreset_mode = _autoreset_mode(autoreset_mode)
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode}
        if isinstance(preset, EnvConfig):
            if overrides:
                raise ValueError("overrides cannot be combined with an EnvConfig; edit the config")
            config = preset
        else:
            config = load_env_config(preset, **overrides)
        self.config = config
        self.num_envs = num_envs
        self._device = resolve_device(config.device)
        self._source = EpisodeSource(config, num_envs)
        model = build_reconstructor_for_env(
            config, self._source.recon_size, self._device, kspace_shape=self._source.kspace_shape
        )
        self._domain_check: dict[str, Any] | None = None
        if config.domain_check:
            self._domain_check = guarded_domain_check(
                model,
                self._source.dataset,
                data=config.data,
                indices=self._source.indices,
                device=self._device,
                cache_dir=config.cache_dir,
            )
        scenario = config.scenario
        keys = resolve_keys(
            config.observation,
            has_uncertainty=bool(model.has_uncertainty),
            observe_kspace=config.observe_kspace,
        )
        self._core = AcquisitionCore(
            model,
            reward=scenario.reward,
            repeat_penalty=scenario.repeat_penalty,
            device=self._device,
            bf16=config.bf16,
            candidate_chunk=config.candidate_chunk
            or DEFAULT_CANDIDATE_CHUNK.get(self._device.type, DEFAULT_CANDIDATE_CHUNK["cpu"]),
            observation=keys,
            metric_threads=config.metric_threads,
            channels_last=config.channels_last,
            reward_timing=scenario.reward_timing,
            geometry=self._source.geometry,
            holdout_fraction=scenario.holdout_fraction,
            holdout_splits=scenario.holdout_splits,
        )
        self._state: EnvState | None = None
        self._episodes: list[Episode | None] = [None] * num_envs
        self._pending_reset: list[int] = []  # NEXT_STEP: rows whose episode ended last step
        self._ended = np.zeros(num_envs, dtype=bool)  # DISABLED: rows waiting for a reset
        self.single_observation_space = observation_space(
            keys, self._source.kspace_shape, self._source.recon_size, self._source.num_actions
        )
        self.single_action_space = spaces.Discrete(self._source.num_actions)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)

    # ----------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        """Where the torch-native API's tensors live."""
        return self._device

    @property
    def core(self) -> AcquisitionCore:
        """The functional core (reconstructor, reward, observation entries) of this env.

        Its functions take an explicit :class:`~activemri.envs.core.EnvState`; the env's own
        is :attr:`state`. For tools that compose their own loop; policies use the torch API.
        """
        return self._core

    @property
    def source(self) -> EpisodeSource:
        """The episode source: slices, slice order, seeding, initial masks and budgets."""
        return self._source

    @property
    def reconstructor(self) -> Reconstructor:
        """The reconstructor the rewards are computed with (in eval mode, on :attr:`device`)."""
        return self._core.reconstructor

    @property
    def width(self) -> int:
        """K-space width ``W``: the phase-encode lines (the action count) of 2-D slices."""
        return self._source.width

    @property
    def num_actions(self) -> int:
        """Actions ``A``: ``W`` lines, or ``H * W`` points of ky-kz planes."""
        return self._source.num_actions

    @property
    def geometry(self) -> Geometry:
        """What an action acquires (:mod:`activemri.geometry`)."""
        return self._source.geometry

    @property
    def state(self) -> EnvState:
        """The privileged batch state (fully sampled k-space, targets; on :attr:`device`).

        For tools and tests, never for policies: what a policy may see is
        :meth:`torch_policy_observation`; an oracle scores lines through
        :meth:`torch_score_candidates`.

        Raises:
            ResetNeededError: Before the first reset.
        """
        if self._state is None:
            raise ResetNeededError("call reset() before step()")
        return self._state

    @property
    def episodes(self) -> list[Episode]:
        """Host-side facts (file, slice, pass, data range, lines) of each row's episode.

        Raises:
            ResetNeededError: Before the first reset.
        """
        self.state  # noqa: B018 (raises before the first reset)
        return [e for e in self._episodes if e is not None]

    @property
    def dataset(self) -> SliceDataset:
        """The slices' dataset (files, metadata; reading it reads targets: not for policies)."""
        return self._source.dataset

    @property
    def kspace_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the env's k-space."""
        return self._source.kspace_shape

    @property
    def recon_size(self) -> tuple[int, int]:
        """``(h, w)`` of reconstructions and targets."""
        return self._source.recon_size

    @property
    def domain_check(self) -> dict[str, Any] | None:
        """The reconstructor's domain check on this data, if one ran (see ``EnvConfig``)."""
        return self._domain_check

    @property
    def slice_indices(self) -> list[int]:
        """Dataset indices of the slices episodes draw from (one pass in sequential order)."""
        return list(self._source.indices)

    @property
    def bad_slices(self) -> dict[int, str]:
        """Slices skipped because they could not be read: dataset index -> reason."""
        return dict(self._source.bad_slices)

    @property
    def actual_acceleration(self) -> float:
        """Mean over the env's slices of measured lines / lines acquired at the episode end.

        The acceleration the env actually runs at when every step adds a line: the
        scenario's ``acceleration`` rounded to whole lines per slice, or what its ``budget``
        amounts to. Per slice (dataset index) in :attr:`actual_accelerations`, per episode in
        ``info["actual_acceleration"]``.
        """
        return float(np.mean(list(self._source.actual_accelerations.values())))

    @property
    def actual_accelerations(self) -> dict[int, float]:
        """Per slice (dataset index): the acceleration its episodes end at."""
        return dict(self._source.actual_accelerations)

    def slice_name(self, index: int) -> tuple[str, int]:
        """``(file name, slice index)`` of dataset index ``index``."""
        meta = self._source.dataset.slice_meta(index)
        return meta.file.name, int(meta.slice_index)

    def policy_episodes(self, rows: Sequence[int]) -> list[PolicyEpisode]:
        """What a policy is told about the episodes that start in ``rows``."""
        episodes = self.episodes
        return [episodes[row].public() for row in rows]

    to_host = staticmethod(to_host)

    # -------------------------------------------------------------- episode starts
    def _start(self, rows: list[int], timer: Timer) -> None:
        """Start a new episode in each of ``rows`` (sorted, distinct).

        Raises:
            NoReadableSliceError: If a sub-env has no readable slice left.
            BudgetError: If the scenario cannot be honoured on a slice (checked for every
                slice at construction already).
            FloatingPointError: If an initial reconstruction or score is not finite.
        """
        with timer("data"):
            drawn = [self._source.next_episode(row) for row in rows]
            dev = self._device
            new = {
                "kspace": torch.stack([d.sample.kspace for d in drawn]).to(dev),
                # slices without a target only with the self-supervised reward: NaN targets
                "target": torch.stack([_target_or_nan(d.sample) for d in drawn]).to(dev),
                "data_range": torch.tensor([d.episode.data_range for d in drawn]).to(dev),
                "valid": torch.from_numpy(np.stack([d.valid for d in drawn])).to(dev),
                "mask": torch.from_numpy(np.stack([d.mask for d in drawn])).to(dev),
                "num_low": torch.tensor([d.num_low for d in drawn], dtype=torch.long).to(dev),
                "budget": torch.tensor([d.budget for d in drawn], dtype=torch.long).to(dev),
                "end_lines": torch.tensor([d.episode.end_lines for d in drawn]).to(dev),
                "split_seed": torch.tensor([d.split_seed for d in drawn], dtype=torch.long).to(dev),
            }
        fresh = self._core.initial(**new, timer=timer)
        episodes = [d.episode for d in drawn]
        _check_finite(fresh, episodes)
        if self._state is None or len(rows) == self.num_envs:
            if len(rows) != self.num_envs:
                raise ResetNeededError("the first reset must start every sub-env")
            self._state = fresh
        else:
            self._state.replace_rows(torch.tensor(rows, device=dev), fresh)
        for row, episode in zip(rows, episodes, strict=True):
            self._episodes[row] = episode

    # ------------------------------------------------------------------ torch API
    def torch_reset(
        self,
        seed: int | Sequence[int | None] | None = None,
        timer: Timer = _no_timer,
        rows: Sequence[int] | None = None,
    ) -> tuple[TensorObs, dict[str, torch.Tensor]]:
        """Reset sub-environments (all, or ``rows``); tensors on :attr:`device`.

        Args:
            seed: ``s`` seeds sub-env ``i`` with ``s + i``; a list seeds each reset row;
                ``None`` keeps the generators (fresh random ones on the first reset).
            timer: Profiling hook (see :mod:`activemri.envs.core`).
            rows: Only restart these sub-envs (the others keep their episodes); every
                sub-env on the first reset.

        Returns:
            The full batch's observation and info.
        """
        targets = list(range(self.num_envs)) if rows is None else sorted({int(r) for r in rows})
        if any(not 0 <= r < self.num_envs for r in targets):
            raise ValueError(f"rows must be sub-env indices in [0, {self.num_envs}), got {rows}")
        if not targets:  # nothing to restart (e.g. an all-False reset_mask)
            return self._core.observation(self.state), self._core.info(self.state)
        if seed is not None or self._state is None:
            seeds: Sequence[int | None]
            if seed is None or isinstance(seed, int):
                seeds = [None if seed is None else seed + r for r in targets]
            else:
                seeds = list(seed)
                if len(seeds) != len(targets):
                    raise ValueError(f"expected {len(targets)} seeds, got {len(seeds)}")
            for row, s in zip(targets, seeds, strict=True):
                rng, _ = seeding.np_random(s)
                self._source.reseed(row, rng)
            if isinstance(seed, int) and rows is None:
                self._np_random, self._np_random_seed = seeding.np_random(seed)
        self._ended[targets] = True  # until the restart succeeds
        self._start(targets, timer)
        self._ended[targets] = False
        self._pending_reset = [r for r in self._pending_reset if r not in targets]
        state = self.state
        return self._core.observation(state), self._core.info(state)

    def torch_step(
        self, actions: torch.Tensor, check: bool = True, timer: Timer = _no_timer
    ) -> tuple[TensorObs, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Step every sub-environment with integer ``(B,)`` actions; tensors on :attr:`device`.

        Args:
            actions: Column per sub-env, an integer tensor (``torch.long``).
            check: Verify the actions are in ``[0, A)`` (one device-to-host transfer).
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
            ResetNeededError: Before the first reset, or (``DISABLED``) while a sub-env's
                episode has ended.
            FloatingPointError: If a reward is not finite.
        """
        _check_integer(actions, "actions")
        if actions.shape != (self.num_envs,):
            raise ValueError(
                f"actions must have shape ({self.num_envs},), got {tuple(actions.shape)}"
            )
        if check and bool(((actions < 0) | (actions >= self.num_actions)).any()):
            raise ValueError(f"actions must be in [0, {self.num_actions}), got {actions.tolist()}")
        state = self.state
        if self._ended.any():
            ended = np.flatnonzero(self._ended).tolist()
            raise ResetNeededError(
                f"the episode of sub-env(s) {ended} has ended: reset them before step() "
                "(reset(options={'reset_mask': ...}) or torch_reset(rows=...))"
            )
        core = self._core
        # The old state is dropped, so the transition may reuse its buffers.
        nxt = core.transition(state, actions, donate=True, timer=timer)
        reward, terminated = core.reward(state, nxt), core.terminal(nxt)
        self._state = nxt
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            return self._finish_next(reward, terminated, timer)
        # One transfer for both: which rows ended, and whether any reward is not finite.
        flags = torch.stack([terminated, ~torch.isfinite(reward)]).cpu().numpy()
        self._check_rewards(reward, flags[1])
        info: dict[str, Any] = core.info(nxt)
        obs = core.observation(nxt)
        done_rows = np.flatnonzero(flags[0]).tolist()
        if done_rows and self.autoreset_mode == AutoresetMode.DISABLED:
            self._ended[done_rows] = True
        elif done_rows:
            final: dict[str, Any] = {
                "final_obs": obs,
                "final_info": info,
                "final_episodes": list(self._episodes),
            }
            self._start(done_rows, timer)
            obs, info = core.observation(self.state), {**core.info(self.state), **final}
        return obs, reward, terminated, torch.zeros_like(terminated), info

    def _finish_next(
        self, reward: torch.Tensor, terminated: torch.Tensor, timer: Timer
    ) -> tuple[TensorObs, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """``NEXT_STEP`` autoreset: rows that ended last step restart instead of stepping.

        Every row went through the one batched transition; the ended rows' results are
        discarded and their episodes restarted here, so no second forward is needed.
        """
        pending = self._pending_reset
        if pending:
            rows = torch.tensor(pending, device=self._device)
            reward, terminated = reward.clone(), terminated.clone()
            reward[rows] = 0.0
            terminated[rows] = False
        flags = torch.stack([terminated, ~torch.isfinite(reward)]).cpu().numpy()
        self._check_rewards(reward, flags[1])
        if pending:
            self._start(pending, timer)  # their `repeated` starts False
        self._pending_reset = np.flatnonzero(flags[0]).tolist()
        state = self.state
        info = self._core.info(state)
        return self._core.observation(state), reward, terminated, torch.zeros_like(terminated), info

    def _check_rewards(self, reward: torch.Tensor, bad: np.ndarray) -> None:
        if not bad.any():
            return
        rows = np.flatnonzero(bad).tolist()
        if self.autoreset_mode == AutoresetMode.DISABLED:
            self._ended[rows] = True  # the broken episodes must be restarted
        where = ", ".join(
            f"{e.meta.file.name} slice {e.meta.slice_index}"
            for e in (self._episodes[r] for r in rows[:3])
            if e is not None
        )
        raise FloatingPointError(
            f"non-finite rewards {reward.tolist()}: the reconstructor returned NaN/inf on {where}"
        )

    def torch_policy_observation(self, obs: TensorObs) -> TensorObs:
        """What a policy is given at a step: ``obs`` and what follows from acquired data.

        Adds :data:`~activemri.envs.observation.POLICY_KEYS` (``action_mask``, ``valid``,
        ``budget``, ``steps``, ``budget_used``, ``budget_left``, ``num_low``, and the
        geometry's ``center_rank`` and ``action_grid``); see
        :func:`activemri.envs.observation.policy_observation`.
        """
        return self._core.policy_observation(self.state, obs)

    def torch_score_candidates(
        self, lines: torch.Tensor, metric: str | None = None
    ) -> torch.Tensor:
        """Scores ``(B, K)`` after acquiring each candidate line ``(B, K)``; state unchanged.

        The scoring handle of oracle policies; see
        :meth:`activemri.envs.core.AcquisitionCore.score_candidates`. The range check of
        ``lines`` costs one device-to-host transfer.
        """
        _check_integer(lines, "lines")
        if lines.ndim != 2 or bool(((lines < 0) | (lines >= self.num_actions)).any()):
            raise ValueError(f"lines must be (B, K) indices in [0, {self.num_actions})")
        return self._core.score_candidates(self.state, lines, metric)

    def torch_action_masks(self) -> torch.Tensor:
        """Bool ``(B, W)`` on :attr:`device`: measured lines not yet acquired."""
        return self.state.free_lines()

    def check_actions(self, actions: Any) -> np.ndarray:
        """Host actions validated: integers in ``[0, A)``, one per sub-env, as int64."""
        arr = np.asarray(actions)
        if arr.shape != (self.num_envs,):
            raise ValueError(f"expected {self.num_envs} action(s), got shape {arr.shape}")
        if arr.dtype.kind not in "iu":
            if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
                arr = arr.astype(np.int64)
            else:
                raise ValueError(f"actions must be integer line indices, got {arr!r}")
        if np.any(arr < 0) or np.any(arr >= self.num_actions):
            raise ValueError(f"actions must be in [0, {self.num_actions}), got {arr.tolist()}")
        return arr.astype(np.int64)

    # ------------------------------------------------------------------ NumPy API
    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[NumpyObs, dict[str, Any]]:
        """Reset every sub-environment, or those of ``options["reset_mask"]``.

        Args:
            seed: As in :meth:`torch_reset`.
            options: ``{"reset_mask": bool (B,)}`` restarts only the marked sub-envs
                (Gymnasium's convention for ``AutoresetMode.DISABLED``; any mode accepts it).

        Returns:
            Batched observations and Gymnasium-layout infos (the ``_key`` masks mark the
            sub-envs that were reset).
        """
        rows = None
        if options and "reset_mask" in options:
            mask = np.asarray(options["reset_mask"])
            if mask.dtype != np.bool_ or mask.shape != (self.num_envs,):
                raise ValueError(
                    f"options['reset_mask'] must be a bool array of shape ({self.num_envs},), "
                    f"got {mask.dtype} {mask.shape}"
                )
            rows = np.flatnonzero(mask).tolist()
        obs, info = self.torch_reset(seed, rows=rows)
        marked = list(range(self.num_envs)) if rows is None else rows
        return _numpy(obs), self._infos(info, marked, self._episodes)

    def step(
        self, actions: np.ndarray
    ) -> tuple[NumpyObs, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every sub-environment; ended ones are reset as ``autoreset_mode`` says.

        Args:
            actions: ``(B,)`` integer actions in ``[0, A)`` (columns, or flat ky-kz points).

        Returns:
            ``(obs, rewards, terminated, truncated, infos)``; see the class docstring for
            ``final_obs`` / ``final_info`` (``SAME_STEP`` mode).
        """
        arr = self.check_actions(np.asarray(actions).reshape(-1))
        obs, reward, terminated, truncated, info = self.torch_step(
            torch.from_numpy(arr).to(self.device), check=False
        )
        done = terminated.cpu().numpy()
        rewards = reward.double().cpu().numpy()
        infos = self._infos(info, list(range(self.num_envs)), self._episodes)
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
        columns = to_host({k: v for k, v in tensors.items() if isinstance(v, torch.Tensor)})
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
        return tuple(render_state(self.state, i) for i in range(self.num_envs))


def _target_or_nan(sample: Any) -> torch.Tensor:
    """The slice's target, or NaN images of its size where the file has none."""
    if sample.target is not None:
        return cast(torch.Tensor, sample.target)
    return torch.full(sample.meta.recon_size, float("nan"))


def _check_finite(state: EnvState, episodes: list[Episode]) -> None:
    """Refuse episodes whose first reconstruction or score is NaN/inf (one host transfer)."""
    images = [state.recon] if state.uncertainty is None else [state.recon, state.uncertainty]
    ok = torch.isfinite(state.score)
    for image in images:
        ok &= torch.isfinite(image).flatten(1).all(dim=1)
    bad = torch.nonzero(~ok).flatten().tolist()
    if bad:
        where = ", ".join(
            f"{episodes[i].meta.file} slice {episodes[i].meta.slice_index}" for i in bad[:3]
        )
        raise FloatingPointError(
            f"non-finite initial reconstruction or score on {where}: the reconstructor "
            "returned NaN/inf, or the data overflow float32 (`activemri data check`)"
        )
