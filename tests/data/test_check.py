from __future__ import annotations

import shutil

import h5py
import numpy as np

from activemri.data import check_folder


def test_clean_folder_passes(tiny_data):
    report = check_folder(tiny_data)
    assert report.ok and len(report.volumes) == 6 and not report.errors
    text = report.format()
    assert "vol00000.h5" in text and "[2, 34)" in text and text.endswith("OK")


def test_problems_are_all_reported(tmp_path, tiny_data):
    for i in range(2):
        shutil.copy(tiny_data / f"vol{i:05d}.h5", tmp_path / f"v{i}.h5")
    with h5py.File(tmp_path / "v1.h5", "a") as hf:
        k = hf["kspace"][()]
        k[2, 0, 5] = np.nan
        hf["kspace"][...] = k
        hf.attrs["max"] = 123.0
    (tmp_path / "junk.h5").write_bytes(b"junk")
    report = check_folder(tmp_path)
    assert not report.ok
    errors = {(p.name, m) for p, m in report.errors}
    assert any(n == "junk.h5" and "cannot open" in m for n, m in errors)
    assert any(n == "v1.h5" and "slice 2" in m for n, m in errors)
    assert any(p.name == "v1.h5" and "max" in m for p, m in report.warnings)
    assert report.broken_files == {tmp_path / "junk.h5"}
    assert "FAILED" in report.format()
    quick = check_folder(tmp_path, scan=False)
    assert {p.name for p, _ in quick.errors} == {"junk.h5"}
