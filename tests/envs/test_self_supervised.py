"""The self-supervised reward: held-out splits, never reading the target, target-free files."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
import torch
from env_helpers import CUSTOM, tiny_vec
from recon_helpers import make_model

from activemri.data import SliceDataset, make_builtin
from activemri.envs.core import AcquisitionCore
from activemri.envs.self_supervised import heldout_split, split_keys
from activemri.kspace import acs_mask

SS = {"reward": "self_supervised", "reconstructor": CUSTOM}


def _rollout(venv, steps: int, seed: int = 0):
    """Rewards, scores and actions of a seeded rollout taking the first free lines."""
    venv.torch_reset(seed=seed)
    first = venv.state.score.clone()
    rewards, actions = [], []
    for _ in range(steps):
        free = venv.state.free_lines()
        # a spread of lines (not always the lowest index) so held-out sets vary
        keys = torch.arange(free.shape[1]).mul(7).remainder(free.shape[1]).float()
        action = torch.where(free, keys, -1.0).argmax(dim=1)
        actions.append(action)
        _, reward, terminated, _, _ = venv.torch_step(action)
        rewards.append(reward)
        if bool(terminated.all()):
            break
    return torch.stack(rewards), first, venv.state.score.clone(), torch.stack(actions)


def test_splits_partition_the_acquired_lines_keep_the_centre_and_are_seeded():
    gen = torch.Generator().manual_seed(0)
    mask = torch.rand(6, 40, generator=gen) < 0.4
    num_low = torch.tensor([4, 4, 6, 6, 0, 8])
    protected = acs_mask(num_low, 40)
    mask |= protected
    mask[4] = False  # nothing acquired at all
    seed, step = torch.arange(6) * 11, torch.full((6,), 3)
    theta, lam = heldout_split(mask, protected, seed, step, 0.4)
    assert not (theta & lam).any() and torch.equal(theta | lam, mask)
    assert not (lam & protected).any() and torch.equal(theta & protected, protected)
    free = (mask & ~protected).sum(dim=1)
    expected = torch.where(free > 0, torch.round(0.4 * free.double()).long().clamp_min(1), 0)
    assert torch.equal(lam.sum(dim=1), expected)
    # deterministic, per row (the batch it sits in does not matter), new every step
    order = torch.tensor([5, 3, 1, 0, 2, 4])
    _, lam2 = heldout_split(mask[order], protected[order], seed[order], step[order], 0.4)
    assert torch.equal(lam2, lam[order])
    _, lam_next = heldout_split(mask, protected, seed, step + 1, 0.4)
    assert not torch.equal(lam_next, lam)
    keys = split_keys(torch.arange(200), torch.zeros(200, dtype=torch.long), 64)
    assert float(keys.min()) >= 0.0 and float(keys.max()) < 1.0
    assert abs(float(keys.mean()) - 0.5) < 0.01  # roughly uniform
    with pytest.raises(ValueError, match="fraction"):
        heldout_split(mask, protected, seed, step, 1.0)


def test_rewards_never_read_the_target(tiny_data):
    """NaN targets give exactly the rewards that the true targets give."""
    venv = tiny_vec(tiny_data, 3, **SS)
    rewards, first, last, _ = _rollout(venv, 5)  # budget 6: no episode ends (autoreset)
    assert torch.isfinite(rewards).all() and rewards.abs().sum() > 0
    torch.testing.assert_close(rewards.sum(dim=0), last - first)  # telescoping

    core = venv.core
    state = venv.state
    poisoned = core.initial(
        state.kspace, torch.full_like(state.target, float("nan")), state.data_range,
        state.valid, state.mask, state.num_low, state.budget, split_seed=state.split_seed,
    )  # fmt: skip
    clean = core.initial(
        state.kspace, state.target, state.data_range, state.valid, state.mask, state.num_low,
        state.budget, split_seed=state.split_seed,
    )  # fmt: skip
    assert torch.isnan(poisoned.metrics["ssim"]).all()
    torch.testing.assert_close(poisoned.score, clean.score, rtol=0, atol=0)
    action = poisoned.free_lines().float().argmax(dim=1)
    a, b = core.transition(poisoned, action), core.transition(clean, action)
    torch.testing.assert_close(core.reward(poisoned, a), core.reward(clean, b), rtol=0, atol=0)


def _strip_targets(src, dst, mask_columns: np.ndarray | None = None):
    dst.mkdir()
    for path in sorted(src.glob("*.h5")):
        out = dst / path.name
        shutil.copy(path, out)
        with h5py.File(out, "a") as hf:
            for key in ("reconstruction_esc", "reconstruction_rss"):
                if key in hf:
                    del hf[key]
            if mask_columns is not None:
                hf["kspace"][...] = hf["kspace"][()] * mask_columns
                hf.create_dataset("mask", data=mask_columns)
    return dst


def test_files_without_targets_play_with_the_self_supervised_reward_only(tiny_data, tmp_path):
    bare = _strip_targets(tiny_data, tmp_path / "bare")
    with pytest.raises(ValueError, match="self_supervised"):
        tiny_vec(bare, 2, reconstructor=CUSTOM)
    with pytest.warns(UserWarning, match="without fully sampled targets|cannot be checked"):
        pass_through = tiny_vec(bare, 2, domain_check=True, **SS)
    rewards, _, _, actions = _rollout(pass_through, 5, seed=3)
    reference, _, _, ref_actions = _rollout(tiny_vec(tiny_data, 2, **SS), 5, seed=3)
    assert torch.equal(actions, ref_actions)
    torch.testing.assert_close(rewards, reference, rtol=0, atol=0)
    assert torch.isnan(pass_through.state.metrics["ssim"]).all()  # info only: no target


def test_a_test_files_own_mask_is_all_that_was_measured(tiny_data, tmp_path):
    with h5py.File(sorted(tiny_data.glob("*.h5"))[0], "r") as hf:
        width = hf["kspace"].shape[-1]
    columns = np.zeros(width, dtype=bool)
    columns[width // 2 - 4 : width // 2 + 4] = True  # the centre ...
    columns[1::3] = True  # ... and every third line
    bare = _strip_targets(tiny_data, tmp_path / "test_files", columns)
    venv = tiny_vec(bare, 2, budget=4, domain_check=False, **SS)
    venv.torch_reset(seed=0)
    measured = torch.from_numpy(columns)
    measured &= venv.dataset.slice_meta(0).valid_columns(width)
    assert torch.equal(venv.state.valid[0], measured)
    for _ in range(4):
        action = venv.state.free_lines().float().argmax(dim=1)
        venv.torch_step(action)
        assert not (venv.state.mask & ~measured).any()


def test_candidate_scores_are_the_next_states_scores(tiny_data):
    venv = tiny_vec(tiny_data, 2, **SS)
    venv.torch_reset(seed=1)
    venv.torch_step(venv.state.free_lines().float().argmax(dim=1))
    state = venv.state
    lines = torch.nonzero(state.free_lines()[0]).flatten()[:5]
    candidates = torch.stack([lines, lines])
    scores = venv.core.score_candidates(state, candidates)
    for j in range(candidates.shape[1]):
        nxt = venv.core.transition(state, candidates[:, j])
        torch.testing.assert_close(scores[:, j], nxt.score)
    assert scores[0].unique().numel() > 1  # candidates differ
    with pytest.raises(ValueError, match="needs a core built with reward='self_supervised'"):
        AcquisitionCore(make_model("zero_filled")).score_candidates(
            state, candidates, metric="self_supervised"
        )


def test_zero_filling_predicts_nothing_and_terminal_timing_gives_the_same_return(tiny_data):
    zf = tiny_vec(tiny_data, 2, reward="self_supervised")  # zero-filled
    rewards, _, last, _ = _rollout(zf, 4)
    assert bool((zf.state.mask.sum(dim=1) > 4 + 2).all())  # lines are held out by now
    torch.testing.assert_close(last, torch.full_like(last, -1.0), rtol=0, atol=1e-5)
    torch.testing.assert_close(rewards, torch.zeros_like(rewards), rtol=0, atol=1e-5)
    dense, *_ = _rollout(tiny_vec(tiny_data, 2, **SS), 6, seed=5)
    terminal, *_ = _rollout(tiny_vec(tiny_data, 2, reward_timing="terminal", **SS), 6, seed=5)
    assert torch.equal(terminal[:-1], torch.zeros_like(terminal[:-1]))
    torch.testing.assert_close(terminal.sum(dim=0), dense.sum(dim=0))


@pytest.mark.parametrize("model", ["unet", "varnet"])
def test_networks_and_points_get_a_finite_score(model, tiny_multicoil, tmp_path):
    """U-Net (image prediction), VarNet (k-space prediction) and ky-kz points."""
    torch.manual_seed(0)
    path = tmp_path / "net.pt"
    if model == "unet":
        data = tmp_path / "tiny3d"
        make_builtin(data, "tiny3d", seed=0)
        size = SliceDataset(data).slice_meta(0).recon_size
        make_model(model, size).save(path)
        extra = {"geometry": "points", "initial_lines": 4, "budget": 5}
    else:
        data = tiny_multicoil
        net = make_model(model, SliceDataset(data).slice_meta(0).recon_size)
        assert net.predicts_kspace
        net.save(path)
        extra = {}
    venv = tiny_vec(data, 2, reward="self_supervised", reconstructor=str(path),
                    domain_check=False, **extra)  # fmt: skip
    rewards, first, last, _ = _rollout(venv, 4)
    assert torch.isfinite(rewards).all() and bool((last <= 0).all()) and bool((last != -1).all())
    torch.testing.assert_close(rewards.sum(dim=0), last - first)


def test_several_splits_average_the_scores_of_single_splits():
    from activemri.envs.self_supervised import self_supervised_score
    from activemri.geometry import Lines
    from activemri.kspace import zero_filled

    gen = torch.Generator().manual_seed(3)
    kspace = torch.randn(3, 1, 20, 18, dtype=torch.complex64, generator=gen)
    mask = torch.rand(3, 18, generator=gen) < 0.5
    num_low = torch.full((3,), 4)
    mask |= acs_mask(num_low, 18)
    observed = torch.where(mask[:, None, None], kspace, 0)

    def forward(k, m, low):  # blurred zero-filled: predicts something outside its input
        image = zero_filled(k, m, (20, 18))
        blurred = torch.nn.functional.avg_pool2d(image[:, None], 3, stride=1, padding=1)[:, 0]
        return blurred, None

    args = (observed, mask, num_low)
    seed, step = torch.tensor([5, 6, 7]), torch.tensor([2, 2, 2])
    two = self_supervised_score(forward, *args, seed, step, Lines(), (20, 18), splits=2)
    one = self_supervised_score(forward, *args, seed, step, Lines(), (20, 18))
    other = self_supervised_score(forward, *args, seed + 104_729, step, Lines(), (20, 18))
    torch.testing.assert_close(two, (one + other) / 2)
    assert not torch.allclose(one, other)
    with pytest.raises(ValueError, match="splits"):
        self_supervised_score(forward, *args, seed, step, Lines(), (20, 18), splits=0)


def test_the_reward_passes_the_gymnasium_and_sb3_checkers_with_and_without_targets(
    tiny_data, tmp_path
):
    import warnings

    from env_helpers import tiny_env
    from gymnasium.utils.env_checker import check_env as gym_check
    from stable_baselines3.common.env_checker import check_env as sb3_check

    gym_check(tiny_env(tiny_data, **SS), skip_render_check=True)
    bare = _strip_targets(tiny_data, tmp_path / "bare")
    env = tiny_env(bare, domain_check=False, **SS)
    # (Gymnasium's determinism check compares infos, whose metrics are NaN without a target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the expected float-image notes (see envs/check.py)
        sb3_check(env, warn=True)
    rewards = []
    for _ in range(2):
        env.reset(seed=4)
        rewards.append(env.step(int(np.flatnonzero(env.action_masks())[0]))[1])
    assert np.isfinite(rewards[0]) and rewards[0] == rewards[1]  # seeded


def test_a_step_that_adds_no_line_keeps_the_split_and_costs_only_the_penalty(tiny_data):
    venv = tiny_vec(tiny_data, 2, repeat_penalty=0.25, **SS)
    venv.torch_reset(seed=2)
    for _ in range(2):
        venv.torch_step(venv.state.free_lines().float().argmax(dim=1))
    acquired = venv.state.mask.float().argmax(dim=1)  # a line both episodes already hold
    before = venv.state.score.clone()
    _, reward, *_ = venv.torch_step(acquired)
    torch.testing.assert_close(reward, torch.full_like(reward, -0.25), rtol=0, atol=0)
    torch.testing.assert_close(venv.state.score, before, rtol=0, atol=0)
    scores = venv.core.score_candidates(venv.state, acquired[:, None])
    torch.testing.assert_close(scores[:, 0], before, rtol=0, atol=0)


def test_test_files_with_different_masks_each_keep_their_own(tiny_data, tmp_path):
    paths = sorted(tiny_data.glob("*.h5"))[:2]
    with h5py.File(paths[0], "r") as hf:
        width = hf["kspace"].shape[-1]
    root = tmp_path / "mixed"
    root.mkdir()
    masks = []
    for i, (path, step) in enumerate(zip(paths, (2, 4), strict=True)):
        columns = np.zeros(width, dtype=bool)
        columns[width // 2 - 3 : width // 2 + 3] = True
        columns[i::step] = True
        masks.append(columns)
        sub = tmp_path / f"src{i}"
        sub.mkdir()
        shutil.copy(path, sub / path.name)
        _strip_targets(sub, tmp_path / f"bare{i}", columns)
        shutil.move(tmp_path / f"bare{i}" / path.name, root / path.name)
    venv = tiny_vec(root, 6, budget=3, domain_check=False, **SS)  # every slice once
    venv.torch_reset(seed=0)
    for row, episode in enumerate(venv.episodes):
        columns = masks[[p.name for p in paths].index(episode.meta.file.name)]
        measured = torch.from_numpy(columns) & episode.meta.valid_columns(width)
        assert torch.equal(venv.state.valid[row], measured)
    assert len({e.meta.file.name for e in venv.episodes}) == 2
    # each file's acceleration is planned on its own mask (not the first file's)
    by_file = {venv.dataset.slice_meta(i).file.name: a
               for i, a in venv.actual_accelerations.items()}  # fmt: skip
    counts = [int((torch.from_numpy(m) & venv.dataset.slice_meta(0).valid_columns(width)).sum())
              for m in masks]  # fmt: skip
    assert by_file[paths[0].name] != by_file[paths[1].name]
    assert by_file[paths[0].name] * by_file[paths[1].name] > 0 and counts[0] != counts[1]


def test_an_agent_trains_on_files_without_targets(tiny_data, tmp_path):
    from env_helpers import tiny_config

    from activemri.agents.preset import AgentPreset
    from activemri.agents.training import train_agent

    bare = _strip_targets(tiny_data, tmp_path / "bare")
    doc = {
        "algorithm": "maskable_ppo",
        "env_overrides": tiny_config(bare, domain_check=False, **SS),
        "observation": ["reconstruction", "mask"],
        "n_envs": 2,
        "total_steps": 24,
        "hyperparameters": {"n_steps": 12, "batch_size": 12, "n_epochs": 1},
        "features": {"features_dim": 16, "channels": [4, 4, 4, 4], "pooled": 2, "mask_dim": 8},
        "net_arch": [16],
        "eval": {"every": 0},
        "checkpoint_every": 24,
    }
    result = train_agent(AgentPreset.from_dict(doc), tmp_path / "agent", log=None)
    assert result.steps >= 24 and result.final.is_file()
    with pytest.raises(ValueError, match="targets"):  # the periodic evaluation needs them
        train_agent(AgentPreset.from_dict({**doc, "eval": {"every": 12, "split": None}}),
                    tmp_path / "evaluated", log=None)  # fmt: skip
