"""Training augmentation: consistent k-space and targets, exact neutral settings, seeded."""

from __future__ import annotations

import pytest
import torch

from activemri.data import SliceDataset, collate_slices
from activemri.kspace import center_crop, ifft2c, rss
from activemri.recon_models.augment import AugmentConfig, augment_batch

NEUTRAL = {"flip": 0.0, "rotate": 0.0, "gamma": 0.0, "bias": 0.0, "scale": 0.0, "noise": 0.0}


@pytest.fixture
def batch(tiny_data):
    ds = SliceDataset(tiny_data)
    samples = [ds[i] for i in range(4)]
    b = collate_slices(samples)
    valid = torch.stack([s.meta.valid_columns(b.kspace.shape[-1]) for s in samples])
    return b.kspace, b.target, valid


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_targets_are_recomputed_from_the_augmented_kspace(batch):
    kspace, _, valid = batch
    out, target, data_range = augment_batch(kspace, valid, (32, 32), AugmentConfig(prob=1.0),
                                            _gen())  # fmt: skip
    expected = center_crop(rss(ifft2c(out), dim=1), (32, 32))
    torch.testing.assert_close(target, expected.float())
    torch.testing.assert_close(data_range, target.flatten(1).amax(1))
    assert torch.all(out[..., ~valid[0]] == 0)
    assert not torch.allclose(out, kspace)


def test_neutral_settings_change_nothing(batch):
    kspace, target, valid = batch
    out, new_target, _ = augment_batch(kspace, valid, (32, 32),
                                       AugmentConfig(**NEUTRAL, prob=1.0), _gen())  # fmt: skip
    torch.testing.assert_close(out, kspace, atol=1e-6 * kspace.abs().max().item(), rtol=1e-4)
    torch.testing.assert_close(new_target, target, atol=1e-5 * target.max().item(), rtol=1e-4)


def test_flips_flip_the_target(batch):
    kspace, target, valid = batch
    cfg = AugmentConfig(**{**NEUTRAL, "flip": 1.0}, prob=1.0)
    # Every column counted as measured: an image flip moves k-space columns by one for even
    # sizes, and re-zeroing padded columns would (rightly) change the image slightly.
    _, flipped, _ = augment_batch(kspace, torch.ones_like(valid), (32, 32), cfg, _gen())
    # 40x36 images cropped to 32x32: the crop is centred, so flipping commutes with it.
    tol = 1e-5 * target.max().item()
    torch.testing.assert_close(flipped, target.flip(-1).flip(-2), atol=tol, rtol=1e-4)


def test_seeded_and_probability_zero_is_identity(batch):
    kspace, _, valid = batch
    a = augment_batch(kspace, valid, (32, 32), AugmentConfig(), _gen(3))[0]
    b = augment_batch(kspace, valid, (32, 32), AugmentConfig(), _gen(3))[0]
    c = augment_batch(kspace, valid, (32, 32), AugmentConfig(), _gen(4))[0]
    assert torch.equal(a, b) and not torch.equal(a, c)
    out = augment_batch(kspace, valid, (32, 32), AugmentConfig(prob=0.0), _gen())[0]
    torch.testing.assert_close(out, kspace, atol=1e-6 * kspace.abs().max().item(), rtol=1e-4)


def test_noise_raises_the_background_level(batch):
    kspace, _, valid = batch
    quiet = AugmentConfig(**NEUTRAL, prob=1.0)
    noisy = AugmentConfig(**{**NEUTRAL, "noise": 0.5}, prob=1.0)
    a = augment_batch(kspace, valid, (32, 32), quiet, _gen())[0]
    b = augment_batch(kspace, valid, (32, 32), noisy, _gen())[0]
    assert (b - a).abs().mean() > 0.01 * a.abs().mean()


def test_config_parsing():
    assert AugmentConfig.from_mapping(None) is None
    assert AugmentConfig.from_mapping(False) is None
    assert AugmentConfig.from_mapping(True) == AugmentConfig()
    assert AugmentConfig.from_mapping({"rotate": 5}).rotate == 5.0
    with pytest.raises(ValueError, match="unknown augment"):
        AugmentConfig.from_mapping({"shear": 1})
    with pytest.raises(ValueError, match="non-negative"):
        AugmentConfig.from_mapping({"noise": -1})
    with pytest.raises(ValueError, match="mapping"):
        AugmentConfig.from_mapping("yes")
