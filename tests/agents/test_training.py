"""RL agents end to end: presets, deterministic resumable training, checkpoints, policies, CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from agent_helpers import record_allowed
from env_helpers import CUSTOM, tiny_config, tiny_vec

from activemri.agents.preset import ALGORITHMS, AgentPreset, load_agent_preset
from activemri.agents.rollout import run_policy
from activemri.agents.sb3_agent import (
    AgentPolicy,
    build_model,
    checkpoint_info,
    load_agent,
    save_agent,
)
from activemri.agents.training import ScaledReward, train_agent
from activemri.cli import main
from activemri.envs import make_sb3_vec_env

REPO = Path(__file__).resolve().parents[2]
HYPER = {
    "ddqn": {"buffer_size": 400, "learning_starts": 24, "batch_size": 8, "train_freq": 2,
             "target_update_interval": 40, "exploration_fraction": 0.5},
    "maskable_ppo": {"n_steps": 12, "batch_size": 12, "n_epochs": 2},
}  # fmt: skip


def _preset(data: Path, algorithm: str = "ddqn", **changes: Any) -> AgentPreset:
    doc: dict[str, Any] = {
        "algorithm": algorithm,
        "env_overrides": tiny_config(data),
        "observation": ["reconstruction", "mask"],
        "n_envs": 2,
        "total_steps": 48,
        "reward_scale": 100.0,
        "hyperparameters": HYPER[algorithm],
        "features": {"features_dim": 16, "channels": [4, 4, 4, 4], "pooled": 2, "mask_dim": 8},
        "net_arch": [16],
        "eval": {"every": 24, "split": None, "slices": 4},
        "checkpoint_every": 24,
    }
    doc.update(changes)
    return AgentPreset.from_dict(doc)


def _params(path: Path) -> list[torch.Tensor]:
    model, _ = load_agent(path, device="cpu")
    return [p.detach().clone() for p in model.policy.parameters()]


def _eval_venv(data: Path, **overrides: Any):  # type: ignore[no-untyped-def]
    return tiny_vec(data, 3, order="sequential", **overrides)


# ----------------------------------------------------------------------------- presets
def test_shipped_presets_load_and_cover_both_algorithms() -> None:
    presets = {p.stem: load_agent_preset(p) for p in sorted((REPO / "agents").glob("*.yaml"))}
    assert {p.algorithm for p in presets.values()} == set(ALGORITHMS)
    builtin = [p for p in presets.values() if p.env == "ActiveMRI/Builtin-v0"]
    assert {p.algorithm for p in builtin} == set(ALGORITHMS)
    knee = [p for p in presets.values() if "Knee" in p.env]
    assert {p.algorithm for p in knee} == set(ALGORITHMS)
    for preset in presets.values():
        assert preset.description and preset.eval.split == "val"
    # The replay memory of the built-in Double DQN fits: 100k transitions under 2 GB.
    ddqn = presets["ddqn-builtin"]
    assert ddqn.observation == ("reconstruction", "mask")
    assert ddqn.hyperparameters["buffer_size"] == 100_000
    # Padded knee k-space: Double DQN must see which columns are measured.
    assert all("action_mask" in (p.observation or ()) for p in knee if p.algorithm == "ddqn")


def test_preset_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="algorithm must be one of"):
        AgentPreset(algorithm="a2c")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['gama'\] in AgentPreset"):
        AgentPreset.from_dict({"algorithm": "ddqn", "gama": 0.5})
    with pytest.raises(ValueError, match="must include 'mask'"):
        AgentPreset.from_dict({"algorithm": "ddqn", "observation": ["reconstruction"]})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['each'\] in eval"):
        AgentPreset.from_dict({"algorithm": "ddqn", "eval": {"each": 3}})
    with pytest.raises(FileNotFoundError):
        load_agent_preset(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("- a list\n")
    with pytest.raises(ValueError, match="mapping"):
        load_agent_preset(tmp_path / "bad.yaml")


def test_hyperparameters_cannot_override_what_the_preset_owns(tiny_data: Path) -> None:
    preset = _preset(tiny_data, hyperparameters={**HYPER["ddqn"], "seed": 3})
    venv = make_sb3_vec_env(n_envs=2, seed=0, **tiny_config(tiny_data))
    with pytest.raises(ValueError, match="seed"):
        build_model(preset, venv, "cpu", 0)


def test_scaled_reward_scales_what_the_agent_learns_not_what_is_logged(tiny_data: Path) -> None:
    plain = make_sb3_vec_env(n_envs=2, seed=0, **tiny_config(tiny_data))
    scaled = ScaledReward(make_sb3_vec_env(n_envs=2, seed=0, **tiny_config(tiny_data)), 100.0)
    plain.reset()
    scaled.reset()
    actions = np.array([10, 20])
    _, r_plain, _, _ = plain.step(actions)
    _, r_scaled, _, _ = scaled.step(actions)
    np.testing.assert_allclose(r_scaled, 100.0 * r_plain, rtol=1e-5)
    assert np.abs(r_plain).max() > 0


# ----------------------------------------------------------------------------- training
@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_training_is_deterministic_per_seed(
    tiny_data: Path, tmp_path: Path, algorithm: str
) -> None:
    preset = _preset(tiny_data, algorithm)
    first = train_agent(preset, tmp_path / "a", log=None)
    train_agent(preset, tmp_path / "b", log=None)
    train_agent(preset, tmp_path / "c", seed=1, log=None)
    a, b, c = (_params(tmp_path / name / "agent.zip") for name in "abc")
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))
    assert first.steps >= 48

    def scores(name: str) -> list[list[str]]:  # eval.csv without the wall time
        rows = (tmp_path / name / "eval.csv").read_text().splitlines()
        return [row.split(",")[:1] + row.split(",")[2:] for row in rows]

    assert scores("a")[0] == ["step", "ssim_auc", "final_ssim", "slices"]
    assert len(scores("a")) >= 3 and scores("a") == scores("b")
    for name in ("checkpoint.zip", "agent.zip", "best.zip", "progress.csv", "training.json"):
        assert (tmp_path / "a" / name).is_file()
    replays = [p.name for p in (tmp_path / "a").glob("replay-*.pt")]
    assert replays == ([f"replay-{first.steps}.pt"] if algorithm == "ddqn" else [])
    info = checkpoint_info(tmp_path / "a" / "agent.zip")
    assert info["preset"]["algorithm"] == algorithm and info["num_timesteps"] == first.steps


@pytest.mark.slow
def test_resume_continues_the_run_and_refuses_mismatches(tiny_data: Path, tmp_path: Path) -> None:
    preset = _preset(tiny_data)
    out = tmp_path / "run"
    half = train_agent(preset, out, total_steps=24, log=None)
    assert half.steps == 24
    with pytest.raises(FileExistsError, match="resume"):
        train_agent(preset, out, log=None)
    with pytest.raises(ValueError, match="another preset or seed"):
        train_agent(preset.replace(reward_scale=1.0), out, resume=True, log=None)
    with pytest.raises(ValueError, match="another preset or seed"):
        train_agent(preset, out, seed=5, resume=True, log=None)
    done = train_agent(preset, out, resume=True, log=None)
    assert done.steps == 48
    model, info = load_agent(out / "agent.zip", device="cpu")
    assert model.num_timesteps == 48 and info["num_timesteps"] == 48
    memory = torch.load(out / "replay-48.pt", weights_only=True)
    assert memory["pos"] == 24  # 48 steps of 2 envs: the first run's memory was kept
    assert sorted(p.name for p in out.glob("replay-*.pt")) == ["replay-48.pt"]
    steps = [int(r.split(",")[0]) for r in (out / "eval.csv").read_text().splitlines()[1:]]
    assert steps == [24, 48]
    assert (out / "progress-resumed-24.csv").is_file()
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train_agent(preset, tmp_path / "empty", resume=True, log=None)


@pytest.mark.slow
def test_time_limit_stops_with_a_resumable_checkpoint(tiny_data: Path, tmp_path: Path) -> None:
    result = train_agent(_preset(tiny_data), tmp_path, total_steps=10_000, time_limit=0.0,
                         log=None)  # fmt: skip
    assert result.stopped_early and result.steps < 10_000
    assert json.loads((tmp_path / "training.json").read_text())["stopped_early"]
    assert load_agent(tmp_path / "checkpoint.zip", device="cpu")[0].num_timesteps == result.steps


# ----------------------------------------------------------------------------- as policies
@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_saved_agent_acts_identically_and_never_repeats_a_line(
    tiny_data: Path, tmp_path: Path, algorithm: str
) -> None:
    preset = _preset(tiny_data, algorithm)
    venv = make_sb3_vec_env(n_envs=2, seed=0, observation_keys=preset.observation,
                            **tiny_config(tiny_data))  # fmt: skip
    model = build_model(preset, venv, "cpu", 0)
    model.learn(48)
    save_agent(model, tmp_path / "agent.zip", {"preset": preset.to_dict()})
    live = AgentPolicy(model, preset.observation)
    loaded = AgentPolicy.from_checkpoint(tmp_path / "agent.zip", device="cpu")
    runs = [run_policy(_eval_venv(tiny_data), policy) for policy in (live, loaded)]
    assert runs[0].lines == runs[1].lines
    assert runs[0].metrics["ssim"] == runs[1].metrics["ssim"]
    for lines in runs[0].lines:  # one new measured line every step: never acquired/padding
        assert np.all(np.diff(lines) == 1)
    eval_venv = _eval_venv(tiny_data)
    obs, _ = eval_venv.torch_reset(seed=0)
    seen = eval_venv.torch_policy_observation(obs)
    torch.testing.assert_close(live.act(seen), loaded.act(seen))


@pytest.mark.slow
def test_agent_policy_refuses_an_env_with_other_observations(
    tiny_data: Path, tmp_path: Path
) -> None:
    preset = _preset(tiny_data, observation=None, env_overrides=tiny_config(tiny_data,
                     reconstructor=CUSTOM))  # fmt: skip
    venv = make_sb3_vec_env(n_envs=2, seed=0, **preset.env_overrides)
    model = build_model(preset, venv, "cpu", 0)
    save_agent(model, tmp_path / "agent.zip", {"preset": preset.to_dict()})
    policy = AgentPolicy.from_checkpoint(tmp_path / "agent.zip", device="cpu")
    assert "uncertainty" in policy.keys
    with pytest.raises(ValueError, match="uncertainty"):
        policy.check_env(_eval_venv(tiny_data))  # zero-filled: no uncertainty map


# ----------------------------------------------------------------------------- CLI
@pytest.mark.slow
def test_cli_train_then_evaluate_next_to_baselines(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    preset = _preset(tiny_data).to_dict()
    preset.pop("source")
    preset["env_overrides"] = {k: v for k, v in preset["env_overrides"].items() if k != "split"}
    path = tmp_path / "tiny-ddqn.yaml"
    import yaml

    path.write_text(yaml.safe_dump(preset))
    out = tmp_path / "run"
    train = ["agent", "train", "--preset", str(path), "--out", str(out), "--device", "cpu",
             "--quiet"]  # fmt: skip
    assert main(train) == 0
    assert "48 steps" in capsys.readouterr().out
    assert main(train) == 2  # the folder holds a run: resume or choose another
    assert "--resume" in capsys.readouterr().err
    assert main([*train, "--resume", "--total-steps", "72"]) == 0
    assert checkpoint_info(out / "agent.zip")["num_timesteps"] == 72

    ev = ["agent", "eval", "--checkpoint", str(out / "agent.zip"), "--baselines", "random",
          "--out", str(tmp_path / "eval"), "--accelerations", "4", "--split", "train",
          "--max-slices", "4", "--batch-size", "2", "--device", "cpu", "--no-plots",
          "--quiet"]  # fmt: skip
    assert main(ev) == 0
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    entries = {r["policy"]: r for r in results["results"]}
    assert set(entries) == {"agent", "random"}
    assert entries["agent"]["budget_aware"] and entries["agent"]["num_slices"] == 4
    assert "agent" in capsys.readouterr().out

    bad = ["evaluate", "--policies", f"agent:{tmp_path / 'none.zip'}", "--out",
           str(tmp_path / "e2"), "--device", "cpu", "--quiet"]  # fmt: skip
    assert main(bad) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ddqn-knee-30l", "ddqn-knee-2l", "maskable-ppo-knee-30l"])
def test_knee_presets_run_on_knee_geometry(knee_like: Path, name: str) -> None:
    preset = load_agent_preset(REPO / "agents" / f"{name}.yaml")
    overrides = {**preset.env_overrides, "data_root": str(knee_like), "split": None,
                 "device": "cpu"}  # fmt: skip
    venv = make_sb3_vec_env(preset.env, n_envs=2, seed=0, observation_keys=preset.observation,
                            **overrides)  # fmt: skip
    model = build_model(preset.replace(n_envs=2), venv, "cpu", 0)
    obs = venv.reset()
    free = np.stack(venv.env_method("action_masks"))
    assert obs["reconstruction"].shape == (2, 1, 320, 320)
    if "budget_used" in obs:
        assert obs["budget_used"].tolist() == [[0.0], [0.0]]
    assert not free[:, :17].any() and not free[:, -17:].any()  # zero-padded columns
    if preset.algorithm == "ddqn":
        memory = model.replay_buffer
        # 320x320 uint8 image + its range, two 368-bit masks, float16 budget_used,
        # action/reward/done.
        expected = 320 * 320 + 8 + 2 * 46 + 2 + 16
        assert memory.bytes_per_transition() == expected  # type: ignore[union-attr]
        chosen = record_allowed(model)
        model.learn(8)  # warm-up steps: uniform among the measured, unacquired columns
        assert len(chosen) == 8 and all(chosen)
    else:
        actions, _ = model.predict(obs, action_masks=free)  # type: ignore[call-arg]
        assert free[np.arange(2), actions].all()


def test_one_agent_for_a_range_of_budgets_is_evaluated_at_each(
    tiny_data: Path, tmp_path: Path
) -> None:
    from activemri.evaluation.harness import EvalSettings, evaluate

    overrides = tiny_config(tiny_data, budget=None, acceleration_range=[2.0, 4.0])
    preset = _preset(tiny_data, env_overrides=overrides,
                     observation=["reconstruction", "mask", "budget_left"])  # fmt: skip
    train_agent(preset, tmp_path / "agent", log=None)
    policy = AgentPolicy.from_checkpoint(str(tmp_path / "agent" / "agent.zip"), device="cpu")
    assert "budget_left" in policy.keys
    env_overrides = {k: v for k, v in overrides.items() if k not in ("acceleration_range",)}
    settings = EvalSettings(
        policies=(f"agent:{tmp_path / 'agent' / 'agent.zip'}", "random"),
        accelerations=(2.0, 4.0), split="all", max_slices=4, batch_size=2, device="cpu",
        overrides=env_overrides,
    )  # fmt: skip
    doc = evaluate(settings, tmp_path / "eval", plots=False, log=None, show_progress=False)
    runs = {(r["policy"], r["acceleration"]): r for r in doc["results"]}
    assert {a for (p, a) in runs if p == "agent"} == {2.0, 4.0}
    assert runs[("agent", 2.0)]["budget_aware"]
    # each budget was its own run: the 2x episodes add twice the 4x lines
    assert runs[("agent", 2.0)]["lines"][-1] > runs[("agent", 4.0)]["lines"][-1]
