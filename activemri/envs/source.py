"""The episode source: which slice each slot plays next, its initial mask and budget.

The data half of an environment, apart from the batched core: the configured slices
(:func:`~activemri.envs.config.build_dataset`), one NumPy generator per slot choosing its
slices (``shuffle``: a new permutation per pass; ``sequential``: dealt round-robin) and its
random initial lines, and the scenario's budget checked on every slice at construction. A
slice that cannot be read (damaged file, NaN values, finite values too large for float32
arithmetic) is skipped with a :class:`~activemri.data.DataWarning` and recorded in
:attr:`EpisodeSource.bad_slices`; the slot moves on to its next slice. A slot left with no
readable slice raises :class:`NoReadableSliceError`. Nothing here touches torch devices.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from activemri.data import CorruptSliceError, DataWarning, SliceDataset, SliceMeta, SliceSample
from activemri.envs.config import EnvConfig, build_dataset
from activemri.envs.scenario import BudgetError

__all__ = ["Episode", "EpisodeSource", "NewEpisode", "NoReadableSliceError", "PolicyEpisode"]


class NoReadableSliceError(ValueError):
    """An episode slot has no readable slice left to start an episode on."""


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

    def public(self) -> PolicyEpisode:
        """What a policy may know of this episode (no path to the data, no target)."""
        return PolicyEpisode(
            self.meta.file.name, int(self.meta.slice_index), self.valid_lines, self.end_lines
        )


@dataclass(frozen=True)
class PolicyEpisode:
    """The facts about an episode a policy is given when it starts.

    Attributes:
        file: The volume's file name (no folder: a policy cannot open the data through it);
            fixed masks seed themselves with it, as fastMRI does per volume.
        slice_index: The slice within the volume.
        valid_lines: Measured lines of the slice.
        end_lines: Lines acquired when the budget is spent.
    """

    file: str
    slice_index: int
    valid_lines: int
    end_lines: int


@dataclass
class NewEpisode:
    """One slot's next episode, as :meth:`EpisodeSource.next_episode` draws it.

    Attributes:
        sample: The slice (k-space, target, metadata).
        episode: Its host-side facts.
        valid: Bool ``(A,)`` measured actions (lines, or flat points).
        mask: Bool ``(A,)`` initial mask.
        num_low: Size of the initial central block.
        budget: Steps allowed.
        split_seed: Seed of the held-out splits of the self-supervised reward (drawn from
            the slot's generator only with that reward, else 0).
    """

    sample: SliceSample
    episode: Episode
    valid: np.ndarray
    mask: np.ndarray
    num_low: int
    budget: int
    split_seed: int = 0


class EpisodeSource:
    """Slices, slice order and seeding of ``num_slots`` episode slots.

    Args:
        config: The environment configuration (data, split, filters, order, scenario).
        num_slots: Number of slots.

    Raises:
        BudgetError: Naming the files on which the scenario's budget or acceleration cannot
            be honoured.
    """

    def __init__(self, config: EnvConfig, num_slots: int) -> None:
        if num_slots < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_slots}")
        self.config = config
        self.num_slots = num_slots
        self.dataset: SliceDataset
        self.dataset, self.indices = build_dataset(config)
        first = self.indices[0]
        self.kspace_shape: tuple[int, int, int] = self.dataset.slice_shape(first)
        self.recon_size: tuple[int, int] = self.dataset.slice_meta(first).recon_size
        self.geometry = config.acquisition_geometry
        self.order = config.resolved_order
        self.rngs: list[np.random.Generator] = [np.random.default_rng() for _ in range(num_slots)]
        self.split_rngs = [rng.spawn(1)[0] for rng in self.rngs]
        self.started = [0] * num_slots
        self._perms: list[np.ndarray | None] = [None] * num_slots
        self.bad_slices: dict[int, str] = {}
        self._cache: dict[int, SliceSample] = {}
        #: The reward never reads the target (slices without one are accepted).
        self.needs_no_target = config.scenario.reward == "self_supervised"
        self.actual_accelerations: dict[int, float] = self._plan()

    @property
    def width(self) -> int:
        """K-space width ``W`` (phase-encode lines of a slice; kz of a ky-kz plane)."""
        return self.kspace_shape[2]

    @property
    def num_actions(self) -> int:
        """Actions per step ``A``: ``W`` lines, or ``H * W`` points."""
        return self.geometry.num_actions(self.kspace_shape[1], self.kspace_shape[2])

    def measured(self, meta: SliceMeta) -> np.ndarray:
        """Bool ``(A,)`` measured actions of a slice (padding columns, shutter excluded)."""
        columns = meta.valid_columns(self.width).numpy()
        return self.geometry.measured(columns, self.kspace_shape[1])

    def _sampled_center(self, valid: np.ndarray, n: int) -> int:
        """The largest central block of at most ``n`` that lies inside ``valid``."""
        while n > 0 and not (self._center(n) <= valid).all():
            n -= 1
        return n

    def _center(self, n: int) -> np.ndarray:
        return self.geometry.center(self.kspace_shape[1], self.kspace_shape[2], n)

    def _extent(self, valid: np.ndarray) -> int:
        return self.geometry.calibration_extent(self.kspace_shape[1], int(valid.sum()))

    def next_episode(self, slot: int) -> NewEpisode:
        """The next readable slice of ``slot`` with its initial mask and budget.

        Raises:
            NoReadableSliceError: If the slot has no readable slice left.
            BudgetError: If the scenario cannot be honoured on the slice.
        """
        sample, index, pass_index, data_range = self._load(slot)
        valid = self.measured(sample.meta)
        mask, num_low = self.config.scenario.initial_mask(
            valid, self.rngs[slot], self._center, self._extent(valid)
        )
        if sample.meta.sampled is not None:
            # an undersampled file: the central block is what it really holds around the centre
            num_low = self._sampled_center(valid, int(num_low))
        try:
            budget = self.config.scenario.episode_budget(valid, mask, self.rngs[slot])
        except BudgetError as exc:
            raise BudgetError(f"{sample.meta.file.name}: {exc}") from exc
        episode = Episode(sample.meta, index, pass_index, data_range, int(valid.sum()),
                          int(mask.sum()) + budget)  # fmt: skip
        split_seed = 0
        if self.needs_no_target:  # its own stream: the episodes are those of any other reward
            split_seed = int(self.split_rngs[slot].integers(2**31 - 1))
        return NewEpisode(sample, episode, valid, mask, int(num_low), int(budget), split_seed)

    def _plan(self) -> dict[int, float]:
        """Check the scenario on every slice (from metadata) and return its actual accelerations.

        Raises:
            BudgetError: Naming the files on which the budget or acceleration cannot be
                honoured.
        """
        scenario = self.config.scenario
        by_geometry: dict[tuple[Any, ...], float | BudgetError] = {}
        failed: dict[tuple[Any, ...], list[str]] = {}
        out: dict[int, float] = {}
        for index in self.indices:
            meta = self.dataset.slice_meta(index)
            key = (meta.padding_left, meta.padding_right, meta.sampled)
            if key not in by_geometry:
                valid = self.measured(meta)
                try:
                    initial = scenario.initial_count(valid, self._center, self._extent(valid))
                    by_geometry[key] = scenario.actual_acceleration(int(valid.sum()), initial)
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

    def reseed(self, slot: int, rng: np.random.Generator) -> None:
        """Give ``slot`` a new generator and restart its slice order."""
        self.rngs[slot] = rng
        self.split_rngs[slot] = rng.spawn(1)[0]  # draws nothing from ``rng``
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
                return sample, index, pass_index, self._data_range(sample, self.needs_no_target)
            try:
                sample = self.dataset[index]
                data_range = self._data_range(sample, self.needs_no_target)
            except CorruptSliceError as exc:
                self.bad_slices[index] = str(exc)
                warnings.warn(f"skipping slice: {exc}", DataWarning, stacklevel=4)
                continue
            if self.config.cache_slices:
                self._cache[index] = sample
            return sample, index, pass_index, data_range

    @staticmethod
    def _data_range(sample: SliceSample, optional: bool = False) -> float:
        """The SSIM/PSNR data range: the file's ``max``, else the target slice's maximum.

        Without a target (accepted when ``optional``): the file's ``max``, else NaN.
        """
        meta = sample.meta
        if sample.target is None:
            if optional:
                return float("nan") if meta.max_value is None else float(meta.max_value)
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
