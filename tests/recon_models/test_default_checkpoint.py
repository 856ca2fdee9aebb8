"""The shipped default reconstructor: present, small, and better than zero-filled on new data."""

from __future__ import annotations

from pathlib import Path

import pytest

from activemri.data import SliceDataset, make_builtin
from activemri.recon_models import DEFAULT_CHECKPOINT, UnetReconstructor, load_default
from activemri.recon_models.evaluate import evaluate_reconstructor
from activemri.recon_models.registry import reconstructor_from_preset


@pytest.fixture(scope="module")
def fresh_default_data(tmp_path_factory):
    # A seed the checkpoint never saw: a fresh draw of the built-in `default` distribution.
    out = tmp_path_factory.mktemp("fresh_default")
    make_builtin(out, "default", seed=2024, num_volumes=3)
    return out


def test_default_checkpoint_is_shipped_and_small():
    assert DEFAULT_CHECKPOINT.is_file()
    assert DEFAULT_CHECKPOINT.stat().st_size <= 5 * 1024 * 1024
    model = load_default()
    assert isinstance(model, UnetReconstructor) and model.has_uncertainty
    assert model.recon_size == (128, 128)
    repo = Path(__file__).resolve().parents[2]
    preset = reconstructor_from_preset(repo / "recon_models/unet_default.yaml")
    assert preset.config == model.config


@pytest.mark.parametrize("acceleration", [4.0, 8.0])
def test_default_beats_zero_filled_on_fresh_data(fresh_default_data, acceleration):
    result = evaluate_reconstructor(
        load_default(), SliceDataset(fresh_default_data), "random", acceleration, seed=3
    )
    assert result["model"]["ssim"]["mean"] > result["zero_filled"]["ssim"]["mean"] + 0.03
    assert result["model"]["nmse"]["mean"] < result["zero_filled"]["nmse"]["mean"]
    assert result["uncertainty_spearman"] > 0.2
