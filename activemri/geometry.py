"""Acquisition geometries: which k-space entries one action acquires.

An episode's k-space is ``(C, H, W)``. Two geometries share every env, policy and evaluation
code path; they differ only in what an action fills:

- :class:`Lines` (2-D slices, the fastMRI setting): ``H`` is the fully sampled readout and an
  action ``a`` in ``[0, W)`` acquires phase-encode column ``a``. Masks are bool ``(W,)``.
- :class:`Points` (3-D Cartesian volumes): the episode is one readout position's ky-kz plane
  (the 3-D k-space inverse-transformed along its fully sampled readout), both axes are phase
  encodes, and an action ``a`` in ``[0, H*W)`` acquires the single point
  ``(a // W, a % W)``. Masks are bool ``(H*W,)`` (row-major flat; ``(B, H, W)`` when handed to
  a reconstructor). An elliptical shutter (``ellipse=True``) leaves the corners unmeasured,
  as scanners do to save time on 3-D acquisitions.

Everything here is pure: NumPy for what the episode source draws on the host, torch for the
batched core. :func:`geometry_from_spec` builds one from a config value.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch
from numpy.typing import NDArray

__all__ = ["GEOMETRIES", "Geometry", "Lines", "Points", "geometry_from_spec"]

BoolArray = NDArray[np.bool_]


def _center_range(size: int, n: int) -> tuple[int, int]:
    """``[start, stop)`` of a central block of ``n`` of ``size``, from ``(size - n + 1) // 2``."""
    n = max(0, min(int(n), size))
    start = (size - n + 1) // 2
    return start, start + n


class Geometry(ABC):
    """What one action acquires in ``(C, H, W)`` k-space (see the module docstring)."""

    name: str = "geometry"

    @abstractmethod
    def num_actions(self, height: int, width: int) -> int:
        """Number of actions ``A`` on ``(H, W)`` k-space."""

    @abstractmethod
    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Shape of the action grid: ``(1, W)`` for lines, ``(H, W)`` for points."""

    @abstractmethod
    def measured(self, valid_columns: BoolArray, height: int) -> BoolArray:
        """Bool ``(A,)`` measured actions, given the measured (non-padding) columns ``(W,)``."""

    @abstractmethod
    def center(self, height: int, width: int, n: int) -> BoolArray:
        """Bool ``(A,)`` central calibration block of size ``n``.

        Lines: ``n`` columns; points: an ``n x n`` ky-kz block.
        """

    @abstractmethod
    def calibration_extent(self, height: int, num_valid: int) -> int:
        """What a ``center_fraction`` is a fraction of.

        Lines: the measured lines; points: the plane's height.
        """

    @abstractmethod
    def center_rank(self, height: int, width: int) -> NDArray[np.float32]:
        """Float ``(A,)``: each action's place in the center-out (low-to-high) order."""

    @abstractmethod
    def recon_mask(self, mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The mask a reconstructor takes: lines ``(B, W)``; points ``(B, H, W)``."""

    @abstractmethod
    def broadcast(self, mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """``(B, A)`` mask viewed so that it broadcasts against ``(B, C, H, W)`` k-space."""

    @abstractmethod
    def take(self, kspace: torch.Tensor, rows: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The entries action ``actions[i]`` acquires in episode ``rows[i]`` of ``kspace``.

        Lines: ``(N, C, H)``; points: ``(N, C)``.
        """

    @abstractmethod
    def put(self, observed: torch.Tensor, actions: torch.Tensor, values: torch.Tensor) -> None:
        """Write ``values`` (as :meth:`take` returns them) into ``observed``, in place.

        Row ``i`` of ``observed`` gets ``values[i]`` at action ``actions[i]``.
        """

    def to_dict(self) -> dict[str, object]:
        """The geometry as a config value (for reports and result identities)."""
        return {"name": self.name}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Geometry) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.to_dict().items())))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "name")
        return f"{type(self).__name__}({args})"


