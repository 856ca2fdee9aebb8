"""A lazy, robust slice dataset over a folder of fastMRI h5 files.

Files are read exactly as fastMRI publishes them:

- ``kspace``: ``(S, H, W)`` (single-coil) or ``(S, C, H, W)`` (multi-coil), complex.
- Target ``reconstruction_esc`` (single-coil) or ``reconstruction_rss`` (multi-coil),
  ``(S, h, w)``; absent in test files, which carry an undersampling ``mask`` of length ``W``.
- Attributes ``max``, ``norm``, ``acquisition``, ``patient_id`` and, in test files,
  ``acceleration`` and ``num_low_frequency``.
- ``ismrmrd_header``: XML giving the reconstruction size and the measured phase-encode columns.

**3-D Cartesian volumes** (root attribute ``encoding = "3d"``; the built-in ``3d`` presets
write them) use the same datasets with the first axis changed: ``kspace`` is the 3-D k-space
``(Kx, ky, kz)`` or ``(Kx, C, ky, kz)``, its first axis the fully sampled readout frequency;
the target holds one ``(h, w)`` image per readout position, ``(Kx, h, w)``; the header's
sizes and padding describe the ky-kz plane (padding along kz). Item ``x`` is the ky-kz plane
at readout position ``x``: the loader inverse-transforms the readout (centered, orthonormal)
once per volume, as scanners do, and keeps transformed volumes in memory while their planes
are read (up to ``volume_cache_bytes``). A volume that holds NaN anywhere is unreadable in every
plane (the transform spreads it).

Error policy:

- At construction every ``*.h5`` file's *metadata* is checked (no k-space is read). A file
  that cannot be opened, lacks ``kspace``, has the wrong number of dimensions or a non-complex
  dtype, an unreadable header, or a target whose shape disagrees with the header is skipped
  with a :class:`DataWarning` naming it and the reason, and recorded in
  :attr:`SliceDataset.skipped`. Construction fails only if no valid file remains or the
  skipped files exceed ``max_skipped_fraction`` of those found.
- Slice contents are checked when read: a slice whose k-space or target holds NaN or inf,
  finite values too large for float32 arithmetic (above :data:`MAX_MAGNITUDE`), or whose
  bytes cannot be read, raises :class:`CorruptSliceError` naming the file and slice.
  Data are never silently repaired; run ``activemri data check DIR`` to find such slices
  ahead of a long job.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from activemri.data.header import HeaderError, KSpaceGeometry, parse_header
from activemri.data.splits import DEFAULT_SPLIT_FRACTIONS, split_volumes

__all__ = [
    "MAX_MAGNITUDE",
    "CorruptSliceError",
    "DataWarning",
    "SliceBatch",
    "SliceDataset",
    "SliceMeta",
    "SliceSample",
    "VolumeInfo",
    "collate_slices",
    "inspect_volume",
    "readout_transform",
    "slice_problem",
]

SINGLECOIL_TARGET = "reconstruction_esc"
MULTICOIL_TARGET = "reconstruction_rss"

MAX_MAGNITUDE = 1.0e9
"""Largest k-space energy ``sqrt(sum |k|^2)`` of a slice, largest absolute target value, and
largest ``max`` attribute that count as data. By Parseval the energy bounds every value of
every zero-filled image of the slice, and float32 SSIM forms fourth powers of image values,
which overflow (NaN metrics and observations) a little above 1e9. fastMRI data are below 1."""


class DataWarning(UserWarning):
    """A data file was skipped or looks suspicious."""


_FASTMRI_ANATOMY = {
    "CORPD_FBK": "knee", "CORPDFS_FBK": "knee", "AXT1": "brain", "AXT1PRE": "brain",
    "AXT1POST": "brain", "AXT2": "brain", "AXFLAIR": "brain",
}  # fmt: skip


class CorruptSliceError(ValueError):
    """A slice could not be read or holds non-finite values."""


class InvalidVolumeError(ValueError):
    """A file is not a usable fastMRI volume; the message says why."""


@dataclass(frozen=True)
class VolumeInfo:
    """Metadata of one valid volume (one h5 file), read without touching k-space values.

    Attributes:
        path: The h5 file.
        num_slices: ``S``.
        num_coils: ``C`` (1 for single-coil files).
        kspace_shape: ``(H, W)`` of each slice.
        geometry: Sizes and measured columns (from the header, or inferred when absent).
        target_key: Name of the target dataset, or ``None`` (test files).
        attrs: The file's root attributes as plain Python values.
        sampled: The file's own undersampling mask (dataset ``mask`` of test files), one
            bool per column, or ``None`` when every column was sampled.
    """

    path: Path
    num_slices: int
    num_coils: int
    kspace_shape: tuple[int, int]
    geometry: KSpaceGeometry
    target_key: str | None
    attrs: Mapping[str, Any]
    sampled: tuple[bool, ...] | None = None

    @property
    def acquisition(self) -> str | None:
        """The ``acquisition`` attribute (e.g. ``CORPD_FBK``), if present."""
        value = self.attrs.get("acquisition")
        return None if value is None else str(value)

    @property
    def encoding(self) -> str:
        """``"2d"`` (slices) or ``"3d"`` (a 3-D volume whose items are ky-kz planes)."""
        return "3d" if str(self.attrs.get("encoding", "2d")).lower() == "3d" else "2d"

    @property
    def anatomy(self) -> str | None:
        """The anatomy, if known.

        The ``anatomy`` attribute of built-in files, else inferred from fastMRI's protocol
        names (``CORPD*_FBK`` knee, ``AX*`` brain), else ``None``.
        """
        value = self.attrs.get("anatomy")
        if value is not None:
            return str(value)
        return _FASTMRI_ANATOMY.get(self.acquisition or "")


@dataclass(frozen=True)
class SliceMeta:
    """Metadata that travels with every slice.

    Attributes:
        file: Source h5 file.
        slice_index: Index of the slice in its volume.
        max_value: Volume maximum of the target (attribute ``max``), the SSIM/PSNR data range
            fastMRI uses; ``None`` when the file does not carry a finite positive one.
        padding_left: First measured phase-encode column.
        padding_right: One past the last measured phase-encode column.
        recon_size: ``(h, w)`` of the target.
        acquisition: Acquisition protocol, if known.
        patient_id: Patient identifier, if known.
        num_low_frequency: ACS lines of an undersampled test file, if given.
        acceleration: Acceleration of an undersampled test file, if given.
        encoding: ``"2d"`` (a slice) or ``"3d"`` (the ky-kz plane of a 3-D volume at one
            readout position; both of its axes are phase encodes).
        sampled: The file's own undersampling mask, one bool per column (test files), or
            ``None``; columns it leaves out were never measured.
    """

    file: Path
    slice_index: int
    max_value: float | None
    padding_left: int
    padding_right: int
    recon_size: tuple[int, int]
    acquisition: str | None = None
    patient_id: str | None = None
    num_low_frequency: int | None = None
    acceleration: float | None = None
    encoding: str = "2d"
    sampled: tuple[bool, ...] | None = None

    def valid_columns(self, width: int) -> torch.Tensor:
        """Bool ``(width,)`` tensor, True for measured phase-encode columns.

        Measured: inside the header's encoding limits (not padding) and, for an undersampled
        file (test files), in the file's own mask.
        """
        cols = torch.arange(width)
        valid = (cols >= self.padding_left) & (cols < self.padding_right)
        if self.sampled is not None and len(self.sampled) == width:
            valid &= torch.tensor(self.sampled, dtype=torch.bool)
        return valid


@dataclass(frozen=True)
class SliceSample:
    """One slice: the item type of :class:`SliceDataset`.

    Attributes:
        kspace: Complex64 tensor ``(C, H, W)`` (``C = 1`` for single-coil).
        target: Float32 tensor ``(h, w)``, or ``None`` when the file has no target.
        meta: Where the slice comes from and its geometry.
        mask: The file's own undersampling mask ``(W,)`` bool (test files), else ``None``.
    """

    kspace: torch.Tensor
    target: torch.Tensor | None
    meta: SliceMeta
    mask: torch.Tensor | None = None


@dataclass(frozen=True)
class SliceBatch:
    """Several slices of equal shape stacked along a batch dimension.

    Attributes:
        kspace: Complex64 ``(B, C, H, W)``.
        target: Float32 ``(B, h, w)``, or ``None`` if any slice lacks a target.
        meta: Per-slice metadata, in batch order.
    """

    kspace: torch.Tensor
    target: torch.Tensor | None
    meta: list[SliceMeta]


def collate_slices(samples: Sequence[SliceSample]) -> SliceBatch:
    """Stack slices into a :class:`SliceBatch` (use as a DataLoader ``collate_fn``).

    Args:
        samples: Slices whose k-space shapes agree and whose target shapes agree.

    Returns:
        The stacked batch.
    """
    if not samples:
        raise ValueError("cannot collate an empty list of slices")
    shapes = {tuple(s.kspace.shape) for s in samples}
    if len(shapes) != 1:
        raise ValueError(f"slices have different k-space shapes {sorted(shapes)}; batch by shape")
    targets = [s.target for s in samples]
    target = None
    if all(t is not None for t in targets):
        target = torch.stack([t for t in targets if t is not None])
    return SliceBatch(torch.stack([s.kspace for s in samples]), target, [s.meta for s in samples])


def _attr_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _target_key(hf: h5py.File, multicoil: bool, requested: str | None) -> str | None:
    if requested != "auto":
        if requested is not None and requested not in hf:
            raise InvalidVolumeError(f"no target dataset {requested!r}")
        return requested
    preferred = (MULTICOIL_TARGET,) if multicoil else (SINGLECOIL_TARGET, MULTICOIL_TARGET)
    return next((key for key in preferred if key in hf), None)


def inspect_volume(path: Path, target_key: str | None = "auto") -> VolumeInfo:
    """Read and validate one file's metadata (no k-space values are read).

    Args:
        path: The h5 file.
        target_key: Target dataset name; ``"auto"`` picks ``reconstruction_esc`` for
            single-coil and ``reconstruction_rss`` for multi-coil files; ``None`` ignores
            targets.

    Returns:
        The volume's :class:`VolumeInfo`.

    Raises:
        InvalidVolumeError: With the reason, if the file is not a usable fastMRI volume.
    """
    try:
        hf = h5py.File(path, "r")
    except Exception as exc:  # h5py raises OSError, but any failure means "cannot open"
        raise InvalidVolumeError(f"cannot open as HDF5 ({exc})") from exc
    with hf:
        try:
            return _inspect_open_volume(path, hf, target_key)
        except InvalidVolumeError:
            raise
        except Exception as exc:  # a damaged file can fail anywhere in its metadata
            raise InvalidVolumeError(f"unreadable metadata ({type(exc).__name__}: {exc})") from exc


def _inspect_open_volume(path: Path, hf: h5py.File, target_key: str | None) -> VolumeInfo:
    if "kspace" not in hf:
        raise InvalidVolumeError("no 'kspace' dataset")
    kspace = hf["kspace"]
    if not isinstance(kspace, h5py.Dataset):
        raise InvalidVolumeError("'kspace' is not a dataset")
    if kspace.ndim not in (3, 4):
        raise InvalidVolumeError(
            f"'kspace' has {kspace.ndim} dimensions {kspace.shape}; expected (S, H, W) "
            "or (S, C, H, W)"
        )
    if kspace.dtype.kind != "c":
        raise InvalidVolumeError(f"'kspace' has dtype {kspace.dtype}; expected complex")
    num_slices = int(kspace.shape[0])
    if num_slices == 0 or 0 in kspace.shape:
        raise InvalidVolumeError(f"'kspace' is empty {kspace.shape}")
    multicoil = kspace.ndim == 4
    num_coils = int(kspace.shape[1]) if multicoil else 1
    height, width = int(kspace.shape[-2]), int(kspace.shape[-1])
    key = _target_key(hf, multicoil, target_key)
    target_shape = tuple(hf[key].shape) if key is not None else None
    if target_shape is not None and (len(target_shape) != 3 or target_shape[0] != num_slices):
        raise InvalidVolumeError(
            f"target {key!r} has shape {target_shape}; expected ({num_slices}, h, w)"
        )
    if "ismrmrd_header" in hf:
        try:
            geometry = parse_header(hf["ismrmrd_header"][()])
        except HeaderError as exc:
            raise InvalidVolumeError(str(exc)) from exc
        if geometry.encoded_size[1] != width:
            raise InvalidVolumeError(
                f"header encoded width {geometry.encoded_size[1]} != k-space width {width}"
            )
    elif target_shape is not None:
        # Without a header, nothing is known to be padding and the target defines the size.
        geometry = KSpaceGeometry((height, width), (target_shape[1], target_shape[2]), 0, width)
    else:
        raise InvalidVolumeError("no 'ismrmrd_header' and no target: reconstruction size unknown")
    if target_shape is not None and target_shape[1:] != geometry.recon_size:
        raise InvalidVolumeError(
            f"target {key!r} slices are {target_shape[1:]} but the header's recon size is "
            f"{geometry.recon_size}"
        )
    sampled = None
    if "mask" in hf:
        if tuple(hf["mask"].shape) != (width,):
            raise InvalidVolumeError(f"'mask' has shape {hf['mask'].shape}; expected ({width},)")
        values = np.asarray(hf["mask"][()])
        if not np.isfinite(values.astype(float)).all():
            raise InvalidVolumeError("'mask' has NaN or inf values")
        sampled = tuple(bool(v) for v in values.astype(bool))
        if not any(sampled):
            raise InvalidVolumeError("'mask' samples no column")
    attrs = {name: _attr_value(value) for name, value in hf.attrs.items()}
    return VolumeInfo(path, num_slices, num_coils, (height, width), geometry, key, attrs, sampled)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _positive_or_none(value: Any) -> float | None:
    """A usable data range, or ``None`` (then metrics fall back to the slice maximum)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) and 0 < number <= MAX_MAGNITUDE else None


