import gymnasium as gym
import numpy as np
import pytest
import torch
from env_helpers import CUSTOM, tiny_env, tiny_vec
from gymnasium.vector import AutoresetMode

from activemri.envs import ActiveMRIVectorEnv

B = 3


def _actions(t):
    return np.array([(7 + 5 * t + 3 * i) % 36 for i in range(B)])


def test_vector_env_equals_single_envs_stepped_alike(tiny_data):
    kw = {"reconstructor": CUSTOM, "extra_random_lines": 1, "budget": 4, "order": "shuffle"}
    venv = tiny_vec(tiny_data, B, **kw)
    singles = [tiny_env(tiny_data, **kw) for _ in range(B)]
    obs, infos = venv.reset(seed=10)
    for i, env in enumerate(singles):
        env.reset(seed=10 + i)
    ended = 0
    for t in range(10):
        actions = _actions(t)
        obs, rewards, terminated, truncated, infos = venv.step(actions)
        assert not truncated.any()
        for i, env in enumerate(singles):
            o, r, term, _, info = env.step(int(actions[i]))
            assert r == pytest.approx(rewards[i], abs=1e-6) and term == terminated[i]
            assert info["file"] == (infos["final_info"]["file"][i] if term else infos["file"][i])
            if term:
                ended += 1
                for k in o:
                    np.testing.assert_allclose(infos["final_obs"][i][k], o[k], atol=1e-6)
                o, info = env.reset()
                assert info["file"] == infos["file"][i] and info["slice"] == infos["slice"][i]
            for k in o:
                np.testing.assert_allclose(obs[k][i], o[k], atol=1e-6)
    assert ended == 2 * B
    assert infos["_ssim"].all() and obs in venv.observation_space


def test_make_vec_uses_native_vector_env(tiny_data):
    venv = gym.make_vec(
        "ActiveMRI/Builtin-v0",
        num_envs=2,
        vectorization_mode="vector_entry_point",
        data_root=str(tiny_data),
        split=None,
        reconstructor="zero_filled",
        budget=2,
        initial_lines=4,
        device="cpu",
    )
    assert isinstance(venv.unwrapped, ActiveMRIVectorEnv)
    assert venv.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    venv.reset(seed=0)
    venv.step(np.array([10, 11]))
    obs, _, terminated, _, infos = venv.step(np.array([12, 13]))
    assert terminated.all() and infos["_final_obs"].all()
    assert (obs["mask"].sum(axis=1) == 4).all()  # already the next episodes


def test_torch_api_matches_numpy_api(tiny_data):
    a, b = (
        tiny_vec(tiny_data, B, reconstructor=CUSTOM),
        tiny_vec(tiny_data, B, reconstructor=CUSTOM),
    )
    obs_t, _ = a.torch_reset(seed=0)
    obs_n, _ = b.reset(seed=0)
    assert all(isinstance(v, torch.Tensor) and v.device == a.device for v in obs_t.values())
    for t in range(7):
        actions = _actions(t)
        obs_t, reward_t, term_t, _, info_t = a.torch_step(torch.from_numpy(actions))
        obs_n, reward_n, term_n, _, _ = b.step(actions)
        assert np.array_equal(reward_t.numpy(), reward_n.astype(np.float32))
        assert np.array_equal(term_t.numpy(), term_n)
        for k in obs_n:
            assert np.array_equal(obs_t[k].numpy(), obs_n[k])
        if term_n.any():
            assert "final_obs" in info_t
    assert torch.equal(a.torch_action_masks(), torch.from_numpy(b.action_masks()))
    with pytest.raises(ValueError, match="actions must be in"):
        a.torch_step(torch.tensor([0, 1, 99]))


def test_sequential_order_deals_slices_round_robin(tiny_data):
    venv = tiny_vec(tiny_data, 2, order="sequential", budget=1)
    n = len(venv.sim.indices)
    _, infos = venv.reset(seed=0)
    seen = [(infos["file"][i], infos["slice"][i]) for i in range(2)]
    while len(seen) < n:
        _, _, _, _, infos = venv.step(np.array([10, 10]))
        seen += [(infos["file"][i], infos["slice"][i]) for i in range(2)]
    assert len(set(seen[:n])) == n