class Lines(Geometry):
    """Phase-encode lines of a 2-D slice: action ``a`` acquires column ``a``."""

    name = "lines"

    def num_actions(self, height: int, width: int) -> int:
        """See :meth:`Geometry.num_actions`."""
        return width

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """See :meth:`Geometry.grid`."""
        return 1, width

    def measured(self, valid_columns: BoolArray, height: int) -> BoolArray:
        """See :meth:`Geometry.measured`."""
        out: BoolArray = np.array(valid_columns, dtype=bool)
        return out

    def center(self, height: int, width: int, n: int) -> BoolArray:
        """See :meth:`Geometry.center`."""
        out = np.zeros(width, dtype=bool)
        start, stop = _center_range(width, n)
        out[start:stop] = True
        return out

    def calibration_extent(self, height: int, num_valid: int) -> int:
        """See :meth:`Geometry.calibration_extent`."""
        return num_valid

    def center_rank(self, height: int, width: int) -> NDArray[np.float32]:
        """Columns by distance from ``W // 2``, left first on ties."""
        center = width // 2
        order = sorted(range(width), key=lambda c: (abs(c - center), c))
        rank = np.empty(width, dtype=np.float32)
        rank[order] = np.arange(width, dtype=np.float32)
        return rank

    def recon_mask(self, mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """See :meth:`Geometry.recon_mask`."""
        return mask

    def broadcast(self, mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """See :meth:`Geometry.broadcast`."""
        return mask[:, None, None, :]

    def take(self, kspace: torch.Tensor, rows: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """See :meth:`Geometry.take`."""
        return kspace[rows, :, :, actions]

    def put(self, observed: torch.Tensor, actions: torch.Tensor, values: torch.Tensor) -> None:
        """See :meth:`Geometry.put`."""
        n = torch.arange(actions.numel(), device=actions.device)
        observed[n, :, :, actions] = values


class Points(Geometry):
    """Points of a ky-kz plane: action ``a`` acquires ``(a // W, a % W)``.

    Args:
        ellipse: Measure only the points inside the ellipse inscribed in the (measured part
            of the) plane, an elliptical shutter.
    """

    name = "points"

    def __init__(self, ellipse: bool = False) -> None:
        self.ellipse = bool(ellipse)

    def to_dict(self) -> dict[str, object]:
        """See :meth:`Geometry.to_dict`."""
        return {"name": self.name, "ellipse": self.ellipse}

    def num_actions(self, height: int, width: int) -> int:
        """See :meth:`Geometry.num_actions`."""
        return height * width

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """See :meth:`Geometry.grid`."""
        return height, width

    def measured(self, valid_columns: BoolArray, height: int) -> BoolArray:
        """See :meth:`Geometry.measured`."""
        columns = np.asarray(valid_columns, dtype=bool)
        plane = np.broadcast_to(columns, (height, columns.size)).copy()
        if self.ellipse:
            cols = np.flatnonzero(columns)
            if cols.size:
                # the ellipse inscribed in the measured rectangle, centered on the k-space center
                ky = (np.arange(height) - height // 2) / (height / 2)
                middle = (int(cols[0]) + int(cols[-1]) + 1) // 2  # W // 2 without padding
                kz = (np.arange(columns.size) - middle) / (cols.size / 2)
                plane &= ky[:, None] ** 2 + kz[None, :] ** 2 <= 1.0 + 1e-9
        out: BoolArray = plane.reshape(-1)
        return out

    def center(self, height: int, width: int, n: int) -> BoolArray:
        """See :meth:`Geometry.center`."""
        out = np.zeros((height, width), dtype=bool)
        y0, y1 = _center_range(height, n)
        z0, z1 = _center_range(width, n)
        out[y0:y1, z0:z1] = True
        return out.reshape(-1)

    def calibration_extent(self, height: int, num_valid: int) -> int:
        """See :meth:`Geometry.calibration_extent`."""
        return height

    def center_rank(self, height: int, width: int) -> NDArray[np.float32]:
        """Points by normalized distance from ``(H // 2, W // 2)``, ties by flat index.

        Distances are in units of the plane's sides: equal ranks lie on ellipses of equal
        normalized frequency.
        """
        ky = (np.arange(height) - height // 2) / height
        kz = (np.arange(width) - width // 2) / width
        radius = (ky[:, None] ** 2 + kz[None, :] ** 2).reshape(-1)
        order = np.lexsort((np.arange(radius.size), np.round(radius, 12)))
        rank = np.empty(radius.size, dtype=np.float32)
        rank[order] = np.arange(radius.size, dtype=np.float32)
        return rank

    def recon_mask(self, mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """See :meth:`Geometry.recon_mask`."""
        return mask.reshape(mask.shape[0], height, width)

    def broadcast(self, mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """See :meth:`Geometry.broadcast`."""
        return mask.reshape(mask.shape[0], 1, height, width)

    def take(self, kspace: torch.Tensor, rows: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """See :meth:`Geometry.take`."""
        width = kspace.shape[-1]
        return kspace[rows, :, actions // width, actions % width]

    def put(self, observed: torch.Tensor, actions: torch.Tensor, values: torch.Tensor) -> None:
        """See :meth:`Geometry.put`."""
        width = observed.shape[-1]
        n = torch.arange(actions.numel(), device=actions.device)
        observed[n, :, actions // width, actions % width] = values


GEOMETRIES = ("lines", "points")
"""Names accepted by :func:`geometry_from_spec`."""


def geometry_from_spec(spec: str | Geometry, ellipse: bool = False) -> Geometry:
    """A geometry from its name (``"lines"``, ``"points"``) or itself.

    Args:
        spec: The name or a :class:`Geometry`.
        ellipse: Elliptical shutter (points only).

    Raises:
        ValueError: For an unknown name, or a shutter asked of lines.
    """
    if isinstance(spec, Geometry):
        return spec
    if spec == "lines":
        if ellipse:
            raise ValueError("an elliptical shutter needs the 'points' geometry (ky-kz planes)")
        return Lines()
    if spec == "points":
        return Points(ellipse=ellipse)
    raise ValueError(f"unknown geometry {spec!r}; choose from {GEOMETRIES}")
