"""The built-in anatomies: real brain anatomy from nilearn's MNI152 template, and the abdomen."""

from __future__ import annotations

import importlib.util

import h5py
import numpy as np
import pytest
import torch

from activemri.data import SliceDataset, make_builtin
from activemri.data import brain as brain_module
from activemri.data.body import BODY_PROTOCOLS, body_volume
from activemri.data.brain import BRAIN_PROTOCOLS, MissingDataDependency, brain_volume
from activemri.data.builtin import ANATOMIES, PRESETS, BuiltinPreset, simulate_volume
from activemri.kspace import center_crop, ifft2c, rss

SMALL_MIXED = BuiltinPreset(
    "mixed-test", (48, 44), (40, 40), 6, 3, snr=25.0, anatomies=("brain", "knee", "body")
)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    out = tmp_path_factory.mktemp("mixed")
    make_builtin(out, SMALL_MIXED, seed=5)
    return out


@pytest.mark.parametrize(("fn", "protocols"), [(brain_volume, BRAIN_PROTOCOLS),
                                               (body_volume, BODY_PROTOCOLS)])  # fmt: skip
def test_anatomy_is_deterministic_and_varies_per_volume(fn, protocols):
    a = fn(np.random.default_rng(1), 3, (48, 44), (40, 40), protocols[0])
    b = fn(np.random.default_rng(1), 3, (48, 44), (40, 40), protocols[0])
    c = fn(np.random.default_rng(2), 3, (48, 44), (40, 40), protocols[0])
    assert a.shape == (3, 48, 44) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)
    assert a.min() >= 0.0


def test_every_brain_protocol_gives_a_head_in_the_crop():
    # Each volume must hold anatomy, not an empty slab: the object covers a good part of the
    # crop in every slice, and no slice is a constant.
    for i, protocol in enumerate(BRAIN_PROTOCOLS):
        vol = brain_volume(np.random.default_rng(100 + i), 4, (64, 64), (64, 64), protocol)
        for img in vol:
            assert img.max() > 0.2, protocol
            assert (img > 0.1 * img.max()).mean() > 0.1, protocol


def test_contrasts_order_tissues_as_mri_does():
    # Same subject and slab (same generator state), different weighting: CSF is bright on T2
    # and dark on T1 and FLAIR, so the ventricle-rich centre changes sign of contrast.
    t1 = brain_volume(np.random.default_rng(7), 1, (64, 64), (64, 64), "AXT1")[0]
    t2 = brain_volume(np.random.default_rng(7), 1, (64, 64), (64, 64), "AXT2")[0]
    corr = np.corrcoef(t1[t1 > 0.05].ravel(), t2[t1 > 0.05].ravel())[0, 1]
    assert corr < 0.5


def test_mixed_preset_cycles_anatomies_and_records_them(mixed):
    kinds = []
    for i, path in enumerate(sorted(mixed.glob("*.h5"))):
        with h5py.File(path, "r") as hf:
            kinds.append(str(hf.attrs["anatomy"]))
            acquisition = str(hf.attrs["acquisition"])
            kspace = torch.from_numpy(hf["kspace"][()])
            target = hf["reconstruction_esc"][()]
        assert acquisition in ANATOMIES[kinds[-1]].protocols
        assert SMALL_MIXED.anatomy_of(i) == kinds[-1]
        expected = center_crop(rss(ifft2c(kspace[:, None]), dim=1), (40, 40)).numpy()
        np.testing.assert_allclose(target, expected, rtol=1e-5, atol=1e-6 * target.max())
    assert kinds == ["brain", "knee", "body"] * 2


def test_dataset_filters_by_anatomy(mixed):
    ds = SliceDataset(mixed, anatomies=["brain"])
    assert len(ds.volumes) == 2 and {v.anatomy for v in ds.volumes} == {"brain"}
    assert len(SliceDataset(mixed, anatomies=["body", "knee"]).volumes) == 4
    with pytest.raises(ValueError, match="anatomies"):
        SliceDataset(mixed, anatomies=["liver"])


def test_anatomy_of_fastmri_files_is_inferred_from_the_protocol(tmp_path):
    make_builtin(tmp_path, "tiny", seed=0, num_volumes=2)
    for i, protocol in enumerate(["CORPDFS_FBK", "AXFLAIR"]):
        with h5py.File(tmp_path / f"vol{i:05d}.h5", "r+") as hf:
            del hf.attrs["anatomy"]
            hf.attrs["acquisition"] = protocol
    kinds = [v.anatomy for v in SliceDataset(tmp_path).volumes]
    assert kinds == ["knee", "brain"]


def test_volume_content_does_not_depend_on_the_number_of_volumes():
    small = simulate_volume(SMALL_MIXED, 5, 3)
    bigger = BuiltinPreset(**{**SMALL_MIXED.__dict__, "num_volumes": 12})
    assert np.array_equal(small.kspace, simulate_volume(bigger, 5, 3).kspace)


def test_presets_are_valid_and_default_is_multi_anatomy():
    assert set(PRESETS["default"].anatomies) == {"brain", "knee"}
    assert PRESETS["multicoil"].num_coils == 8
    assert PRESETS["body"].anatomies == ("body",)
    with pytest.raises(ValueError, match="anatomies"):
        BuiltinPreset("x", (32, 32), (32, 32), 1, 1, anatomies=("lung",))
    with pytest.raises(ValueError, match="acquisitions"):
        BuiltinPreset("x", (32, 32), (32, 32), 1, 1, anatomies=("knee",), acquisitions=("AXT1",))


def test_missing_nilearn_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "nilearn" else real(name, *a)
    )
    brain_module._load_template.cache_clear()
    try:
        with pytest.raises(MissingDataDependency, match=r"activemri\[data\]"):
            brain_volume(np.random.default_rng(0), 1, (32, 32), (32, 32), "AXT1")
    finally:
        monkeypatch.undo()
        brain_module._load_template.cache_clear()


def test_data_make_without_nilearn_is_a_clear_cli_error(monkeypatch, tmp_path, capsys):
    from activemri.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "nilearn" else real(name, *a)
    )
    brain_module._load_template.cache_clear()
    try:
        code = main(["data", "make", "--preset", "default", "--volumes", "1", "--out",
                     str(tmp_path / "d"), "--quiet"])  # fmt: skip
    finally:
        monkeypatch.undo()
        brain_module._load_template.cache_clear()
    assert code != 0
    assert "activemri[data]" in capsys.readouterr().err