def test_vector_render(tiny_data):
    venv = tiny_vec(tiny_data, 2, render_mode="rgb_array")
    venv.reset(seed=0)
    frames = venv.render()
    assert len(frames) == 2 and frames[0].shape[2] == 3


def test_partial_autoreset_matches_single_envs_including_repeat_flags(tiny_data):
    """Episodes out of phase: one ends while the other repeats a line in the same step."""
    kw = {"initial_lines": 28, "order": "shuffle", "reconstructor": CUSTOM}
    venv = tiny_vec(tiny_data, 2, **kw)
    singles = [tiny_env(tiny_data, **kw) for _ in range(2)]
    venv.reset(seed=3)
    for i, env in enumerate(singles):
        env.reset(seed=3 + i)
    # Lines 2, 3, 32, 33 are left (budget 4); shorten env 0's first episode to 2 steps so
    # that from then on the two sub-envs end at different steps.
    venv.sim.require_state().budget[0] = 2
    singles[0].sim.require_state().budget[0] = 2
    plan = [(2, 18), (3, 18), (32, 2), (33, 18), (2, 3), (3, 32), (32, 18), (33, 2), (2, 3)]
    uneven = 0
    for t, (a0, a1) in enumerate(plan):
        actions = np.array([a0, a1])
        obs, rewards, terminated, _, infos = venv.step(actions)
        uneven += int(terminated[0] != terminated[1])
        for i, env in enumerate(singles):
            o, r, term, _, info = env.step(int(actions[i]))
            assert term == terminated[i] and r == pytest.approx(rewards[i], abs=1e-6)
            source = infos["final_info"] if term else infos
            assert bool(source["repeated"][i]) == info["repeated"], (t, i)
            assert source["lines_acquired"][i] == info["lines_acquired"]
            if term:
                o, info = env.reset()
                assert infos["repeated"][i] == False  # noqa: E712  (fresh episode)
            for k in o:
                np.testing.assert_allclose(obs[k][i], o[k], atol=1e-6)
    assert uneven > 0


def test_torch_score_candidates_checks_lines(tiny_data):
    venv = tiny_vec(tiny_data, 2)
    venv.torch_reset(seed=0)
    scores = venv.torch_score_candidates(torch.tensor([[10, 11], [12, 13]]))
    assert scores.shape == (2, 2)
    for bad in (
        torch.tensor([[10, -1], [1, 2]]),
        torch.tensor([[36, 1], [1, 2]]),
        torch.tensor([1, 2]),
    ):
        with pytest.raises(ValueError, match="lines must be"):
            venv.torch_score_candidates(bad)


@pytest.mark.gpu
def test_vector_env_on_cuda_matches_cpu(tiny_data):
    kw = {"reconstructor": CUSTOM, "order": "shuffle"}
    cpu, gpu = tiny_vec(tiny_data, B, **kw), tiny_vec(tiny_data, B, device="cuda", **kw)
    cpu.reset(seed=0)
    gpu.reset(seed=0)
    for t in range(8):
        actions = _actions(t)
        obs_c, rew_c, term_c, _, _ = cpu.step(actions)
        obs_g, rew_g, term_g, _, _ = gpu.step(actions)
        np.testing.assert_allclose(rew_c, rew_g, atol=1e-4)
        assert np.array_equal(term_c, term_g)
        for k in obs_c:
            np.testing.assert_allclose(obs_c[k], obs_g[k], atol=1e-4, rtol=1e-4)
    obs, _ = gpu.torch_reset(seed=1)
    assert all(v.device.type == "cuda" for v in obs.values())
    fast = tiny_vec(tiny_data, 2, device="cuda", bf16=True, reconstructor=CUSTOM)
    fast.reset(seed=0)
    _, rewards, _, _, _ = fast.step(np.array([10, 11]))
    assert np.isfinite(rewards).all()
