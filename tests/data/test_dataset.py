from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from activemri.data import (
    CorruptSliceError,
    DataWarning,
    KSpaceGeometry,
    SliceDataset,
    collate_slices,
)
from activemri.data.header import build_header


def _write(
    path: Path,
    kspace: np.ndarray | None,
    target: np.ndarray | None = None,
    recon=(8, 8),
    header: bool = True,
    **attrs,
) -> Path:
    with h5py.File(path, "w") as hf:
        if kspace is not None:
            hf.create_dataset("kspace", data=kspace)
            if header:
                w = kspace.shape[-1]
                geom = KSpaceGeometry((kspace.shape[-2], w), recon, 1, w - 1)
                hf.create_dataset("ismrmrd_header", data=build_header(geom))
        if target is not None:
            hf.create_dataset("reconstruction_esc", data=target)
        for k, v in attrs.items():
            hf.attrs[k] = v
    return path


def _good(path: Path, slices: int = 2, acquisition: str = "CORPD_FBK") -> Path:
    rng = np.random.default_rng(0)
    k = rng.standard_normal((slices, 10, 12)) + 1j * rng.standard_normal((slices, 10, 12))
    return _write(
        path,
        k.astype(np.complex64),
        rng.random((slices, 8, 8)).astype(np.float32),
        max=1.0,
        acquisition=acquisition,
    )


