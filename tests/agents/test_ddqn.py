"""Double DQN over unacquired lines: the target, action selection, determinism, save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from agent_helpers import record_allowed
from env_helpers import tiny_config

from activemri.agents.ddqn import DoubleDQN, MaskedMultiInputPolicy, double_q_target
from activemri.envs import make_sb3_vec_env


def test_double_q_target_selects_online_evaluates_target_and_skips_acquired() -> None:
    online = torch.tensor([[5.0, 1.0, 3.0], [0.0, 2.0, 1.0]])
    target = torch.tensor([[10.0, 20.0, 7.0], [4.0, 6.0, 8.0]])
    acquired = torch.tensor([[True, False, False], [False, False, False]])
    rewards = torch.tensor([[1.0], [0.5]])
    dones = torch.tensor([[0.0], [1.0]])
    out = double_q_target(online, target, acquired, rewards, dones, gamma=0.5)
    # Row 0: line 0 is acquired, so the online choice is line 2 (3.0), valued by the target
    # network at 7.0 (not its own max, 20.0). Row 1 ended: no bootstrap.
    torch.testing.assert_close(out, torch.tensor([[1.0 + 0.5 * 7.0], [0.5]]))


def _venv(data: Path, n_envs: int = 2):  # type: ignore[no-untyped-def]
    return make_sb3_vec_env("ActiveMRI/Builtin-v0", n_envs=n_envs, seed=0, **tiny_config(data))


def _model(data: Path, seed: int = 0) -> DoubleDQN:
    return DoubleDQN("MultiInputPolicy", _venv(data), learning_starts=32, buffer_size=400,
                     batch_size=16, train_freq=4, target_update_interval=50, seed=seed,
                     policy_kwargs={"net_arch": [32]})  # fmt: skip


@pytest.mark.slow
def test_never_picks_acquired_lines_and_training_is_deterministic(
    tiny_data: Path, tmp_path: Path
) -> None:
    model = _model(tiny_data)
    assert isinstance(model.policy, MaskedMultiInputPolicy)
    picked = record_allowed(model)
    model.learn(200)
    assert len(picked) >= 200 and all(picked)  # never an acquired line, exploring or not
    again = _model(tiny_data)
    again.learn(200)
    for a, b in zip(model.policy.parameters(), again.policy.parameters(), strict=True):
        assert torch.equal(a, b)
    obs = _venv(tiny_data).reset()
    path = tmp_path / "ddqn.zip"
    model.save(path)
    loaded = DoubleDQN.load(path)
    expected, _ = model.predict(obs, deterministic=True)
    actions, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_array_equal(actions, expected)
    assert not obs["mask"][np.arange(2), actions].any()
    model.exploration_rate = 1.0
    explored, _ = model.predict(obs)
    assert not obs["mask"][np.arange(2), explored].any()


@pytest.mark.slow
def test_with_action_mask_observation_never_picks_padding_or_acquired_lines(
    tiny_data: Path,
) -> None:
    venv = make_sb3_vec_env("ActiveMRI/Builtin-v0", n_envs=2, seed=0,
                            observation_keys=["reconstruction", "mask", "action_mask"],
                            **tiny_config(tiny_data))  # fmt: skip
    obs = venv.reset()
    valid = venv.env_method("action_masks")
    np.testing.assert_array_equal(obs["action_mask"], np.stack(valid).astype(np.int8))
    assert not obs["action_mask"][:, :2].any()  # the tiny data's zero-padded edge columns
    model = DoubleDQN("MultiInputPolicy", venv, learning_starts=32, buffer_size=400,
                      batch_size=16, train_freq=4, target_update_interval=50, seed=0,
                      policy_kwargs={"net_arch": [32]})  # fmt: skip
    allowed = record_allowed(model)  # reads action_mask: padding columns are not allowed
    model.learn(200)
    assert len(allowed) >= 200 and all(allowed)
    with pytest.raises(ValueError, match="non-empty subset"):
        make_sb3_vec_env("ActiveMRI/Builtin-v0", n_envs=1, observation_keys=["kspace"],
                         **tiny_config(tiny_data))  # fmt: skip
