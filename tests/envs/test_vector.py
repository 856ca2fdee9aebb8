import contextlib
import signal
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from env_helpers import CUSTOM, tiny_config, tiny_env, tiny_vec
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
    n = len(venv.slice_indices)
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
    kw = {"initial_lines": 28, "budget": 4, "order": "shuffle", "reconstructor": CUSTOM}
    venv = tiny_vec(tiny_data, 2, **kw)
    singles = [tiny_env(tiny_data, **kw) for _ in range(2)]
    venv.reset(seed=3)
    for i, env in enumerate(singles):
        env.reset(seed=3 + i)
    # Lines 2, 3, 32, 33 are left (budget 4); shorten env 0's first episode to 2 steps so
    # that from then on the two sub-envs end at different steps.
    venv.state.budget[0] = 2
    singles[0].venv.state.budget[0] = 2
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


def _corrupt(folder, tiny_data, slices):
    """Copy two tiny volumes (6 slices) and write NaN into the given ``(file, slice)``s."""
    import shutil

    import h5py

    folder.mkdir()
    srcs = sorted(tiny_data.glob("*.h5"))[:2]
    for src in srcs:
        shutil.copy(src, folder / src.name)
    for file_index, slice_index in slices:
        with h5py.File(folder / srcs[file_index].name, "r+") as hf:
            k = hf["kspace"][()]
            k[slice_index, 0, 0] = np.nan
            hf["kspace"][...] = k
    return folder


