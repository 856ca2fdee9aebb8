"""Uncertainty calibration by temperature scaling of the predicted standard deviation.

A network's uncertainty head learns the *ordering* of its errors well but usually not their
scale (it is trained on training errors, which are smaller than those on new data). One
scalar ``T`` fitted on validation slices fixes the scale: the calibrated uncertainty is
``T * sigma``, with ``T`` chosen so that, averaged over images, a fraction 0.95 of tissue
pixels has ``|error| < 1.96 T sigma`` (the coverage of a Gaussian at 95%). Scaling by a
positive constant leaves every rank correlation unchanged.
"""

from __future__ import annotations

import numpy as np
import torch

from activemri.data import SliceDataset
from activemri.recon_models.base import Reconstructor
from activemri.recon_models.evaluate import (
    MaskedSlices,
    fixed_mask_rule,
    iterate_batches,
    tissue_error_ratios,
)

__all__ = ["fit_sigma_scale"]


@torch.no_grad()
def fit_sigma_scale(
    model: Reconstructor,
    dataset: SliceDataset,
    accelerations: tuple[float, ...] = (4.0, 8.0),
    target_coverage: float = 0.95,
    seed: int = 0,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    max_slices: int | None = None,
) -> float:
    """The factor ``T`` that gives ``sigma`` its nominal per-image coverage.

    Args:
        model: A reconstructor with an uncertainty head; its current ``sigma_scale`` is
            divided out, so the result is the factor to set, not a correction of it.
        dataset: Validation slices with targets.
        accelerations: Random-mask accelerations pooled for the fit.
        target_coverage: Wanted mean over images of the fraction of tissue pixels with
            ``|error| < 1.96 T sigma``.
        seed: Mask seed.
        device: Where to run.
        batch_size: Slices per forward pass.
        max_slices: Use the first N slices per acceleration.

    Returns:
        ``T > 0``.
    """
    if not 0.0 < target_coverage < 1.0:
        raise ValueError(f"target_coverage must be in (0, 1), got {target_coverage}")
    device = torch.device(device)
    was_training = model.training
    model = model.to(device).eval()
    ratios: list[np.ndarray] = []  # per image: |error| / (1.96 sigma) over tissue pixels
    for acceleration in accelerations:
        masked = MaskedSlices(dataset, fixed_mask_rule("random", acceleration), seed,
                              per_volume=True)  # fmt: skip
        count = len(masked) if max_slices is None else min(max_slices, len(masked))
        for batch in iterate_batches(masked, batch_size, list(range(count))):
            batch = batch.to(device)
            if batch.target is None:
                raise ValueError("calibration needs targets; the dataset has none")
            out = model(batch.kspace, batch.mask, num_low_frequencies=batch.num_low)
            if out.uncertainty is None:
                raise ValueError(f"{type(model).__name__} predicts no uncertainty to calibrate")
            sigma = out.uncertainty.float() / model.sigma_scale
            for item in tissue_error_ratios(out.image.float(), sigma, batch.target):
                if item is not None:
                    ratios.append(np.sort(item[2]))
    model.train(was_training)
    if not ratios:
        raise ValueError("no validation slice with tissue pixels to calibrate on")

    def coverage(scale: float) -> float:
        return float(np.mean([np.searchsorted(r, scale) / len(r) for r in ratios]))

    lo, hi = 1e-6, 1e6
    for _ in range(200):  # bisection in log space; coverage is monotone in the scale
        mid = float(np.sqrt(lo * hi))
        if coverage(mid) < target_coverage:
            lo = mid
        else:
            hi = mid
        if hi / lo < 1.0 + 1e-6:
            break
    return float(np.sqrt(lo * hi))
