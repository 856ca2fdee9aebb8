"""The shipped reconstructors: present, small, and better than zero-filled where they never
trained: data of a new seed, and an anatomy left out of training (the abdomen)."""

from __future__ import annotations

from pathlib import Path

import pytest

from activemri.data import SliceDataset, make_builtin
from activemri.recon_models import DEFAULT_CHECKPOINT, UnetReconstructor, load_default
from activemri.recon_models.evaluate import evaluate_reconstructor
from activemri.recon_models.registry import reconstructor_from_preset

REPO = Path(__file__).resolve().parents[2]
# preset, data it trained on (its held-out anatomy beside it), volumes and slices to draw.
SHIPPED = {
    "unet_default": ("default", "body", 4, 4),
    "unet_multicoil": ("multicoil", "body-multicoil", 4, 3),
    "unet_large": ("large", "body-large", 2, 2),
}
FRESH_SEED = 2024  # never used for any training or validation data


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """Per shipped model: fresh-seed folders of its trained anatomies and of the held-out one."""
    made = {}
    for name, (seen, unseen, volumes, slices) in SHIPPED.items():
        for kind, preset in (("seen", seen), ("unseen", unseen)):
            out = tmp_path_factory.mktemp(f"{name}_{kind}")
            make_builtin(out, preset, seed=FRESH_SEED, num_volumes=volumes,
                         slices_per_volume=slices)  # fmt: skip
            made[name, kind] = out
    return made


def test_default_checkpoint_is_shipped_and_matches_its_preset():
    assert DEFAULT_CHECKPOINT.is_file()
    model = load_default()
    assert isinstance(model, UnetReconstructor) and model.has_uncertainty
    assert model.recon_size == (128, 128)
    preset = reconstructor_from_preset(REPO / "recon_models/unet_default.yaml")
    assert preset.config == model.config


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_model_is_small_and_records_its_domain(name):
    model = reconstructor_from_preset(REPO / f"recon_models/{name}.yaml")
    weights = REPO / "activemri/recon_models/weights" / f"{name}.pt"
    assert weights.stat().st_size <= 20 * 1024 * 1024
    domain = model.training_domain
    assert domain is not None and domain["data"] == f"builtin:{SHIPPED[name][0]}"
    assert set(domain["anatomies"]) == {"brain", "knee"}
    assert model.sigma_scale != 1.0  # calibrated on validation data


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["seen", "unseen"])
@pytest.mark.parametrize("name", sorted(SHIPPED))
@pytest.mark.parametrize("acceleration", [4.0, 8.0])
def test_shipped_model_beats_zero_filled_on_new_data(fresh, name, kind, acceleration):
    model = reconstructor_from_preset(REPO / f"recon_models/{name}.yaml")
    result = evaluate_reconstructor(model, SliceDataset(fresh[name, kind]), "random",
                                    acceleration, seed=3, batch_size=4)  # fmt: skip
    ours, zf = result["model"]["per_image_ssim"], result["zero_filled"]["per_image_ssim"]
    assert ours["mean"] > zf["mean"] + 0.03
    if kind == "seen":  # on the abdomen the knee-size model trades a little NMSE for SSIM
        assert result["model"]["nmse"]["mean"] < result["zero_filled"]["nmse"]["mean"]
    unc = result["uncertainty"]
    # The uncertainty ranks errors inside tissue (weakly on the unseen anatomy, see the model
    # cards). Its calibration holds within a few percent of the nominal 95% where it was
    # fitted; on the unseen anatomy it may only err wide (over-cover), never narrow.
    assert unc["spearman_per_image"]["mean"] > (0.15 if kind == "seen" else 0.0)
    coverage = unc["coverage_1.96_per_image"]["mean"]
    assert coverage > 0.85 and (coverage < 0.995 or kind == "unseen")
