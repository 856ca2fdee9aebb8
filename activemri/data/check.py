"""``activemri data check``: inspect a folder of fastMRI h5 files and report every problem."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from activemri.data.dataset import (
    MAX_MAGNITUDE,
    InvalidVolumeError,
    VolumeInfo,
    _positive_or_none,
    inspect_volume,
    slice_problem,
)

__all__ = ["FolderReport", "check_folder"]


@dataclass
class FolderReport:
    """What :func:`check_folder` found.

    Attributes:
        root: The folder checked.
        volumes: Valid volumes.
        errors: ``(file, problem)`` for broken files and corrupt slices.
        warnings: ``(file, remark)`` for usable files with something odd about them.
        scanned: Whether slice contents were read and checked.
    """

    root: Path
    volumes: list[VolumeInfo] = field(default_factory=list)
    errors: list[tuple[Path, str]] = field(default_factory=list)
    warnings: list[tuple[Path, str]] = field(default_factory=list)
    scanned: bool = True

    @property
    def ok(self) -> bool:
        """True when no file is broken and no slice is corrupt."""
        return not self.errors

    def format(self) -> str:
        """Human-readable report: one line per file, totals, then every problem."""
        lines = [f"Checked {self.root}"]
        header = (
            f"{'file':<24} {'slices':>6} {'coils':>5} {'kspace HxW':>11} {'recon':>9} "
            f"{'measured cols':>14} {'acquisition':<13} target"
        )
        lines.append(header)
        for v in self.volumes:
            g = v.geometry
            lines.append(
                f"{v.path.name:<24} {v.num_slices:>6} {v.num_coils:>5} "
                f"{v.kspace_shape[0]:>5}x{v.kspace_shape[1]:<5} "
                f"{g.recon_size[0]:>4}x{g.recon_size[1]:<4} "
                f"{f'[{g.padding_left}, {g.padding_right})':>14} "
                f"{v.acquisition or '-':<13} {v.target_key or '-'}"
            )
        slices = sum(v.num_slices for v in self.volumes)
        widths = Counter(v.kspace_shape[1] for v in self.volumes)
        acqs = Counter(v.acquisition or "-" for v in self.volumes)
        coils = Counter(v.num_coils for v in self.volumes)
        lines.append("")
        lines.append(
            f"files: {len(self.volumes) + len(self.broken_files)} "
            f"({len(self.volumes)} valid, {len(self.broken_files)} broken), slices: {slices}"
        )
        lines.append(f"k-space widths: {dict(sorted(widths.items()))}")
        lines.append(f"coils: {dict(sorted(coils.items()))}")
        lines.append(f"acquisitions: {dict(sorted(acqs.items()))}")
        kinds = Counter(v.anatomy or "-" for v in self.volumes)
        lines.append(f"anatomies: {dict(sorted(kinds.items()))}")
        if not self.scanned:
            lines.append("slice contents not scanned (--quick)")
        for title, items in (("ERRORS", self.errors), ("warnings", self.warnings)):
            if items:
                lines.append(f"{title} ({len(items)}):")
                lines.extend(f"  {path.name}: {msg}" for path, msg in items)
        lines.append("OK" if self.ok else f"FAILED: {len(self.errors)} problem(s)")
        return "\n".join(lines)

    @property
    def broken_files(self) -> set[Path]:
        """Files that could not be used at all."""
        valid = {v.path for v in self.volumes}
        return {p for p, _ in self.errors if p not in valid}


def _scan(info: VolumeInfo, report: FolderReport) -> None:
    """Read every slice of a volume and record the ones the dataset would refuse."""
    try:
        with h5py.File(info.path, "r") as hf:
            target_max = -np.inf
            for s in range(info.num_slices):
                # As the dataset reads them, so both judge the same values.
                kspace = np.asarray(hf["kspace"][s], dtype=np.complex64)
                target = None
                if info.target_key is not None:
                    target = np.asarray(hf[info.target_key][s], dtype=np.float32)
                problem = slice_problem(kspace, target, info.target_key)
                if problem is not None:
                    report.errors.append((info.path, f"slice {s}: {problem}"))
                elif target is not None and target.size:
                    target_max = max(target_max, float(target.max()))
    except Exception as exc:  # a truncated file can fail in the middle of its data
        report.errors.append((info.path, f"cannot read data ({type(exc).__name__}: {exc})"))
        return
    stored = _positive_or_none(info.attrs.get("max"))  # unusable ones are warned about already
    if (
        stored is not None
        and np.isfinite(target_max)
        and not np.isclose(stored, target_max, rtol=1e-3)
    ):
        msg = f"attribute max={stored:.6g} but the target maximum is {target_max:.6g}"
        report.warnings.append((info.path, msg))


def check_folder(root: str | Path, scan: bool = True) -> FolderReport:
    """Check every ``*.h5`` file of a folder as :class:`~activemri.data.SliceDataset` would.

    Args:
        root: Folder of fastMRI-format h5 files.
        scan: Also read every slice and check it is finite (slower; reads all data).

    Returns:
        The report; ``report.ok`` is False if any file is broken or any slice corrupt.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    report = FolderReport(root=root, scanned=scan)
    files = sorted(p for p in root.glob("*.h5") if p.is_file())
    if not files:
        report.errors.append((root, "no *.h5 files"))
    for path in files:
        try:
            info = inspect_volume(path)
        except InvalidVolumeError as exc:
            report.errors.append((path, str(exc)))
            continue
        report.volumes.append(info)
        if info.target_key is not None:
            stored = info.attrs.get("max")
            if stored is None:
                report.warnings.append((path, "no 'max' attribute: metrics use the slice max"))
            elif _positive_or_none(stored) is None:
                msg = (
                    f"attribute max={stored!r} is not a positive number up to {MAX_MAGNITUDE:g}: "
                    "metrics use the slice max"
                )
                report.warnings.append((path, msg))
        if scan:
            _scan(info, report)
    return report
