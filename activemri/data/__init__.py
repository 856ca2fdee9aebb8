"""Data: fastMRI h5 slices (lazy and robust), volume splits, and built-in simulated data.

Public names:

- :class:`SliceDataset` over a folder of fastMRI-format h5 files, with ``.skipped``.
- :func:`collate_slices` to batch slices, :class:`SliceSample`, :class:`SliceMeta`.
- :func:`make_builtin` / :func:`ensure_builtin` to write built-in data in the same format.
- :func:`check_folder` behind ``activemri data check``.
"""

from __future__ import annotations

from activemri.data.builtin import PRESETS, BuiltinPreset, ensure_builtin, make_builtin
from activemri.data.check import FolderReport, check_folder
from activemri.data.dataset import (
    CorruptSliceError,
    DataWarning,
    SliceBatch,
    SliceDataset,
    SliceMeta,
    SliceSample,
    VolumeInfo,
    collate_slices,
)
from activemri.data.header import KSpaceGeometry, parse_header
from activemri.data.splits import split_volumes

__all__ = [
    "PRESETS",
    "BuiltinPreset",
    "CorruptSliceError",
    "DataWarning",
    "FolderReport",
    "KSpaceGeometry",
    "SliceBatch",
    "SliceDataset",
    "SliceMeta",
    "SliceSample",
    "VolumeInfo",
    "check_folder",
    "collate_slices",
    "ensure_builtin",
    "make_builtin",
    "parse_header",
    "split_volumes",
]
