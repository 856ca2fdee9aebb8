from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from activemri.data import PRESETS, SliceDataset, ensure_builtin, make_builtin, parse_header
from activemri.data.builtin import BuiltinPreset, simulate_volume
from activemri.kspace import center_crop, ifft2c, rss


@pytest.mark.parametrize("fixture", ["tiny_data", "tiny_multicoil"])
def test_targets_are_center_cropped_rss_of_written_kspace(fixture, request):
    folder = request.getfixturevalue(fixture)
    for path in sorted(folder.glob("*.h5")):
        with h5py.File(path, "r") as hf:
            kspace = torch.from_numpy(hf["kspace"][()])
            key = "reconstruction_rss" if kspace.ndim == 4 else "reconstruction_esc"
            target = hf[key][()]
            recon = parse_header(hf["ismrmrd_header"][()]).recon_size
            assert float(hf.attrs["max"]) == pytest.approx(float(target.max()))
        coils = kspace if kspace.ndim == 4 else kspace[:, None]
        expected = center_crop(rss(ifft2c(coils), dim=1), recon).numpy()
        assert target.shape == expected.shape
        np.testing.assert_allclose(target, expected, rtol=1e-5, atol=1e-6 * target.max())


def test_loader_returns_what_the_generator_wrote(tiny_data):
    ds = SliceDataset(tiny_data)
    sample = ds[4]
    vol, s = divmod(4, PRESETS["tiny"].slices_per_volume)
    with h5py.File(tiny_data / f"vol{vol:05d}.h5", "r") as hf:
        assert np.array_equal(sample.kspace[0].numpy(), hf["kspace"][s])
        assert np.array_equal(sample.target.numpy(), hf["reconstruction_esc"][s])
    assert sample.kspace.dtype == torch.complex64 and sample.kspace.shape == (1, 40, 36)
    assert sample.target.dtype == torch.float32 and sample.target.shape == (32, 32)


@pytest.mark.parametrize("fixture", ["tiny_data", "tiny_multicoil"])
def test_header_padding_round_trips_and_padding_is_zero(fixture, request):
    folder = request.getfixturevalue(fixture)
    preset = PRESETS["tiny"]
    ds = SliceDataset(folder)
    for info in ds.volumes:
        assert info.geometry == preset.geometry
        assert (info.geometry.padding_left, info.geometry.padding_right) == (2, 34)
    sample = ds[0]
    valid = sample.meta.valid_columns(sample.kspace.shape[-1])
    assert valid.sum() == 32 and not valid[:2].any() and not valid[34:].any()
    assert torch.all(sample.kspace[..., ~valid] == 0)
    assert torch.all(sample.kspace[..., valid].abs().sum(dim=(0, 1)) > 0)


def test_multicoil_layout(tiny_multicoil):
    ds = SliceDataset(tiny_multicoil)
    assert ds.volumes[0].num_coils == 4
    assert ds.volumes[0].target_key == "reconstruction_rss"
    assert ds[0].kspace.shape == (4, 40, 36)


def test_kspace_is_not_hermitian(tiny_data):
    sample = SliceDataset(tiny_data)[1]
    image = ifft2c(sample.kspace)
    # Hermitian-symmetric k-space <=> real image; real scans have a smooth, non-zero phase.
    assert image.imag.norm() > 0.3 * image.real.norm()


def test_generator_is_deterministic_per_seed():
    preset = PRESETS["tiny"]
    a = simulate_volume(preset, seed=3, index=1)
    b = simulate_volume(preset, seed=3, index=1)
    c = simulate_volume(preset, seed=4, index=1)
    d = simulate_volume(preset, seed=3, index=2)
    assert np.array_equal(a.kspace, b.kspace) and np.array_equal(a.target, b.target)
    assert not np.allclose(a.target, c.target)
    assert not np.allclose(a.target, d.target)


