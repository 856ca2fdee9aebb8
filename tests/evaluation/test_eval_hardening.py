"""``evaluate`` cannot reuse stale runs, loses no summary, and labels what it actually ran."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
from env_helpers import tiny_config

from activemri.data import make_builtin
from activemri.envs import ActiveMRIVectorEnv
from activemri.evaluation import EvalSettings, evaluate, format_table, validate_results
from activemri.recon_models import build_reconstructor


def _settings(data: Path, policies: tuple[str, ...] = ("random",), **extra: Any) -> EvalSettings:
    overrides = tiny_config(data, domain_check=False)
    del overrides["budget"], overrides["split"]
    overrides.update(extra.pop("overrides", {}))
    return EvalSettings(policies=policies, accelerations=extra.pop("accelerations", (4.0,)),
                        split="all", batch_size=4, device="cpu", overrides=overrides,
                        **extra)  # fmt: skip


def _data(folder: Path, seed: int = 0) -> Path:
    make_builtin(folder, "tiny", seed=seed, num_volumes=3, overwrite=True)
    return folder


def _auc(doc: dict[str, Any], policy: str = "random") -> float:
    return next(r["auc"]["ssim"]["mean"] for r in doc["results"] if r["policy"] == policy)


def test_changed_data_is_run_again(tmp_path: Path) -> None:
    data = _data(tmp_path / "data")
    first = evaluate(_settings(data), tmp_path / "out", log=None, show_progress=False, plots=False)
    _data(data, seed=7)  # same file names, other volumes
    lines: list[str] = []
    again = evaluate(_settings(data), tmp_path / "out", log=lines.append, show_progress=False,
                     plots=False)  # fmt: skip
    fresh = evaluate(_settings(data), tmp_path / "fresh", log=None, show_progress=False,
                     plots=False)  # fmt: skip
    assert _auc(again) == pytest.approx(_auc(fresh), abs=1e-9)
    assert _auc(again) != pytest.approx(_auc(first), abs=1e-6)
    # The log says why, down to the files.
    assert any("data (vol00000.h5, vol00001.h5, vol00002.h5) changed" in line for line in lines)


def test_changed_reconstructor_checkpoint_is_run_again(tmp_path: Path) -> None:
    data = _data(tmp_path / "data")
    ckpt = tmp_path / "model.pt"
    config = {"recon_size": [32, 32], "chans": 4, "num_pool_layers": 2}
    torch.manual_seed(0)
    build_reconstructor("unet", **config).save(ckpt)
    settings = _settings(data, overrides={"reconstructor": str(ckpt)})
    first = evaluate(settings, tmp_path / "out", log=None, show_progress=False, plots=False)
    torch.manual_seed(1)
    build_reconstructor("unet", **config).save(ckpt)  # same path and config, other weights
    lines: list[str] = []
    again = evaluate(settings, tmp_path / "out", log=lines.append, show_progress=False,
                     plots=False)  # fmt: skip
    assert any("reconstructor changed" in line for line in lines)
    assert _auc(again) != pytest.approx(_auc(first), abs=1e-6)


def _evaluate_into(args: tuple[str, str, str]) -> None:
    data, out, policy = args
    evaluate(_settings(Path(data), (policy,)), out, log=None, show_progress=False, plots=False)


def test_two_evaluations_into_one_folder_keep_both_summaries(tmp_path: Path) -> None:
    data = _data(tmp_path / "data")
    out = tmp_path / "out"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:  # two processes writing one folder at the same time
        pool.map(_evaluate_into, [(str(data), str(out), "random"),
                                  (str(data), str(out), "low_to_high")])  # fmt: skip
    doc = json.loads((out / "results.json").read_text())
    validate_results(doc)
    # Whichever finished last saw the other's run on disk and summarized both.
    assert {r["policy"] for r in doc["results"]} == {"random", "low_to_high"}
    assert {(t["a"], t["b"]) for t in doc["paired_tests"]} in (
        {("random", "low_to_high")},
        {("low_to_high", "random")},
    )
    # A run on other data is never merged into this summary.
    other = _data(tmp_path / "other", seed=3)
    settings = _settings(other, ("equispaced",))
    alone = evaluate(settings, out, log=None, show_progress=False, plots=False)
    assert {r["policy"] for r in alone["results"]} == {"equispaced"}


def test_actual_acceleration_in_results_and_table(tmp_path: Path) -> None:
    data = _data(tmp_path / "data")
    settings = _settings(data, accelerations=(3.0,), overrides={"initial_lines": 2})
    doc = evaluate(settings, tmp_path / "out", log=None, show_progress=False, plots=False)
    row = doc["results"][0]
    assert row["acceleration"] == 3.0
    assert row["lines"][-1] == round(32 / 3)  # 11 lines of 32 measured ones
    assert row["actual_acceleration"] == pytest.approx(32 / 11)
    assert "3x requested, 2.91x run" in format_table(doc)
    # An acceleration that cannot be honoured is an error, not a relabelled run.
    with pytest.raises(ValueError, match="acceleration 8"):
        evaluate(_settings(data, accelerations=(8.0,)), tmp_path / "o2", log=None,
                 show_progress=False, plots=False)  # fmt: skip


def test_dropped_slices_are_in_results_json(tmp_path: Path) -> None:
    data = _data(tmp_path / "data")
    with h5py.File(data / "vol00001.h5", "r+") as hf:
        kspace = hf["kspace"][...]
        kspace[2] = np.nan
        hf["kspace"][...] = kspace
    with pytest.warns(UserWarning, match="skipping slice"):
        doc = evaluate(_settings(data), tmp_path / "out", log=None, show_progress=False,
                       plots=False)  # fmt: skip
    row = doc["results"][0]
    assert row["num_slices"] == 8
    assert [(d["file"], d["slice"]) for d in row["dropped"]] == [("vol00001.h5", 2)]
    assert "NaN" in row["dropped"][0]["reason"]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["results"][0]["dropped"] == row["dropped"]
    assert "1 slice(s) left out" in format_table(doc)


def test_non_finite_reward_names_policy_and_slices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _data(tmp_path / "data")
    real = ActiveMRIVectorEnv.torch_step

    def failing(self: ActiveMRIVectorEnv, *args: Any, **kwargs: Any) -> Any:
        real(self, *args, **kwargs)
        raise FloatingPointError("non-finite rewards [nan]: the reconstructor returned NaN/inf")

    monkeypatch.setattr(ActiveMRIVectorEnv, "torch_step", failing)
    with pytest.raises(FloatingPointError, match=r"random @ 4x on .*slices in play: vol0000"):
        evaluate(_settings(data), tmp_path / "out", log=None, show_progress=False, plots=False)


def test_set_device_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _data(tmp_path / "data")
    with pytest.raises(ValueError, match="device is given twice"):
        EvalSettings(policies=("random",), device="cpu", overrides={"device": "cuda"})
    seen: list[str] = []
    real = ActiveMRIVectorEnv.__init__

    def spy(self: ActiveMRIVectorEnv, num_envs: int, config: Any, **kw: Any) -> None:
        seen.append(str(config.device))
        real(self, num_envs, config, **kw)

    monkeypatch.setattr(ActiveMRIVectorEnv, "__init__", spy)
    settings = EvalSettings(policies=("random",), accelerations=(4.0,), split="all",
                            device="auto", overrides={**_settings(data).overrides,
                                                      "device": "cpu"})  # fmt: skip
    evaluate(settings, tmp_path / "out", log=None, show_progress=False, plots=False)
    assert seen and set(seen) == {"cpu"}
    if not torch.cuda.is_available():
        cuda = EvalSettings(policies=("random",), accelerations=(4.0,), split="all",
                            overrides={**settings.overrides, "device": "cuda"})  # fmt: skip
        with pytest.raises(ValueError, match="CUDA is not available"):
            evaluate(cuda, tmp_path / "out2", log=None, show_progress=False, plots=False)


def test_final_metrics_plot_has_labels_room_for_error_bars_and_outside_legend(
    tmp_path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from activemri.evaluation import plots

    data = _data(tmp_path / "data")
    doc = evaluate(_settings(data, ("random", "low_to_high")), tmp_path / "out", log=None,
                   show_progress=False, plots=False)  # fmt: skip
    fig = plots.final_figure(doc)
    for ax, block in zip(fig.axes[:2], ("auc", "final"), strict=True):
        assert ax.get_ylabel()
        low, high = ax.get_ylim()
        for r in doc["results"]:
            entry = r[block]["ssim"]
            assert low <= entry["ci_low"] and entry["ci_high"] <= high
        assert r["acceleration"] == 4.0
    legend = fig.legends[0] if fig.legends else fig.axes[1].get_legend()
    fig.canvas.draw()
    box = legend.get_window_extent()
    for ax in fig.axes[:2]:
        assert not box.overlaps(ax.get_window_extent())  # drawn beside the bars
    assert "run" in fig.axes[0].get_xticklabels()[0].get_text()  # the acceleration run


def _quiet(settings: EvalSettings, out: Path, **kw: Any) -> dict[str, Any]:
    return evaluate(settings, out, log=kw.pop("log", None), show_progress=False, plots=False,
                    **kw)  # fmt: skip


def test_changed_weights_behind_a_yaml_preset_are_run_again(tmp_path: Path) -> None:
    data = _data(tmp_path / "data")
    config = {"recon_size": [32, 32], "chans": 4, "num_pool_layers": 2}
    preset = tmp_path / "recon" / "mine.yaml"
    preset.parent.mkdir()
    preset.write_text("model: unet\nconfig: {recon_size: [32, 32], chans: 4, "
                      "num_pool_layers: 2}\ncheckpoint: weights/w.pt\n")  # fmt: skip
    (preset.parent / "weights").mkdir()
    torch.manual_seed(0)
    build_reconstructor("unet", **config).save(preset.parent / "weights" / "w.pt")
    settings = _settings(data, overrides={"reconstructor": str(preset)})
    first = _quiet(settings, tmp_path / "out")
    torch.manual_seed(1)  # the YAML is untouched; only the weights file it names changes
    build_reconstructor("unet", **config).save(preset.parent / "weights" / "w.pt")
    lines: list[str] = []
    again = _quiet(settings, tmp_path / "out", log=lines.append)
    assert any("reconstructor changed" in line for line in lines)
    assert _auc(again) != pytest.approx(_auc(first), abs=1e-6)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"seed": 1}, "seed"),
        ({"subset_seed": 1, "max_slices": 4}, "env"),
        ({"overrides": {"split_seed": 3}}, "config"),
        ({"overrides": {"initial_lines": 2}}, "config"),
    ],
)
def test_any_setting_that_changes_numbers_reruns(
    tmp_path: Path, change: dict[str, Any], why: str
) -> None:
    data = _data(tmp_path / "data")
    base = {"max_slices": 4} if "subset_seed" in change else {}
    _quiet(_settings(data, **base), tmp_path / "out")
    lines: list[str] = []
    _quiet(_settings(data, **change), tmp_path / "out", log=lines.append)
    assert not any("loaded" in line for line in lines)
    assert any(why in line and "changed since it was run" in line for line in lines)
    lines.clear()  # and the same settings again: loaded, not rerun
    _quiet(_settings(data, **change), tmp_path / "out", log=lines.append)
    assert any("loaded" in line for line in lines)


def test_run_key_holds_version_policy_file_and_shipped_ordering(tmp_path: Path) -> None:
    from activemri.agents.learned_mask import SHIPPED_ORDERING
    from activemri.evaluation import parse_policy

    assert parse_policy("learned").identity()["sha256"]  # the shipped file, hashed too
    assert SHIPPED_ORDERING.is_file()
    data = _data(tmp_path / "data")
    _quiet(_settings(data), tmp_path / "out")
    (run,) = (tmp_path / "out" / "runs").rglob("random@4x.json")
    identity = json.loads(run.read_text())["identity"]
    assert {"policy", "preset", "env", "seed", "config", "data", "reconstructor",
            "version"} <= set(identity)  # fmt: skip
    assert [row[0] for row in identity["data"]] == ["vol00000.h5", "vol00001.h5", "vol00002.h5"]
    assert identity["reconstructor"]["state_sha256"]
    # Where the preset file lives is no part of the key (a moved checkout resumes).
    assert "source" not in identity["config"] and "cache_dir" not in identity["config"]


def test_sequential_evaluations_into_one_folder_keep_every_output(tmp_path: Path) -> None:
    import csv

    data = _data(tmp_path / "data")
    out = tmp_path / "out"
    _quiet(_settings(data, ("random",)), out)
    lines: list[str] = []
    doc = _quiet(_settings(data, ("low_to_high", "equispaced")), out, log=lines.append)
    assert {r["policy"] for r in doc["results"]} == {"random", "low_to_high", "equispaced"}
    assert doc["merged_policies"] == ["random"]
    assert len(doc["paired_tests"]) == 3
    with open(out / "results.csv", newline="") as f:
        assert {row["policy"] for row in csv.DictReader(f)} == {
            "random", "low_to_high", "equispaced"}  # fmt: skip
    with open(out / "paired_tests.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 3
    # Runs on other settings stay on disk, are left out of the summary, and the log says so.
    lines.clear()
    alone = _quiet(_settings(data, ("low_to_high",), seed=5), out, log=lines.append)
    assert {r["policy"] for r in alone["results"]} == {"low_to_high"}
    assert any("left out of the summary" in line and "random@4x.json" in line for line in lines)


def test_actual_acceleration_in_csv_paired_tests_and_plot_titles(tmp_path: Path) -> None:
    import csv

    import matplotlib

    matplotlib.use("Agg")
    from activemri.evaluation import plots

    data = _data(tmp_path / "data")
    settings = _settings(data, ("random", "low_to_high"), accelerations=(3.0,),
                         overrides={"initial_lines": 2})  # fmt: skip
    doc = _quiet(settings, tmp_path / "out")
    with open(tmp_path / "out" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {row["acceleration"] for row in rows} == {"3"}  # requested labels stay the keys
    assert all(float(row["actual_acceleration"]) == pytest.approx(32 / 11) for row in rows)
    assert doc["paired_tests"][0]["actual_acceleration"] == pytest.approx(32 / 11)
    with open(tmp_path / "out" / "paired_tests.csv", newline="") as f:
        assert float(next(csv.DictReader(f))["actual_acceleration"]) == pytest.approx(32 / 11)
    table = format_table(doc)
    assert all("2.91x" in line for line in table.splitlines() if line.startswith("  random "))
    fig = plots.final_figure(doc)
    assert "3x (2.91x run)" in fig.axes[0].get_xticklabels()[0].get_text()
    # The curves' panel titles and the example figure's use the same label.
    assert plots._budget_label(doc, doc["results"][0]["preset"], 3.0) == "3x (2.91x run)"
    assert (tmp_path / "figs" / "ssim_vs_lines.png") in plots.plot_all(doc, {}, tmp_path / "figs")


def test_dropped_slices_and_skipped_files_are_recorded(tmp_path: Path) -> None:
    data = _data(tmp_path / "data")
    with h5py.File(data / "vol00001.h5", "r+") as hf:
        kspace = hf["kspace"][...]
        kspace[1] = np.inf
        hf["kspace"][...] = kspace
    (data / "vol00009.h5").write_bytes(b"not an h5 file")
    with pytest.warns(UserWarning):
        doc = _quiet(_settings(data), tmp_path / "out")
    (run,) = (tmp_path / "out" / "runs").rglob("random@4x.json")
    dropped = json.loads(run.read_text())["trajectories"]["dropped"]
    assert [(d["file"], d["slice"]) for d in dropped] == [("vol00001.h5", 1)]
    assert dropped == doc["results"][0]["dropped"]
    (env,) = doc["envs"].values()
    assert [d["file"] for d in env["skipped_files"]] == ["vol00009.h5"]
    assert env["skipped_files"][0]["reason"]


def test_non_finite_reward_names_the_slice_at_fault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _data(tmp_path / "data")
    real = ActiveMRIVectorEnv.torch_step

    def failing(self: ActiveMRIVectorEnv, *args: Any, **kwargs: Any) -> Any:
        out = real(self, *args, **kwargs)
        state = self.state
        if int(state.steps[2]) == 3:  # the third row's reconstruction turns NaN
            state.score[2] = float("nan")
            raise FloatingPointError("non-finite rewards [..]: the reconstructor returned NaN")
        return out

    monkeypatch.setattr(ActiveMRIVectorEnv, "torch_step", failing)
    with pytest.raises(FloatingPointError) as info:
        _quiet(_settings(data), tmp_path / "out")
    message = str(info.value)
    assert message.startswith("random @ 4x on builtin-v0@data: non-finite rewards")
    episode_file = message.split("non-finite on ")[1]
    assert episode_file.count("slice") == 1 and episode_file.startswith("vol0000")
    assert "slices in play" not in message
    assert not list((tmp_path / "out").rglob("random@4x.json"))  # nothing half-written


def test_final_metrics_ylim_covers_negative_error_bars(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from activemri.evaluation import plots

    data = _data(tmp_path / "data")
    doc = _quiet(_settings(data), tmp_path / "out")
    doc["results"][0]["final"]["ssim"]["ci_low"] = -0.25  # SSIM can be negative
    fig = plots.final_figure(doc)
    low, high = fig.axes[1].get_ylim()
    assert low <= -0.25 and high >= doc["results"][0]["final"]["ssim"]["ci_high"]
    assert fig.axes[1].get_ylabel() == "final SSIM (mean, 95% CI)"
    assert fig.axes[0].get_ylim()[0] >= 0.0  # still starts at 0 when every bar is positive
