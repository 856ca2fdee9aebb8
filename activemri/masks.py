"""Phase-encode (column) sampling masks.

Every mask function follows one contract (DESIGN §4): it takes the k-space width, the number
of lines to acquire and a NumPy ``Generator``, and returns ``(mask, num_low_frequencies)``:
a bool ``(W,)`` NumPy array and the size of the fully sampled central (ACS) block. The same
generator state always gives the same mask, and no global random state is touched.

Conventions (fastMRI): the central block of ``n_low`` columns starts at ``(W - n_low + 1) // 2``;
columns outside ``valid`` (zero-padded edges of real k-space) are never sampled.

**Bit-identical fastMRI masks.** :class:`FastMRIRandomMask`, :class:`FastMRIEquispacedMask`
and :class:`FastMRIEquispacedFractionMask` reproduce fastMRI's ``RandomMaskFunc``,
``EquiSpacedMaskFunc`` and ``EquispacedMaskFractionFunc`` (``fastmri/data/subsample.py``,
fastMRI 0.3.0) bit for bit: same constructor ``(center_fractions, accelerations, seed,
allow_any_combination)``, same call ``(shape, offset, seed)`` and the same draws from a legacy
NumPy ``RandomState``, so the same seeds give the same masks. :func:`fastmri_volume_seed` is
fastMRI's per-volume seed (``use_seed=True`` in its data transforms: the character codes of
the file name), which gives every slice of a file fastMRI's mask for that file::

    from activemri.masks import FastMRIRandomMask, fastmri_volume_seed

    mask_func = FastMRIRandomMask([0.08], [4])
    mask, num_low = mask_func((1, 640, 368, 2), seed=fastmri_volume_seed("file1000001.h5"))
    # mask: bool (368,), equal to fastMRI's RandomMaskFunc([0.08], [4]) mask for that file

They return a bool ``(W,)`` array where fastMRI returns a float32 tensor of shape
``(1, ..., W, 1)`` (``torch.from_numpy(mask).float().reshape(1, ..., W, 1)`` converts). They
do not follow the budget contract above (fastMRI fixes the acceleration, not the count), so
they are not in :data:`MASK_TYPES`; :data:`FASTMRI_MASK_TYPES` names them for ``activemri
recon eval --mask-type``. Tests compare them with masks recorded from fastMRI itself
(``tests/fixtures/make_fastmri_masks.py``).
"""

from __future__ import annotations

import contextlib
import math
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import PurePath

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "FASTMRI_MASK_TYPES",
    "MASK_TYPES",
    "BoolArray",
    "FastMRIEquispacedFractionMask",
    "FastMRIEquispacedMask",
    "FastMRIMask",
    "FastMRIRandomMask",
    "center_block",
    "equispaced_fastmri_mask",
    "equispaced_mask",
    "fastmri_volume_seed",
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
exact: ``random_fastmri`` (expected count), ``equispaced_fastmri`` (every A-th column). These
follow fastMRI's definitions under this module's contract and generator; for masks
bit-identical to fastMRI's own, see :data:`FASTMRI_MASK_TYPES`."""


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


def fastmri_volume_seed(file_name: str | os.PathLike[str]) -> tuple[int, ...]:
    """The per-volume mask seed of fastMRI: the character codes of the file's base name.

    fastMRI's data transforms (``use_seed=True``, their default) seed the mask function with
    ``tuple(map(ord, fname))``, where ``fname`` is the base name its ``SliceDataset`` passes
    (``"file1000001.h5"``). Passing this seed to a :class:`FastMRIMask` gives every slice of
    the file the mask fastMRI gives it. Unlike :func:`volume_seed` it is a tuple (a
    ``RandomState`` seed), so it is not offset by a user seed.

    Args:
        file_name: File name or path; directories are dropped, as fastMRI does.

    Returns:
        One code point per character of the base name.

    Raises:
        ValueError: If the base name is empty.
    """
    name = PurePath(file_name).name
    if not name:
        raise ValueError(f"no file name in {os.fspath(file_name)!r}")
    return tuple(ord(char) for char in name)


