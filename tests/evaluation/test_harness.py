"""The evaluation harness on tiny data: runs, prefixes, results files, resume, plots."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from env_helpers import CUSTOM, tiny_config

from activemri.agents.policies import FixedMaskPolicy, LowToHighPolicy, RandomPolicy
from activemri.envs import ActiveMRIVectorEnv
from activemri.evaluation import EvalSettings, evaluate, parse_policy, run_policy, validate_results
from activemri.evaluation import harness as harness_module
from activemri.evaluation.results import truncate
from activemri.masks import make_mask, volume_seed


def _overrides(data: Path, **extra: Any) -> dict[str, Any]:
    config = tiny_config(data, reconstructor=CUSTOM, trust_class_path=True, **extra)
    del config["budget"], config["split"]  # the harness sets the budget and the split
    return config


def _venv(data: Path, num_envs: int, acceleration: float, **extra: Any) -> ActiveMRIVectorEnv:
    return ActiveMRIVectorEnv(
        num_envs,
        **_overrides(data, acceleration=acceleration, order="sequential", split=None, **extra),
    )


def test_run_policy_plays_every_slice_once_with_one_record_per_line(tiny_data: Path) -> None:
    venv = _venv(tiny_data, 5, 4.0)  # 12 slices of one width over 5 rows: uneven shares
    runs = run_policy(venv, LowToHighPolicy())
    assert len(venv.slice_indices) == 12
    assert len(runs) == 12 and len(set(runs.keys())) == 12
    for lines, ssim in zip(runs.lines, runs.metrics["ssim"], strict=True):
        assert lines == list(range(4, 4 + len(lines)))  # 4 central lines, then one per step
        assert lines[-1] == round(32 / 4)  # 32 measured lines at 4x
        assert len(ssim) == len(lines)
    assert runs.example is not None and runs.example["mask"].sum() == 8


def test_prefix_of_a_long_run_equals_a_short_run(tiny_data: Path) -> None:
    long = truncate(run_policy(_venv(tiny_data, 3, 2.0), LowToHighPolicy()), 4.0)
    short = run_policy(_venv(tiny_data, 3, 4.0), LowToHighPolicy())
    assert long.lines == short.lines
    for metric in ("ssim", "psnr", "nmse"):
        np.testing.assert_allclose(long.metrics[metric], short.metrics[metric], rtol=1e-6)


def test_greedy_oracle_first_step_beats_every_other_choice(tiny_data: Path) -> None:
    venv = _venv(tiny_data, 6, 4.0)
    oracle = run_policy(venv, parse_policy("greedy_oracle").build(venv, 0))
    for policy in (RandomPolicy(3), LowToHighPolicy()):
        other = run_policy(venv, policy)
        assert oracle.keys() == other.keys()
        for a, b in zip(oracle.metrics["ssim"], other.metrics["ssim"], strict=True):
            assert a[0] == pytest.approx(b[0])  # same initial mask
            assert a[1] >= b[1] - 1e-6  # the oracle's step is the best one-step choice


def test_fixed_mask_policy_plays_the_per_volume_mask(tiny_data: Path) -> None:
    venv = _venv(tiny_data, 3, 4.0)
    policy = FixedMaskPolicy("equispaced")
    obs, _ = venv.torch_reset(seed=0)
    episodes = venv.episodes
    state = venv.state
    policy.begin(range(3), venv.policy_episodes(range(3)), venv.torch_policy_observation(obs))
    expected = []
    for row, episode in enumerate(episodes):
        valid = state.valid[row].numpy()
        rng = np.random.default_rng(volume_seed(episode.meta.file.name))
        mask, _ = make_mask("equispaced", 36, 8, 4, rng, valid=valid)
        expected.append(mask)
    for _ in range(4):  # 4 -> 8 lines
        obs, _, terminated, _, info = venv.torch_step(
            policy.act(venv.torch_policy_observation(obs))
        )
    assert bool(terminated.all())
    final = info["final_obs"]["mask"].numpy().astype(bool)
    np.testing.assert_array_equal(final, np.stack(expected))


def test_policy_specs() -> None:
    assert parse_policy("random").label == "random"
    assert parse_policy("mask:variable_density").label == "variable_density"
    spec = parse_policy("mine=learned:some/file.json")
    assert (spec.label, spec.name, spec.arg) == ("mine", "learned", "some/file.json")
    with pytest.raises(ValueError, match="unknown policy"):
        parse_policy("nonsense")
    with pytest.raises(ValueError, match="distinct"):
        EvalSettings(policies=("random", "random"))


def _settings(data: Path, **kwargs: Any) -> EvalSettings:
    values: dict[str, Any] = {
        "policies": ("random", "low_to_high", "equispaced", "uncertainty", "greedy_oracle"),
        "accelerations": (2.0, 4.0),
        "split": "train",
        "max_slices": 6,
        "policy_slices": {"greedy_oracle": 3},
        "batch_size": 4,
        "device": "cpu",
        "overrides": _overrides(data),
    }
    values.update(kwargs)
    return EvalSettings(**values)


def test_evaluate_writes_valid_results_plots_and_resumes(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tiny_data)
    doc = evaluate(settings, tmp_path, log=None, show_progress=False)
    validate_results(json.loads((tmp_path / "results.json").read_text()))
    entries = {(r["policy"], r["acceleration"]): r for r in doc["results"]}
    assert len(entries) == 10
    assert entries[("greedy_oracle", 4.0)]["num_slices"] == 3
    assert entries[("random", 4.0)]["lines"] == [4.0, 5.0, 6.0, 7.0, 8.0]
    assert entries[("random", 2.0)]["lines"][-1] == 16.0
    assert not entries[("random", 2.0)]["budget_aware"]
    assert entries[("equispaced", 4.0)]["budget_aware"]
    # Results on a user's folder are labelled by it, never as the built-in benchmark.
    label = f"builtin-v0@{tiny_data.name}"
    assert tiny_data.name == "tiny0"
    assert settings.label_of("builtin-v0") == label
    assert {r["preset"] for r in doc["results"]} == {label} and set(doc["envs"]) == {label}
    assert doc["settings"]["preset_labels"] == [label]
    # Files: one run per budget-aware policy and budget, one per other policy.
    runs = sorted(p.name for p in (tmp_path / "runs" / "builtin-v0_tiny0").glob("*.json"))
    assert runs == ["equispaced@2x.json", "equispaced@4x.json", "greedy_oracle@2x.json",
                    "low_to_high@2x.json", "random@2x.json", "uncertainty@2x.json"]  # fmt: skip
    with open(tmp_path / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    expected_rows = sum(r["num_slices"] * len(r["lines"]) for r in doc["results"])
    assert len(rows) == expected_rows
    assert set(rows[0]) == {"policy", "preset", "acceleration", "actual_acceleration", "file",
                            "slice", "step", "lines", "ssim", "psnr", "nmse"}  # fmt: skip
    tests = doc["paired_tests"]
    assert len(tests) == 2 * 10  # 5 policies: 10 pairs per budget
    oracle_pairs = [t for t in tests if "greedy_oracle" in (t["a"], t["b"])]
    assert all(t["n"] == 3 for t in oracle_pairs)  # nested subset: 3 common slices
    for name in ("ssim_vs_lines.png", "final_metrics.png", f"example_{label}.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Resume: every run is loaded, nothing is played again.
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("run_policy must not be called on resume")

    monkeypatch.setattr(harness_module, "run_policy", refuse)
    again = evaluate(settings, tmp_path, log=None, show_progress=False, plots=False)
    assert again["results"] == doc["results"]
    # Other settings are not the same runs: they are played again.
    with pytest.raises(AssertionError, match="must not be called"):
        evaluate(_settings(tiny_data, seed=1), tmp_path, log=None, show_progress=False)


def test_a_changed_ordering_file_invalidates_its_run(tmp_path: Path) -> None:
    path = tmp_path / "order.json"
    path.write_text("{}")
    first = parse_policy(f"learned:{path}").identity()
    path.write_text("{ }")
    assert parse_policy(f"learned:{path}").identity() != first


def test_validate_results_rejects_broken_documents(tiny_data: Path, tmp_path: Path) -> None:
    doc = evaluate(_settings(tiny_data, policies=("random", "low_to_high"), policy_slices={}),
                   tmp_path, log=None, show_progress=False, plots=False)  # fmt: skip
    validate_results(doc)
    broken = json.loads(json.dumps(doc))
    broken["results"][0]["auc"]["ssim"]["ci_low"] = 2.0
    with pytest.raises(ValueError, match="CI excludes"):
        validate_results(broken)
    broken = json.loads(json.dumps(doc))
    del broken["conventions"]["ssim"]
    with pytest.raises(ValueError, match=r"conventions\.ssim"):
        validate_results(broken)
    broken = json.loads(json.dumps(doc))
    broken["results"][0]["curves"]["psnr"]["mean"].pop()
    with pytest.raises(ValueError, match=r"curves\.psnr\.mean"):
        validate_results(broken)
