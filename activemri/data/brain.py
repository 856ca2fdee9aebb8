"""Brain slices from a real anatomical template: the MNI152 T1 and tissue maps in nilearn.

nilearn ships the ICBM 2009a symmetric MNI152 template (1 mm, 197x233x189) with grey- and
white-matter probability maps inside its wheel, so real anatomy is available with no download
(``pip install 'activemri[data]'``). Only the files are used: nilearn itself is never
imported; nibabel reads them.

Each volume draws its own acquisition and subject:

- **Geometry**: orientation (axial, coronal or sagittal), slab position and slice spacing, a
  random rotation (in and out of plane), anisotropic scaling (head size and shape), and a
  smooth random deformation field of a few millimetres, so no two volumes share anatomy.
- **Tissues**: grey matter, white matter and CSF inside the brain (CSF is what the tissue
  maps leave of the brain mask: ventricles, sulci), and a skull model outside it (CSF shell,
  cortical bone, fatty diploë, scalp), built from the distance to the brain surface.
- **Contrast**: T1, T2, PD or FLAIR-like tissue values with per-volume jitter, the real
  template's T1 intensities blended in for T1 (its deep nuclei and partial volumes), a random
  gamma, mild texture and a smooth multiplicative bias field.

Coordinates follow :mod:`activemri.data.phantom`: the reconstruction crop spans ``[-1, 1]``
along rows (readout) and columns (phase encode).
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from activemri.data.phantom import noise_field

__all__ = ["BRAIN_CONTRASTS", "BRAIN_PROTOCOLS", "MissingDataDependency", "brain_volume"]

Array = NDArray[np.floating]

#: Relative signal per tissue for each contrast (spin-echo-like weightings; values from the
#: usual ordering of relaxation times at 1.5-3 T, not fitted to any scanner).
BRAIN_CONTRASTS: dict[str, dict[str, float]] = {
    "T1": {"gm": 0.62, "wm": 0.92, "csf": 0.16, "bone": 0.04, "diploe": 0.8, "scalp": 0.95},
    "T2": {"gm": 0.62, "wm": 0.42, "csf": 1.0, "bone": 0.04, "diploe": 0.55, "scalp": 0.6},
    "PD": {"gm": 0.86, "wm": 0.7, "csf": 0.92, "bone": 0.05, "diploe": 0.8, "scalp": 0.85},
    "FLAIR": {"gm": 0.72, "wm": 0.5, "csf": 0.06, "bone": 0.04, "diploe": 0.55, "scalp": 0.6},
}
_ORIENTATIONS = {"AX": "axial", "COR": "coronal", "SAG": "sagittal"}
#: Acquisition names written to the ``acquisition`` attribute: orientation + contrast (fastMRI
#: brain uses AXT1, AXT2, AXFLAIR for its axial scans).
BRAIN_PROTOCOLS: tuple[str, ...] = tuple(o + c for o in _ORIENTATIONS for c in BRAIN_CONTRASTS)

_TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}


class MissingDataDependency(ImportError):
    """An anatomy's template files are not installed; the message names the extra."""


@dataclass(frozen=True)
class _Template:
    """The template resampled once per process: tissue channels and the outside distance."""

    channels: NDArray[np.float32]  # (5, X, Y, Z): t1, gm, wm, csf, distance outside (mm)
    center: NDArray[np.float64]  # voxel index of the brain's centre of mass


