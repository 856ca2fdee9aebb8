"""Residual U-Net, detached uncertainty head, calibration, and robust training recipes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from recon_helpers import kspace_batch

from activemri.data import SliceDataset, make_builtin
from activemri.data.builtin import BuiltinPreset
from activemri.kspace import center_crop, ifft2c, rss, zero_filled
from activemri.recon_models import Reconstructor, UnetReconstructor
from activemri.recon_models.base import ReconOutput
from activemri.recon_models.calibration import fit_sigma_scale
from activemri.recon_models.checkpoint import read_checkpoint
from activemri.recon_models.losses import gaussian_nll
from activemri.recon_models.training import train

MIXED = BuiltinPreset("mixed-train", (40, 36), (32, 32), 9, 2, padding=(2, 2),
                      anatomies=("brain", "knee"))  # fmt: skip
HELD_OUT = BuiltinPreset("body-val", (40, 36), (32, 32), 3, 2, padding=(2, 2),
                         anatomies=("body",))  # fmt: skip


@pytest.fixture(scope="module")
def mixed_data(tmp_path_factory):
    train_dir = tmp_path_factory.mktemp("mixed_train")
    make_builtin(train_dir, MIXED, seed=11)
    val_dir = tmp_path_factory.mktemp("body_val")
    make_builtin(val_dir, HELD_OUT, seed=12)
    return train_dir, val_dir


def test_residual_unet_starts_from_zero_filled():
    model = UnetReconstructor((20, 18), chans=4, num_pool_layers=2, residual=True)
    final = model.unet.up_conv[-1][-1]
    torch.nn.init.zeros_(final.weight)
    torch.nn.init.zeros_(final.bias)
    k, mask = kspace_batch(2, 1, 24, 22)
    out = model(k, mask)
    torch.testing.assert_close(out.image, zero_filled(k, mask, (20, 18)).float(), rtol=1e-4,
                               atol=1e-5)  # fmt: skip
    assert model.config["residual"] is True
    assert "residual" not in UnetReconstructor((20, 18)).config  # old checkpoints load as before


def test_detached_head_never_trains_the_image_path():
    model = UnetReconstructor((20, 18), chans=4, num_pool_layers=2, uncertainty=True,
                              head_chans=4)  # fmt: skip
    k, mask = kspace_batch(2, 1, 24, 22)
    out = model(k, mask)
    target = torch.rand(2, 20, 18)
    gaussian_nll(out.image, out.uncertainty, target, torch.ones(2)).backward()
    assert all(p.grad is None or torch.all(p.grad == 0) for p in model.unet.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in model.logvar_head.parameters())  # fmt: skip


class _NoisyOracle(Reconstructor):
    """Target plus Gaussian noise of std ``noise``, claiming ``noise / factor`` as sigma."""

    supports_multicoil = False

    def __init__(self, recon_size, noise: float = 0.05, factor: float = 3.0) -> None:
        super().__init__(recon_size, {"noise": noise, "factor": factor})
        self.noise, self.factor = noise, factor
        self.weight = torch.nn.Parameter(torch.zeros(()))

    @property
    def has_uncertainty(self) -> bool:
        return True

    def forward(self, kspace, mask, **aux):
        # Test double: reads the full k-space on purpose, to know the exact target.
        truth = center_crop(rss(ifft2c(kspace), dim=1), self.recon_size).float()
        gen = torch.Generator().manual_seed(int(mask.sum()))
        scale = self.noise * truth.flatten(1).amax(1)[:, None, None]
        image = truth + scale * torch.randn(truth.shape, generator=gen)
        return ReconOutput(image, scale.expand_as(image) / self.factor * self.sigma_scale)


def test_temperature_scaling_recovers_the_missing_factor(tiny_data):
    model = _NoisyOracle((32, 32), factor=3.0)
    scale = fit_sigma_scale(model, SliceDataset(tiny_data), (4.0,))
    # Background pixels are excluded, tissue errors are Gaussian: T is the factor itself.
    assert scale == pytest.approx(3.0, rel=0.08)
    model.set_sigma_scale(scale)
    assert model.config["sigma_scale"] == scale
    assert fit_sigma_scale(model, SliceDataset(tiny_data), (4.0,)) == pytest.approx(scale)
    with pytest.raises(ValueError, match="positive"):
        model.set_sigma_scale(-1.0)


def test_robust_recipe_selects_on_held_out_anatomy_and_records_domain(mixed_data, tmp_path):
    train_dir, val_dir = mixed_data
    preset = {
        "model": "unet",
        "config": {"recon_size": [32, 32], "chans": 8, "num_pool_layers": 2, "uncertainty": True,
                   "residual": True, "head_chans": 4},
        "train": {"epochs": 2, "batch_size": 4, "lr": 0.003, "seed": 0, "augment": True,
                  "anatomies": ["brain", "knee"], "val_data": str(val_dir), "val_split": "all",
                  "bf16": True},
    }  # fmt: skip
    result = train(preset, tmp_path, data=str(train_dir), progress=False)
    for record in result["history"]:
        assert {"heldout_ssim_4x", "heldout_zf_ssim_4x", "val_ssim_4x"} <= set(record)
        assert record["selection"] == "heldout"
    best = max(np.mean([r["heldout_ssim_4x"], r["heldout_ssim_8x"]]) for r in result["history"])
    assert result["best_val_ssim"] == pytest.approx(best)
    payload = read_checkpoint(tmp_path / "model.pt")
    domain = json.loads(payload["extra"]["domain"])
    assert set(domain["anatomies"]) == {"brain", "knee"}
    assert domain["num_coils"] == [1] and domain["kspace_shapes"] == ["40x36"]
    assert domain["noise_augmentation"] > 0
    assert payload["config"]["sigma_scale"] > 0  # calibrated on the val split
    loaded = Reconstructor.load(tmp_path / "model.pt")
    assert loaded.training_domain == domain
    # The training checkpoint stays uncalibrated, so --resume rebuilds the same model.
    assert "sigma_scale" not in read_checkpoint(tmp_path / "checkpoint.pt")["config"]
    again = train(preset, tmp_path, data=str(train_dir), progress=False, resume=True,
                  overrides={"epochs": 3})  # fmt: skip
    assert len(again["history"]) == 3


def test_augmented_training_is_reproducible(mixed_data, tmp_path):
    train_dir, _ = mixed_data
    preset = {
        "model": "unet",
        "config": {"recon_size": [32, 32], "chans": 4, "num_pool_layers": 2},
        "train": {"epochs": 1, "batch_size": 4, "seed": 3, "augment": {"rotate": 5}},
    }
    a = train(preset, tmp_path / "a", data=str(train_dir), progress=False)
    b = train(preset, tmp_path / "b", data=str(train_dir), progress=False)
    assert a["history"][0]["train_loss"] == b["history"][0]["train_loss"]
    wa = read_checkpoint(tmp_path / "a" / "model.pt")["state_dict"]
    wb = read_checkpoint(tmp_path / "b" / "model.pt")["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
