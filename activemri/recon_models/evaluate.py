"""Evaluate a reconstructor against zero-filled on fixed masks (``activemri recon eval``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr
from torch.utils.data import DataLoader, Dataset

from activemri.data import SliceDataset, SliceSample
from activemri.kspace import zero_filled
from activemri.masks import make_mask, volume_seed
from activemri.metrics import ssim
from activemri.recon_models.base import Reconstructor

__all__ = ["MaskedBatch", "MaskedSlices", "default_acs_lines", "evaluate_reconstructor"]


def default_acs_lines(valid_width: int, acceleration: float) -> int:
    """ACS block size for an acceleration: fastMRI's center fraction ``0.32 / A``.

    (4x: 0.08, 8x: 0.04 of the measured width; at least 2 lines.)
    """
    return max(2, round(valid_width * 0.32 / acceleration))


@dataclass
class MaskedBatch:
    """A batch of slices with their sampling masks.

    Attributes:
        kspace: Complex ``(B, C, H, W)``.
        target: ``(B, h, w)`` or ``None``.
        mask: Bool ``(B, W)``.
        num_low: Long ``(B,)`` ACS sizes.
        valid: Bool ``(B, W)`` measured columns.
        data_range: ``(B,)`` volume maximum (or target maximum where unknown; NaN without target).
        index: Long ``(B,)`` dataset indices.
    """

    kspace: torch.Tensor
    target: torch.Tensor | None
    mask: torch.Tensor
    num_low: torch.Tensor
    valid: torch.Tensor
    data_range: torch.Tensor
    index: torch.Tensor

    def to(self, device: torch.device) -> MaskedBatch:
        """Move every tensor to ``device``."""
        return MaskedBatch(
            self.kspace.to(device), None if self.target is None else self.target.to(device),
            self.mask.to(device), self.num_low.to(device), self.valid.to(device),
            self.data_range.to(device), self.index.to(device),
        )  # fmt: skip


class MaskedSlices(Dataset[dict[str, Any]]):
    """Slices of a :class:`SliceDataset` paired with masks from a seeded rule.

    ``mask_rule(sample, rng) -> (mask (W,) bool ndarray, num_low)`` is called with a generator
    seeded by ``(seed, epoch, key)`` where ``key`` is the slice index, or a hash of the file
    name when ``per_volume=True`` (every slice of a volume then shares its mask, as fastMRI).
    Masks therefore never depend on batch order, worker count or resumption.
    """

    def __init__(self, dataset: SliceDataset, mask_rule: Any, seed: int, per_volume: bool = False):
        self.dataset = dataset
        self.mask_rule = mask_rule
        self.seed = seed
        self.per_volume = per_volume
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample: SliceSample = self.dataset[index]
        key = volume_seed(sample.meta.file.name) if self.per_volume else index
        rng = np.random.default_rng([self.seed, self.epoch, key])
        mask, num_low = self.mask_rule(sample, rng)
        target = sample.target
        dr = sample.meta.max_value
        if dr is None:
            dr = float(target.max()) if target is not None else float("nan")
        return {
            "kspace": sample.kspace, "target": target, "mask": torch.from_numpy(mask),
            "num_low": num_low, "valid": sample.meta.valid_columns(sample.kspace.shape[-1]),
            "data_range": dr, "index": index,
        }  # fmt: skip


def collate_masked(items: list[dict[str, Any]]) -> MaskedBatch:
    """Stack :class:`MaskedSlices` items (equal shapes) into a :class:`MaskedBatch`."""
    targets = [it["target"] for it in items]
    return MaskedBatch(
        kspace=torch.stack([it["kspace"] for it in items]),
        target=None if any(t is None for t in targets) else torch.stack(targets),
        mask=torch.stack([it["mask"] for it in items]),
        num_low=torch.tensor([it["num_low"] for it in items], dtype=torch.long),
        valid=torch.stack([it["valid"] for it in items]),
        data_range=torch.tensor([it["data_range"] for it in items], dtype=torch.float32),
        index=torch.tensor([it["index"] for it in items], dtype=torch.long),
    )


def fixed_mask_rule(mask_type: str, acceleration: float) -> Any:
    """A mask rule acquiring ``round(valid / A)`` lines with fastMRI's ACS fraction."""

    def rule(sample: SliceSample, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        valid = sample.meta.valid_columns(sample.kspace.shape[-1]).numpy()
        n_valid = int(valid.sum())
        acs = default_acs_lines(n_valid, acceleration)
        lines = max(acs, round(n_valid / acceleration))
        return make_mask(mask_type, len(valid), lines, acs, rng, valid)

    return rule


def shape_batches(dataset: MaskedSlices, batch_size: int, indices: list[int]) -> list[list[int]]:
    """Cut ``indices`` into batches of equal k-space shape, keeping their order within a shape.

    Real fastMRI folders mix widths (e.g. 368 and 372 columns); slices of different shapes
    cannot be stacked, so each shape fills its own batches.
    """
    pending: dict[tuple[int, int, int], list[int]] = {}
    batches: list[list[int]] = []
    for index in indices:
        group = pending.setdefault(dataset.dataset.slice_shape(index), [])
        group.append(index)
        if len(group) == batch_size:
            batches.append(list(group))
            group.clear()
    batches.extend(group for group in pending.values() if group)
    return batches


def iterate_batches(
    dataset: MaskedSlices, batch_size: int, indices: list[int] | None = None, num_workers: int = 0
) -> Iterator[MaskedBatch]:
    """Batches of equal shape from a masked dataset (optionally a subset of indices)."""
    order = list(range(len(dataset))) if indices is None else indices
    loader = DataLoader(
        dataset, batch_sampler=shape_batches(dataset, batch_size, order),
        collate_fn=collate_masked, num_workers=num_workers,
    )  # fmt: skip
    yield from loader


@dataclass
class _VolumeSums:
    """Per-volume accumulators for fastMRI's volume-level metrics."""

    ssim: list[float]
    sse: float = 0.0
    energy: float = 0.0
    pixels: int = 0
    data_range: float = 0.0

    def metrics(self) -> dict[str, float]:
        mse = self.sse / self.pixels
        return {
            "ssim": float(np.mean(self.ssim)),
            "psnr": float(10.0 * np.log10(self.data_range**2 / mse)) if mse > 0 else float("inf"),
            "nmse": self.sse / self.energy,
        }


@torch.no_grad()
def evaluate_reconstructor(
    model: Reconstructor,
    dataset: SliceDataset,
    mask_type: str = "random",
    acceleration: float = 4.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    max_slices: int | None = None,
) -> dict[str, Any]:
    """SSIM/PSNR/NMSE of ``model`` and of zero-filled on the same seeded masks, per volume.

    Metrics follow fastMRI's evaluation: per volume, SSIM is the mean over its slices (data
    range = volume maximum, the ``max`` attribute), PSNR and NMSE are computed over the whole
    volume; the reported mean and std are over volumes. Masks are per volume (every slice of a
    file shares one, seeded by ``seed`` and the file name), ``round(W_valid / A)`` lines with
    fastMRI's ACS fraction.

    Args:
        model: The reconstructor (put in eval mode here).
        dataset: Slices with targets.
        mask_type: ``random``, ``equispaced`` or ``low_to_high``.
        acceleration: ``A``.
        seed: Mask seed.
        device: Where to run.
        batch_size: Slices per forward pass.
        max_slices: Evaluate the first ``max_slices`` slices only (the last volume may then
            count with part of its slices).

    Returns:
        A JSON-ready dict: per method (``model``, ``zero_filled``) the mean and std over
        volumes of each metric, slice and volume counts, the settings and, for models with
        uncertainty, the Spearman correlation between predicted sigma and absolute error over
        sampled pixels.
    """
    device = torch.device(device)
    model = model.to(device).eval()
    masked = MaskedSlices(dataset, fixed_mask_rule(mask_type, acceleration), seed, per_volume=True)
    count = len(masked) if max_slices is None else min(max_slices, len(masked))
    volumes: dict[str, dict[str, _VolumeSums]] = {"model": {}, "zero_filled": {}}
    sigmas: list[np.ndarray] = []
    errors: list[np.ndarray] = []
    pick = np.random.default_rng(seed)
    for batch in iterate_batches(masked, batch_size, list(range(count))):
        # Host-side bookkeeping read once per batch, before the tensors move to the device.
        files = [str(dataset.slice_meta(i).file) for i in batch.index.tolist()]
        ranges = batch.data_range.tolist()
        batch = batch.to(device)
        if batch.target is None:
            raise ValueError("evaluation needs targets; the dataset has none")
        out = model(batch.kspace, batch.mask, num_low_frequencies=batch.num_low)
        zf = zero_filled(batch.kspace, batch.mask, model.recon_size).float()
        energy = batch.target.double().square().sum(dim=(-2, -1)).tolist()
        for name, image in (("model", out.image), ("zero_filled", zf)):
            slice_ssim = ssim(image, batch.target, batch.data_range).tolist()
            sse = (image.double() - batch.target.double()).square().sum(dim=(-2, -1)).tolist()
            for i, file in enumerate(files):
                acc = volumes[name].setdefault(file, _VolumeSums([]))
                acc.ssim.append(slice_ssim[i])
                acc.sse += sse[i]
                acc.energy += energy[i]
                acc.pixels += image[i].numel()
                acc.data_range = ranges[i]
        if out.uncertainty is not None:
            idx = pick.choice(out.image[0].numel(), size=min(2000, out.image[0].numel()))
            sigmas.append(out.uncertainty.flatten(1)[:, idx].cpu().numpy().ravel())
            errors.append((out.image - batch.target).abs().flatten(1)[:, idx].cpu().numpy().ravel())
    result: dict[str, Any] = {
        "mask_type": mask_type, "acceleration": acceleration, "seed": seed,
        "num_slices": count, "num_volumes": len(volumes["model"]),
        "data_range": "volume max (h5 attribute 'max')", "ssim_window": 7,
        "aggregation": "per volume (fastMRI), mean and std over volumes",
    }  # fmt: skip
    for name, per_volume in volumes.items():
        rows = [acc.metrics() for acc in per_volume.values()]
        result[name] = {
            k: {"mean": float(np.mean([r[k] for r in rows])),
                "std": float(np.std([r[k] for r in rows]))}
            for k in ("ssim", "psnr", "nmse")
        }  # fmt: skip
    if sigmas:
        rho = spearmanr(np.concatenate(sigmas), np.concatenate(errors)).statistic
        result["uncertainty_spearman"] = float(rho)
    return result