@contextlib.contextmanager
def _deadline(seconds):
    """Turn a hang into a failure (the old slice search looped forever)."""

    def expire(signum, frame):
        raise TimeoutError(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_slot_whose_share_is_unreadable_is_an_error_not_a_hang(tiny_data, tmp_path):
    from activemri.envs import NoReadableSliceError

    # Sequential order deals slices 1, 3, 5 (vol0 slice 1, vol1 slices 0 and 2) to sub-env 1.
    folder = _corrupt(tmp_path / "odd", tiny_data, [(0, 1), (1, 0), (1, 2)])
    venv = tiny_vec(folder, 2, order="sequential")
    names = sorted(p.name for p in folder.glob("*.h5"))
    with _deadline(60), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(NoReadableSliceError, match=r"sub-env 1's round-robin share") as err:
            venv.reset(seed=0)
    assert all(name in str(err.value) for name in names) and "NaN" in str(err.value)
    assert isinstance(err.value, ValueError) and sorted(venv.bad_slices) == [1, 3, 5]


def test_all_unreadable_slices_in_shuffle_order_is_an_error(tiny_data, tmp_path):
    from activemri.envs import NoReadableSliceError

    bad = [(f, s) for f in range(2) for s in range(3)]
    venv = tiny_vec(_corrupt(tmp_path / "all", tiny_data, bad), 2, order="shuffle")
    with _deadline(60), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(NoReadableSliceError, match="every slice"):
            venv.reset(seed=0)


def test_torch_api_rejects_non_integer_action_tensors(tiny_data):
    venv = tiny_vec(tiny_data, 3)
    venv.torch_reset(seed=0)
    before = venv.state.mask.clone()
    for bad in (torch.tensor([10.0, 11.0, 12.0]), torch.tensor([True, False, True])):
        with pytest.raises(TypeError, match="integer tensor"):
            venv.torch_step(bad)
        with pytest.raises(TypeError, match="integer tensor"):
            venv.torch_step(bad, check=False)
    assert torch.equal(venv.state.mask, before)  # nothing was acquired
    with pytest.raises(TypeError, match="integer tensor"):
        venv.torch_score_candidates(torch.tensor([[10.0], [11.0], [12.0]]))
    venv.torch_step(torch.tensor([10, 11, 12], dtype=torch.int32))  # any integer dtype


def test_next_step_autoreset_matches_gymnasium_sync_vector_env(tiny_data):
    kw = {"reconstructor": CUSTOM, "budget": 3, "order": "shuffle"}
    venv = tiny_vec(tiny_data, B, autoreset_mode=AutoresetMode.NEXT_STEP, **kw)
    assert venv.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert ActiveMRIVectorEnv.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    sync = gym.vector.SyncVectorEnv(
        [lambda: tiny_env(tiny_data, **kw) for _ in range(B)],
        autoreset_mode=AutoresetMode.NEXT_STEP,
    )
    obs, infos = venv.reset(seed=10)
    ref_obs, ref_infos = sync.reset(seed=10)
    resets = 0
    for t in range(9):
        actions = _actions(t)
        if t == 4:
            actions[1] = 17  # a repeat of a central line in sub-env 1
        obs, rewards, terminated, truncated, infos = venv.step(actions)
        ref_obs, ref_rewards, ref_term, _ref_trunc, ref_infos = sync.step(actions)
        np.testing.assert_allclose(rewards, ref_rewards, atol=1e-6)
        assert np.array_equal(terminated, ref_term) and not truncated.any()
        assert "final_obs" not in infos
        for k in ref_obs:
            np.testing.assert_allclose(obs[k], ref_obs[k], atol=1e-6)
        for key in ("file", "slice", "steps", "lines_acquired", "repeated", "pass_index"):
            assert list(infos[key]) == list(ref_infos[key]), (t, key)
        resets += int((ref_rewards == 0).sum() and (ref_infos["steps"] == 0).sum())
    assert resets >= 2  # the reset steps themselves were compared


def test_gymnasium_vector_observation_wrappers_work_with_next_step(tiny_data):
    from gymnasium.wrappers.vector import (
        DtypeObservation,
        FlattenObservation,
        NormalizeObservation,
        RescaleObservation,
    )

    config = tiny_config(tiny_data, reconstructor=CUSTOM, budget=2)
    with pytest.raises(ValueError, match="NEXT_STEP"):  # why the option exists
        NormalizeObservation(FlattenObservation(gym.make_vec("ActiveMRI/Builtin-v0", 2, **config)))
    venv = gym.make_vec(
        "ActiveMRI/Builtin-v0", num_envs=2, autoreset_mode=AutoresetMode.NEXT_STEP, **config
    )
    batches = []
    venv.unwrapped.reconstructor.register_forward_hook(
        lambda module, args, out: batches.append(args[0].shape[0])
    )
    flat = FlattenObservation(venv)
    size = flat.single_observation_space.shape[0]
    wrapped = {
        "normalize": NormalizeObservation(flat),
        "dtype": DtypeObservation(flat, np.float64),
        "rescale": RescaleObservation(flat, -1.0, 1.0),
    }
    for name, env in wrapped.items():
        assert isinstance(env.unwrapped, ActiveMRIVectorEnv), name
        obs, _ = env.reset(seed=0)
        batches.clear()
        ended = 0
        for t in range(5):
            obs, _, terminated, _, _ = env.step(np.array([10 + t, 20 + t]))
            ended += int(terminated.sum())
            assert obs.shape == (2, size) and np.isfinite(obs).all(), name
            if name == "dtype":
                assert obs.dtype == np.float64
            if name == "rescale":
                assert obs.min() >= -1.0 and obs.max() <= 1.0
        # five steps and one restart, every one a single forward of both sub-envs
        assert ended == 4 and batches == [2] * 6, (name, batches)


def test_disabled_autoreset_matches_gymnasium_sync_vector_env(tiny_data):
    """No restart by itself; ``reset_mask`` restarts only the marked sub-envs."""
    kw = {"reconstructor": CUSTOM, "budget": 2, "order": "shuffle"}
    venv = tiny_vec(tiny_data, B, autoreset_mode="disabled", **kw)
    assert venv.metadata["autoreset_mode"] == AutoresetMode.DISABLED
    sync = gym.vector.SyncVectorEnv(
        [lambda: tiny_env(tiny_data, **kw) for _ in range(B)],
        autoreset_mode=AutoresetMode.DISABLED,
    )
    venv.reset(seed=4)
    sync.reset(seed=4)
    for t in range(2):
        obs, rewards, terminated, _, infos = venv.step(_actions(t))
        ref_obs, ref_rewards, ref_term, _, ref_infos = sync.step(_actions(t))
        np.testing.assert_allclose(rewards, ref_rewards, atol=1e-6)
        assert np.array_equal(terminated, ref_term) and "final_obs" not in infos
    assert terminated.all()  # the terminal observation is the one returned
    np.testing.assert_allclose(obs["mask"].sum(axis=1), infos["lines_acquired"])
    from activemri.envs import ResetNeededError

    with pytest.raises(ResetNeededError, match=r"sub-env\(s\) \[0, 1, 2\] has ended"):
        venv.step(_actions(2))
    keep = venv.state.mask[0].clone()
    reset_mask = np.array([False, True, True])
    obs, infos = venv.reset(options={"reset_mask": reset_mask})
    ref_obs, ref_infos = sync.reset(options={"reset_mask": reset_mask})
    assert torch.equal(venv.state.mask[0], keep)  # sub-env 0 kept its ended episode
    assert list(infos["_file"]) == [False, True, True]
    for k in ref_obs:
        np.testing.assert_allclose(obs[k][1:], ref_obs[k][1:], atol=1e-6)
    assert list(infos["file"][1:]) == list(ref_infos["file"][1:])
    with pytest.raises(ResetNeededError, match=r"\[0\]"):  # still waiting for its reset
        venv.step(_actions(3))
    venv.reset(options={"reset_mask": np.zeros(B, dtype=bool)})  # nothing to restart: no-op
    assert torch.equal(venv.state.mask[0], keep)
    with pytest.raises(ValueError, match="reset_mask"):
        venv.reset(options={"reset_mask": [1, 0, 1]})
    venv.reset(options={"reset_mask": np.array([True, False, False])})
    venv.step(_actions(4))  # every sub-env is playing again


def test_observation_entries_come_from_config_and_pass_the_checkers(tiny_data):
    from gymnasium.utils.env_checker import check_env

    keys = ["reconstruction", "mask", "action_mask", "budget_used"]
    env = tiny_env(tiny_data, reconstructor=CUSTOM, budget=3, observation=keys)
    assert set(env.observation_space.spaces) == set(keys)
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert obs["budget_used"].tolist() == [0.0]
    free = np.flatnonzero(obs["action_mask"])
    np.testing.assert_array_equal(obs["action_mask"].astype(bool), env.action_masks())
    obs, *_ = env.step(int(free[0]))
    assert obs["budget_used"][0] == pytest.approx(1 / 3) and obs["action_mask"][free[0]] == 0
    venv = tiny_vec(tiny_data, 2, reconstructor=CUSTOM, observation=keys)
    assert set(venv.single_observation_space.spaces) == set(keys)
    with pytest.raises(ValueError, match="unknown observation entries"):
        tiny_env(tiny_data, observation=["reconstruction", "target"])
    with pytest.raises(ValueError, match="no uncertainty head"):
        tiny_env(tiny_data, reconstructor="zero_filled", observation=["uncertainty"])
