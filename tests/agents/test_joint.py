"""Joint sampler-reconstructor training: replay, rounds, the held-out check, files, evaluation."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from env_helpers import tiny_config

from activemri.agents import joint as joint_module
from activemri.agents.joint import (
    JointTrainer,
    MaskRecorder,
    MaskReplay,
    active_env,
    supervised_loss,
)
from activemri.agents.preset import AgentPreset, JointTraining, load_agent_preset
from activemri.agents.sb3_agent import AgentPolicy, checkpoint_info, paired_reconstructor
from activemri.agents.training import TrainResult, _eval_env, evaluate_policy_auc, train_agent
from activemri.cli import main
from activemri.data import SliceDataset
from activemri.envs import make_sb3_vec_env
from activemri.recon_models.checkpoint import read_checkpoint
from activemri.recon_models.evaluate import MaskedSlices, fixed_mask_rule, iterate_batches
from activemri.recon_models.losses import image_loss
from activemri.recon_models.unet import UnetReconstructor

REPO = Path(__file__).resolve().parents[2]
OBS = ["reconstruction", "mask"]
JOINT: dict[str, Any] = {
    "every": 24, "recon_steps": 2, "batch_size": 4, "lr": 1e-3, "replay": 200,
    "check": {"split": None, "slices": 6, "batch_size": 6},
}  # fmt: skip


@pytest.fixture(scope="module")
def tiny_unet(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny residual U-Net (with uncertainty head) trained briefly: it beats zero-filled."""
    torch.manual_seed(0)
    model = UnetReconstructor((32, 32), chans=4, num_pool_layers=2, residual=True,
                              uncertainty=True)  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    dataset = SliceDataset(tiny_data, split=None)

    def rule(sample: Any, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        kind = str(rng.choice(["random", "equispaced"]))
        return fixed_mask_rule(kind, float(rng.choice([2.0, 4.0, 8.0])))(sample, rng)  # type: ignore[no-any-return]

    masked = MaskedSlices(dataset, rule, 0)
    for epoch in range(12):
        masked.epoch = epoch
        for batch in iterate_batches(masked, 6, list(range(len(dataset)))):
            loss = supervised_loss(model, batch)
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    path = tmp_path_factory.mktemp("unet") / "tiny_unet.pt"
    model.eval().save(path)
    return path


def _sb3_env(data: Path, recon: str | Path = "zero_filled", n_envs: int = 2):  # type: ignore[no-untyped-def]
    return make_sb3_vec_env(n_envs=n_envs, seed=0, observation_keys=OBS,
                            **tiny_config(data, reconstructor=str(recon)))  # fmt: skip


def _random_steps(env: Any, steps: int, seed: int = 0) -> list[np.ndarray]:
    """Step ``env`` with uniformly random free lines; returns the actions."""
    rng = np.random.default_rng(seed)
    taken = []
    for _ in range(steps):
        free = np.stack(env.env_method("action_masks"))
        actions = np.array([rng.choice(np.flatnonzero(row)) for row in free])
        env.step(actions)
        taken.append(actions)
    return taken


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k].cpu()) for k in a)


def _first_reconstruction(env: Any) -> torch.Tensor:
    inner = active_env(env)
    obs, _ = inner.torch_reset(seed=3)
    return obs["reconstruction"].clone()


