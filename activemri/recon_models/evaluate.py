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
from activemri.masks import (
    FASTMRI_MASK_TYPES,
    MASK_TYPES,
    fastmri_volume_seed,
    make_mask,
    volume_seed,
)
from activemri.masks2d import MASK_TYPES_2D, make_mask_2d
from activemri.metrics import ssim
from activemri.recon_models.base import Reconstructor

__all__ = ["MaskedBatch", "MaskedSlices", "default_acs_lines", "evaluate_reconstructor"]


def default_acs_lines(valid_width: int, acceleration: float) -> int:
    """ACS block size for an acceleration: fastMRI's center fraction ``0.32 / A``.

    (4x: 0.08, 8x: 0.04 of the measured width; at least 2 lines.)
    """
    return max(2, round(valid_width * 0.32 / acceleration))


def default_calibration_side(shape: tuple[int, int]) -> int:
    """Side of the central ky-kz calibration block of a 3-D volume's plane.

    A sixth of the plane's shorter side (8 for the built-in 64x48 planes, as
    ``ActiveMRI/Builtin3D-v0`` starts from), at least 2.
    """
    return max(2, round(min(shape) / 6))


def point_mask_rule_parts(sample: SliceSample) -> tuple[tuple[int, int], np.ndarray]:
    """``(plane shape, measured points (H, W))`` of a 3-D volume's ky-kz plane."""
    height, width = int(sample.kspace.shape[-2]), int(sample.kspace.shape[-1])
    columns = sample.meta.valid_columns(width).numpy()
    return (height, width), np.broadcast_to(columns, (height, width)).copy()