class FastMRIMask:
    """Base of the fastMRI-identical mask functions (fastMRI's ``MaskFunc``).

    A call picks one ``(center_fraction, acceleration)`` pair (uniformly: the same index in
    both lists, or with ``allow_any_combination`` each independently), keeps the central
    ``round(W * center_fraction)`` columns and adds the columns of the subclass's
    acceleration pattern. All draws come from one legacy ``np.random.RandomState``, in
    fastMRI's order: the pair, then the pattern. A per-call ``seed`` reseeds that generator
    for the call only and restores its state afterwards, so seeded calls (per-volume
    seeding) never disturb the unseeded stream.

    Args:
        center_fractions: Fractions of the width kept as the fully sampled center, each in
            ``[0, 1)``.
        accelerations: Acceleration factors, each ``>= 1``; same length as
            ``center_fractions`` unless ``allow_any_combination``.
        seed: Seed of the object's generator (``None``: fresh entropy, as NumPy's).
        allow_any_combination: Draw fraction and acceleration independently.

    Raises:
        ValueError: On empty lists, fractions outside ``[0, 1)``, accelerations below 1 (or,
            for :class:`FastMRIEquispacedMask`, not whole numbers) or mismatched lengths.
    """

    #: Whether accelerations must be whole numbers (they are a slice step).
    integer_accelerations = False

    def __init__(
        self,
        center_fractions: Sequence[float],
        accelerations: Sequence[float],
        seed: int | None = None,
        allow_any_combination: bool = False,
    ) -> None:
        fractions = tuple(float(f) for f in center_fractions)
        factors = tuple(float(a) for a in accelerations)
        if not fractions or not factors:
            raise ValueError("center_fractions and accelerations must not be empty")
        if len(fractions) != len(factors) and not allow_any_combination:
            raise ValueError(
                f"{len(fractions)} center fractions but {len(factors)} accelerations: give one "
                "fraction per acceleration, or pass allow_any_combination=True"
            )
        for fraction in fractions:
            if not 0.0 <= fraction < 1.0:
                raise ValueError(f"center fractions must be in [0, 1), got {fraction}")
        for factor in factors:
            if not (math.isfinite(factor) and factor >= 1.0):
                raise ValueError(f"accelerations must be finite and >= 1, got {factor}")
            if self.integer_accelerations and not factor.is_integer():
                raise ValueError(
                    f"{type(self).__name__} needs whole-number accelerations (every A-th "
                    f"column), got {factor}"
                )
        self.center_fractions = fractions
        self.accelerations = factors
        self.allow_any_combination = allow_any_combination
        self.rng = np.random.RandomState(seed)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(center_fractions={list(self.center_fractions)}, "
            f"accelerations={list(self.accelerations)}, "
            f"allow_any_combination={self.allow_any_combination})"
        )

    def __call__(
        self,
        shape: int | Sequence[int],
        offset: int | None = None,
        seed: int | Sequence[int] | None = None,
    ) -> tuple[BoolArray, int]:
        """Draw a mask.

        Args:
            shape: The k-space width ``W``, or a fastMRI k-space shape (at least 3 dims,
                columns at ``shape[-2]``: ``(H, W, 2)``, ``(1, H, W, 2)``, ...).
            offset: First column of the equispaced pattern (drawn when ``None``; unused by
                :class:`FastMRIRandomMask`).
            seed: Seed for this call only (an int or a tuple of ints such as
                :func:`fastmri_volume_seed`); the generator's state is restored afterwards.

        Returns:
            ``(mask, num_low_frequencies)``: bool ``(W,)`` (fastMRI returns the same values
            as a float32 ``(1, ..., W, 1)`` tensor) and the size of the central block.

        Raises:
            ValueError: On a bad shape or a negative offset, or if the chosen pair cannot
                give a mask for this width.
        """
        width = _fastmri_width(shape)
        if offset is not None and offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        with self._seeded(seed):
            fraction, acceleration = self._choose_pair()
            num_low = round(width * fraction)
            pattern = self._pattern(width, acceleration, offset, num_low)
        return center_block(width, num_low) | pattern, num_low

    @contextlib.contextmanager
    def _seeded(self, seed: int | Sequence[int] | None) -> Iterator[None]:
        if seed is None:
            yield
            return
        saved = self.rng.get_state()
        self.rng.seed(seed if isinstance(seed, int) else list(seed))
        try:
            yield
        finally:
            self.rng.set_state(saved)

    def _choose_pair(self) -> tuple[float, float]:
        if self.allow_any_combination:
            i = int(self.rng.choice(len(self.center_fractions)))
            j = int(self.rng.choice(len(self.accelerations)))
        else:
            i = j = int(self.rng.randint(len(self.center_fractions)))
        return self.center_fractions[i], self.accelerations[j]

    def _pattern(
        self, width: int, acceleration: float, offset: int | None, num_low: int
    ) -> BoolArray:
        """The non-central columns (may overlap the center block)."""
        raise NotImplementedError