# ----------------------------------------------------------------------------- preset, CLI
def test_joint_preset_validation_shipped_preset_and_cli_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for bad, message in [
        ({"every": 0}, "joint.every must be >= 1"),
        ({"evry": 3}, r"unknown key\(s\) \['evry'\] in joint"),
        ({"lr": 0.0}, "joint.lr must be a positive number"),
        ({"replay": 4, "batch_size": 8}, "must hold at least joint.batch_size"),
        ({"loss": "l2"}, "joint.loss must be 'l1' or 'ssim'"),
        ({"check": {"masks": ["spiral"]}}, "joint.check.masks"),
        ({"check": {"split": "train"}}, "must not run on the slices"),
        ({"check": {"accelerations": [0.5]}}, "joint.check.accelerations"),
    ]:
        with pytest.raises(ValueError, match=message):
            AgentPreset.from_dict({"algorithm": "maskable_ppo", "joint": bad})
    plain = load_agent_preset(REPO / "agents" / "maskable-ppo-builtin.yaml")
    shipped = load_agent_preset(REPO / "agents" / "maskable-ppo-builtin-joint.yaml")
    assert plain.joint is None and shipped.joint is not None
    assert shipped.joint.check.accelerations == (4.0, 8.0)
    assert shipped.replace(joint=None, description="", source=None) == plain.replace(
        description="", source=None
    )
    # --joint turns the defaults on for a preset without a joint section, and keeps a given one
    seen: list[AgentPreset] = []

    def fake_train(preset: AgentPreset, out: Any, **kwargs: Any) -> TrainResult:
        seen.append(preset)
        return TrainResult(Path(out), 0, 0.0, [])

    monkeypatch.setattr("activemri.agents.training.train_agent", fake_train)
    args = ["agent", "train", "--out", str(tmp_path), "--quiet", "--preset"]
    assert main([*args, str(REPO / "agents" / "maskable-ppo-builtin.yaml")]) == 0
    assert main([*args, str(REPO / "agents" / "maskable-ppo-builtin.yaml"), "--joint"]) == 0
    assert main([*args, str(REPO / "agents" / "maskable-ppo-builtin-joint.yaml"), "--joint"]) == 0
    assert [p.joint for p in seen] == [None, JointTraining(), shipped.joint]


