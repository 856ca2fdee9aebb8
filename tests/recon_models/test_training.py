from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from activemri.cli import main
from activemri.data import SliceDataset, make_builtin
from activemri.recon_models import Reconstructor, reconstructor_from_preset
from activemri.recon_models.evaluate import evaluate_reconstructor
from activemri.recon_models.ssdu import ssdu_split
from activemri.recon_models.training import train

UNET_PRESET = {
    "model": "unet",
    "config": {"recon_size": [32, 32], "chans": 8, "num_pool_layers": 2, "uncertainty": True},
    "train": {"epochs": 4, "batch_size": 4, "lr": 0.003, "seed": 0},
}
VARNET_PRESET = {
    "model": "varnet",
    "config": {
        "recon_size": [32, 32],
        "num_cascades": 2,
        "sens_chans": 4,
        "sens_pools": 2,
        "chans": 8,
        "pools": 2,
    },
    "train": {"epochs": 4, "batch_size": 4, "lr": 0.003, "seed": 0, "mode": "ssdu"},
}


def _train_args(preset, data, out) -> list[str]:
    return ["--preset", str(preset), "--data", str(data), "--out", str(out), "--quiet"]


@pytest.fixture(scope="module")
def train_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny12")
    make_builtin(out, "tiny", seed=5, num_volumes=12)
    return out


def _val_ssim(model, folder) -> float:
    val = SliceDataset(folder, split="val")
    return evaluate_reconstructor(model, val, "random", 4.0, seed=1)["model"]["ssim"]["mean"]


def test_supervised_training_improves_and_writes_checkpoints(train_data, tmp_path):
    torch.manual_seed(0)
    untrained = reconstructor_from_preset(UNET_PRESET)
    result = train(UNET_PRESET, tmp_path, data=str(train_data), progress=False)
    assert len(result["history"]) == 4
    assert {"train_loss", "val_ssim_4x", "val_psnr_8x", "val_nmse_4x"} <= set(result["history"][0])
    trained = Reconstructor.load(tmp_path / "model.pt")
    assert _val_ssim(trained, train_data) > _val_ssim(untrained, train_data) + 0.02
    assert json.loads((tmp_path / "history.json").read_text()) == result["history"]
    assert not list(tmp_path.glob("*.tmp"))


def test_resume_continues_exactly(train_data, tmp_path):
    preset = {**UNET_PRESET, "train": {**UNET_PRESET["train"], "epochs": 2}}
    train(preset, tmp_path / "full", data=str(train_data), progress=False)
    train(preset, tmp_path / "part", data=str(train_data), progress=False, overrides={"epochs": 1})
    train(preset, tmp_path / "part", data=str(train_data), progress=False, resume=True)
    full = torch.load(tmp_path / "full/checkpoint.pt", weights_only=True)
    part = torch.load(tmp_path / "part/checkpoint.pt", weights_only=True)
    for key, value in full["state_dict"].items():
        assert torch.equal(value, part["state_dict"][key]), key
    assert full["extra"]["history"] == part["extra"]["history"]


def test_resume_without_checkpoint_is_an_error(train_data, tmp_path):
    with pytest.raises(FileNotFoundError):
        train(UNET_PRESET, tmp_path, data=str(train_data), resume=True, progress=False)


def test_ssdu_split_partitions_acquired_lines():
    rng = np.random.default_rng(0)
    acquired = torch.rand(5, 64, generator=torch.Generator().manual_seed(0)) < 0.4
    protected = torch.zeros(5, 64, dtype=torch.bool)
    protected[:, 29:35] = True
    acquired |= protected
    for selection in ("uniform", "gaussian"):
        theta, lam = ssdu_split(acquired, protected, 0.4, rng, selection)
        assert not (theta & lam).any()
        assert torch.equal(theta | lam, acquired)
        assert (theta & protected).sum() == protected.sum()
        expected = torch.round(0.4 * acquired.sum(1).double()).long()
        assert torch.equal(lam.sum(1), expected)
    with pytest.raises(ValueError):
        ssdu_split(acquired, protected, 1.2, rng)


