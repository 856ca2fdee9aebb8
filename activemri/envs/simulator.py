"""Episode slots over one :class:`~activemri.envs.core.AcquisitionCore`: data, seeds, observations.

The single env is a simulator with one slot and the vector env one with ``num_envs`` slots,
so a vector env and B single envs seeded alike run exactly the same code per episode.
Each slot owns a NumPy generator that chooses its slices and its random initial lines. A
slice that cannot be read (damaged file, NaN values) is skipped with a
:class:`~activemri.data.DataWarning` and recorded in :attr:`Simulator.bad_slices`; the
episode starts on the next slice instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from activemri.data import CorruptSliceError, DataWarning, SliceDataset, SliceMeta, SliceSample
from activemri.envs.config import (
    DEFAULT_CANDIDATE_CHUNK,
    EnvConfig,
    build_dataset,
    build_reconstructor_for_env,
    load_env_config,
    resolve_device,
)
from activemri.envs.core import AcquisitionCore, EnvState, StepResult, Timer, _no_timer
from activemri.recon_models.domain import guarded_domain_check

__all__ = ["OBS_BOUND", "Episode", "Simulator"]

OBS_BOUND = 1.0e4
"""Observations are clipped to ``[-OBS_BOUND, OBS_BOUND]`` (in units of the observation
scale, so only a broken reconstructor reaches it); finite bounds keep Gymnasium's checker and
observation-normalizing wrappers well defined."""


@dataclass
class Episode:
    """Host-side facts about a slot's current episode.

    Attributes:
        meta: The slice's metadata.
        dataset_index: Index of the slice in the dataset.
        pass_index: How many full passes over the slices this slot had made when it started.
        data_range: Data range used for SSIM/PSNR.
        valid_lines: Measured lines of the slice.
    """

    meta: SliceMeta
    dataset_index: int
    pass_index: int
    data_range: float
    valid_lines: int


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
        self.dataset: SliceDataset
        self.dataset, self.indices = build_dataset(config)
        first = self.indices[0]
        self.kspace_shape: tuple[int, int, int] = self.dataset.slice_shape(first)
        self.recon_size: tuple[int, int] = self.dataset.slice_meta(first).recon_size
        model = build_reconstructor_for_env(config, self.recon_size, self.device)
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
        self.order = config.resolved_order
        self.rngs: list[np.random.Generator] = [np.random.default_rng() for _ in range(num_slots)]
        self.started = [0] * num_slots
        self._perms: list[np.ndarray | None] = [None] * num_slots
        self.episodes: list[Episode | None] = [None] * num_slots
        self.bad_slices: dict[int, str] = {}
        self._cache: dict[int, SliceSample] = {}
        self.state: EnvState | None = None

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
        self.rngs[slot] = rng
        self.started[slot] = 0
        self._perms[slot] = None

    def _next_index(self, slot: int) -> tuple[int, int]:
        n = len(self.indices)
        while True:
            if self.order == "sequential":
                position = slot + self.started[slot] * self.num_slots
                pass_index, within = divmod(position, n)
                chosen = within
            else:
                pass_index, within = divmod(self.started[slot], n)
                perm = self._perms[slot]
                if within == 0 or perm is None:
                    perm = self._perms[slot] = self.rngs[slot].permutation(n)
                chosen = int(perm[within])
            self.started[slot] += 1
            if self.indices[chosen] not in self.bad_slices:
                return self.indices[chosen], pass_index

    def _load(self, slot: int) -> tuple[SliceSample, int, int]:
        """Next readable slice of ``slot``; unreadable ones are skipped, recorded, warned about."""
        while True:
            index, pass_index = self._next_index(slot)
            if index in self._cache:
                return self._cache[index], index, pass_index
            try:
                sample = self.dataset[index]
                if self.config.cache_slices:
                    self._cache[index] = sample
                return sample, index, pass_index
            except CorruptSliceError as exc:
                self.bad_slices[index] = str(exc)
                warnings.warn(f"skipping slice: {exc}", DataWarning, stacklevel=3)
                if len(self.bad_slices) == len(self.indices):
                    raise ValueError("every slice of the environment's data is unreadable") from exc

    def reset_slots(self, slots: list[int], timer: Timer = _no_timer) -> None:
        """Start a new episode in each of ``slots`` (sorted, distinct).

        Raises:
            ValueError: If the scenario leaves nothing to acquire on a slice.
        """
        kspaces, targets, ranges, valids, masks, lows, budgets = [], [], [], [], [], [], []
        episodes = []
        with timer("data"):
            for slot in slots:
                sample, index, pass_index = self._load(slot)
                if sample.target is None:
                    raise ValueError(
                        f"{sample.meta.file} slice {sample.meta.slice_index} has no target"
                    )
                valid = sample.meta.valid_columns(self.width).numpy()
                mask, num_low = self.config.scenario.initial_mask(valid, self.rngs[slot])
                budget = self.config.scenario.episode_budget(valid, mask)
                if budget == 0:
                    raise ValueError(
                        f"the scenario's initial mask acquires all {int(valid.sum())} measured "
                        f"lines of {sample.meta.file.name}: nothing is left to choose"
                    )
                data_range = sample.meta.max_value
                if data_range is None:
                    data_range = float(sample.target.max())
                episodes.append(
                    Episode(sample.meta, index, pass_index, float(data_range), int(valid.sum()))
                )
                kspaces.append(sample.kspace)
                targets.append(sample.target)
                ranges.append(data_range)
                valids.append(valid)
                masks.append(mask)
                lows.append(num_low)
                budgets.append(budget)
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
        if self.state is None or len(slots) == self.num_slots:
            if len(slots) != self.num_slots:
                raise RuntimeError("the first reset must start every slot")
            self.state = fresh
        else:
            self.state.replace_rows(torch.tensor(slots, device=dev), fresh)
        for slot, episode in zip(slots, episodes, strict=True):
            self.episodes[slot] = episode

    # -------------------------------------------------------------------------- step
    def step(self, actions: torch.Tensor, timer: Timer = _no_timer) -> StepResult:
        """Advance every slot by one action (long ``(B,)``, already range-checked)."""
        return self.core.step(self.require_state(), actions, timer=timer)

    def require_state(self) -> EnvState:
        """The current state; raises if the env was never reset."""
        if self.state is None:
            raise RuntimeError("call reset() before step()")
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

    def action_masks(self) -> torch.Tensor:
        """Bool ``(B, W)``: measured lines not yet acquired."""
        state = self.require_state()
        return state.valid & ~state.mask

    def step_info(self, result: StepResult | None) -> dict[str, torch.Tensor]:
        """Per-slot metrics as tensors (see the env docstrings for the keys)."""
        state = self.require_state()
        lines = state.mask.sum(dim=1)
        info = {key: value.clone() for key, value in state.metrics.items()}
        info["score"] = state.score.clone()
        info["data_range"] = state.data_range.clone()
        info["lines_acquired"] = lines
        info["acceleration"] = state.valid.sum(dim=1) / lines.clamp_min(1)
        info["steps"] = state.steps.clone()
        info["budget"] = state.budget.clone()
        info["repeated"] = torch.zeros_like(state.mask[:, 0]) if result is None else result.repeated
        return info
