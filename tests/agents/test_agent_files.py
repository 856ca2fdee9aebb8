"""Agent files never run code: crafted zips, weights and replay memories on every load path."""

from __future__ import annotations

import base64
import io
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
import torch
from env_helpers import tiny_config

from activemri.agents.preset import AgentPreset
from activemri.agents.sb3_agent import (
    UnsafeAgentFileError,
    build_model,
    check_stored_env,
    checkpoint_info,
    load_agent,
    save_agent,
)
from activemri.agents.training import train_agent
from activemri.cli import main
from activemri.envs import make_sb3_vec_env

HYPER = {"buffer_size": 400, "learning_starts": 24, "batch_size": 8, "train_freq": 2,
         "target_update_interval": 40, "exploration_fraction": 0.5}  # fmt: skip


class _Exploit:
    """Writes the file named by ``$AMRI_MARKER`` when unpickled."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, ("open(__import__('os').environ['AMRI_MARKER'], 'w').write('pwned')",))


@pytest.fixture
def marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "marker"
    monkeypatch.setenv("AMRI_MARKER", str(path))
    return path


def _preset(data: Path, **changes: Any) -> AgentPreset:
    doc: dict[str, Any] = {
        "algorithm": "ddqn",
        "env_overrides": tiny_config(data),
        "observation": ["reconstruction", "mask"],
        "n_envs": 2,
        "total_steps": 24,
        "hyperparameters": HYPER,
        "features": {"features_dim": 16, "channels": [4, 4, 4, 4], "pooled": 2, "mask_dim": 8},
        "net_arch": [16],
        "eval": {"every": 0, "split": None, "slices": 4},
        "checkpoint_every": 24,
    }
    doc.update(changes)
    return AgentPreset.from_dict(doc)


def _agent(data: Path, path: Path, **changes: Any) -> Path:
    preset = _preset(data, **changes)
    venv = make_sb3_vec_env(n_envs=2, seed=0, observation_keys=preset.observation,
                            **tiny_config(data))  # fmt: skip
    model = build_model(preset, venv, "cpu", 0)
    save_agent(model, path, {"preset": preset.to_dict(), "seed": 0, "name": "agent"})
    venv.close()
    return path


def _serialized(obj: object) -> dict[str, str]:
    return {
        ":type:": "<class 'x'>",
        ":serialized:": base64.b64encode(cloudpickle.dumps(obj)).decode(),
    }


def _rewrite(path: Path, edit: Any) -> None:
    """Rewrite the zip at ``path``, passing each (name, bytes) through ``edit``."""
    with zipfile.ZipFile(path) as archive:
        entries = [(name, archive.read(name)) for name in archive.namelist()]
    with zipfile.ZipFile(path, "w") as archive:
        for name, blob in entries:
            archive.writestr(name, edit(name, blob))


def _poison_data(path: Path, key: str = "policy_class") -> None:
    def edit(name: str, blob: bytes) -> bytes:
        if name != "data":
            return blob
        data = json.loads(blob)
        data[key] = _serialized(_Exploit())
        return json.dumps(data).encode()

    _rewrite(path, edit)


def _ev(checkpoint: Path, out: Path, *extra: str) -> list[str]:
    return ["agent", "eval", "--checkpoint", str(checkpoint), "--baselines", "random",
            "--out", str(out), "--split", "train", "--max-slices", "2", "--batch-size", "2",
            "--device", "cpu", "--no-plots", "--quiet", *extra]  # fmt: skip


def test_pickled_sb3_settings_are_never_unpickled(
    tiny_data: Path, tmp_path: Path, marker: Path
) -> None:
    path = _agent(tiny_data, tmp_path / "agent.zip")
    _poison_data(path, "policy_class")
    _poison_data(path, "observation_space")
    model, _ = load_agent(path, device="cpu")  # SB3's own load would run the exploit
    assert model.num_timesteps == 0 and not marker.exists()
    assert main(_ev(path, tmp_path / "eval")) == 0
    spec = f"a=agent:{path}"
    out = tmp_path / "e2"
    assert main(["evaluate", "--policies", spec, "--out", str(out), "--device", "cpu",
                 "--split", "train", "--max-slices", "2", "--batch-size", "2", "--no-plots",
                 "--quiet", "--set", f"data_root={tiny_data}", "--set", "reconstructor=zero_filled",
                 "--set", "initial_lines=4", "--accelerations", "4"]) == 0  # fmt: skip
    assert not marker.exists()


def test_pickled_activemri_facts_are_refused(
    tiny_data: Path, tmp_path: Path, marker: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _agent(tiny_data, tmp_path / "agent.zip")
    _poison_data(path, "activemri_agent")
    with pytest.raises(UnsafeAgentFileError, match="would run code"):
        checkpoint_info(path)
    assert main(_ev(path, tmp_path / "eval")) == 2
    assert "would run code" in capsys.readouterr().err
    assert not marker.exists()


def test_crafted_weights_are_refused(tiny_data: Path, tmp_path: Path, marker: Path) -> None:
    path = _agent(tiny_data, tmp_path / "agent.zip")
    evil = pickle.dumps({"q_net": _Exploit()})
    _rewrite(path, lambda name, blob: evil if name == "policy.pth" else blob)
    with pytest.raises(ValueError, match="cannot load the agent's weights"):
        load_agent(path, device="cpu")
    assert not marker.exists()


def test_stored_module_names_need_trust(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    imported = tmp_path / "imported"
    (tmp_path / "evil_agent_mod.py").write_text(
        f"open({str(imported)!r}, 'w').write('imported')\n"
        "from activemri.recon_models import ZeroFilled\nclass Evil(ZeroFilled):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    overrides = tiny_config(tiny_data, reconstructor="evil_agent_mod:Evil")
    path = _agent(tiny_data, tmp_path / "agent.zip", env_overrides=overrides)
    with pytest.raises(UnsafeAgentFileError, match="evil_agent_mod:Evil"):
        check_stored_env(checkpoint_info(path))
    assert main(_ev(path, tmp_path / "eval")) == 2
    assert "--trust-class-path" in capsys.readouterr().err
    assert not imported.exists()
    for env in ("evil_agent_mod:Env-v0",):
        info = {"preset": {"env": env, "env_overrides": {}}}
        with pytest.raises(UnsafeAgentFileError, match="env"):
            check_stored_env(info)
    with pytest.raises(UnsafeAgentFileError, match="trust_class_path"):
        check_stored_env({"preset": {"env": "x", "env_overrides": {"trust_class_path": True}}})
    check_stored_env({"preset": {"env": "x", "env_overrides": {"reconstructor": "unet"}}})
    # The caller's explicit trust lets the user's own class in.
    assert main(_ev(path, tmp_path / "trusted", "--trust-class-path")) == 0
    assert imported.exists()


@pytest.mark.slow
def test_resume_never_unpickles_and_keeps_checkpoint_and_replay_paired(
    tiny_data: Path, tmp_path: Path, marker: Path
) -> None:
    preset = _preset(tiny_data)
    out = tmp_path / "run"
    train_agent(preset, out, total_steps=24, log=None)
    info = checkpoint_info(out / "checkpoint.zip")
    assert info["replay"]["file"] == "replay-24.pt"
    # A kill after the next replay file was written but before its checkpoint: the stray
    # newer file is ignored and the pair of step 24 resumes.
    (out / "replay-48.pt").write_bytes(b"half written")
    # A crafted SB3 setting in the checkpoint is not unpickled on resume either.
    _poison_data(out / "checkpoint.zip", "policy_class")
    done = train_agent(preset, out, total_steps=48, resume=True, log=None)
    assert done.steps == 48 and not marker.exists()
    assert sorted(p.name for p in out.glob("replay-*.pt")) == ["replay-48.pt"]

    # A crafted replay memory is refused, not unpickled.
    buf = io.BytesIO()
    pickle.dump({"format": "activemri.replay/1", "x": _Exploit()}, buf)
    (out / "replay-48.pt").write_bytes(buf.getvalue())
    info = checkpoint_info(out / "checkpoint.zip")

    def fix_size(name: str, blob: bytes) -> bytes:  # make the size check pass
        if name != "data":
            return blob
        data = json.loads(blob)
        data["activemri_agent"]["replay"]["bytes"] = len(buf.getvalue())
        return json.dumps(data).encode()

    _rewrite(out / "checkpoint.zip", fix_size)
    with pytest.raises(ValueError, match="not a readable replay memory"):
        train_agent(preset, out, total_steps=72, resume=True, log=None)
    assert not marker.exists()
    (out / "replay-48.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"replay-48\.pt is missing"):
        train_agent(preset, out, total_steps=72, resume=True, log=None)
    assert info["num_timesteps"] == 48


def test_an_older_pickled_replay_memory_is_not_loaded(
    tiny_data: Path, tmp_path: Path, marker: Path
) -> None:
    from activemri.agents.training import load_replay

    (tmp_path / "replay_buffer.pkl").write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(ValueError, match="older activemri"):
        load_replay(tmp_path, {"num_timesteps": 10}, None)  # type: ignore[arg-type]
    assert not marker.exists()


def test_weights_round_trip_exactly(tiny_data: Path, tmp_path: Path) -> None:
    path = _agent(tiny_data, tmp_path / "agent.zip")
    venv = make_sb3_vec_env(n_envs=2, seed=0, observation_keys=["reconstruction", "mask"],
                            **tiny_config(tiny_data))  # fmt: skip
    original = build_model(_preset(tiny_data), venv, "cpu", 0)
    loaded, info = load_agent(path, device="cpu")
    assert info["name"] == "agent"
    for a, b in zip(original.policy.parameters(), loaded.policy.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert loaded.observation_space == original.observation_space
    venv.close()
