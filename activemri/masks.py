"""Phase-encode (column) sampling masks.

Every mask function follows one contract (DESIGN §4): it takes the k-space width, the number
of lines to acquire and a NumPy ``Generator``, and returns ``(mask, num_low_frequencies)``:
a bool ``(W,)`` NumPy array and the size of the fully sampled central (ACS) block. The same
generator state always gives the same mask, and no global random state is touched.

Conventions (fastMRI): the central block of ``n_low`` columns starts at ``(W - n_low + 1) // 2``;
columns outside ``valid`` (zero-padded edges of real k-space) are never sampled.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "MASK_TYPES",
    "BoolArray",
    "center_block",
    "equispaced_mask",
    "low_to_high_mask",
    "make_mask",
    "random_mask",
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
) -> tuple[BoolArray, int]:
    """Central block plus uniformly random other columns, exactly ``num_lines`` in all.

    Arguments and result follow the module's mask-function contract (see :func:`make_mask`).
    """
    base, free = _prepare(width, num_lines, num_low_frequencies, valid)
    mask = base.copy()
    extra = rng.choice(np.flatnonzero(free), size=num_lines - int(base.sum()), replace=False)
    mask[extra] = True
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
    "equispaced": equispaced_mask,
    "low_to_high": low_to_high_mask,
}


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
        mask_type: ``random``, ``equispaced`` or ``low_to_high``.
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
