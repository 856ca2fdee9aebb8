"""Training augmentation in the image domain, re-simulated through k-space.

A model trained on one simulator learns that simulator: its orientation, its intensity
curve, its noise level. Each training slice is therefore changed before its mask is applied,
so the network sees what real data varies in (the issue of validity outside our phantom):

1. the complex coil images ``ifft2c(k)`` are flipped (rows and/or columns) and rotated by a
   small angle (bilinear, real and imaginary parts alike);
2. the coil-combined magnitude is remapped by a gamma curve and multiplied by a smooth bias
   field (a random second-order polynomial in the exponent); coil phases are kept;
3. the whole slice is rescaled (networks must not rely on an absolute scale);
4. back to k-space, complex Gaussian noise is added on the measured columns, at a random
   fraction of the mean object magnitude, and the padded columns are zeroed again.

The target is recomputed from the augmented k-space exactly as the built-in generator and
fastMRI define it (center-cropped root-sum-of-squares of ``ifft2c``), so target, input and
mask stay consistent, and the data range becomes the slice maximum of the new target.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F

from activemri.kspace import center_crop, fft2c, ifft2c, rss

__all__ = ["AugmentConfig", "augment_batch"]


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the training augmentation (the ``train.augment`` mapping of a preset).

    Attributes:
        flip: Probability of a row flip and, independently, of a column flip.
        rotate: Largest rotation in degrees (uniform in ``[-rotate, rotate]``); 0 disables.
        gamma: Largest ``|log gamma|`` of the intensity curve ``m -> m^gamma``.
        bias: Largest coefficient of the bias field's exponent (field in ``exp(±...)``).
        scale: Largest ``|log10|`` of the global intensity scale.
        noise: Largest added noise standard deviation, as a fraction of the mean object
            magnitude (drawn uniformly from ``[0, noise]``).
        prob: Probability that a slice is augmented at all.
    """

    flip: float = 0.5
    rotate: float = 10.0
    gamma: float = 0.35
    bias: float = 0.3
    scale: float = 0.5
    noise: float = 0.06
    prob: float = 0.9

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | bool | None) -> AugmentConfig | None:
        """``None``/``False``: no augmentation; ``True``: defaults; a mapping: overrides."""
        if values is None or values is False:
            return None
        if values is True:
            return cls()
        if not isinstance(values, Mapping):
            raise ValueError(f"augment must be true, false or a mapping, got {values!r}")
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown augment settings {sorted(unknown)}; known: {sorted(known)}")
        config = cls(**{k: float(v) for k, v in values.items()})
        if min(config.flip, config.rotate, config.gamma, config.bias, config.scale,
               config.noise, config.prob) < 0 or max(config.flip, config.prob) > 1:  # fmt: skip
            raise ValueError(f"augment ranges must be non-negative, probabilities <= 1: {config}")
        return config


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)


def _rotate(images: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate complex ``(B, C, H, W)`` images about their centre by ``angles`` (radians)."""
    b, c, h, w = images.shape
    cos, sin = torch.cos(angles), torch.sin(angles)
    # affine_grid works in normalized coordinates; correct for a non-square field of view.
    aspect = w / h
    theta = torch.zeros(b, 2, 3, dtype=torch.float32)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin / aspect
    theta[:, 1, 0], theta[:, 1, 1] = sin * aspect, cos
    grid = F.affine_grid(theta.to(images.device), [b, 2 * c, h, w], align_corners=False)
    parts = torch.cat([images.real, images.imag], dim=1).float()
    out = F.grid_sample(parts, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return torch.complex(out[:, :c], out[:, c:]).to(images.dtype)


def augment_batch(
    kspace: torch.Tensor,
    valid: torch.Tensor,
    recon_size: tuple[int, int],
    config: AugmentConfig,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Augment fully sampled k-space and recompute its targets.

    Args:
        kspace: Complex ``(B, C, H, W)`` fully sampled k-space.
        valid: Bool ``(B, W)`` measured columns (the others are zeroed again).
        recon_size: ``(h, w)`` of the targets.
        config: Augmentation ranges.
        gen: CPU generator of every random draw (seeded by the caller, so runs reproduce).

    Returns:
        ``(kspace, target (B, h, w), data_range (B,))`` of the augmented slices.
    """
    b, _, h, w = kspace.shape
    device = kspace.device
    images = ifft2c(kspace)
    active = torch.rand(b, generator=gen) < config.prob

    def per_sample(values: torch.Tensor, neutral: float) -> torch.Tensor:
        return torch.where(active, values, torch.full_like(values, neutral))

    flip_rows = (torch.rand(b, generator=gen) < config.flip) & active
    flip_cols = (torch.rand(b, generator=gen) < config.flip) & active
    if bool(flip_rows.any()):
        idx = flip_rows.to(device)
        images = torch.where(idx[:, None, None, None], images.flip(-2), images)
    if bool(flip_cols.any()):
        idx = flip_cols.to(device)
        images = torch.where(idx[:, None, None, None], images.flip(-1), images)
    if config.rotate > 0:
        angles = per_sample(_uniform(b, -config.rotate, config.rotate, gen), 0.0)
        images = _rotate(images, torch.deg2rad(angles).float())

    magnitude = rss(images, dim=1)  # (B, H, W)
    peak = magnitude.flatten(1).amax(dim=1).clamp_min(1e-20)[:, None, None]
    gamma = per_sample(torch.exp(_uniform(b, -config.gamma, config.gamma, gen)), 1.0)
    gamma = gamma.to(device, torch.float32)[:, None, None]
    rel = (magnitude / peak).clamp_min(1e-8)
    gain = rel ** (gamma - 1.0)
    u = torch.linspace(-1.0, 1.0, h, device=device)[None, :, None]
    v = torch.linspace(-1.0, 1.0, w, device=device)[None, None, :]
    coef = (torch.rand(b, 5, generator=gen, dtype=torch.float64) * 2 - 1) * config.bias
    coef = (coef * active[:, None]).to(device, torch.float32)
    exponent = (coef[:, 0, None, None] * u + coef[:, 1, None, None] * v
                + coef[:, 2, None, None] * u * v + coef[:, 3, None, None] * (u * u - 1 / 3)
                + coef[:, 4, None, None] * (v * v - 1 / 3))  # fmt: skip
    scale = per_sample(10.0 ** _uniform(b, -config.scale, config.scale, gen), 1.0)
    factor = gain * torch.exp(exponent) * scale.to(device, torch.float32)[:, None, None]
    images = images * factor[:, None].to(images.dtype)

    out = fft2c(images)
    obj_level = (magnitude * factor).flatten(1)
    threshold = 0.05 * obj_level.amax(dim=1, keepdim=True)
    counts = (obj_level > threshold).sum(dim=1).clamp_min(1)
    mean_obj = (obj_level * (obj_level > threshold)).sum(dim=1) / counts
    level = per_sample(_uniform(b, 0.0, config.noise, gen), 0.0).to(device, torch.float32)
    sigma = (level * mean_obj / math.sqrt(2.0))[:, None, None, None]
    noise = torch.randn((*out.shape, 2), generator=gen, dtype=torch.float32).to(device)
    out = out + sigma * torch.complex(noise[..., 0], noise[..., 1]).to(out.dtype)
    out = out * valid[:, None, None, :].to(out.dtype)
    target = center_crop(rss(ifft2c(out), dim=1), recon_size).float()
    data_range = target.flatten(1).amax(dim=1).clamp_min(1e-20)
    return out, target, data_range