def _kspace_energy(kspace: np.ndarray) -> float:
    """``sqrt(sum |k|^2)`` of finite complex64 values, computed without float32 overflow.

    Where the cheap bound ``peak * sqrt(size)`` is within :data:`MAX_MAGNITUDE`, that bound
    is returned instead (all a caller comparing with the limit needs).
    """
    parts = np.ascontiguousarray(kspace).view(np.float32)
    peak = float(np.abs(parts).max()) if parts.size else 0.0
    if peak == 0.0 or peak * np.sqrt(parts.size) <= MAX_MAGNITUDE:
        return peak * float(np.sqrt(parts.size))  # an upper bound, exact enough to pass
    scaled = parts.astype(np.float64).ravel() / peak
    return peak * float(np.sqrt(scaled @ scaled))


def slice_problem(
    kspace: np.ndarray, target: np.ndarray | None, target_key: str | None = None
) -> str | None:
    """Why a slice's values are not usable data, or ``None`` when they are.

    Args:
        kspace: Complex64 k-space of the slice (any shape).
        target: Its float target, if any.
        target_key: The target's dataset name, for the message.

    Returns:
        ``"k-space has NaN or inf values"``, a too-large-values message (see
        :data:`MAX_MAGNITUDE`), the same for the target, or ``None``.
    """
    if not np.isfinite(kspace).all():
        return "k-space has NaN or inf values"
    energy = _kspace_energy(kspace)
    if energy > MAX_MAGNITUDE:
        return (
            f"k-space energy {energy:.3g} exceeds {MAX_MAGNITUDE:g}: its images would "
            "overflow float32 arithmetic"
        )
    if target is not None:
        name = repr(target_key) if target_key else "target"
        if not np.isfinite(target).all():
            return f"target {name} has NaN or inf values"
        peak = float(np.abs(target).max()) if target.size else 0.0
        if peak > MAX_MAGNITUDE:
            return (
                f"target {name} reaches {peak:.3g}, above {MAX_MAGNITUDE:g}: its metrics "
                "would overflow float32 arithmetic"
            )
    return None