@pytest.fixture
def broken_folder(tmp_path: Path, tiny_data: Path) -> Path:
    """Three good built-in volumes plus one file per broken case."""
    for i in range(3):
        shutil.copy(tiny_data / f"vol{i:05d}.h5", tmp_path / f"good{i}.h5")
    data = (tiny_data / "vol00003.h5").read_bytes()
    (tmp_path / "truncated.h5").write_bytes(data[: len(data) // 3])
    (tmp_path / "noth5.h5").write_bytes(b"this is not an HDF5 file\n" * 100)
    _write(tmp_path / "nokspace.h5", None, np.zeros((2, 8, 8), np.float32))
    _write(tmp_path / "realkspace.h5", np.zeros((2, 10, 12), np.float32))
    _write(
        tmp_path / "badtarget.h5",
        np.zeros((2, 10, 12), np.complex64),
        np.zeros((2, 7, 8), np.float32),
    )
    _write(tmp_path / "wrongndim.h5", np.zeros((10, 12), np.complex64))
    _good(tmp_path / "badheader.h5")
    with h5py.File(tmp_path / "badheader.h5", "a") as hf:
        del hf["ismrmrd_header"]
        hf.create_dataset("ismrmrd_header", data="<ismrmrdHeader><encoding>")
    _good(tmp_path / "badmask.h5")
    with h5py.File(tmp_path / "badmask.h5", "a") as hf:
        hf.create_dataset("mask", data=np.ones(5, bool))
    (tmp_path / "README.txt").write_text("not data")
    return tmp_path


EXPECTED_REASONS = {
    "truncated.h5": "cannot open",
    "noth5.h5": "cannot open",
    "nokspace.h5": "no 'kspace'",
    "realkspace.h5": "expected complex",
    "badtarget.h5": "recon size",
    "wrongndim.h5": "dimensions",
    "badheader.h5": "not valid XML",
    "badmask.h5": "'mask'",
}


def test_broken_files_are_skipped_with_reasons(broken_folder):
    with pytest.warns(DataWarning) as record:
        ds = SliceDataset(broken_folder, max_skipped_fraction=0.9)
    skipped = {p.name: reason for p, reason in ds.skipped}
    assert set(skipped) == set(EXPECTED_REASONS)
    for name, fragment in EXPECTED_REASONS.items():
        assert fragment in skipped[name], (name, skipped[name])
    messages = " ".join(str(w.message) for w in record)
    assert all(name in messages for name in EXPECTED_REASONS)
    assert [v.path.name for v in ds.volumes] == ["good0.h5", "good1.h5", "good2.h5"]
    assert len(ds) == 9
    assert ds[8].kspace.shape == (1, 40, 36)


def test_too_many_broken_files_is_an_error(broken_folder):
    with pytest.raises(ValueError, match="max_skipped_fraction"):
        SliceDataset(broken_folder, warn=False)


def test_nothing_valid_is_an_error(tmp_path):
    (tmp_path / "a.h5").write_bytes(b"junk")
    with pytest.raises(ValueError, match="no valid fastMRI volume"):
        SliceDataset(tmp_path, warn=False)
    with pytest.raises(FileNotFoundError):
        SliceDataset(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"no \*.h5"):
        SliceDataset(empty)


def test_nan_slice_raises_naming_file_and_slice(tmp_path):
    path = _good(tmp_path / "nan.h5", slices=3)
    with h5py.File(path, "a") as hf:
        k = hf["kspace"][()]
        k[1, 3, 4] = np.nan
        hf["kspace"][...] = k
    ds = SliceDataset(tmp_path)
    assert torch.isfinite(ds[0].kspace.abs()).all()
    with pytest.raises(CorruptSliceError, match=r"nan\.h5 slice 1: k-space has NaN"):
        ds[1]


def test_nan_in_target_raises(tmp_path):
    path = _good(tmp_path / "t.h5")
    with h5py.File(path, "a") as hf:
        hf["reconstruction_esc"][0, 0, 0] = np.inf
    with pytest.raises(CorruptSliceError, match="slice 0: target"):
        SliceDataset(tmp_path)[0]


def test_construction_reads_no_kspace_values(tiny_data, monkeypatch):
    reads = []
    real = h5py.Dataset.__getitem__

    def spy(self, key):
        reads.append(self.name)
        return real(self, key)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    ds = SliceDataset(tiny_data)
    assert "/kspace" not in reads and "/reconstruction_esc" not in reads
    ds[0]
    assert "/kspace" in reads


def test_files_without_header_or_target(tmp_path):
    rng = np.random.default_rng(1)
    k = (rng.standard_normal((2, 10, 12)) + 0j).astype(np.complex64)
    _write(tmp_path / "a.h5", k, rng.random((2, 8, 8)).astype(np.float32), header=False)
    _write(tmp_path / "b.h5", k, None, header=False)
    with pytest.warns(DataWarning, match="reconstruction size unknown"):
        ds = SliceDataset(tmp_path)
    (info,) = ds.volumes
    assert info.geometry.recon_size == (8, 8) and info.geometry.padding_left == 0
    assert ds[0].meta.max_value is None


def test_test_files_without_target_carry_mask(tmp_path):
    k = np.ones((1, 10, 12), np.complex64)
    path = _write(tmp_path / "test.h5", k, None, acceleration=4, num_low_frequency=3)
    with h5py.File(path, "a") as hf:
        hf.create_dataset("mask", data=np.arange(12) % 4 == 0)
    sample = SliceDataset(tmp_path)[0]
    assert sample.target is None
    assert sample.mask is not None and sample.mask.dtype == torch.bool and sample.mask.sum() == 3
    assert sample.meta.acceleration == 4.0 and sample.meta.num_low_frequency == 3


def test_item_metadata(tiny_data):
    ds = SliceDataset(tiny_data)
    meta = ds[5].meta
    assert meta.file.name == "vol00001.h5" and meta.slice_index == 2
    assert meta.recon_size == (32, 32) and meta.acquisition in ("CORPD_FBK", "CORPDFS_FBK")
    with h5py.File(meta.file) as hf:
        assert meta.max_value == pytest.approx(float(hf.attrs["max"]))
    assert ds[-1].meta == ds.slice_meta(len(ds) - 1)
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_splits_partition_volumes_and_are_seeded(tiny_data):
    names = {
        s: {v.path.name for v in SliceDataset(tiny_data, split=s).volumes}
        for s in ("train", "val", "test")
    }
    assert not (
        names["train"] & names["val"]
        or names["train"] & names["test"]
        or names["val"] & names["test"]
    )
    assert set().union(*names.values()) == {p.name for p in tiny_data.glob("*.h5")}
    assert all(names.values())
    again = {v.path.name for v in SliceDataset(tiny_data, split="train").volumes}
    assert again == names["train"]
    fractions = {"a": 0.5, "b": 0.5}
    seeds = [
        frozenset(
            v.path.name
            for v in SliceDataset(
                tiny_data, split="a", split_fractions=fractions, split_seed=s
            ).volumes
        )
        for s in range(6)
    ]
    assert len(set(seeds)) > 1
    with pytest.raises(ValueError, match="unknown split"):
        SliceDataset(tiny_data, split="holdout")


def test_filters(tmp_path):
    _good(tmp_path / "pd.h5")
    _good(tmp_path / "fs.h5", acquisition="CORPDFS_FBK")
    assert [v.path.name for v in SliceDataset(tmp_path, acquisitions=["CORPDFS_FBK"]).volumes] == [
        "fs.h5"
    ]
    assert len(SliceDataset(tmp_path, kspace_widths=[12]).volumes) == 2
    with pytest.raises(ValueError, match="no volume"):
        SliceDataset(tmp_path, kspace_widths=[368])
    sampled = SliceDataset(tmp_path, sample_rate=0.5, sample_seed=3)
    assert len(sampled.volumes) == 1
    assert sampled.volumes == SliceDataset(tmp_path, sample_rate=0.5, sample_seed=3).volumes
    with pytest.raises(ValueError, match="sample_rate"):
        SliceDataset(tmp_path, sample_rate=0.0)


def test_collate_slices(tiny_data):
    ds = SliceDataset(tiny_data)
    batch = collate_slices([ds[0], ds[1], ds[2]])
    assert batch.kspace.shape == (3, 1, 40, 36) and batch.target.shape == (3, 32, 32)
    assert [m.slice_index for m in batch.meta] == [0, 1, 2]
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate_slices)
    assert next(iter(loader)).kspace.shape == (4, 1, 40, 36)


def test_collate_rejects_mixed_shapes(tiny_data, tmp_path):
    other = SliceDataset(_good(tmp_path / "g.h5"))[0]
    with pytest.raises(ValueError, match="different k-space shapes"):
        collate_slices([SliceDataset(tiny_data)[0], other])


def test_dataset_pickles(tiny_data):
    import pickle

    ds = SliceDataset(tiny_data)
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[3].kspace, ds[3].kspace)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_unusable_max_attribute_falls_back(tmp_path, bad):
    path = _good(tmp_path / "m.h5")
    with h5py.File(path, "a") as hf:
        hf.attrs["max"] = bad
    assert SliceDataset(tmp_path)[0].meta.max_value is None