@dataclass
class MaskedBatch:
    """A batch of slices with their sampling masks.

    Attributes:
        kspace: Complex ``(B, C, H, W)``.
        target: ``(B, h, w)`` or ``None``.
        mask: Bool ``(B, W)``, or ``(B, H, W)`` point masks (ky-kz planes of 3-D volumes).
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


def fixed_mask_rule(mask_type: str, acceleration: float, fastmri_seeding: bool = False) -> Any:
    """A mask rule acquiring ``round(valid / A)`` lines with fastMRI's ACS fraction.

    A ``fastmri_*`` type (:data:`~activemri.masks.FASTMRI_MASK_TYPES`) draws fastMRI's own
    mask instead: center fraction ``0.32 / A`` (fastMRI's 0.08 at 4x, 0.04 at 8x) of the full
    width, acceleration ``A``, then the padded columns zeroed (as fastMRI's VarNet transform
    does). With ``fastmri_seeding`` its seed is fastMRI's per-volume seed
    (:func:`~activemri.masks.fastmri_volume_seed`), so every volume gets exactly the mask
    fastMRI's data transforms give it, whatever the rule's generator; otherwise the seed is
    drawn from the generator.
    """
    if mask_type in FASTMRI_MASK_TYPES:
        return _fastmri_mask_rule(mask_type, acceleration, fastmri_seeding)
    if fastmri_seeding:
        raise ValueError(
            f"fastMRI seeding needs a fastMRI mask type ({', '.join(FASTMRI_MASK_TYPES)}), "
            f"got {mask_type!r}"
        )
    if mask_type not in MASK_TYPES and mask_type not in MASK_TYPES_2D:
        choices = [*MASK_TYPES, *FASTMRI_MASK_TYPES]
        raise ValueError(
            f"unknown mask type {mask_type!r}; choose from {choices} (lines) or "
            f"{list(MASK_TYPES_2D)} (points of 3-D volumes)"
        )

    def rule(sample: SliceSample, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        if sample.meta.encoding == "3d":  # a ky-kz plane: a point mask
            if mask_type not in MASK_TYPES_2D:
                raise ValueError(
                    f"{sample.meta.file.name} is a 3-D volume (ky-kz point masks): mask type "
                    f"{mask_type!r} is for lines; choose from {list(MASK_TYPES_2D)}"
                )
            shape, plane = point_mask_rule_parts(sample)
            side = default_calibration_side(shape)
            count = max(min(side, shape[0]) * min(side, shape[1]),
                        round(int(plane.sum()) / acceleration))  # fmt: skip
            return make_mask_2d(mask_type, shape, count, side, rng, plane)
        valid = sample.meta.valid_columns(sample.kspace.shape[-1]).numpy()
        n_valid = int(valid.sum())
        acs = default_acs_lines(n_valid, acceleration)
        lines = max(acs, round(n_valid / acceleration))
        return make_mask(mask_type, len(valid), lines, acs, rng, valid)

    return rule


def _fastmri_mask_rule(mask_type: str, acceleration: float, fastmri_seeding: bool) -> Any:
    if not acceleration >= 1:  # also NaN
        raise ValueError(f"acceleration must be >= 1, got {acceleration}")
    mask_func = FASTMRI_MASK_TYPES[mask_type]([0.32 / acceleration], [acceleration])

    def rule(sample: SliceSample, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        seed: int | tuple[int, ...] = (
            fastmri_volume_seed(sample.meta.file.name)
            if fastmri_seeding
            else int(rng.integers(2**32))
        )
        mask, num_low = mask_func(sample.kspace.shape[-1], seed=seed)
        valid = sample.meta.valid_columns(sample.kspace.shape[-1]).numpy()
        return mask & valid, num_low

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


#: Tissue pixels for the uncertainty figures: target above this fraction of the slice maximum
#: (the background of MRI is noise, where an error/uncertainty correlation means little).
TISSUE_FRACTION = 0.1
#: ``|error| < z * sigma`` is the coverage of a calibrated Gaussian at 95%.
COVERAGE_Z = 1.96


def _summary(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std()), "median": float(np.median(arr))}


def tissue_error_ratios(
    image: torch.Tensor, sigma: torch.Tensor, target: torch.Tensor
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
    """Per image, over tissue pixels: ``sigma``, ``|error|`` and ``|error| / (1.96 sigma)``.

    Tissue is the target above :data:`TISSUE_FRACTION` of the slice maximum; an image with
    fewer than 10 tissue pixels gives ``None``. Shared by the evaluation's uncertainty figures
    and the calibration, so both judge the same pixels.

    Args:
        image: ``(B, h, w)`` predictions.
        sigma: ``(B, h, w)`` predicted standard deviations.
        target: ``(B, h, w)``.
    """
    out: list[tuple[np.ndarray, np.ndarray, np.ndarray] | None] = []
    err = (image - target).abs().float().cpu().numpy()
    sig = sigma.float().cpu().numpy()
    tgt = target.float().cpu().numpy()
    for e, s, t in zip(err, sig, tgt, strict=True):
        tissue = t > TISSUE_FRACTION * t.max()
        if tissue.sum() < 10:
            out.append(None)
            continue
        s_t, e_t = s[tissue], e[tissue]
        out.append((s_t, e_t, e_t / (COVERAGE_Z * np.maximum(s_t, 1e-30))))
    return out


def uncertainty_figures(
    image: torch.Tensor, sigma: torch.Tensor, target: torch.Tensor
) -> tuple[list[float], list[float]]:
    """Per image: Spearman(sigma, |error|) and 1.96-sigma coverage over tissue pixels.

    Args:
        image: ``(B, h, w)`` predictions.
        sigma: ``(B, h, w)`` predicted standard deviations.
        target: ``(B, h, w)``.

    Returns:
        Two lists of ``B`` floats (NaN where an image has fewer than 10 tissue pixels).
    """
    rhos, covers = [], []
    for item in tissue_error_ratios(image, sigma, target):
        if item is None:
            rhos.append(float("nan"))
            covers.append(float("nan"))
            continue
        s_t, e_t, ratio = item
        rhos.append(float(spearmanr(s_t, e_t).statistic))
        covers.append(float((ratio < 1.0).mean()))
    return rhos, covers


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
    per_image: bool = False,
    fastmri_seeding: bool = False,
) -> dict[str, Any]:
    """SSIM/PSNR/NMSE of ``model`` and of zero-filled on the same seeded masks.

    Metrics follow fastMRI's evaluation: per volume, SSIM is the mean over its slices (data
    range = volume maximum, the ``max`` attribute), PSNR and NMSE are computed over the whole
    volume; the reported mean and std are over volumes. Per-image figures sit next to them
    (``per_image_ssim``: mean/std/median over slices, and the fraction of slices where the
    model beats zero-filled), with a breakdown by anatomy. Masks are per volume (every slice
    of a file shares one, seeded by ``seed`` and the file name), ``round(W_valid / A)`` lines
    with fastMRI's ACS fraction.

    Uncertainty (models with an uncertainty head) is judged per image, never pooled across
    images: over tissue pixels (target above :data:`TISSUE_FRACTION` of the slice maximum)
    the Spearman correlation between sigma and the absolute error, and the fraction of
    pixels with ``|error| < 1.96 sigma`` (0.95 for a calibrated Gaussian); reported as mean,
    std and median over images.

    Args:
        model: The reconstructor (put in eval mode here).
        dataset: Slices with targets.
        mask_type: A key of :data:`~activemri.masks.MASK_TYPES` (``random``,
            ``equispaced``, ``low_to_high``, ...) or of
            :data:`~activemri.masks.FASTMRI_MASK_TYPES` (fastMRI's own masks, bit-identical;
            see :func:`fixed_mask_rule`).
        acceleration: ``A``.
        seed: Mask seed.
        device: Where to run.
        batch_size: Slices per forward pass.
        max_slices: Evaluate the first ``max_slices`` slices only (the last volume may then
            count with part of its slices).
        per_image: Also return every slice's figures under ``images``.
        fastmri_seeding: Seed each volume's mask as fastMRI does (``seed`` is then unused;
            needs a fastMRI mask type).

    Returns:
        A JSON-ready dict: per method (``model``, ``zero_filled``) the mean and std over
        volumes of each metric and the per-image SSIM summary, ``by_anatomy``, slice and
        volume counts, the settings and, for models with uncertainty, ``uncertainty``.
    """
    device = torch.device(device)
    model = model.to(device).eval()
    rule = fixed_mask_rule(mask_type, acceleration, fastmri_seeding)
    masked = MaskedSlices(dataset, rule, seed, per_volume=True)
    count = len(masked) if max_slices is None else min(max_slices, len(masked))
    volumes: dict[str, dict[str, _VolumeSums]] = {"model": {}, "zero_filled": {}}
    rows: list[dict[str, Any]] = []
    anatomy_of = {v.path: v.anatomy or "unknown" for v in dataset.volumes}
    with_uncertainty = False
    for batch in iterate_batches(masked, batch_size, list(range(count))):
        # Host-side bookkeeping read once per batch, before the tensors move to the device.
        metas = [dataset.slice_meta(i) for i in batch.index.tolist()]
        files = [str(m.file) for m in metas]
        ranges = batch.data_range.tolist()
        # What the mask actually acquired: fastMRI's masks fix the rate, not the count.
        measured = (
            batch.valid if batch.mask.ndim == 2 else batch.valid[:, None, :].expand_as(batch.mask)
        )
        run_at = (
            measured.flatten(1).sum(1) / (batch.mask & measured).flatten(1).sum(1).clamp(min=1)
        ).tolist()
        batch = batch.to(device)
        if batch.target is None:
            raise ValueError("evaluation needs targets; the dataset has none")
        out = model(batch.kspace, batch.mask, num_low_frequencies=batch.num_low)
        zf = zero_filled(batch.kspace, batch.mask, model.recon_size).float()
        energy = batch.target.double().square().sum(dim=(-2, -1)).tolist()
        slice_ssim: dict[str, list[float]] = {}
        for name, image in (("model", out.image), ("zero_filled", zf)):
            slice_ssim[name] = ssim(image.float(), batch.target, batch.data_range).tolist()
            sse = (image.double() - batch.target.double()).square().sum(dim=(-2, -1)).tolist()
            for i, file in enumerate(files):
                acc = volumes[name].setdefault(file, _VolumeSums([]))
                acc.ssim.append(slice_ssim[name][i])
                acc.sse += sse[i]
                acc.energy += energy[i]
                acc.pixels += image[i].numel()
                acc.data_range = ranges[i]
        rhos: list[float] = [float("nan")] * len(files)
        covers: list[float] = [float("nan")] * len(files)
        if out.uncertainty is not None:
            with_uncertainty = True
            rhos, covers = uncertainty_figures(out.image, out.uncertainty, batch.target)
        for i, meta in enumerate(metas):
            rows.append({
                "file": meta.file.name, "slice": meta.slice_index,
                "anatomy": anatomy_of.get(meta.file, "unknown"), "ssim": slice_ssim["model"][i],
                "ssim_zero_filled": slice_ssim["zero_filled"][i],
                "uncertainty_spearman": rhos[i], "coverage_1.96": covers[i],
                "actual_acceleration": run_at[i],
            })  # fmt: skip
    result: dict[str, Any] = {
        "mask_type": mask_type, "acceleration": acceleration, "seed": seed,
        "actual_acceleration": float(np.mean([r["actual_acceleration"] for r in rows])),
        "fastmri_seeding": fastmri_seeding,
        "num_slices": count, "num_volumes": len(volumes["model"]),
        "data_range": "volume max (h5 attribute 'max')", "ssim_window": 7,
        "aggregation": "per volume (fastMRI), mean and std over volumes; per_image_ssim over "
                       "slices",
    }  # fmt: skip
    for name, per_volume in volumes.items():
        vols = [acc.metrics() for acc in per_volume.values()]
        result[name] = {
            k: {"mean": float(np.mean([r[k] for r in vols])),
                "std": float(np.std([r[k] for r in vols]))}
            for k in ("ssim", "psnr", "nmse")
        }  # fmt: skip
        key = "ssim" if name == "model" else "ssim_zero_filled"
        result[name]["per_image_ssim"] = _summary([r[key] for r in rows])
    result["model"]["beats_zero_filled"] = float(
        np.mean([r["ssim"] > r["ssim_zero_filled"] for r in rows])
    )
    by_anatomy: dict[str, dict[str, Any]] = {}
    for kind in sorted({r["anatomy"] for r in rows}):
        sub = [r for r in rows if r["anatomy"] == kind]
        by_anatomy[kind] = {
            "num_slices": len(sub),
            "ssim": _summary([r["ssim"] for r in sub]),
            "ssim_zero_filled": _summary([r["ssim_zero_filled"] for r in sub]),
        }
    result["by_anatomy"] = by_anatomy
    if with_uncertainty:
        rho = [r["uncertainty_spearman"] for r in rows if np.isfinite(r["uncertainty_spearman"])]
        cov = [r["coverage_1.96"] for r in rows if np.isfinite(r["coverage_1.96"])]
        result["uncertainty"] = {
            "tissue": f"target > {TISSUE_FRACTION} x slice max",
            "spearman_per_image": _summary(rho) if rho else None,
            "coverage_1.96_per_image": _summary(cov) if cov else None,
        }
    if per_image:
        result["images"] = rows
    return result
