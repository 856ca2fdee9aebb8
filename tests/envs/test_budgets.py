"""Variable budgets per episode (``budget_range`` / ``acceleration_range``) and terminal rewards."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from env_helpers import tiny_vec

from activemri.envs.scenario import BudgetError, resolve_scenario


def test_a_range_is_a_scenario_length_and_overrides_replace_it():
    ranged = resolve_scenario({"initial_lines": 4, "budget_range": [2, 9]})
    assert ranged.budget_range == (2, 9) and ranged.variable
    assert ranged.end_line_bounds(30, 4) == (6, 13)
    fixed = resolve_scenario(ranged, acceleration=4.0)
    assert fixed.budget_range is None and fixed.acceleration == 4.0 and not fixed.variable
    accel = resolve_scenario({"initial_lines": 4, "acceleration_range": [4, 8]})
    assert accel.acceleration_range == (4.0, 8.0)
    assert accel.end_line_bounds(64, 4) == (8, 16)
    with pytest.raises(ValueError, match="at most one of"):
        resolve_scenario({"initial_lines": 4, "budget": 3, "budget_range": [2, 9]})
    with pytest.raises(ValueError, match="low <= high"):
        resolve_scenario({"initial_lines": 4, "budget_range": [9, 2]})
    with pytest.raises(ValueError, match="acceleration_range must be"):
        resolve_scenario({"initial_lines": 4, "acceleration_range": [4, 8, 9]})
    with pytest.raises(BudgetError, match="budget_range 40 exceeds"):
        resolve_scenario({"initial_lines": 4, "budget_range": [2, 40]}).end_line_bounds(30, 4)
    with pytest.raises(BudgetError, match="acceleration_range end 16"):
        accel_16 = resolve_scenario({"initial_lines": 4, "acceleration_range": [4, 16]})
        accel_16.end_line_bounds(64, 4)


def test_drawn_budgets_cover_the_range_are_seeded_and_observed(tiny_data):
    keys = ["mask", "budget_left"]
    venv = tiny_vec(tiny_data, 4, budget=None, budget_range=[2, 7], observation=keys)
    drawn = []
    for seed in range(0, 40, 4):  # sub-env i takes seed + i: distinct seeds
        _, info = venv.torch_reset(seed=seed)
        drawn.append(info["budget"].tolist())
    assert {b for row in drawn for b in row} <= set(range(2, 8))
    assert len({b for row in drawn for b in row}) >= 4  # the range is used, not one value
    _, again = venv.torch_reset(seed=12)
    assert again["budget"].tolist() == drawn[3]  # seeded

    obs, info = venv.torch_reset(seed=0)
    valid = venv.state.valid.sum(dim=1).float()
    budget = info["budget"]
    torch.testing.assert_close(obs["budget_left"][:, 0], budget.float() / valid)
    ends = []
    free = venv.state.free_lines()
    actions = free.float().argmax(dim=1)
    obs, _, terminated, _, info = venv.torch_step(actions)
    torch.testing.assert_close(obs["budget_left"][:, 0], (budget - 1).float() / valid)
    for step in range(2, 8):
        actions = venv.state.free_lines().float().argmax(dim=1)
        _, _, terminated, _, info = venv.torch_step(actions)
        ends += [int(budget[i]) for i in torch.nonzero(terminated).flatten().tolist()
                 if int(budget[i]) == step]  # fmt: skip
    # every episode ended at its own drawn budget
    assert sorted(ends) == sorted(budget.tolist())


def _play(venv, seed: int, steps: int):
    """Rewards and terminations of ``steps`` batched steps, acting on the first free line."""
    _, info0 = venv.torch_reset(seed=seed)
    rewards, ends = [], []
    for _ in range(steps):
        actions = venv.state.free_lines().float().argmax(dim=1)
        _, reward, terminated, _, _ = venv.torch_step(actions)
        rewards.append(reward)
        ends.append(terminated)
    return torch.stack(rewards), torch.stack(ends), info0


def test_terminal_reward_is_the_episode_gain_at_the_last_step(tiny_data):
    keys = ["mask", "action_mask", "budget_left"]
    common = dict(observation=keys, budget=None, budget_range=[3, 6], trust_class_path=True,
                  reconstructor="env_helpers:BlurredZeroFilled")  # fmt: skip
    dense = tiny_vec(tiny_data, 3, **common)
    terminal = tiny_vec(tiny_data, 3, reward_timing="terminal", **common)
    images: list[int] = []
    model = terminal.reconstructor
    original = model.forward

    def counted(kspace, mask, **aux):
        images.append(int(kspace.shape[0]))
        return original(kspace, mask, **aux)

    model.forward = counted  # type: ignore[method-assign]
    r_dense, ends_dense, start = _play(dense, seed=5, steps=6)
    r_term, ends_term, start_t = _play(terminal, seed=5, steps=6)
    assert torch.equal(ends_dense, ends_term)
    budgets = start["budget"].tolist()
    assert budgets == start_t["budget"].tolist() and len(set(budgets)) > 1
    for i, b in enumerate(budgets):
        # nothing until the last step, then the whole episode's return
        assert torch.all(r_term[: b - 1, i] == 0)
        torch.testing.assert_close(r_term[b - 1, i], r_dense[:b, i].sum(), atol=1e-6, rtol=0)
    # images reconstructed: the initial ones, then one per episode end (plus the initial
    # image of the episode that starts in its place), none on the other steps
    assert sum(images) == 3 + 2 * int(ends_term.sum())


def test_terminal_reward_still_reconstructs_what_the_observation_shows(tiny_data):
    venv = tiny_vec(tiny_data, 2, reward_timing="terminal", autoreset_mode="disabled")
    dense = tiny_vec(tiny_data, 2, autoreset_mode="disabled")
    for env in (venv, dense):
        env.torch_reset(seed=1)
    for _ in range(3):
        obs_t, reward, *_ = venv.torch_step(torch.tensor([20, 21]))
        obs_d, *_ = dense.torch_step(torch.tensor([20, 21]))
        torch.testing.assert_close(obs_t["reconstruction"], obs_d["reconstruction"])
        assert torch.all(reward == 0)


def test_evaluation_forces_dense_metrics():
    from activemri.evaluation.harness import EvalSettings, _Envs

    overrides = _Envs(EvalSettings(policies=("random",))).config_overrides(4.0, None)
    assert overrides["reward_timing"] == "dense" and overrides["acceleration"] == 4.0
    assert np.isfinite(overrides["acceleration"])


def test_a_length_override_replaces_a_based_mapping_s_length():
    spec = {"base": "builtin-4x", "budget_range": [2, 9]}
    assert resolve_scenario(spec, acceleration=4.0).budget_range is None
    assert resolve_scenario(spec).budget_range == (2, 9)


def test_terminal_timing_is_refused_by_evaluation_rollouts(tiny_data):
    from activemri.agents import RandomPolicy
    from activemri.agents.rollout import run_policy

    venv = tiny_vec(tiny_data, 2, reward_timing="terminal", order="sequential")
    with pytest.raises(ValueError, match="reward_timing='dense'"):
        run_policy(venv, RandomPolicy(0))
