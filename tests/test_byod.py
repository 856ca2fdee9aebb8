"""Bring your own data, end to end, one command each: train -> check -> mask learn -> evaluate."""

from __future__ import annotations

import json

import pytest

from activemri.agents.learned_mask import OrderingWarning
from activemri.cli import main
from activemri.data import make_builtin

pytestmark = pytest.mark.slow


def test_own_folder_workflow(tmp_path, capsys):
    own = tmp_path / "my_fastmri"
    make_builtin(own, "tiny", seed=21, num_volumes=8)  # stands in for a folder of fastMRI files
    other = tmp_path / "other_site"
    make_builtin(other, "tiny", seed=22, num_volumes=3)
    preset = tmp_path / "unet.yaml"
    preset.write_text(
        "model: unet\n"
        "config: {recon_size: [32, 32], chans: 8, num_pool_layers: 2, residual: true}\n"
        "train: {epochs: 2, batch_size: 4, lr: 0.003, augment: true}\n"
    )
    model = tmp_path / "model" / "model.pt"
    assert main(["recon", "train", "--preset", str(preset), "--data", str(own), "--out",
                 str(model.parent), "--quiet"]) == 0  # fmt: skip

    code = main(["recon", "check", "--checkpoint", str(model), "--data", str(own), "--slices",
                 "8"])  # fmt: skip
    text = capsys.readouterr().out
    assert code in (0, 1) and ("helps" in text) != ("NOT better" in text)
    assert f"trained on: {own}" in text and "this is its training data" in text

    env = ["--set", f"reconstructor={model}", "--set", "initial_lines=4", "--set", "device=cpu"]
    ordering = tmp_path / "ordering.json"
    assert main(["mask", "learn", "--data", str(own), "--out", str(ordering), "--sample-size",
                 "2", "--max-lines", "8", "--quiet", *env]) == 0  # fmt: skip
    learned = json.loads(ordering.read_text())
    assert learned["settings"]["data"] == str(own)
    assert len(learned["settings"]["reconstructor_fingerprint"]) == 16

    out = tmp_path / "eval_own"
    args = ["evaluate", "--policies", "random", f"learned:{ordering}", "--accelerations", "4",
            "--split", "all", "--no-plots", "--quiet", *env]  # fmt: skip
    assert main([*args, "--data", str(own), "--out", str(out)]) == 0
    doc = json.loads((out / "results.json").read_text())
    label = f"builtin-v0@{own.name}"
    assert set(doc["envs"]) == {label}
    assert doc["envs"][label]["domain_check"] is None  # its own training data: no check
    assert {r["num_slices"] for r in doc["results"]} == {8 * 3}  # split all: every slice

    # The same model on another site's data: the guard checks it and results.json says so.
    out2 = tmp_path / "eval_other"
    with pytest.warns(OrderingWarning, match="learned on"):
        assert main([*args, "--data", str(other), "--out", str(out2)]) == 0
    doc2 = json.loads((out2 / "results.json").read_text())
    check = doc2["envs"][f"builtin-v0@{other.name}"]["domain_check"]
    assert check is not None and set(check["ssim"]) == {"4x", "8x"}