def test_volume_content_does_not_depend_on_volume_count(tmp_path):
    make_builtin(tmp_path / "a", "tiny", seed=1, num_volumes=2)
    make_builtin(tmp_path / "b", "tiny", seed=1, num_volumes=3)
    with h5py.File(tmp_path / "a/vol00001.h5") as fa, h5py.File(tmp_path / "b/vol00001.h5") as fb:
        assert np.array_equal(fa["kspace"][()], fb["kspace"][()])


def test_slices_change_smoothly_and_volumes_differ(tiny_data):
    def target(vol: int) -> np.ndarray:
        with h5py.File(tiny_data / f"vol{vol:05d}.h5") as hf:
            return hf["reconstruction_esc"][()]

    t0, t1 = target(0), target(1)
    neighbours = np.linalg.norm(t0[1] - t0[0]) / np.linalg.norm(t0[0])
    assert 0 < neighbours < 0.6
    other = np.linalg.norm(t0[0] / t0.max() - t1[0] / t1.max()) / np.linalg.norm(t0[0] / t0.max())
    assert other > 0.05


def test_anatomy_has_several_tissues_and_fine_structure():
    preset = BuiltinPreset("t", (96, 96), (96, 96), 1, 2, snr=1e6, acquisitions=("CORPD_FBK",))
    img = simulate_volume(preset, 0, 0).target[0]
    img = img / img.max()
    hist, _ = np.histogram(img[img > 0.02], bins=20, range=(0, 1))
    assert (hist > 0.01 * hist.sum()).sum() >= 6  # many distinct intensity levels
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2(img))) ** 2
    yy, xx = np.mgrid[-48:48, -48:48]
    high = spectrum[np.hypot(yy, xx) > 24].sum() / spectrum.sum()
    assert high > 1e-3  # structure well beyond the low frequencies


def test_make_builtin_resumes_and_writes_atomically(tmp_path, monkeypatch):
    out = tmp_path / "d"
    make_builtin(out, "tiny", num_volumes=2)
    before = (out / "vol00000.h5").stat().st_mtime_ns
    calls = []
    import activemri.data.builtin as builtin

    real = builtin.simulate_volume
    monkeypatch.setattr(
        builtin, "simulate_volume", lambda *a, **k: calls.append(a) or real(*a, **k)
    )
    make_builtin(out, "tiny", num_volumes=3)
    assert len(calls) == 1  # only the new volume was simulated
    assert (out / "vol00000.h5").stat().st_mtime_ns == before
    assert sorted(p.name for p in out.iterdir()) == ["vol00000.h5", "vol00001.h5", "vol00002.h5"]


def test_ensure_builtin_caches(tmp_path):
    folder = ensure_builtin("tiny", cache_dir=tmp_path)
    assert len(list(folder.glob("*.h5"))) == PRESETS["tiny"].num_volumes
    stamp = (folder / "COMPLETE.json").stat().st_mtime_ns
    assert ensure_builtin("tiny", cache_dir=tmp_path) == folder
    assert (folder / "COMPLETE.json").stat().st_mtime_ns == stamp


def test_preset_validation():
    with pytest.raises(ValueError, match="fit"):
        BuiltinPreset("x", (16, 16), (32, 16), 1, 1)
    with pytest.raises(ValueError, match="padding"):
        BuiltinPreset("x", (16, 16), (16, 16), 1, 1, padding=(8, 8))
    with pytest.raises(ValueError, match="unknown built-in preset"):
        make_builtin("/nonexistent", "nope")


@pytest.mark.slow
def test_knee_preset_sizes_match_fastmri_knee(tmp_path):
    make_builtin(tmp_path, "knee", num_volumes=1, slices_per_volume=2)
    ds = SliceDataset(tmp_path)
    sample = ds[0]
    assert sample.kspace.shape == (1, 640, 368) and sample.target.shape == (320, 320)
    assert (sample.meta.padding_left, sample.meta.padding_right) == (17, 351)