def readout_transform(kspace: np.ndarray, inverse: bool) -> np.ndarray:
    """Centered orthonormal 1-D (inverse) FFT along axis 0, the readout of a 3-D volume.

    The loader's inverse transform of 3-D k-space ``(kx, ...)`` into ky-kz planes, and the
    generator's forward one; the dtype is kept.
    """
    axis_fn = np.fft.ifft if inverse else np.fft.fft
    out = np.fft.fftshift(axis_fn(np.fft.ifftshift(kspace, axes=0), axis=0, norm="ortho"), axes=0)
    return out.astype(kspace.dtype, copy=False)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


class SliceDataset(Dataset[SliceSample]):
    """Slices of a folder of fastMRI-format h5 volumes, read lazily one slice per item.

    Construction reads only metadata (shapes, attributes, headers) of the sorted ``*.h5``
    files and indexes their slices; each item opens its file and reads one slice. See the
    module docstring for the error policy.

    Args:
        root: A folder of ``*.h5`` files (not searched recursively), or a single h5 file.
        split: ``None`` for every volume, or a split name from ``split_fractions``.
        split_fractions: Split name to fraction of volumes (default 0.8/0.1/0.1 train/val/test).
        split_seed: Seed of the volume-level split.
        acquisitions: Keep only volumes with one of these ``acquisition`` attributes.
        anatomies: Keep only volumes of these anatomies (:attr:`VolumeInfo.anatomy`).
        kspace_widths: Keep only volumes whose k-space width ``W`` is one of these.
        sample_rate: Fraction of the remaining volumes to keep (whole volumes), seeded.
        sample_seed: Seed of the volume sampling.
        target_key: Target dataset; ``"auto"`` (``reconstruction_esc`` for single-coil,
            ``reconstruction_rss`` for multi-coil files, none if absent) or ``None`` to never
            read targets.
        max_skipped_fraction: Fail if more than this fraction of the files found is invalid.
        warn: Emit a :class:`DataWarning` for each skipped file.
        volume_cache_bytes: Memory for 3-D volumes whose readout has been transformed (read
            once, then served plane by plane; least recently used dropped first, the latest
            always kept). Shuffled access to volumes larger than this re-reads them.

    Attributes:
        volumes: The valid, selected volumes, sorted by path.
        skipped: ``(path, reason)`` of every invalid file found, sorted by path.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        split: str | None = None,
        split_fractions: Mapping[str, float] = DEFAULT_SPLIT_FRACTIONS,
        split_seed: int = 0,
        acquisitions: Iterable[str] | None = None,
        anatomies: Iterable[str] | None = None,
        kspace_widths: Iterable[int] | None = None,
        sample_rate: float = 1.0,
        sample_seed: int = 0,
        target_key: str | None = "auto",
        max_skipped_fraction: float = 0.5,
        warn: bool = True,
        volume_cache_bytes: int = 1 << 29,
    ) -> None:
        root = Path(root)
        if root.is_file():
            files = [root]
        elif root.is_dir():
            files = sorted(p for p in root.glob("*.h5") if p.is_file())
        else:
            raise FileNotFoundError(f"data root {root} does not exist")
        if not files:
            raise FileNotFoundError(f"no *.h5 files in {root}")
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")

        self.root = root
        self.skipped: list[tuple[Path, str]] = []
        valid: list[VolumeInfo] = []
        for path in files:
            try:
                valid.append(inspect_volume(path, target_key))
            except InvalidVolumeError as exc:
                self.skipped.append((path, str(exc)))
                if warn:
                    warnings.warn(f"skipping {path}: {exc}", DataWarning, stacklevel=2)
        if not valid:
            reasons = "; ".join(f"{p.name}: {r}" for p, r in self.skipped[:5])
            raise ValueError(f"no valid fastMRI volume in {root} ({reasons})")
        if len(self.skipped) > max_skipped_fraction * len(files):
            raise ValueError(
                f"{len(self.skipped)} of {len(files)} files in {root} are invalid, more than "
                f"max_skipped_fraction={max_skipped_fraction}; first: "
                f"{self.skipped[0][0].name}: {self.skipped[0][1]}"
            )

        found_widths = {v.kspace_shape[1] for v in valid}
        if split is not None:
            if split not in split_fractions:
                raise ValueError(f"unknown split {split!r}; choose from {list(split_fractions)}")
            # Split over every file name found, so a volume's split does not depend on filters
            # or on which other files happen to be broken.
            chosen = set(split_volumes([p.name for p in files], split_fractions, split_seed)[split])
            valid = [v for v in valid if v.path.name in chosen]
        if acquisitions is not None:
            wanted = set(acquisitions)
            valid = [v for v in valid if v.acquisition in wanted]
        if anatomies is not None:
            kinds = set(anatomies)
            valid = [v for v in valid if v.anatomy in kinds]
        if kspace_widths is not None:
            widths = {int(w) for w in kspace_widths}
            valid = [v for v in valid if v.kspace_shape[1] in widths]
        if sample_rate < 1.0 and valid:
            keep = max(1, round(sample_rate * len(valid)))
            rng = np.random.default_rng(sample_seed)
            picked = sorted(rng.choice(len(valid), size=keep, replace=False).tolist())
            valid = [valid[i] for i in picked]
        if not valid:
            raise ValueError(
                f"no volume in {root} matches split={split!r}, acquisitions={acquisitions}, "
                f"anatomies={anatomies}, kspace_widths={kspace_widths} (k-space widths found: "
                f"{sorted(found_widths)})"
            )
        self.volumes: list[VolumeInfo] = valid
        # 3-D volumes with the readout transformed, most recent last, keyed by file identity
        self._volumes: OrderedDict[tuple[Path, int, int], np.ndarray] = OrderedDict()
        self.volume_cache_bytes = int(volume_cache_bytes)
        self._index: list[tuple[int, int]] = [
            (v, s) for v, info in enumerate(valid) for s in range(info.num_slices)
        ]

    def __len__(self) -> int:
        return len(self._index)

    def slice_shape(self, index: int) -> tuple[int, int, int]:
        """``(C, H, W)`` k-space shape of item ``index``, from metadata (nothing is read)."""
        info = self.volumes[self._index[index][0]]
        return (info.num_coils, *info.kspace_shape)

    def slice_meta(self, index: int) -> SliceMeta:
        """Metadata of item ``index`` without reading the slice."""
        vol, slice_index = self._index[index]
        info = self.volumes[vol]
        geometry = info.geometry
        acceleration = info.attrs.get("acceleration")
        patient = info.attrs.get("patient_id")
        return SliceMeta(
            file=info.path,
            slice_index=slice_index,
            max_value=_positive_or_none(info.attrs.get("max")),
            padding_left=geometry.padding_left,
            padding_right=geometry.padding_right,
            recon_size=geometry.recon_size,
            acquisition=info.acquisition,
            patient_id=None if patient is None else str(patient),
            num_low_frequency=_optional_int(info.attrs.get("num_low_frequency")),
            acceleration=_optional_float(acceleration),
            encoding=info.encoding,
            sampled=info.sampled,
        )

    def __getitem__(self, index: int) -> SliceSample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} slices")
        index %= len(self)
        vol, slice_index = self._index[index]
        info = self.volumes[vol]
        meta = self.slice_meta(index)
        where = f"{info.path} slice {slice_index}"
        try:
            with h5py.File(info.path, "r") as hf:
                if info.encoding == "3d":
                    kspace = self._plane(info.path, hf, slice_index)
                else:
                    kspace = np.asarray(hf["kspace"][slice_index], dtype=np.complex64)
                target = None
                if info.target_key is not None:
                    target = np.asarray(hf[info.target_key][slice_index], dtype=np.float32)
                mask = np.asarray(hf["mask"][()]).astype(bool) if "mask" in hf else None
        except Exception as exc:  # any read failure of a damaged file
            raise CorruptSliceError(f"{where}: cannot read ({type(exc).__name__}: {exc})") from exc
        problem = slice_problem(kspace, target, info.target_key)
        if problem is not None:
            raise CorruptSliceError(f"{where}: {problem}")
        kspace_t = torch.from_numpy(kspace)
        if kspace_t.ndim == 2:
            kspace_t = kspace_t.unsqueeze(0)
        return SliceSample(
            kspace=kspace_t,
            target=None if target is None else torch.from_numpy(target),
            meta=meta,
            mask=None if mask is None else torch.from_numpy(mask),
        )

    def _plane(self, path: Path, hf: h5py.File, position: int) -> np.ndarray:
        """The ky-kz plane at readout ``position`` of a 3-D volume (see the module docstring).

        Transformed volumes are kept while they fit in ``volume_cache_bytes`` (the latest
        always), keyed by the file's path, size and modification time, so a file rewritten
        on disk is read again.
        """
        stat = path.stat()
        key = (path, stat.st_size, stat.st_mtime_ns)
        hybrid = self._volumes.get(key)
        if hybrid is None:
            volume = np.asarray(hf["kspace"][()], dtype=np.complex64)
            with np.errstate(invalid="ignore", over="ignore"):
                hybrid = readout_transform(volume, inverse=True)
            for old in [k for k in self._volumes if k[0] == path]:
                del self._volumes[old]
            self._volumes[key] = hybrid
            while len(self._volumes) > 1 and (
                sum(v.nbytes for v in self._volumes.values()) > self.volume_cache_bytes
            ):
                self._volumes.popitem(last=False)
        self._volumes.move_to_end(key)
        return np.ascontiguousarray(hybrid[position])

    def __repr__(self) -> str:
        return (
            f"SliceDataset(root={str(self.root)!r}, volumes={len(self.volumes)}, "
            f"slices={len(self)}, skipped={len(self.skipped)})"
        )
