"""Episode slots: an :class:`~activemri.envs.source.EpisodeSource` plus the batched core.

The single env is a simulator with one slot and the vector env one with ``num_envs`` slots,
so a vector env and B single envs seeded alike run exactly the same code per episode. The
source decides which slice each slot plays and how it starts (its generator, slice order,
skipped unreadable slices: :attr:`Simulator.bad_slices`); the
:class:`~activemri.envs.core.AcquisitionCore` advances the batch; the simulator holds the
batch state and turns it into observations (the env's and a policy's) and info.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.error import ResetNeeded

from activemri.envs.config import (
    DEFAULT_CANDIDATE_CHUNK,
    EnvConfig,
    build_reconstructor_for_env,
    load_env_config,
    resolve_device,
)
from activemri.envs.core import AcquisitionCore, EnvState, StepResult, Timer, _no_timer
from activemri.envs.source import Episode, EpisodeSource, NoReadableSliceError, PolicyEpisode
from activemri.recon_models.domain import guarded_domain_check

__all__ = [
    "OBS_BOUND",
    "POLICY_KEYS",
    "Episode",
    "NoReadableSliceError",
    "PolicyEpisode",
    "ResetNeededError",
    "Simulator",
]

OBS_BOUND = 1.0e4
"""Observations are clipped to ``[-OBS_BOUND, OBS_BOUND]`` (in units of the observation
scale, so only a broken reconstructor reaches it); finite bounds keep Gymnasium's checker and
observation-normalizing wrappers well defined."""


POLICY_KEYS = ("action_mask", "valid", "budget", "steps", "budget_used", "num_low")
"""Entries a policy's observation has besides the env's (see
:meth:`Simulator.policy_observation`): all of them follow from what was acquired."""


class ResetNeededError(ResetNeeded, RuntimeError):
    """``step()`` before the first ``reset()`` or after the episode ended.

    Gymnasium's :class:`~gymnasium.error.ResetNeeded`, and a ``RuntimeError`` as before.
    """


class Simulator:
    """Episode slots, the slice source and the batched core.

    Args:
        config: The environment configuration.
        num_slots: Number of episodes advanced together.
    """

    def __init__(self, config: EnvConfig, num_slots: int) -> None:
        if num_slots < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_slots}")
        self.config = config
        self.num_slots = num_slots
        self.device = resolve_device(config.device)
        self.source = EpisodeSource(config, num_slots)
        self.dataset = self.source.dataset
        self.indices = self.source.indices
        self.kspace_shape = self.source.kspace_shape
        self.recon_size = self.source.recon_size
        self.actual_accelerations = self.source.actual_accelerations
        model = build_reconstructor_for_env(
            config, self.recon_size, self.device, kspace_shape=self.kspace_shape
        )
        self.domain_check: dict[str, Any] | None = None
        if config.domain_check:
            self.domain_check = guarded_domain_check(
                model, self.dataset, data=config.data, indices=self.indices, device=self.device,
                cache_dir=config.cache_dir,
            )  # fmt: skip
        scenario = config.scenario
        self.core = AcquisitionCore(
            model,
            reward=scenario.reward,
            repeat_penalty=scenario.repeat_penalty,
            device=self.device,
            bf16=config.bf16,
            candidate_chunk=config.candidate_chunk
            or DEFAULT_CANDIDATE_CHUNK.get(self.device.type, DEFAULT_CANDIDATE_CHUNK["cpu"]),
        )
        self.order = self.source.order
        self.bad_slices = self.source.bad_slices  # the same dict: skips show up here
        self.episodes: list[Episode | None] = [None] * num_slots
        self.state: EnvState | None = None
        self._end_lines = torch.ones(num_slots, dtype=torch.long, device=self.device)

    @classmethod
    def build(
        cls,
        preset: str | Path | Mapping[str, Any] | EnvConfig | None,
        num_slots: int,
        overrides: Mapping[str, Any],
    ) -> Simulator:
        """A simulator from a preset (name, YAML path, mapping or config) and overrides."""
        if isinstance(preset, EnvConfig):
            if overrides:
                raise ValueError("overrides cannot be combined with an EnvConfig; edit the config")
            return cls(preset, num_slots)
        return cls(load_env_config(preset, **overrides), num_slots)

    @property
    def actual_acceleration(self) -> float:
        """Mean over the env's slices of measured lines / lines acquired at the episode end.

        The acceleration the env actually runs at when every step adds a line: the
        scenario's ``acceleration`` rounded to whole lines per slice, or what its ``budget``
        amounts to. Per slice (dataset index) in :attr:`actual_accelerations`.
        """
        return float(np.mean(list(self.actual_accelerations.values())))

    # ------------------------------------------------------------------------ spaces
    @property
    def width(self) -> int:
        """Number of phase-encode lines ``W`` (the action count)."""
        return self.kspace_shape[2]

    def observation_space(self) -> spaces.Dict:
        """The single-episode observation space."""
        h, w = self.recon_size
        coils, height, width = self.kspace_shape
        image = spaces.Box(-OBS_BOUND, OBS_BOUND, shape=(1, h, w), dtype=np.float32)
        obs: dict[str, spaces.Space[np.ndarray]] = {
            "reconstruction": image,
            "mask": spaces.MultiBinary(width),
        }
        if self.core.has_uncertainty:
            obs["uncertainty"] = spaces.Box(0.0, OBS_BOUND, shape=(1, h, w), dtype=np.float32)
        if self.config.observe_kspace:
            obs["kspace"] = spaces.Box(
                -OBS_BOUND, OBS_BOUND, shape=(2 * coils, height, width), dtype=np.float32
            )
        return spaces.Dict(obs)

    # ------------------------------------------------------------------------- reset
    def reseed(self, slot: int, rng: np.random.Generator) -> None:
        """Give ``slot`` a new generator and restart its slice order."""
        self.source.reseed(slot, rng)

    def reset_slots(self, slots: list[int], timer: Timer = _no_timer) -> None:
        """Start a new episode in each of ``slots`` (sorted, distinct).

        Raises:
            NoReadableSliceError: If a slot has no readable slice left.
            BudgetError: If the scenario cannot be honoured on a slice (checked for every
                slice at construction already).
            FloatingPointError: If an initial reconstruction or score is not finite.
        """
        kspaces, targets, ranges, valids, masks, lows, budgets = [], [], [], [], [], [], []
        episodes = []
        with timer("data"):
            for slot in slots:
                new_episode = self.source.next_episode(slot)
                sample = new_episode.sample
                episodes.append(new_episode.episode)
                kspaces.append(sample.kspace)
                targets.append(cast(torch.Tensor, sample.target))  # the source refuses None
                ranges.append(new_episode.episode.data_range)
                valids.append(new_episode.valid)
                masks.append(new_episode.mask)
                lows.append(new_episode.num_low)
                budgets.append(new_episode.budget)
            dev = self.device
            new = (
                torch.stack(kspaces).to(dev),
                torch.stack(targets).to(dev),
                torch.tensor(ranges, dtype=torch.float32).to(dev),
                torch.from_numpy(np.stack(valids)).to(dev),
                torch.from_numpy(np.stack(masks)).to(dev),
                torch.tensor(lows, dtype=torch.long).to(dev),
                torch.tensor(budgets, dtype=torch.long).to(dev),
            )
        fresh = self.core.reset(*new, timer=timer)
        self._check_finite(fresh, episodes)
        if self.state is None or len(slots) == self.num_slots:
            if len(slots) != self.num_slots:
                raise RuntimeError("the first reset must start every slot")
            self.state = fresh
        else:
            self.state.replace_rows(torch.tensor(slots, device=dev), fresh)
        for slot, episode in zip(slots, episodes, strict=True):
            self.episodes[slot] = episode
        end = torch.tensor([e.end_lines for e in episodes], dtype=torch.long, device=dev)
        if len(slots) == self.num_slots:
            self._end_lines = end
        else:
            self._end_lines[torch.tensor(slots, device=dev)] = end

    @staticmethod
    def _check_finite(state: EnvState, episodes: list[Episode]) -> None:
        """Refuse episodes whose first reconstruction or score is NaN/inf (one host transfer)."""
        images = [state.recon] if state.uncertainty is None else [state.recon, state.uncertainty]
        ok = torch.isfinite(state.score)
        for image in images:
            ok &= torch.isfinite(image).flatten(1).all(dim=1)
        bad = torch.nonzero(~ok).flatten().tolist()
        if bad:
            where = ", ".join(f"{episodes[i].meta.file} slice {episodes[i].meta.slice_index}"
                              for i in bad[:3])  # fmt: skip
            raise FloatingPointError(
                f"non-finite initial reconstruction or score on {where}: the reconstructor "
                "returned NaN/inf, or the data overflow float32 (`activemri data check`)"
            )

    # -------------------------------------------------------------------------- step
    def step(self, actions: torch.Tensor, timer: Timer = _no_timer) -> StepResult:
        """Advance every slot by one action (long ``(B,)``, already range-checked)."""
        return self.core.step(self.require_state(), actions, timer=timer)

    def require_state(self) -> EnvState:
        """The current state; raises :class:`ResetNeededError` if the env was never reset."""
        if self.state is None:
            raise ResetNeededError("call reset() before step()")
        return self.state

    def check_actions(self, actions: np.ndarray) -> np.ndarray:
        """Validate host actions: integers in ``[0, W)``, one per slot."""
        arr = np.asarray(actions)
        if arr.shape != (self.num_slots,):
            raise ValueError(f"expected {self.num_slots} action(s), got shape {arr.shape}")
        if arr.dtype.kind not in "iu":
            if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
                arr = arr.astype(np.int64)
            else:
                raise ValueError(f"actions must be integer line indices, got {arr!r}")
        if np.any(arr < 0) or np.any(arr >= self.width):
            raise ValueError(f"actions must be in [0, {self.width}), got {arr.tolist()}")
        return arr.astype(np.int64)

    # ------------------------------------------------------------------ observations
    @staticmethod
    def to_host(values: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """``(B,)`` tensors to NumPy in one device-to-host transfer (float64 holds them exactly)."""
        if not values:
            return {}
        stacked = torch.stack([v.double() for v in values.values()]).cpu().numpy()
        return {
            key: row.astype(torch.empty(0, dtype=v.dtype).numpy().dtype)
            for (key, v), row in zip(values.items(), stacked, strict=True)
        }

    def observation(self) -> dict[str, torch.Tensor]:
        """Batched observation tensors on the env's device (see the env docstrings)."""
        state = self.require_state()
        scale = state.scale[:, None, None]
        obs = {
            "reconstruction": (state.recon / scale).clamp(-OBS_BOUND, OBS_BOUND).unsqueeze(1),
            "mask": state.mask.to(torch.int8),
        }
        if state.uncertainty is not None:
            obs["uncertainty"] = (state.uncertainty / scale).clamp(0.0, OBS_BOUND).unsqueeze(1)
        if self.config.observe_kspace:
            parts = torch.view_as_real(state.observed / scale[..., None])  # (B, C, H, W, 2)
            b, c, h, w, _ = parts.shape
            kspace = parts.permute(0, 1, 4, 2, 3).reshape(b, 2 * c, h, w)
            obs["kspace"] = kspace.clamp(-OBS_BOUND, OBS_BOUND)
        return obs

    def policy_observation(self, obs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``obs`` and the :data:`POLICY_KEYS` entries: what a (non-oracle) policy is given.

        ``action_mask``: bool ``(B, W)`` measured lines not yet acquired; ``valid``: bool
        ``(B, W)`` measured lines; ``budget`` / ``steps``: long ``(B,)`` steps allowed and
        taken; ``budget_used``: float32 ``(B, 1)`` their ratio; ``num_low``: long ``(B,)``
        size of the initial central block. Nothing here depends on unacquired data.
        """
        state = self.require_state()
        used = state.steps.float() / state.budget.clamp_min(1).float()
        return {
            **obs,
            "action_mask": state.free_lines(),
            "valid": state.valid,
            "budget": state.budget,
            "steps": state.steps,
            "budget_used": used.clamp(0.0, 1.0).unsqueeze(1),
            "num_low": state.num_low,
        }

    def action_masks(self) -> torch.Tensor:
        """Bool ``(B, W)``: measured lines not yet acquired."""
        return self.require_state().free_lines()

    def step_info(self, result: StepResult | None) -> dict[str, torch.Tensor]:
        """Per-slot metrics as tensors (see the env docstrings for the keys)."""
        state = self.require_state()
        lines = state.mask.sum(dim=1)
        info = {key: value.clone() for key, value in state.metrics.items()}
        info["score"] = state.score.clone()
        info["data_range"] = state.data_range.clone()
        info["lines_acquired"] = lines
        measured = state.valid.sum(dim=1)
        info["acceleration"] = measured / lines.clamp_min(1)
        info["actual_acceleration"] = measured / self._end_lines
        info["steps"] = state.steps.clone()
        info["budget"] = state.budget.clone()
        info["repeated"] = torch.zeros_like(state.mask[:, 0]) if result is None else result.repeated
        return info
