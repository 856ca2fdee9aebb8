"""Built-in data: simulated knee volumes written in fastMRI's exact h5 format.

Every component of activemri runs on these files through the same code path as on real
fastMRI data: ``kspace`` ``(S, H, W)`` or ``(S, C, H, W)`` complex64, the target
``reconstruction_esc`` (single-coil) or ``reconstruction_rss`` (multi-coil), attributes
``max``, ``norm``, ``acquisition`` and ``patient_id``, and an ISMRMRD header declaring the
reconstruction size and the zero-padded phase-encode edge columns.

Simulation of one volume:

1. Magnitude anatomy from :func:`activemri.data.phantom.knee_volume` on the full field of
   view (readout oversampling gives a taller image than the crop, as fastMRI knee's 640 rows
   for a 320-row target).
2. A smooth, non-zero phase (linear ramp plus a low-frequency field), so k-space is not
   Hermitian-symmetric, as in real acquisitions.
3. Multi-coil: smooth complex sensitivities of coils around the leg, normalized so that
   ``sum_c |S_c|^2 = 1``.
4. ``fft2c``, complex Gaussian noise at the preset SNR (mean object magnitude over the
   per-sample noise standard deviation), zeroed edge columns outside the measured range.
5. Target = center crop of the root-sum-of-squares of ``ifft2c`` of the written k-space, so
   targets, loader and FFT agree exactly.

Everything is deterministic per ``(seed, volume index)``: volume ``i`` is the same whatever
the number of volumes requested.

**3-D presets** (``encoding="3d"``: ``3d``, ``3d-multicoil``, ``tiny3d``) write 3-D Cartesian
volumes instead: the anatomy's ``S`` slices are stacked along a fully sampled readout axis,
and ``kspace`` is the 3-D transform ``(kx, [C], ky, kz)`` (the layout of
:mod:`activemri.data.dataset`, attribute ``encoding = "3d"``), noise added there; the target
of readout position ``x`` is the RSS image of the ky-kz plane the loader derives. Episodes
on them select ky-kz points (:class:`activemri.geometry.Points`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from numpy.typing import NDArray

from activemri._io import atomic_path, atomic_write_text
from activemri.data.body import BODY_PROTOCOLS, body_volume
from activemri.data.brain import BRAIN_PROTOCOLS, brain_volume
from activemri.data.dataset import readout_transform
from activemri.data.header import KSpaceGeometry, build_header
from activemri.data.phantom import CONTRASTS, knee_volume, noise_field
from activemri.kspace import center_crop, fft2c, ifft2c, rss

__all__ = [
    "ANATOMIES",
    "GENERATOR_VERSION",
    "PRESETS",
    "BuiltinPreset",
    "SimulatedVolume",
    "default_cache_dir",
    "ensure_builtin",
    "make_builtin",
    "simulate_volume",
]

GENERATOR_VERSION = 1
PROVENANCE_ATTR = "activemri_builtin"

AnatomyFn = Callable[
    [np.random.Generator, int, tuple[int, int], tuple[int, int], str], NDArray[np.floating]
]


@dataclass(frozen=True)
class Anatomy:
    """One anatomy the generator can simulate.

    Attributes:
        simulate: ``(rng, num_slices, image_shape, crop_shape, acquisition) -> (S, H, W)``
            non-negative magnitude images.
        protocols: The acquisition names it accepts (written to the ``acquisition`` attribute).
        source: Where its anatomy comes from (for reports and model cards).
    """

    simulate: AnatomyFn
    protocols: tuple[str, ...]
    source: str


#: Anatomies by name (the ``anatomy`` attribute of every built-in file).
ANATOMIES: dict[str, Anatomy] = {
    "knee": Anatomy(knee_volume, tuple(CONTRASTS), "procedural coronal knee (activemri)"),
    "brain": Anatomy(
        brain_volume, BRAIN_PROTOCOLS, "MNI152 ICBM 2009a T1 and tissue maps (nilearn), deformed"
    ),
    "body": Anatomy(body_volume, BODY_PROTOCOLS, "procedural axial abdomen (activemri)"),
}


@dataclass(frozen=True)
class BuiltinPreset:
    """Sizes and acquisition settings of a built-in data set.

    Attributes:
        name: Preset name.
        kspace_shape: ``(H, W)``: readout samples and phase-encode lines.
        recon_size: ``(h, w)`` of the targets (center crop of the full image).
        num_volumes: Number of volumes (files).
        slices_per_volume: Slices ``S`` per volume.
        num_coils: 1 for single-coil (``(S, H, W)`` k-space), more for multi-coil.
        padding: ``(left, right)`` zero-padded phase-encode columns at each edge.
        snr: Mean object magnitude over the noise standard deviation, per protocol scale
            (fat-suppressed scans get 60% of it, as they are noisier).
        acquisitions: Protocols drawn uniformly per volume among those of its anatomy;
            ``None`` for every protocol of each anatomy.
        anatomies: Anatomies of :data:`ANATOMIES`; volume ``i`` has anatomy
            ``anatomies[i % len(anatomies)]``, so every anatomy is equally represented.
        encoding: ``"2d"`` (slices, fastMRI's layout) or ``"3d"``: 3-D Cartesian volumes whose
            ``slices_per_volume`` positions lie along a fully sampled readout and whose
            ``kspace_shape`` is the ky-kz plane (see the module docstring).
    """

    name: str
    kspace_shape: tuple[int, int]
    recon_size: tuple[int, int]
    num_volumes: int
    slices_per_volume: int
    num_coils: int = 1
    padding: tuple[int, int] = (0, 0)
    snr: float = 30.0
    acquisitions: tuple[str, ...] | None = None
    anatomies: tuple[str, ...] = ("knee",)
    encoding: str = "2d"

    def __post_init__(self) -> None:
        if self.encoding not in ("2d", "3d"):
            raise ValueError(f"encoding must be '2d' or '3d', got {self.encoding!r}")
        big_h, big_w = self.kspace_shape
        h, w = self.recon_size
        if not (0 < h <= big_h and 0 < w <= big_w):
            raise ValueError(f"recon_size {self.recon_size} must fit in {self.kspace_shape}")
        if min(self.num_volumes, self.slices_per_volume, self.num_coils) < 1:
            raise ValueError("num_volumes, slices_per_volume and num_coils must be >= 1")
        left, right = self.padding
        if left < 0 or right < 0 or left + right >= big_w:
            raise ValueError(f"padding {self.padding} leaves no measured column of {big_w}")
        if self.snr <= 0:
            raise ValueError(f"snr must be positive, got {self.snr}")
        unknown_anatomies = set(self.anatomies) - set(ANATOMIES)
        if not self.anatomies or unknown_anatomies:
            raise ValueError(f"anatomies must be among {list(ANATOMIES)}, got {self.anatomies}")
        for anatomy in self.anatomies:
            if not self.protocols(anatomy):
                raise ValueError(
                    f"acquisitions {self.acquisitions} leave no protocol for anatomy "
                    f"{anatomy!r}; it has {ANATOMIES[anatomy].protocols}"
                )
        if self.acquisitions is not None:
            known = {p for a in self.anatomies for p in ANATOMIES[a].protocols}
            if not self.acquisitions or set(self.acquisitions) - known:
                raise ValueError(f"acquisitions must be among {sorted(known)}")

    def protocols(self, anatomy: str) -> tuple[str, ...]:
        """The protocols volumes of ``anatomy`` draw from."""
        own = ANATOMIES[anatomy].protocols
        if self.acquisitions is None:
            return own
        return tuple(p for p in own if p in self.acquisitions)

    def anatomy_of(self, index: int) -> str:
        """The anatomy of volume ``index``."""
        return self.anatomies[index % len(self.anatomies)]

    @property
    def geometry(self) -> KSpaceGeometry:
        """The header geometry every volume of this preset declares."""
        left, right = self.padding
        width = self.kspace_shape[1]
        return KSpaceGeometry(self.kspace_shape, self.recon_size, left, width - right)


PRESETS: dict[str, BuiltinPreset] = {
    p.name: p
    for p in (
        BuiltinPreset("tiny", (40, 36), (32, 32), 6, 3, padding=(2, 2)),
        BuiltinPreset(
            "default", (128, 128), (128, 128), 100, 8, snr=25.0, anatomies=("brain", "knee")
        ),
        BuiltinPreset(
            "multicoil",
            (128, 128),
            (128, 128),
            60,
            8,
            num_coils=8,
            snr=25.0,
            anatomies=("brain", "knee"),
        ),
        BuiltinPreset("body", (128, 128), (128, 128), 24, 8, snr=25.0, anatomies=("body",)),
        BuiltinPreset(
            "body-multicoil",
            (128, 128),
            (128, 128),
            24,
            8,
            num_coils=8,
            snr=25.0,
            anatomies=("body",),
        ),
        BuiltinPreset(
            "large", (640, 368), (320, 320), 48, 8, padding=(17, 17), anatomies=("brain", "knee")
        ),
        BuiltinPreset(
            "body-large", (640, 368), (320, 320), 12, 8, padding=(17, 17), anatomies=("body",)
        ),
        BuiltinPreset("knee", (640, 368), (320, 320), 8, 12, padding=(17, 17)),
        BuiltinPreset(
            "knee-multicoil", (640, 368), (320, 320), 2, 6, num_coils=15, padding=(17, 17)
        ),
        BuiltinPreset("tiny3d", (16, 12), (16, 12), 4, 4, encoding="3d"),
        BuiltinPreset(
            "3d", (64, 48), (64, 48), 24, 24, snr=25.0, anatomies=("brain", "knee"), encoding="3d"
        ),
        BuiltinPreset(
            "3d-body", (64, 48), (64, 48), 6, 24, snr=25.0, anatomies=("body",), encoding="3d"
        ),
        BuiltinPreset(
            "3d-body-multicoil",
            (64, 48),
            (64, 48),
            6,
            24,
            num_coils=8,
            snr=25.0,
            anatomies=("body",),
            encoding="3d",
        ),
        BuiltinPreset(
            "3d-multicoil",
            (64, 48),
            (64, 48),
            24,
            24,
            num_coils=8,
            snr=25.0,
            anatomies=("brain", "knee"),
            encoding="3d",
        ),
    )
}


@dataclass(frozen=True)
class SimulatedVolume:
    """One simulated volume, ready to be written.

    Attributes:
        kspace: ``(S, H, W)`` or ``(S, C, H, W)`` complex64.
        target: ``(S, h, w)`` float32.
        acquisition: Protocol name.
        geometry: Header geometry.
        patient_id: Synthetic patient identifier.
        anatomy: Anatomy name.
        encoding: ``"2d"`` or ``"3d"`` (see :class:`BuiltinPreset`).
    """

    kspace: NDArray[np.complex64]
    target: NDArray[np.float32]
    acquisition: str
    geometry: KSpaceGeometry
    patient_id: str
    anatomy: str = "knee"
    encoding: str = "2d"


def _coil_maps(
    rng: np.random.Generator, num_coils: int, image_shape: tuple[int, int], crop: tuple[int, int]
) -> NDArray[np.complex128]:
    """Smooth complex coil sensitivities around the leg, with ``sum_c |S_c|^2 = 1``."""
    big_h, big_w = image_shape
    u = ((np.arange(big_h) - big_h // 2) / (crop[0] / 2.0))[:, None]
    v = ((np.arange(big_w) - big_w // 2) / (crop[1] / 2.0))[None, :]
    angles = 2 * np.pi * (np.arange(num_coils) + rng.uniform(-0.2, 0.2, num_coils)) / num_coils
    maps = np.empty((num_coils, big_h, big_w), dtype=np.complex128)
    for c, theta in enumerate(angles):
        cu, cv = 1.3 * np.sin(theta), 1.15 * np.cos(theta)
        width = rng.uniform(0.5, 0.8)
        magnitude = 1.0 / (1.0 + ((u - cu) ** 2 + (v - cv) ** 2) / width**2)
        phase = rng.uniform(-np.pi, np.pi) + rng.uniform(-0.8, 0.8) * u + rng.uniform(-0.8, 0.8) * v
        maps[c] = magnitude * np.exp(1j * phase)
    normalized: NDArray[np.complex128] = maps / np.sqrt(
        (np.abs(maps) ** 2).sum(axis=0, keepdims=True)
    )
    return normalized


def simulate_volume(
    preset: BuiltinPreset, seed: int, index: int, num_coils: int | None = None
) -> SimulatedVolume:
    """Simulate volume ``index`` of a preset, deterministically.

    Args:
        preset: Sizes and settings.
        seed: Data-set seed.
        index: Volume index; each ``(seed, index)`` pair has its own random stream.
        num_coils: Overrides ``preset.num_coils``.

    Returns:
        The simulated volume.
    """
    coils = preset.num_coils if num_coils is None else num_coils
    rng = np.random.default_rng(
        np.random.SeedSequence([seed, GENERATOR_VERSION], spawn_key=(index,))
    )
    anatomy = preset.anatomy_of(index)
    acquisition = str(rng.choice(list(preset.protocols(anatomy))))
    shape = preset.kspace_shape
    slices = preset.slices_per_volume
    magnitude = ANATOMIES[anatomy].simulate(rng, slices, shape, preset.recon_size, acquisition)

    # Smooth phase: a random offset and ramp plus a low-frequency field, per slice.
    u = np.linspace(-1.0, 1.0, shape[0])[None, :, None]
    v = np.linspace(-1.0, 1.0, shape[1])[None, None, :]
    low = noise_field(rng, (slices, *shape), (2.0, shape[0] / 6.0, shape[1] / 6.0))
    phase = rng.uniform(-np.pi, np.pi) + rng.uniform(-0.6, 0.6) * u + rng.uniform(-0.6, 0.6) * v
    image = (magnitude * np.exp(1j * (phase + 1.2 * low))).astype(np.complex128)
    if coils > 1:
        maps = _coil_maps(rng, coils, shape, preset.recon_size)
        image = image[:, None] * maps[None]
    kspace = fft2c(torch.from_numpy(image)).numpy()
    if preset.encoding == "3d":  # the slices lie along the readout: transform it too
        kspace = readout_transform(kspace, inverse=False)

    snr = preset.snr * (0.6 if "FS" in acquisition else 1.0)
    obj = magnitude[magnitude > 0.05 * magnitude.max()]
    sigma = float(obj.mean()) / snr
    noise = rng.standard_normal((*kspace.shape, 2)) * (sigma / np.sqrt(2.0))
    kspace = kspace + noise[..., 0] + 1j * noise[..., 1]
    geometry = preset.geometry
    kspace[..., : geometry.padding_left] = 0.0
    kspace[..., geometry.padding_right :] = 0.0

    # fastMRI's data are tiny numbers (~1e-4); keep that so no code assumes a [0, 1] range.
    scale = 10.0 ** rng.uniform(-4.2, -3.5)
    kspace64 = (kspace * scale).astype(np.complex64)
    planes = kspace64 if preset.encoding == "2d" else readout_transform(kspace64, inverse=True)
    coil_kspace = torch.from_numpy(planes if coils > 1 else planes[:, None])
    target = center_crop(rss(ifft2c(coil_kspace), dim=1), preset.recon_size).numpy()
    patient = hashlib.sha256(f"{seed}:{index}".encode()).hexdigest()[:12]
    return SimulatedVolume(
        kspace64, target.astype(np.float32), acquisition, geometry, patient, anatomy,
        preset.encoding,
    )  # fmt: skip


def _settings(preset: BuiltinPreset) -> dict[str, Any]:
    """The preset's fields; ``encoding`` only when 3-D, so 2-D caches stay valid."""
    settings = asdict(preset)
    if settings["encoding"] == "2d":
        del settings["encoding"]
    return settings


def _provenance(preset: BuiltinPreset, seed: int, index: int) -> str:
    """What determines one volume's content (not the number of volumes in the set)."""
    settings = _settings(preset)
    del settings["num_volumes"], settings["name"]
    return json.dumps(
        {"generator_version": GENERATOR_VERSION, "preset": settings, "seed": seed, "index": index},
        sort_keys=True,
    )


def _write_volume(path: Path, volume: SimulatedVolume, provenance: str) -> None:
    """Write one volume atomically (temporary file in the same folder, fsync, rename)."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as hf:
        hf.create_dataset("kspace", data=volume.kspace)
        key = "reconstruction_rss" if volume.kspace.ndim == 4 else "reconstruction_esc"
        hf.create_dataset(key, data=volume.target)
        hf.create_dataset("ismrmrd_header", data=build_header(volume.geometry))
        hf.attrs["max"] = float(volume.target.max())
        hf.attrs["norm"] = float(np.linalg.norm(volume.target))
        hf.attrs["acquisition"] = volume.acquisition
        hf.attrs["patient_id"] = volume.patient_id
        hf.attrs["anatomy"] = volume.anatomy
        if volume.encoding == "3d":
            hf.attrs["encoding"] = "3d"
        hf.attrs[PROVENANCE_ATTR] = provenance


def _already_written(path: Path, provenance: str) -> bool:
    try:
        with h5py.File(path, "r") as hf:
            stored = hf.attrs.get(PROVENANCE_ATTR)
    except OSError:
        return False
    if isinstance(stored, bytes):
        stored = stored.decode()
    return bool(stored == provenance)


def resolve_preset(
    preset: str | BuiltinPreset,
    *,
    num_volumes: int | None = None,
    slices_per_volume: int | None = None,
    num_coils: int | None = None,
) -> BuiltinPreset:
    """Look up a preset by name and apply overrides.

    Args:
        preset: A name from :data:`PRESETS` or a preset.
        num_volumes: Overrides the number of volumes.
        slices_per_volume: Overrides the slices per volume.
        num_coils: Overrides the number of coils.

    Returns:
        The resulting preset.
    """
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown built-in preset {preset!r}; choose from {list(PRESETS)}")
        preset = PRESETS[preset]
    changes: dict[str, Any] = {}
    if num_volumes is not None:
        changes["num_volumes"] = num_volumes
    if slices_per_volume is not None:
        changes["slices_per_volume"] = slices_per_volume
    if num_coils is not None:
        changes["num_coils"] = num_coils
    return replace(preset, **changes) if changes else preset


def make_builtin(
    out_dir: str | Path,
    preset: str | BuiltinPreset = "default",
    *,
    seed: int = 0,
    num_volumes: int | None = None,
    slices_per_volume: int | None = None,
    num_coils: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
) -> list[Path]:
    """Write a built-in data set as a folder of fastMRI-format h5 files.

    Files are named ``vol00000.h5``, ``vol00001.h5``, ... and written atomically. A file that
    already holds the same volume (same preset, seed and generator version) is kept, so an
    interrupted run resumes where it stopped. Any other h5 file in the folder (a volume of
    another preset or seed, one beyond ``num_volumes``, a file of yours) would end up in the
    same data set as the new volumes, so it is refused unless ``overwrite`` removes it.

    Args:
        out_dir: Output folder (created if needed).
        preset: A name from :data:`PRESETS` (``tiny``, ``default``, ``knee``,
            ``knee-multicoil``) or a :class:`BuiltinPreset`.
        seed: Data-set seed (``>= 0``).
        num_volumes: Overrides the preset's number of volumes.
        slices_per_volume: Overrides the preset's slices per volume.
        num_coils: Overrides the preset's number of coils (1 = single-coil files).
        progress: Called as ``progress(done, total)`` after each volume.
        overwrite: Delete the folder's h5 files that are not volumes of this data set.
        log: Called with a line saying what was kept or removed.

    Returns:
        Paths of all the volume files, in order.

    Raises:
        ValueError: For a negative seed, or ``out_dir`` is a file.
        FileExistsError: If the folder holds other h5 files and ``overwrite`` is false.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    spec = resolve_preset(
        preset, num_volumes=num_volumes, slices_per_volume=slices_per_volume, num_coils=num_coils
    )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    expected = {
        out / f"vol{index:05d}.h5": _provenance(spec, seed, index)
        for index in range(spec.num_volumes)
    }
    kept = {p for p, prov in expected.items() if p.exists() and _already_written(p, prov)}
    foreign = sorted(p for p in out.glob("*.h5") if p not in kept)
    if foreign and not overwrite:
        names = ", ".join(p.name for p in foreign[:3])
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise FileExistsError(
            f"{out} holds {len(foreign)} h5 file(s) that are not volumes of this data set "
            f"({spec.name}, seed {seed}, {spec.num_volumes} volumes): {names}{more}; they "
            "would be mixed into it. Use an empty folder, or overwrite=True (--overwrite) to "
            "delete them"
        )
    for path in foreign:
        path.unlink()
    if log is not None and foreign:
        log(f"{out}: removed {len(foreign)} h5 file(s) that were not volumes of this data set")
    if log is not None and kept:
        log(f"{out}: kept {len(kept)} volume(s) already written by an earlier run")
    paths = []
    for index, (path, provenance) in enumerate(expected.items()):
        if path not in kept:
            _write_volume(path, simulate_volume(spec, seed, index), provenance)
        paths.append(path)
        if progress is not None:
            progress(index + 1, spec.num_volumes)
    return paths


def default_cache_dir() -> Path:
    """Root of the built-in data cache: ``$ACTIVEMRI_CACHE`` or ``~/.cache/activemri``."""
    env = os.environ.get("ACTIVEMRI_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "activemri"


def ensure_builtin(
    preset: str = "default",
    *,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Return the folder of a cached built-in data set, generating it on first use.

    Args:
        preset: A name from :data:`PRESETS`.
        seed: Data-set seed.
        cache_dir: Cache root; defaults to :func:`default_cache_dir`.
        progress: Passed to :func:`make_builtin`.

    Returns:
        The folder holding the complete data set.
    """
    spec = resolve_preset(preset)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = root / "builtin" / f"{spec.name}-seed{seed}-v{GENERATOR_VERSION}"
    stamp = folder / "COMPLETE.json"
    expected = json.dumps({"preset": _settings(spec), "seed": seed, "version": GENERATOR_VERSION})
    if stamp.is_file() and stamp.read_text() == expected:
        return folder
    # The cache folder is ours alone: whatever else is in it is replaced.
    make_builtin(folder, spec, seed=seed, progress=progress, overwrite=True)
    atomic_write_text(stamp, expected)
    return folder
