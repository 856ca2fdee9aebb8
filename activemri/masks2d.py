"""Point sampling masks for the ky-kz planes of 3-D Cartesian volumes.

The 2-D counterpart of :mod:`activemri.masks`, under the same contract: a mask function takes
the plane's shape ``(H, W)``, the number of points to acquire, the side ``n`` of the fully
sampled central ``n x n`` calibration block and a NumPy ``Generator``, and returns
``(mask, n)`` with ``mask`` a bool ``(H, W)`` array holding *exactly* that many points, the
calibration block and only ``valid`` points (an elliptical shutter, padding). The same
generator state gives the same mask; no global random state is touched.

Patterns (:data:`MASK_TYPES_2D`), from the 3-D compressed-sensing literature:

- ``poisson``: variable-density Poisson disc (Lustig et al. 2007; the BART ``poisson``
  tool's idea): no two points closer than a radius that grows with the distance from the
  k-space center, so the holes are spread evenly at each density (incoherent aliasing); the
  base radius is found by bisection and the count made exact by dropping or adding points.
- ``variable_density``: points drawn without replacement with a density decaying as
  ``(1 - r)^power`` in the normalized radius ``r``.
- ``random``: uniformly drawn points.
- ``equispaced``: a regular ``Ry x Rz`` lattice whose rows are shifted by a CAIPIRINHA-like
  offset ``row // Ry * shift`` (Breuer et al. 2006), with ``Ry * Rz`` close to the
  acceleration; the count is made exact by dropping the farthest or adding the nearest points.
- ``low_to_high``: the points nearest the center (elliptical, normalized radius).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "MASK_TYPES_2D",
    "center_block_2d",
    "equispaced_mask_2d",
    "low_to_high_mask_2d",
    "make_mask_2d",
    "normalized_radius",
    "poisson_disc_mask",
    "random_mask_2d",
    "variable_density_mask_2d",
]

BoolArray = NDArray[np.bool_]


def center_block_2d(shape: tuple[int, int], n: int) -> BoolArray:
    """Bool ``(H, W)``: the central ``n x n`` block (start ``(size - n + 1) // 2`` per axis)."""
    height, width = shape
    out = np.zeros(shape, dtype=bool)
    ny, nz = min(n, height), min(n, width)
    y0, z0 = (height - ny + 1) // 2, (width - nz + 1) // 2
    out[y0 : y0 + ny, z0 : z0 + nz] = True
    return out


def normalized_radius(shape: tuple[int, int]) -> NDArray[np.float64]:
    """Float ``(H, W)``: distance from ``(H // 2, W // 2)`` in units of the half sides."""
    height, width = shape
    ky = (np.arange(height) - height // 2) / max(1.0, height / 2)
    kz = (np.arange(width) - width // 2) / max(1.0, width / 2)
    out: NDArray[np.float64] = np.sqrt(ky[:, None] ** 2 + kz[None, :] ** 2)
    return out


def _prepare(
    shape: tuple[int, int], num_points: int, n: int, valid: BoolArray | None
) -> tuple[BoolArray, BoolArray]:
    """The calibration block and the other samplable points, after checking the count fits."""
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape must be (H, W) with H, W >= 1, got {shape}")
    if n < 0:
        raise ValueError(f"the calibration block side must be >= 0, got {n}")
    allowed = np.ones(shape, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    if allowed.shape != tuple(shape):
        raise ValueError(f"valid must have shape {tuple(shape)}, got {allowed.shape}")
    base = center_block_2d(shape, n) & allowed
    free = allowed & ~base
    if not base.sum() <= num_points <= base.sum() + free.sum():
        raise ValueError(
            f"cannot acquire {num_points} points: the calibration block has {int(base.sum())} "
            f"and {int(free.sum())} more valid points exist"
        )
    return base, free


def _fill(mask: BoolArray, free: BoolArray, num_points: int, key: NDArray[np.float64]) -> None:
    """Make ``mask`` hold exactly ``num_points`` in place, by ``key``.

    Drops the chosen free points of highest ``key``, or adds the open ones of lowest ``key``.
    """
    surplus = int(mask.sum()) - num_points
    if surplus > 0:
        chosen = np.flatnonzero((mask & free).ravel())
        drop = chosen[np.argsort(-key.ravel()[chosen], kind="stable")[:surplus]]
        mask.ravel()[drop] = False
    elif surplus < 0:
        open_ = np.flatnonzero((free & ~mask).ravel())
        add = open_[np.argsort(key.ravel()[open_], kind="stable")[:-surplus]]
        mask.ravel()[add] = True


def random_mask_2d(
    shape: tuple[int, int],
    num_points: int,
    n: int,
    rng: np.random.Generator,
    valid: BoolArray | None = None,
) -> tuple[BoolArray, int]:
    """Calibration block plus uniformly drawn points, ``num_points`` in all."""
    base, free = _prepare(shape, num_points, n, valid)
    mask = base.copy()
    candidates = np.flatnonzero(free.ravel())
    take = rng.choice(candidates, size=num_points - int(base.sum()), replace=False)
    mask.ravel()[take] = True
    return mask, n


def variable_density_mask_2d(
    shape: tuple[int, int],
    num_points: int,
    n: int,
    rng: np.random.Generator,
    valid: BoolArray | None = None,
    power: float = 2.0,
) -> tuple[BoolArray, int]:
    """Calibration block plus points drawn with density ``(1 - r)^power`` (floored at 1e-3)."""
    base, free = _prepare(shape, num_points, n, valid)
    if num_points == int(base.sum()):
        return base.copy(), n
    density = np.clip(1.0 - normalized_radius(shape) / math.sqrt(2.0), 0.0, 1.0) ** power
    candidates = np.flatnonzero(free.ravel())
    weights = np.maximum(density.ravel()[candidates], 1e-3)
    mask = base.copy()
    take = rng.choice(
        candidates, size=num_points - int(base.sum()), replace=False, p=weights / weights.sum()
    )
    mask.ravel()[take] = True
    return mask, n


def _poisson(
    shape: tuple[int, int],
    allowed: BoolArray,
    radius: NDArray[np.float64],
    order: NDArray[np.intp],
) -> BoolArray:
    """Dart throwing in ``order``: accept a point unless an accepted one lies within its radius."""
    height, width = shape
    blocked = ~allowed
    accepted = np.zeros(shape, dtype=bool)
    for flat in order:
        y, z = divmod(int(flat), width)
        if blocked[y, z]:
            continue
        accepted[y, z] = True
        r = radius[y, z]
        reach = math.floor(r)
        y0, y1 = max(0, y - reach), min(height, y + reach + 1)
        z0, z1 = max(0, z - reach), min(width, z + reach + 1)
        dy = (np.arange(y0, y1) - y)[:, None]
        dz = (np.arange(z0, z1) - z)[None, :]
        blocked[y0:y1, z0:z1] |= dy * dy + dz * dz < r * r
    return accepted


def poisson_disc_mask(
    shape: tuple[int, int],
    num_points: int,
    n: int,
    rng: np.random.Generator,
    valid: BoolArray | None = None,
    density_slope: float = 2.0,
) -> tuple[BoolArray, int]:
    """Variable-density Poisson disc, ``num_points`` in all (see the module docstring).

    The exclusion radius at normalized radius ``r`` is ``r0 * (1 + density_slope * r)``
    samples; ``r0`` is bisected so the disc sampling lands just above the count, and the
    surplus is dropped from the periphery.
    """
    base, free = _prepare(shape, num_points, n, valid)
    wanted = num_points - int(base.sum())
    mask = base.copy()
    if wanted > 0:
        rad = normalized_radius(shape)
        order = rng.permutation(free.size)
        growth = 1.0 + density_slope * rad
        low, high = 0.0, float(max(shape))
        best = None
        for _ in range(18):
            r0 = 0.5 * (low + high)
            accepted = _poisson(shape, free, r0 * growth, order)
            if int(accepted.sum()) >= wanted:
                best, low = accepted, r0
            else:
                high = r0
        if best is None:  # even the smallest radius cannot reach the count: every point
            best = free.copy()
        mask |= best
        _fill(mask, free, num_points, rad + 1e-9 * rng.random(shape))
    return mask, n


def equispaced_mask_2d(
    shape: tuple[int, int],
    num_points: int,
    n: int,
    rng: np.random.Generator,
    valid: BoolArray | None = None,
) -> tuple[BoolArray, int]:
    """A CAIPI-shifted ``Ry x Rz`` lattice from a random offset, ``num_points`` in all.

    ``Ry * Rz`` is the acceleration ``valid points / num_points`` rounded to a factor pair
    as square as possible; lattice row ``i`` (every ``Ry``-th ky) is shifted by
    ``(i * shift) mod Rz`` with ``shift = Rz // 2`` (``0`` when ``Rz = 1``).
    """
    base, free = _prepare(shape, num_points, n, valid)
    wanted = num_points - int(base.sum())
    mask = base.copy()
    if wanted > 0:
        acceleration = max(1, round(free.sum() / wanted))
        ry = max(1, math.isqrt(acceleration))
        while acceleration % ry:
            ry -= 1
        rz = acceleration // ry
        shift = rz // 2
        height = shape[0]
        oy, oz = int(rng.integers(ry)), int(rng.integers(rz))
        lattice = np.zeros(shape, dtype=bool)
        for i, y in enumerate(range(oy, height, ry)):
            lattice[y, (oz + i * shift) % rz :: rz] = True
        mask |= lattice & free
        _fill(mask, free, num_points, normalized_radius(shape) + 1e-9 * rng.random(shape))
    return mask, n


def low_to_high_mask_2d(
    shape: tuple[int, int],
    num_points: int,
    n: int,
    rng: np.random.Generator,
    valid: BoolArray | None = None,
) -> tuple[BoolArray, int]:
    """The valid points of smallest normalized radius (``rng`` unused: deterministic)."""
    del rng
    base, free = _prepare(shape, num_points, n, valid)
    mask = base.copy()
    _fill(mask, free, num_points, normalized_radius(shape))
    return mask, n


MaskFunction2D = Callable[..., tuple[BoolArray, int]]
MASK_TYPES_2D: dict[str, MaskFunction2D] = {
    "poisson": poisson_disc_mask,
    "variable_density": variable_density_mask_2d,
    "random": random_mask_2d,
    "equispaced": equispaced_mask_2d,
    "low_to_high": low_to_high_mask_2d,
}
"""Point mask functions by name (every one exact in count; see the module docstring)."""


def make_mask_2d(
    mask_type: str,
    shape: tuple[int, int],
    num_points: int,
    n: int,
    rng: np.random.Generator,
    valid: BoolArray | None = None,
) -> tuple[BoolArray, int]:
    """Dispatch to a point mask function by name (see :data:`MASK_TYPES_2D`).

    Args:
        mask_type: A key of :data:`MASK_TYPES_2D`.
        shape: ``(H, W)`` of the ky-kz plane.
        num_points: Total acquired points.
        n: Side of the central calibration block.
        rng: Random generator.
        valid: Bool ``(H, W)`` of points that may be sampled (default: all).

    Returns:
        ``(mask (H, W) bool, n)``.
    """
    if mask_type not in MASK_TYPES_2D:
        raise ValueError(
            f"unknown point mask type {mask_type!r}; choose from {list(MASK_TYPES_2D)}"
        )
    return MASK_TYPES_2D[mask_type](tuple(shape), num_points, n, rng, valid)