def test_ssdu_never_reads_targets_and_improves(train_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(train_data, data)
    train_files = {v.path.name for v in SliceDataset(data, split="train").volumes}
    for name in train_files:  # the fully sampled targets of the training split are unusable
        with h5py.File(data / name, "a") as hf:
            hf["reconstruction_esc"][...] = np.nan
    torch.manual_seed(0)
    untrained = reconstructor_from_preset(VARNET_PRESET)
    before = _val_ssim(untrained, data)
    train(VARNET_PRESET, tmp_path / "out", data=str(data), progress=False)
    trained = Reconstructor.load(tmp_path / "out/model.pt")
    assert _val_ssim(trained, data) > before + 0.02


def test_ssdu_needs_a_kspace_model(train_data, tmp_path):
    preset = {**UNET_PRESET, "train": {**UNET_PRESET["train"], "mode": "ssdu"}}
    with pytest.raises(ValueError, match="does not predict k-space"):
        train(preset, tmp_path, data=str(train_data), progress=False)


def test_bad_train_settings(train_data, tmp_path):
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['epoch'\] in train"):
        train({**UNET_PRESET, "train": {"epoch": 3}}, tmp_path, data=str(train_data))
    with pytest.raises(ValueError, match="mode"):
        train(UNET_PRESET, tmp_path, data=str(train_data), overrides={"mode": "magic"})


def test_cli_recon_train_and_eval(train_data, tmp_path, capsys):
    preset = tmp_path / "p.yaml"
    preset.write_text(
        "model: unet\nconfig: {recon_size: [32, 32], chans: 4, num_pool_layers: 2}\n"
        "train: {epochs: 1, batch_size: 4}\n"
    )
    out = tmp_path / "out"
    assert main(["recon", "train", *_train_args(preset, train_data, out)]) == 0
    assert "best validation SSIM" in capsys.readouterr().out
    report = tmp_path / "r.json"
    assert (
        main(
            [
                "recon",
                "eval",
                "--checkpoint",
                str(out / "model.pt"),
                "--data",
                str(train_data),
                "--split",
                "val",
                "--acceleration",
                "8",
                "--json",
                str(report),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "zero_filled" in text and "8x" in text
    result = json.loads(report.read_text())
    assert result["acceleration"] == 8 and result["num_slices"] > 0
    assert 0 < result["zero_filled"]["ssim"]["mean"] < 1
    zf = tmp_path / "zf.yaml"
    zf.write_text("model: zero_filled\nconfig: {recon_size: [32, 32]}\n")
    assert (
        main(
            [
                "recon",
                "eval",
                "--preset",
                str(zf),
                "--data",
                str(train_data),
                "--split",
                "val",
                "--json",
                str(report),
            ]
        )
        == 0
    )
    result = json.loads(report.read_text())
    assert result["model"]["ssim"]["mean"] == pytest.approx(result["zero_filled"]["ssim"]["mean"])
    assert (
        main(
            ["recon", "eval", "--checkpoint", str(tmp_path / "none.pt"), "--data", str(train_data)]
        )
        == 2
    )


@pytest.mark.slow
def test_torchrun_two_process_gloo(train_data, tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text(
        "model: unet\nconfig: {recon_size: [32, 32], chans: 4, num_pool_layers: 2}\n"
        "train: {epochs: 1, batch_size: 2}\n"
    )
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "activemri.cli",
        "recon",
        "train",
        *_train_args(preset, train_data, out),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    model = Reconstructor.load(out / "model.pt")
    assert model.recon_size == (32, 32)
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 1
    # The logged loss is the mean over both processes, which trained on different slices.
    per_rank = history[0]["train_loss_per_rank"]
    assert len(per_rank) == 2 and per_rank[0] != per_rank[1]
    assert history[0]["train_loss"] == pytest.approx(np.mean(per_rank), rel=1e-5)
    # Every parameter gets a gradient here, so DDP must not be asked to look for unused ones.
    assert "find_unused_parameters" not in result.stderr


def test_resume_refuses_changed_settings_but_allows_more_epochs(train_data, tmp_path):
    preset = {**UNET_PRESET, "train": {**UNET_PRESET["train"], "epochs": 1}}
    train(preset, tmp_path, data=str(train_data), progress=False)
    from activemri.recon_models import CheckpointError

    with pytest.raises(CheckpointError, match="lr"):
        train(
            preset,
            tmp_path,
            data=str(train_data),
            progress=False,
            resume=True,
            overrides={"lr": 0.1},
        )
    result = train(
        preset, tmp_path, data=str(train_data), progress=False, resume=True, overrides={"epochs": 2}
    )
    assert [r["epoch"] for r in result["history"]] == [0, 1]


def test_evaluation_batches_mixed_widths_and_aggregates_per_volume(tmp_path):
    make_builtin(tmp_path, "tiny", seed=1, num_volumes=2)
    other = tmp_path / "other"
    make_builtin(other, "tiny", seed=2, num_volumes=2)
    # A second width, as fastMRI knee folders mix 368- and 372-column volumes.
    for path in sorted(other.glob("*.h5")):
        with h5py.File(path, "a") as hf:
            k = hf["kspace"][()]
            del hf["kspace"]
            hf.create_dataset("kspace", data=np.pad(k, ((0, 0), (0, 0), (2, 2))))
            header = hf["ismrmrd_header"][()].decode()
            del hf["ismrmrd_header"]
            header = header.replace("<y>36</y>", "<y>40</y>", 1).replace(
                "<center>16</center>", "<center>18</center>"
            )
            hf.create_dataset("ismrmrd_header", data=header)
        shutil.move(path, tmp_path / f"wide_{path.name}")
    other.rmdir()
    dataset = SliceDataset(tmp_path)
    assert {v.kspace_shape[1] for v in dataset.volumes} == {36, 40}
    model = reconstructor_from_preset({"model": "zero_filled", "config": {"recon_size": [32, 32]}})
    result = evaluate_reconstructor(model, dataset, batch_size=4)
    assert result["num_volumes"] == 4 and result["num_slices"] == len(dataset)
    # NMSE of a volume is ||gt - pred||^2 / ||gt||^2 over all its slices (fastMRI).
    single = SliceDataset(tmp_path / "vol00000.h5")
    one = evaluate_reconstructor(model, single, batch_size=2)
    from activemri.recon_models.evaluate import MaskedSlices, fixed_mask_rule

    items = [
        MaskedSlices(single, fixed_mask_rule("random", 4.0), 0, per_volume=True)[i]
        for i in range(len(single))
    ]
    from activemri.kspace import zero_filled

    err = energy = 0.0
    for it in items:
        zf = zero_filled(it["kspace"][None], it["mask"][None], (32, 32))[0]
        err += float(((zf.double() - it["target"].double()) ** 2).sum())
        energy += float((it["target"].double() ** 2).sum())
    assert one["model"]["nmse"]["mean"] == pytest.approx(err / energy, rel=1e-5)


@pytest.mark.parametrize(("nll_weight", "unused"), [(0.1, False), (0.0, True)])
def test_unused_parameter_probe(train_data, nll_weight, unused):
    from activemri.recon_models.evaluate import MaskedSlices, iterate_batches
    from activemri.recon_models.training import (
        TrainConfig,
        _LossModule,
        _training_mask_rule,
        _unused_parameters,
    )

    config = TrainConfig.from_mapping({"nll_weight": nll_weight})
    model = reconstructor_from_preset(UNET_PRESET)  # has an uncertainty head
    masked = MaskedSlices(SliceDataset(train_data, split="train"), _training_mask_rule(config), 0)
    batch = next(iter(iterate_batches(masked, 2, [0, 1])))
    assert _unused_parameters(_LossModule(model, config), batch, config) is unused
    assert all(p.grad is None for p in model.parameters())  # the probe leaves no gradient