def _fastmri_width(shape: int | Sequence[int]) -> int:
    if isinstance(shape, (int, np.integer)):
        width = int(shape)
    else:
        dims = tuple(shape)
        if len(dims) < 3:
            raise ValueError(
                f"a fastMRI k-space shape has at least 3 dims (columns at shape[-2]), got "
                f"{dims}; pass the width as an int instead"
            )
        width = int(dims[-2])
    if width < 1:
        raise ValueError(f"the k-space width must be >= 1, got {width}")
    return width


class FastMRIRandomMask(FastMRIMask):
    """fastMRI's ``RandomMaskFunc``: center block plus columns kept at random.

    Every column is kept independently with probability
    ``(W / A - n_low) / (W - n_low)`` (one uniform draw per column, the center included), so
    ``W / A`` columns are acquired on average. ``offset`` is ignored. See
    :class:`FastMRIMask` for the arguments.
    """

    def _pattern(
        self, width: int, acceleration: float, offset: int | None, num_low: int
    ) -> BoolArray:
        if num_low >= width:
            raise ValueError(f"the center block keeps all {width} columns: nothing to draw")
        keep = (width / acceleration - num_low) / (width - num_low)
        return np.asarray(self.rng.uniform(size=width) < keep)


class FastMRIEquispacedMask(FastMRIMask):
    """fastMRI's ``EquiSpacedMaskFunc``: center block plus every ``A``-th column.

    The pattern starts at ``offset`` (default: drawn uniformly from ``[0, A)``). The center
    block comes on top, so the true acceleration is below ``A``. Accelerations must be whole
    numbers. See :class:`FastMRIMask` for the arguments.
    """

    integer_accelerations = True

    def _pattern(
        self, width: int, acceleration: float, offset: int | None, num_low: int
    ) -> BoolArray:
        step = int(acceleration)
        start = int(self.rng.randint(0, step)) if offset is None else offset
        mask = np.zeros(width, dtype=bool)
        mask[start::step] = True
        return mask


class FastMRIEquispacedFractionMask(FastMRIMask):
    """fastMRI's ``EquispacedMaskFractionFunc``: spacing adjusted for the center block.

    The spacing ``A (W - n_low) / (W - n_low A)`` makes center plus pattern about ``W / A``
    columns; the pattern is the rounded grid ``offset, offset + s, ...`` below ``W - 1``
    (``offset`` drawn from ``[0, round(s))`` by default). As in fastMRI (and its public
    multi-coil data) the rounded grid is not always evenly spaced. Needs
    ``n_low * A < W``, i.e. a center fraction below ``1 / A``. See :class:`FastMRIMask` for
    the arguments.
    """

    def _pattern(
        self, width: int, acceleration: float, offset: int | None, num_low: int
    ) -> BoolArray:
        if num_low * acceleration >= width:
            raise ValueError(
                f"a center of {num_low} of {width} columns already reaches {acceleration:g}x: "
                "the center fraction must be below 1 / acceleration"
            )
        # fastMRI's expression, in its order of operations (bit-identical grid).
        spacing = (acceleration * (num_low - width)) / (num_low * acceleration - width)
        start = int(self.rng.randint(0, round(spacing))) if offset is None else offset
        columns = np.around(np.arange(start, width - 1, spacing)).astype(np.intp)
        mask = np.zeros(width, dtype=bool)
        mask[columns] = True
        return mask


FASTMRI_MASK_TYPES: dict[str, type[FastMRIMask]] = {
    "fastmri_random": FastMRIRandomMask,
    "fastmri_equispaced": FastMRIEquispacedMask,
    "fastmri_equispaced_fraction": FastMRIEquispacedFractionMask,
}
"""The fastMRI-identical mask classes by name (``activemri recon eval --mask-type``)."""
