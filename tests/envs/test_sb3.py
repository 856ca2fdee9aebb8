import numpy as np
import pytest
from env_helpers import tiny_config
from sb3_contrib import MaskablePPO
from sb3_contrib.common.maskable.utils import get_action_masks, is_masking_supported
from stable_baselines3 import DQN, PPO

from activemri.envs import make_sb3_vec_env

pytestmark = pytest.mark.slow


def _venv(data, n_envs, **kw):
    return make_sb3_vec_env(
        "ActiveMRI/Builtin-v0", n_envs=n_envs, seed=0, **tiny_config(data, **kw)
    )


def test_adapter_follows_sb3_conventions(tiny_data):
    venv = _venv(tiny_data, 2)
    obs = venv.reset()
    assert obs["reconstruction"].shape == (2, 1, 32, 32)
    done_seen = False
    for t in range(7):
        obs, rewards, dones, infos = venv.step(np.array([10 + t, 20 + t]))
        assert rewards.dtype == np.float32 and len(infos) == 2
        for i in range(2):
            if dones[i]:
                done_seen = True
                assert set(infos[i]["terminal_observation"]) == set(obs)
                assert infos[i]["TimeLimit.truncated"] is False
                assert infos[i]["lines_acquired"] == 10
    assert done_seen
    assert venv.env_is_wrapped(object) == [False, False]
    assert is_masking_supported(venv)
    assert np.array_equal(get_action_masks(venv), venv.action_masks())


def test_dqn_and_ppo_learn(tiny_data):
    DQN(
        "MultiInputPolicy",
        _venv(tiny_data, 2),
        learning_starts=50,
        buffer_size=500,
        train_freq=4,
        seed=0,
    ).learn(200)
    model = PPO(
        "MultiInputPolicy", _venv(tiny_data, 2), n_steps=32, batch_size=32, n_epochs=1, seed=0
    )
    model.learn(128)
    assert model.num_timesteps >= 128


def test_maskable_ppo_only_picks_valid_lines(tiny_data):
    venv = _venv(tiny_data, 2)
    checked = []
    original = venv.step_async

    def spy(actions):
        masks = np.stack(venv.env_method("action_masks"))
        checked.extend(bool(masks[i, a]) for i, a in enumerate(actions))
        return original(actions)

    venv.step_async = spy
    MaskablePPO("MultiInputPolicy", venv, n_steps=64, batch_size=64, n_epochs=1, seed=0).learn(256)
    assert len(checked) >= 256 and all(checked)


def test_monitor_reports_episodes_and_subset_calls_are_refused(tiny_data):
    venv = _venv(tiny_data, 2)
    venv.reset()
    assert venv.venv.reset_infos[0]["lines_acquired"] == 4
    episodes = []
    for t in range(6):
        _, _, dones, infos = venv.step(np.array([10 + t, 20 + t]))
        episodes += [info["episode"] for info, done in zip(infos, dones, strict=True) if done]
    assert len(episodes) == 2 and all(e["l"] == 6 for e in episodes)
    with pytest.raises(NotImplementedError, match="whole batched env"):
        venv.env_method("reset", indices=[0])


def test_extra_entries_action_mask_and_budget_used(tiny_data):
    keys = ["mask", "action_mask", "budget_used"]
    venv = make_sb3_vec_env(n_envs=2, seed=0, observation_keys=keys, **tiny_config(tiny_data))
    assert set(venv.observation_space.spaces) == set(keys)
    obs = venv.reset()
    for t in range(1, 7):  # budget 6
        np.testing.assert_array_equal(obs["action_mask"], np.stack(get_action_masks(venv)))
        np.testing.assert_allclose(obs["budget_used"], np.full((2, 1), (t - 1) / 6))
        free = np.flatnonzero(obs["action_mask"][0])
        obs, _, dones, infos = venv.step(np.array([free[0], free[-1]]))
    assert dones.all()
    last = infos[0]["terminal_observation"]
    assert last["budget_used"] == pytest.approx([1.0])
    np.testing.assert_array_equal(last["action_mask"], 1 - last["mask"])
    assert obs["budget_used"].tolist() == [[0.0], [0.0]]  # the next episodes start
