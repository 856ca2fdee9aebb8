"""Phase-encode (column) sampling masks.

Every mask function follows one contract (DESIGN §4): it takes the k-space width, the number
of lines to acquire and a NumPy ``Generator``, and returns ``(mask, num_low_frequencies)``:
a bool ``(W,)`` NumPy array and the size of the fully sampled central (ACS) block. The same
generator state always gives the same mask, and no global random state is touched.

Conventions (fastMRI): the central block of ``n_low`` columns starts at ``(W - n_low + 1) // 2``;
columns outside ``valid`` (zero-padded edges of real k-space) are never sampled.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from functools import partial

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "MASK_TYPES",
    "BoolArray",
    "center_block",
    "equispaced_fastmri_mask",
    "equispaced_mask",
    "lines_for_acceleration",
    "low_to_high_mask",
    "make_mask",
    "random_mask",
    "variable_density_mask",
    "volume_seed",
]

BoolArray = NDArray[np.bool_]


def center_block(width: int, num_low_frequencies: int) -> BoolArray:
    """The fully sampled central block of ``num_low_frequencies`` columns.

    Args:
        width: K-space width ``W``.
        num_low_frequencies: Block size.

    Returns:
        Bool ``(W,)`` array.
    """
    if not 0 <= num_low_frequencies <= width:
        raise ValueError(f"num_low_frequencies={num_low_frequencies} not in [0, {width}]")
    mask = np.zeros(width, dtype=bool)
    start = (width - num_low_frequencies + 1) // 2
    mask[start : start + num_low_frequencies] = True
    return mask


def _candidates(width: int, num_low: int, valid: BoolArray | None) -> tuple[BoolArray, BoolArray]:
    base = center_block(width, num_low)
    allowed = np.ones(width, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    if allowed.shape != (width,):
        raise ValueError(f"valid must have shape ({width},), got {allowed.shape}")
    base &= allowed
    return base, allowed & ~base


def _prepare(
    width: int, num_lines: int, num_low: int, valid: BoolArray | None
) -> tuple[BoolArray, BoolArray]:
    """The center block and the other samplable columns, after checking ``num_lines`` fits."""
    base, free = _candidates(width, num_low, valid)
    if not base.sum() <= num_lines <= base.sum() + free.sum():
        raise ValueError(
            f"cannot acquire {num_lines} lines: the center block has {int(base.sum())} and "
            f"{int(free.sum())} more valid columns exist"
        )
    return base, free


def random_mask(
    width: int,
    num_lines: int,
    num_low_frequencies: int,
    rng: np.random.Generator,
    valid: BoolArray | None = None,
    exact: bool = True,
) -> tuple[BoolArray, int]:
    """Central block plus uniformly random other columns.

    With ``exact=True`` exactly ``num_lines`` columns are acquired. With ``exact=False``
    (fastMRI's ``RandomMaskFunc`` semantics) every other valid column is kept independently
    with probability ``p = (num_lines - n_center) / n_other``, so ``num_lines`` is the
    *expected* count. Other arguments and the result follow the module's mask-function
    contract (see :func:`make_mask`).
    """
    base, free = _prepare(width, num_lines, num_low_frequencies, valid)
    mask = base.copy()
    wanted = num_lines - int(base.sum())
    if exact:
        mask[rng.choice(np.flatnonzero(free), size=wanted, replace=False)] = True
    elif wanted > 0:
        mask |= free & (rng.uniform(size=width) < wanted / free.sum())
    return mask, num_low_frequencies


def equispaced_fastmri_mask(
    width: int,
    num_lines: int,
    num_low_frequencies: int,
    rng: np.random.Generator,
    valid: BoolArray | None = None,
) -> tuple[BoolArray, int]:
    """Every ``A``-th column from a random offset (fastMRI's ``EquispacedMaskFunc``).

    ``A = round(W / num_lines)`` (the acceleration ``num_lines`` stands for); the central block
    is added on top, so more than ``num_lines`` columns are usually acquired (the effective
    acceleration is below ``A``, as in fastMRI). Use :func:`equispaced_mask` for an exact
    count. Arguments and result follow the module's mask-function contract.
    """
    base, free = _candidates(width, num_low_frequencies, valid)
    if num_lines < 1:
        raise ValueError(f"num_lines must be >= 1, got {num_lines}")
    spacing = max(1, round(width / num_lines))
    mask = base.copy()
    grid = np.arange(int(rng.integers(spacing)), width, spacing)
    mask[grid[free[grid]]] = True
    return mask, num_low_frequencies


def variable_density_mask(
    width: int,
    num_lines: int,
    num_low_frequencies: int,
    rng: np.random.Generator,
    valid: BoolArray | None = None,
    profile: str = "gaussian",
    width_fraction: float = 0.3,
    power: float = 2.0,
) -> tuple[BoolArray, int]:
    """Central block plus columns drawn without replacement from a 1-D density, exact count.

    The density over the distance ``d`` of a column from the center, in units of half the
    width, is ``exp(-d^2 / (2 s^2))`` with ``s = width_fraction`` (``profile="gaussian"``) or
    ``(1 - d)^power`` (``profile="polynomial"``), floored at 1e-3 so every valid column can be
    drawn. Low frequencies, which carry most of the image energy, are sampled more densely.
    Other arguments and the result follow the module's mask-function contract.
    """
    base, free = _prepare(width, num_lines, num_low_frequencies, valid)
    distance = np.abs(np.arange(width) - width // 2) / max(1.0, width / 2)
    if profile == "gaussian":
        density = np.exp(-(distance**2) / (2 * width_fraction**2))
    elif profile == "polynomial":
        density = np.clip(1.0 - distance, 0.0, 1.0) ** power
    else:
        raise ValueError(f"profile must be 'gaussian' or 'polynomial', got {profile!r}")
    candidates = np.flatnonzero(free)
    weights = np.maximum(density[candidates], 1e-3)
    mask = base.copy()
    wanted = num_lines - int(base.sum())
    mask[rng.choice(candidates, size=wanted, replace=False, p=weights / weights.sum())] = True
    return mask, num_low_frequencies


def equispaced_mask(
    width: int,
    num_lines: int,
    num_low_frequencies: int,
    rng: np.random.Generator,
    valid: BoolArray | None = None,
) -> tuple[BoolArray, int]:
    """Central block plus evenly spaced columns from a random offset, ``num_lines`` in all.

    The spacing is chosen so the total is as close to ``num_lines`` as an even grid allows;
    the remainder (positive or negative) is filled or removed at random, so the count is exact.
    Arguments and result follow the module's mask-function contract (see :func:`make_mask`).
    """
    base, free = _prepare(width, num_lines, num_low_frequencies, valid)
    wanted = num_lines - int(base.sum())
    mask = base.copy()
    if wanted > 0:
        spacing = max(1.0, free.sum() / wanted)
        grid = np.round(rng.uniform(0, spacing) + np.arange(0, width, spacing)).astype(int)
        grid = grid[grid < width]
        mask[grid[free[grid]]] = True
        surplus = int(mask.sum()) - num_lines
        if surplus > 0:
            drop = rng.choice(np.flatnonzero(mask & free), size=surplus, replace=False)
            mask[drop] = False
        elif surplus < 0:
            add = rng.choice(np.flatnonzero(free & ~mask), size=-surplus, replace=False)
            mask[add] = True
    return mask, num_low_frequencies


def low_to_high_mask(
    width: int,
    num_lines: int,
    num_low_frequencies: int,
    rng: np.random.Generator,
    valid: BoolArray | None = None,
) -> tuple[BoolArray, int]:
    """The ``num_lines`` valid columns nearest the center (low frequencies first).

    Ties between the two sides are broken towards the left (lower index), so the mask is the
    prefix of the alternating center-out order; ``rng`` is unused (deterministic pattern).
    Arguments and result follow the module's mask-function contract (see :func:`make_mask`).
    """
    del rng
    base, free = _prepare(width, num_lines, num_low_frequencies, valid)
    center = width // 2
    order = sorted(np.flatnonzero(free).tolist(), key=lambda c: (abs(c - center), c))
    mask = base.copy()
    mask[order[: num_lines - int(base.sum())]] = True
    return mask, num_low_frequencies


MaskFunction = Callable[..., tuple[BoolArray, int]]
MASK_TYPES: dict[str, MaskFunction] = {
    "random": random_mask,
    "random_fastmri": partial(random_mask, exact=False),
    "equispaced": equispaced_mask,
    "equispaced_fastmri": equispaced_fastmri_mask,
    "variable_density": variable_density_mask,
    "variable_density_polynomial": partial(variable_density_mask, profile="polynomial"),
    "low_to_high": low_to_high_mask,
}
"""Mask functions by name. Exact count: ``random``, ``equispaced`` (spacing adjusted so the
total is exact, fastMRI's equispaced-fraction idea), ``variable_density`` (Gaussian),
``variable_density_polynomial``, ``low_to_high`` (center-out). fastMRI semantics, count not
exact: ``random_fastmri`` (expected count), ``equispaced_fastmri`` (every A-th column)."""


def lines_for_acceleration(num_valid: int, acceleration: float) -> int:
    """Lines an acceleration stands for: ``round(num_valid / acceleration)``, at least 1."""
    if acceleration < 1:
        raise ValueError(f"acceleration must be >= 1, got {acceleration}")
    return max(1, round(num_valid / acceleration))


def volume_seed(file_name: str) -> int:
    """A stable per-volume seed: the CRC32 of the file name.

    Every slice of a volume, in any process or order, then gets the same mask, as fastMRI
    seeds masks by file name.
    """
    return zlib.crc32(file_name.encode())


def make_mask(
    mask_type: str,
    width: int,
    num_lines: int,
    num_low_frequencies: int,
    rng: np.random.Generator,
    valid: BoolArray | None = None,
) -> tuple[BoolArray, int]:
    """Dispatch to a mask function by name (see :data:`MASK_TYPES`).

    Args:
        mask_type: A key of :data:`MASK_TYPES`.
        width: K-space width ``W``.
        num_lines: Total acquired columns.
        num_low_frequencies: Central block size.
        rng: Random generator.
        valid: Bool ``(W,)`` of columns that may be sampled (default: all).

    Returns:
        ``(mask, num_low_frequencies)``.
    """
    if mask_type not in MASK_TYPES:
        raise ValueError(f"unknown mask type {mask_type!r}; choose from {list(MASK_TYPES)}")
    return MASK_TYPES[mask_type](width, num_lines, num_low_frequencies, rng, valid)