# ----------------------------------------------------------------------------- replay
def test_replay_records_the_masks_the_policy_produced(tiny_data: Path) -> None:
    env = _sb3_env(tiny_data)
    inner = active_env(env)
    replay = MaskReplay(100, inner.num_actions)
    recorder = MaskRecorder(env, inner, replay)
    obs = recorder.reset()
    expected = [row.astype(bool) for row in obs["mask"]]
    initial = [m.copy() for m in expected]
    slices = [e.dataset_index for e in inner.episodes]
    rows: list[tuple[int, np.ndarray, int]] = []
    rng = np.random.default_rng(1)
    for _ in range(14):  # 6 steps per episode: two episodes end in each sub-env
        free = np.stack(recorder.env_method("action_masks"))
        actions = np.array([rng.choice(np.flatnonzero(row)) for row in free])
        _, _, done, _ = recorder.step(actions)
        for i, action in enumerate(actions):
            expected[i][action] = True
            rows.append((slices[i], expected[i].copy(), int(initial[i].sum())))
            if done[i]:  # the next episode starts from its own initial mask
                expected[i] = inner.state.mask[i].cpu().numpy().copy()
                initial[i] = expected[i].copy()
                slices[i] = inner.episodes[i].dataset_index
    assert len(replay) == len(rows) == 28 and replay.added == 28
    index, mask, num_low = replay.index[:28], replay.mask[:28].numpy(), replay.num_low[:28]
    assert index.tolist() == [r[0] for r in rows]
    np.testing.assert_array_equal(mask, np.stack([r[1] for r in rows]))
    w = inner.num_actions
    center = np.zeros(w, dtype=bool)
    center[(w - 4 + 1) // 2 : (w - 4 + 1) // 2 + 4] = True  # the 4 initial ACS lines
    steps_in = np.array([(i // 2) % 6 + 1 for i in range(28)])  # lines added so far
    assert (mask[:, center]).all() and num_low.eq(4).all()
    assert (mask.sum(1) == 4 + steps_in).all()
    assert not (mask & ~inner.state.valid[0].cpu().numpy()).any()  # measured lines only
    # a ring buffer: the latest entries win
    small = MaskReplay(5, w)
    small.add(index[:7], torch.from_numpy(mask[:7]), num_low[:7])
    assert sorted(small.index.tolist()) == sorted(index[2:7].tolist()) and len(small) == 5
    state = small.state_dict()
    other = MaskReplay(5, w)
    other.load_state_dict(state)
    assert torch.equal(other.mask, small.mask) and other.pos == small.pos
    with pytest.raises(ValueError, match="shape"):
        MaskReplay(6, w).load_state_dict(state)


# ----------------------------------------------------------------------------- rounds
def _trainer(data: Path, recon: Path, **changes: Any) -> tuple[Any, JointTrainer]:
    env = _sb3_env(data, recon)
    inner = active_env(env)
    config = AgentPreset.from_dict(
        {"algorithm": "maskable_ppo", "joint": {**JOINT, **changes}}
    ).joint
    assert config is not None
    joint = JointTrainer(config, inner, seed=0)
    recorder = MaskRecorder(env, inner, joint.replay)
    recorder.reset()
    _random_steps(recorder, 10)
    return recorder, joint


def test_a_round_fine_tunes_the_env_reconstructor_on_replayed_masks(
    tiny_data: Path, tiny_unet: Path
) -> None:
    env, joint = _trainer(tiny_data, tiny_unet, recon_steps=3)
    inner = active_env(env)
    assert inner.reconstructor is joint.model
    start = joint.start()
    assert start["status"] == "initial" and start["reason"] == ""
    assert start["check_ssim"] > start["check_zf_ssim"]
    before, recon_before = _weights(joint.model), _first_reconstruction(env)
    batches = []
    original = joint.batch

    def spy(rng: np.random.Generator) -> Any:
        batches.append(original(rng))
        return batches[-1]

    joint.batch = spy  # type: ignore[method-assign]
    row = joint.run_round(24)
    assert row["status"] == "accepted" and row["round"] == 1 and len(batches) == 3
    assert row["replay_masks"] == 20 and np.isfinite(row["train_loss"])
    # the batches are replayed masks on their own training slices' targets
    replayed = {tuple(m.tolist()) for m in joint.replay.mask[: len(joint.replay)]}
    for batch in batches:
        assert all(tuple(m.tolist()) in replayed for m in batch.mask)
        for i, index in enumerate(batch.index.tolist()):
            torch.testing.assert_close(batch.target[i], inner.dataset[index].target)
    assert not _same(before, _weights(inner.reconstructor)) and not joint.model.training
    # the env reconstructs with the new weights
    assert not torch.equal(recon_before, _first_reconstruction(env))
    assert joint.next_round == 48 and not joint.due(47) and joint.due(48)
    # with max_drop, a round may also not lower the mean check SSIM by more than that
    worse = {k: v - 0.01 if k.startswith("ssim_") else v for k, v in joint.reference.items()}
    assert joint.passes(worse) is None
    joint.config = replace(joint.config, check=replace(joint.config.check, max_drop=0.005))
    assert "mean check SSIM fell" in str(joint.passes(worse))


def test_the_check_reverts_a_round_that_makes_things_worse(
    tiny_data: Path, tiny_unet: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env, joint = _trainer(tiny_data, tiny_unet, recon_steps=4, lr=0.05)
    joint.start()
    before, recon_before = _weights(joint.model), _first_reconstruction(env)

    def sabotaged(model: Any, batch: Any, loss: str = "l1", nll_weight: float = 0.1) -> Any:
        out = model(batch.kspace, batch.mask, num_low_frequencies=batch.num_low)
        return -image_loss("l1", out.image, batch.target, batch.data_range)  # maximize error

    monkeypatch.setattr(joint_module, "supervised_loss", sabotaged)
    trained: list[dict[str, torch.Tensor]] = []
    check = joint.check

    def spy_check() -> dict[str, float]:
        trained.append(_weights(joint.model))
        return check()

    joint.check = spy_check  # type: ignore[method-assign]
    row = joint.run_round(24)
    assert row["status"] == "reverted" and "does not beat zero-filled" in row["reason"]
    assert row["check_ssim"] < row["check_zf_ssim"]
    assert not _same(before, trained[0])  # the round did change the weights ...
    assert _same(before, _weights(joint.model))  # ... and they are back
    assert joint.optimizer.state_dict()["state"] == {}  # Adam as before the round
    assert torch.equal(recon_before, _first_reconstruction(env))
    assert (joint.rounds, joint.accepted, joint.reverted) == (1, 0, 1)
    # a non-finite loss is reverted without a check
    monkeypatch.setattr(joint_module, "supervised_loss", lambda *a, **k: torch.tensor(np.nan))
    row = joint.run_round(48)
    assert row["status"] == "reverted" and row["reason"] == "non-finite training loss"
    assert _same(before, _weights(joint.model))


def test_a_reconstructor_without_parameters_is_refused(tiny_data: Path) -> None:
    inner = active_env(_sb3_env(tiny_data))
    with pytest.raises(ValueError, match="no trainable parameters"):
        JointTrainer(JointTraining(), inner, seed=0)


# ----------------------------------------------------------------------------- training files
def _preset(data: Path, recon: Path) -> AgentPreset:
    return AgentPreset.from_dict({
        "algorithm": "maskable_ppo",
        "env_overrides": tiny_config(data, reconstructor=str(recon)),
        "observation": OBS, "n_envs": 2, "total_steps": 96, "reward_scale": 100.0,
        "hyperparameters": {"n_steps": 12, "batch_size": 12, "n_epochs": 2},
        "features": {"features_dim": 16, "channels": [4, 4, 4, 4], "pooled": 2, "mask_dim": 8},
        "net_arch": [16], "eval": {"every": 48, "split": None, "slices": 4},
        "checkpoint_every": 48, "joint": JOINT,
    })  # fmt: skip


def _joint_record(path: Path) -> dict[str, Any]:
    record = checkpoint_info(path)["joint"]
    assert isinstance(record, dict)
    return record


@pytest.fixture(scope="module")
def joint_run(
    tiny_data: Path, tiny_unet: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, AgentPreset, dict[str, Any]]:
    """A 96-step joint run, resumed without new steps, then resumed to 144 steps.

    Returns the folder, the preset and what the files held after the first run.
    """
    out = tmp_path_factory.mktemp("joint") / "run"
    preset = _preset(tiny_data, tiny_unet)
    first = train_agent(preset, out, log=None)
    record = _joint_record(out / "checkpoint.zip")
    state = torch.load(out / record["state"]["file"], weights_only=True)
    saved = {"result": first, "record": record, "state": state,
             "files": sorted(p.name for p in out.glob("*.pt")),
             "csv": (out / "joint.csv").read_text(),
             "agent": _joint_record(out / "agent.zip"), "best": _joint_record(out / "best.zip"),
             "eval": (out / "eval.csv").read_text()}  # fmt: skip
    again = train_agent(preset, out, resume=True, log=None)  # nothing left to train
    saved["again"], saved["again_record"] = again, _joint_record(out / "checkpoint.zip")
    saved["again_state"] = torch.load(out / record["state"]["file"], weights_only=True)
    saved["resumed"] = train_agent(preset, out, resume=True, total_steps=144, log=None)
    return out, preset, saved


@pytest.mark.slow
def test_checkpoints_hold_the_reconstructor_and_resume_continues_both(
    joint_run: tuple[Path, AgentPreset, dict[str, Any]],
) -> None:
    out, preset, saved = joint_run
    first, record, state = saved["result"], saved["record"], saved["state"]
    assert first.steps == 96
    # round 0 checks the starting weights; rounds at the rollout starts 24, 48 and 72
    assert [(r["round"], r["step"]) for r in first.joint] == [(0, 0), (1, 24), (2, 48), (3, 72)]
    assert first.joint[0]["status"] == "initial"
    assert "accepted" in {r["status"] for r in first.joint}  # the weights did change
    assert record["state"]["file"] == "joint-96.pt" and record["rounds"] == 3
    assert state["rounds"] == 3 and state["replay"]["added"] == 96
    assert state["optimizer"]["state"]  # Adam moments of accepted rounds
    names = {record["reconstructor"]["file"], saved["agent"]["reconstructor"]["file"],
             saved["best"]["reconstructor"]["file"], "joint-96.pt"}  # fmt: skip
    assert set(saved["files"]) == names  # nothing else left behind
    # the final agent and the checkpoint pair with the same (last) weights
    assert saved["agent"]["reconstructor"] == record["reconstructor"]
    header = saved["csv"].splitlines()[0].split(",")
    assert header[:9] == ["round", "step", "wall_seconds", "status", "reason", "train_loss",
                          "replay_masks", "check_ssim", "check_zf_ssim"]  # fmt: skip
    assert "ssim_equispaced_8x" in header and "zf_ssim_random_4x" in header

    # resumed without steps to go: the reconstructor and the joint state load back exactly
    again = saved["again_record"]
    assert saved["again"].steps == 96
    assert again["reconstructor"] == record["reconstructor"]  # same weights, same file
    reloaded = saved["again_state"]
    assert reloaded["rounds"] == 3 and reloaded["next_round"] == state["next_round"] == 96
    for key in ("index", "mask", "num_low"):
        assert torch.equal(reloaded["replay"][key], state["replay"][key])
    first_moments = state["optimizer"]["state"]
    for key, value in reloaded["optimizer"]["state"].items():
        for name, tensor in value.items():
            assert torch.equal(tensor, first_moments[key][name])

    # resumed to 144 steps: rounds, replay and steps continue
    resumed = saved["resumed"]
    assert resumed.steps == 144
    rounds = [(r["round"], r["step"]) for r in resumed.joint]
    assert rounds == [(0, 0), (1, 24), (2, 48), (3, 72), (4, 96), (5, 120)]
    last = _joint_record(out / "checkpoint.zip")
    assert last["state"]["file"] == "joint-144.pt" and last["rounds"] == 5
    final_state = torch.load(out / "joint-144.pt", weights_only=True)
    assert final_state["replay"]["added"] == 144
    assert not (out / "joint-96.pt").exists()
    assert json.loads((out / "training.json").read_text())["joint"]["rounds"] == 5
    # every reconstructor file left is one an agent file names
    named = {_joint_record(out / n)["reconstructor"]["file"]
             for n in ("checkpoint.zip", "agent.zip", "best.zip")}  # fmt: skip
    assert {p.name for p in out.glob("reconstructor-*.pt")} == named
    payload = read_checkpoint(out / last["reconstructor"]["file"])
    assert payload["config"]["chans"] == 4 and "joint_training" in payload["extra"]
    # a resume must say joint again
    with pytest.raises(ValueError, match="with joint training"):
        train_agent(preset.replace(joint=None), out, resume=True, log=None)


@pytest.mark.slow
def test_agent_files_pair_with_the_reconstructor_they_were_evaluated_with(
    joint_run: tuple[Path, AgentPreset, dict[str, Any]],
    tiny_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out, preset, _ = joint_run
    rows = [line.split(",") for line in (out / "eval.csv").read_text().splitlines()[1:]]
    aucs = {int(r[0]): float(r[2]) for r in rows}
    best_step = max(aucs, key=lambda s: aucs[s])
    # best.zip is saved when it is evaluated: with its own reconstructor it plays eval.csv's
    # figure again (agent.zip learned from one more rollout after the last evaluation)
    policy = AgentPolicy.from_checkpoint(out / "best.zip", device="cpu")
    assert policy.reconstructor_file is not None
    overrides = {**preset.env_overrides, "reconstructor": str(policy.reconstructor_file)}
    venv = _eval_env(preset.replace(env_overrides=overrides), "cpu")
    policy.check_env(venv)
    auc, _ = evaluate_policy_auc(policy, venv)
    assert auc == pytest.approx(aucs[best_step], abs=1e-9)

    # agent eval plays the agent (and the baselines) with its own reconstructor
    paired = paired_reconstructor(out / "agent.zip", checkpoint_info(out / "agent.zip"))
    assert paired is not None
    common = ["--out", str(tmp_path / "eval"), "--accelerations", "4", "--split", "all",
              "--max-slices", "4", "--batch-size", "2", "--device", "cpu", "--no-plots",
              "--quiet"]  # fmt: skip
    ev = ["agent", "eval", "--checkpoint", str(out / "agent.zip"), "--baselines", "random"]
    assert main([*ev, *common]) == 0
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert {r["policy"] for r in results["results"]} == {"agent", "random"}
    assert paired.name in json.dumps(results["envs"])

    # evaluate with agent:PATH refuses another reconstructor and runs with the agent's own
    sets = ["--set", f"data_root={tiny_data}", "--set", "initial_lines=4"]
    plain = ["evaluate", "--policies", f"agent:{out / 'agent.zip'}", *sets]
    wrong = [*plain, "--set", f"reconstructor={preset.env_overrides['reconstructor']}"]
    capsys.readouterr()
    assert main([*wrong, *common]) == 2
    assert f"--set reconstructor={paired}" in capsys.readouterr().err
    right = [*plain, "--set", f"reconstructor={paired}"]
    assert main([*right, *common[:1], str(tmp_path / "e2"), *common[2:]]) == 0

    # a moved or altered reconstructor file is refused
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / paired.name).write_bytes(b"not the weights")
    with pytest.raises(ValueError, match="is not the reconstructor"):
        AgentPolicy.from_checkpoint(copy / "agent.zip", device="cpu")
    (copy / paired.name).unlink()
    with pytest.raises(ValueError, match="missing"):
        AgentPolicy.from_checkpoint(copy / "agent.zip", device="cpu")
