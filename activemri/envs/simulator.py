"""Episode slots over one :class:`~activemri.envs.core.AcquisitionCore`: data, seeds, observations.

The single env is a simulator with one slot and the vector env one with ``num_envs`` slots,
so a vector env and B single envs seeded alike run exactly the same code per episode.
Each slot owns a NumPy generator that chooses its slices and its random initial lines. A
slice that cannot be read (damaged file, NaN values, finite values too large for float32
arithmetic) is skipped with a :class:`~activemri.data.DataWarning` and recorded in
:attr:`Simulator.bad_slices`; the episode starts on the next slice instead. A slot left with
no readable slice raises :class:`NoReadableSliceError`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.error import ResetNeeded

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
from activemri.envs.scenario import BudgetError
from activemri.recon_models.domain import guarded_domain_check

__all__ = ["OBS_BOUND", "Episode", "NoReadableSliceError", "ResetNeededError", "Simulator"]

OBS_BOUND = 1.0e4
"""Observations are clipped to ``[-OBS_BOUND, OBS_BOUND]`` (in units of the observation
scale, so only a broken reconstructor reaches it); finite bounds keep Gymnasium's checker and
observation-normalizing wrappers well defined."""


class NoReadableSliceError(ValueError):
    """An episode slot has no readable slice left to start an episode on."""


class ResetNeededError(ResetNeeded, RuntimeError):
    """``step()`` before the first ``reset()`` or after the episode ended.

    Gymnasium's :class:`~gymnasium.error.ResetNeeded`, and a ``RuntimeError`` as before.
    """


@dataclass
class Episode:
    """Host-side facts about a slot's current episode.

    Attributes:
        meta: The slice's metadata.
        dataset_index: Index of the slice in the dataset.
        pass_index: How many full passes over the slices this slot had made when it started.
        data_range: Data range used for SSIM/PSNR.
        valid_lines: Measured lines of the slice.
        end_lines: Lines acquired when the budget is spent (initial lines + budget).
    """

    meta: SliceMeta
    dataset_index: int
    pass_index: int
    data_range: float
    valid_lines: int
    end_lines: int

    @property
    def actual_acceleration(self) -> float:
        """``valid_lines / end_lines``: the acceleration this episode ends at."""
        return self.valid_lines / self.end_lines


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
        self.actual_accelerations: dict[int, float] = self._plan_episodes()
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
        self.order = config.resolved_order
        self.rngs: list[np.random.Generator] = [np.random.default_rng() for _ in range(num_slots)]
        self.started = [0] * num_slots
        self._perms: list[np.ndarray | None] = [None] * num_slots
        self.episodes: list[Episode | None] = [None] * num_slots
        self.bad_slices: dict[int, str] = {}
        self._cache: dict[int, SliceSample] = {}
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

    def _plan_episodes(self) -> dict[int, float]:
        """Check the scenario on every slice (from metadata) and return its actual accelerations.

        Raises:
            BudgetError: Naming the files on which the budget or acceleration cannot be
                honoured.
        """
        scenario = self.config.scenario
        by_geometry: dict[tuple[int, int], float | BudgetError] = {}
        failed: dict[tuple[int, int], list[str]] = {}
        out: dict[int, float] = {}
        for index in self.indices:
            meta = self.dataset.slice_meta(index)
            key = (meta.padding_left, meta.padding_right)
            if key not in by_geometry:
                valid = meta.valid_columns(self.width).numpy()
                try:
                    by_geometry[key] = scenario.actual_acceleration(
                        int(valid.sum()), scenario.initial_count(valid)
                    )
                except BudgetError as exc:
                    by_geometry[key] = exc
            result = by_geometry[key]
            if isinstance(result, BudgetError):
                names = failed.setdefault(key, [])
                if meta.file.name not in names:
                    names.append(meta.file.name)
            else:
                out[index] = result
        if failed:
            key, names = next(iter(failed.items()))
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            raise BudgetError(f"{shown}: {by_geometry[key]}")
        return out

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
        self.rngs[slot] = rng
        self.started[slot] = 0
        self._perms[slot] = None

    def _next_index(self, slot: int) -> tuple[int, int]:
        n = len(self.indices)
        # 2n draws hold one whole permutation (shuffle) and cover the slot's whole
        # round-robin share (sequential), so a readable slice is found if the slot has one.
        for _ in range(2 * n):
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
        raise NoReadableSliceError(self._unreadable_message(slot))

    def _unreadable_message(self, slot: int) -> str:
        if self.order == "sequential" and len(self.bad_slices) < len(self.indices):
            n = len(self.indices)
            share = sorted({self.indices[(slot + k * self.num_slots) % n] for k in range(n)})
            where = (
                f"sub-env {slot}'s round-robin share ({len(share)} of {n} slices, dealt to "
                f"{self.num_slots} sub-envs)"
            )
        else:
            share, where = sorted(self.bad_slices), "every slice of the environment's data"
        files = sorted({self.dataset.slice_meta(i).file.name for i in share})
        reasons = "; ".join(self.bad_slices[i] for i in share[:3])
        return (
            f"{where} is unreadable, in {', '.join(files[:5])}"
            f"{f' and {len(files) - 5} more files' if len(files) > 5 else ''} ({reasons}); "
            "run `activemri data check` on the folder"
            + (", or use a number of sub-envs that deals every sub-env a readable slice"
               if self.order == "sequential" and len(self.bad_slices) < len(self.indices)
               else "")
        )  # fmt: skip

    def _load(self, slot: int) -> tuple[SliceSample, int, int, float]:
        """Next readable slice of ``slot`` and its data range.

        Unreadable slices are skipped, recorded and warned about; each one is read at most
        once, so this ends after at most ``len(indices) + 1`` reads.
        """
        while True:
            index, pass_index = self._next_index(slot)
            if index in self._cache:
                sample = self._cache[index]
                return sample, index, pass_index, self._data_range(sample)
            try:
                sample = self.dataset[index]
                data_range = self._data_range(sample)
            except CorruptSliceError as exc:
                self.bad_slices[index] = str(exc)
                warnings.warn(f"skipping slice: {exc}", DataWarning, stacklevel=3)
                continue
            if self.config.cache_slices:
                self._cache[index] = sample
            return sample, index, pass_index, data_range

    @staticmethod
    def _data_range(sample: SliceSample) -> float:
        """The SSIM/PSNR data range: the file's ``max``, else the target slice's maximum."""
        meta = sample.meta
        if sample.target is None:
            raise ValueError(f"{meta.file} slice {meta.slice_index} has no target")
        data_range = meta.max_value
        if data_range is None:
            data_range = float(sample.target.max())
            if not data_range > 0:
                raise CorruptSliceError(
                    f"{meta.file} slice {meta.slice_index}: the target is zero everywhere and "
                    "the file has no 'max': SSIM and PSNR are undefined"
                )
        return float(data_range)

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
                sample, index, pass_index, data_range = self._load(slot)
                valid = sample.meta.valid_columns(self.width).numpy()
                mask, num_low = self.config.scenario.initial_mask(valid, self.rngs[slot])
                try:
                    budget = self.config.scenario.episode_budget(valid, mask)
                except BudgetError as exc:
                    raise BudgetError(f"{sample.meta.file.name}: {exc}") from exc
                episodes.append(
                    Episode(
                        sample.meta, index, pass_index, data_range, int(valid.sum()),
                        int(mask.sum()) + budget,
                    )
                )  # fmt: skip
                kspaces.append(sample.kspace)
                targets.append(cast(torch.Tensor, sample.target))  # _load refuses None
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
        measured = state.valid.sum(dim=1)
        info["acceleration"] = measured / lines.clamp_min(1)
        info["actual_acceleration"] = measured / self._end_lines
        info["steps"] = state.steps.clone()
        info["budget"] = state.budget.clone()
        info["repeated"] = torch.zeros_like(state.mask[:, 0]) if result is None else result.repeated
        return info