def _template_dir() -> Path:
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDataDependency(
            "the built-in brain anatomy reads the MNI152 template shipped in nilearn's wheel; "
            "install it with: pip install 'activemri[data]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


@functools.lru_cache(maxsize=1)
def _load_template() -> _Template:
    folder = _template_dir()
    try:
        import nibabel
    except ImportError as exc:
        raise MissingDataDependency(
            "the built-in brain anatomy needs nibabel to read the MNI152 template; "
            "install it with: pip install 'activemri[data]'"
        ) from exc
    maps = {}
    for key, name in _TEMPLATE_FILES.items():
        path = folder / name
        if not path.is_file():
            raise MissingDataDependency(
                f"{path} is missing from the installed nilearn; reinstall it with: "
                "pip install --force-reinstall 'activemri[data]'"
            )
        image: Any = nibabel.load(path)
        maps[key] = np.asarray(image.dataobj, dtype=np.float32) / 255.0
    t1, gm, wm = maps["t1"], maps["gm"], maps["wm"]
    brain = np.clip(t1 / 0.12, 0.0, 1.0)
    csf = np.clip(brain - gm - wm, 0.0, 1.0)
    outside = ndimage.distance_transform_edt(t1 < 0.06).astype(np.float32)
    center = np.array(ndimage.center_of_mass(brain), dtype=np.float64)
    return _Template(np.stack([t1, gm, wm, csf, outside]), center)


def _rotation(rng: np.random.Generator, in_plane: float, out_of_plane: float) -> Array:
    """A rotation matrix: small tilts about two axes, a larger one about the slice normal."""
    a, b, c = (rng.uniform(-out_of_plane, out_of_plane), rng.uniform(-out_of_plane, out_of_plane),
               rng.uniform(-in_plane, in_plane))  # fmt: skip
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    out: Array = rx @ ry @ rz
    return out


# Output axes (row, column, slice) as template axes (x: left-right, y: posterior-anterior,
# z: inferior-superior) with signs, so images appear in radiological orientation.
_AXES = {
    "axial": ((1, -1.0), (0, 1.0), (2, 1.0)),
    "coronal": ((2, -1.0), (0, 1.0), (1, 1.0)),
    "sagittal": ((2, -1.0), (1, -1.0), (0, 1.0)),
}


def brain_volume(
    rng: np.random.Generator,
    num_slices: int,
    image_shape: tuple[int, int],
    crop_shape: tuple[int, int],
    acquisition: str,
) -> Array:
    """Magnitude images of one brain volume (a slab of parallel slices).

    Args:
        rng: Random generator; the volume is a deterministic function of its state.
        num_slices: Number of slices ``S``.
        image_shape: ``(H, W)`` of the full field of view (the k-space size).
        crop_shape: ``(h, w)`` of the reconstruction crop; the head fills most of it.
        acquisition: One of :data:`BRAIN_PROTOCOLS` (orientation + contrast).

    Returns:
        Float32 array ``(S, H, W)``, non-negative, roughly in ``[0, 1.2]``.

    Raises:
        MissingDataDependency: nilearn (or nibabel) is not installed.
    """
    prefix = next((p for p in _ORIENTATIONS if acquisition.startswith(p)), None)
    contrast_name = acquisition[len(prefix) :] if prefix else ""
    if prefix is None or contrast_name not in BRAIN_CONTRASTS:
        raise ValueError(
            f"unknown brain acquisition {acquisition!r}; choose from {BRAIN_PROTOCOLS}"
        )
    orientation = _ORIENTATIONS[prefix]
    template = _load_template()
    big_h, big_w = image_shape
    h, w = crop_shape

    # Field of view of the crop (mm) and slab placement; the slab stays inside the brain.
    fov = rng.uniform(205.0, 250.0)
    spacing = rng.uniform(2.0, 5.0)
    axes = _AXES[orientation]
    extent = {"axial": 55.0, "coronal": 60.0, "sagittal": 50.0}[orientation]
    px = fov / h  # square pixels
    rows = (np.arange(big_h) - big_h // 2) * px
    cols = (np.arange(big_w) - big_w // 2) * px
    slc = rng.uniform(-extent, extent) + spacing * (np.arange(num_slices) - (num_slices - 1) / 2)
    grid = np.stack(np.meshgrid(slc, rows, cols, indexing="ij"))  # (3, S, H, W): s, row, col
    local = np.stack([grid[1], grid[2], grid[0]])  # row, column, slice (mm)

    scale = rng.uniform(0.88, 1.12) * rng.uniform(0.93, 1.07, size=3)
    rot = _rotation(rng, np.deg2rad(12.0), np.deg2rad(6.0))
    # A smooth deformation of a few mm, correlated over ~25 mm in-plane.
    shape3 = (num_slices, big_h, big_w)
    warp = [noise_field(rng, shape3, (25.0 / spacing, 25.0 / px, 25.0 / px)) for _ in range(3)]
    amplitude = rng.uniform(1.5, 4.0)
    template_mm = np.zeros_like(local)
    for out_axis, (t_axis, sign) in enumerate(axes):
        template_mm[t_axis] = sign * local[out_axis]
    template_mm = np.einsum("ij,j...->i...", rot, template_mm) / scale[:, None, None, None]
    template_mm = template_mm + amplitude * np.stack(warp)
    shift = rng.uniform(-4.0, 4.0, size=3)
    coords = template_mm + (template.center + shift)[:, None, None, None]
    sampled = [
        ndimage.map_coordinates(channel, coords, order=1, mode="constant", cval=cval)
        for channel, cval in zip(template.channels, (0.0, 0.0, 0.0, 0.0, 60.0), strict=True)
    ]
    t1, gm, wm, csf, dist = (s.astype(np.float32) for s in sampled)

    # Skull model from the distance to the brain surface (mm), with smoothly varying layers.
    coarse = noise_field(rng, shape3, (2.0, 40.0 / px, 40.0 / px))
    shell = rng.uniform(1.5, 3.0) * (1.0 + 0.3 * coarse)
    bone = rng.uniform(5.0, 8.0) * (1.0 + 0.15 * coarse)
    scalp = rng.uniform(4.0, 7.0) * (1.0 + 0.2 * coarse)

    def band(lo: Array | float, hi: Array | float) -> Array:
        edge = 0.6 * px
        out: Array = np.clip((dist - lo) / edge + 0.5, 0, 1) * np.clip(
            (hi - dist) / edge + 0.5, 0, 1
        )
        return out

    outside = dist > 0.0
    csf_shell = band(0.0, shell) * outside
    table = band(shell, shell + bone)
    diploe = band(shell + 0.3 * bone, shell + 0.7 * bone)
    skin = band(shell + bone, shell + bone + scalp)

    values = {k: v * rng.uniform(0.9, 1.1) for k, v in BRAIN_CONTRASTS[contrast_name].items()}
    fine = noise_field(rng, shape3, (1.0, 1.5, 1.5))
    img = gm * values["gm"] + wm * values["wm"] + csf * values["csf"]
    if contrast_name == "T1":
        img = 0.5 * img + 0.5 * t1 * (values["wm"] / 0.85)
    img = img * (1.0 + 0.03 * fine)
    img = img + csf_shell * values["csf"] + table * values["bone"]
    img = img + (diploe * (values["diploe"] - values["bone"]))
    img = img + skin * values["scalp"] * (1.0 + 0.08 * fine)
    img = np.clip(img, 0.0, None) ** rng.uniform(0.8, 1.25)
    # Bias field: a random second-order polynomial in the exponent, smooth over the crop.
    u = (np.arange(big_h) - big_h // 2) / (h / 2.0)
    v = (np.arange(big_w) - big_w // 2) / (w / 2.0)
    uu, vv = u[:, None], v[None, :]
    c = rng.uniform(-0.25, 0.25, size=5)
    bias = np.exp(c[0] * uu + c[1] * vv + c[2] * uu * vv + c[3] * uu**2 + c[4] * vv**2)
    img = img * bias[None].astype(np.float32)
    # The receive coil covers the crop; signal fades in the oversampled readout margins.
    coverage = np.clip((1.3 - np.abs(u)) / 0.1, 0.0, 1.0)[None, :, None]
    out: Array = (img * coverage).astype(np.float32)
    return out
