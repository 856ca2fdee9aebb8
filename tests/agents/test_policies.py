import math

import numpy as np
import pytest
import torch
from env_helpers import BlurredZeroFilled

from activemri.agents import (
    FixedOrderPolicy,
    GreedyOraclePolicy,
    LowToHighPolicy,
    RandomPolicy,
    UncertaintyPolicy,
    center_out_order,
    free_lines,
)
from activemri.envs.core import AcquisitionCore
from activemri.envs.observation import observe, policy_observation
from activemri.geometry import Lines
from activemri.recon_models import ZeroFilled

B, C, H, W, h, w = 3, 1, 24, 21, 16, 15


def _state(model, device, budget=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    k = torch.randn(B, C, H, W, dtype=torch.complex64, generator=gen).to(device)
    target = torch.rand(B, h, w, generator=gen).to(device)
    valid = torch.ones(B, W, dtype=torch.bool, device=device)
    valid[:, 0] = valid[:, -1] = False
    mask = torch.zeros(B, W, dtype=torch.bool, device=device)
    mask[:, 9:12] = True
    core = AcquisitionCore(model, device=device)
    low = torch.full((B,), 3, device=device)
    steps = torch.full((B,), budget, device=device)
    state = core.initial(k, target, torch.ones(B, device=device), valid, mask, low, steps)
    return core, state


def _obs(state):
    """A policy observation of ``state``: what it may see (acquired data only)."""
    keys = ["mask", "uncertainty"] if state.uncertainty is not None else ["mask"]
    width = state.mask.shape[1]
    rank = torch.as_tensor(Lines().center_rank(1, width), device=state.mask.device)
    grid = torch.tensor([1, width])  # a host tensor, as the core gives it
    return policy_observation(state, observe(state, keys), rank, grid)


def test_center_out_order_alternates_from_the_center():
    assert center_out_order(5) == [2, 1, 3, 0, 4]
    assert center_out_order(6) == [3, 2, 4, 1, 5, 0]


def test_low_to_high_and_fixed_order_pick_free_lines(device):
    _, state = _state(ZeroFilled((h, w)), device)
    assert LowToHighPolicy().act(_obs(state)).tolist() == [8, 8, 8]  # 10 is the center, 9-11 taken
    state.mask[1, 8] = True
    assert LowToHighPolicy().act(_obs(state)).tolist() == [8, 12, 8]
    fixed = FixedOrderPolicy([0, 3, 9, 5])  # 0 is padding, 9 acquired: 3 comes first
    assert fixed.act(_obs(state)).tolist() == [3, 3, 3]
    state.mask[:, 3] = state.mask[:, 5] = True
    assert fixed.act(_obs(state)).tolist() == [8, 12, 8]  # order exhausted: center-out
    played = FixedOrderPolicy.from_mask(np.isin(np.arange(W), [2, 17, 13]))
    assert played.order == [13, 17, 2]
    with pytest.raises(ValueError, match="repeat"):
        FixedOrderPolicy([1, 1])


def test_random_policy_is_valid_and_seeded(device):
    _, state = _state(ZeroFilled((h, w)), device)
    picks = [RandomPolicy(seed=5).act(_obs(state)) for _ in range(2)]
    assert torch.equal(picks[0], picks[1])
    many = torch.stack([RandomPolicy(seed=s).act(_obs(state)) for s in range(40)])
    assert free_lines(_obs(state)).gather(1, many.T).all()
    assert len(set(many[:, 0].tolist())) > 5


@pytest.mark.parametrize("model", [ZeroFilled((h, w)), BlurredZeroFilled((h, w))])
def test_greedy_oracle_equals_brute_force(model, device):
    core, state = _state(model, device)
    state.mask[0, 1:9] = True  # rows with different numbers of free lines
    choice = GreedyOraclePolicy(
        lambda lines, metric: core.score_candidates(state, lines, metric)
    ).act(_obs(state))
    for row in range(B):
        best, best_col = -math.inf, None
        for col in torch.nonzero(free_lines(_obs(state))[row]).flatten().tolist():
            actions = choice.clone()
            actions[row] = col
            trial = core.transition(state, actions)
            if trial.score[row] > best + 1e-7:
                best, best_col = float(trial.score[row]), col
        trial = core.transition(state, choice)
        assert float(trial.score[row]) == pytest.approx(best, abs=1e-6), (row, best_col)
        assert free_lines(_obs(state))[row, choice[row]]


def test_uncertainty_policy_follows_the_error_spectrum(device):
    _, state = _state(BlurredZeroFilled((h, w)), device)
    cols = torch.arange(w, device=device, dtype=torch.float32)
    # Expected error oscillating 4 cycles across the k-space width: energy at center +- 4
    # (and at DC, which is acquired).
    pattern = 1.0 + torch.cos(2 * math.pi * 4 * (cols - w // 2) / W)
    state.uncertainty = pattern.expand(B, h, w).clone()
    picks = UncertaintyPolicy().act(_obs(state))
    assert set(picks.tolist()) <= {10 - 4, 10 + 4}
    _, plain = _state(ZeroFilled((h, w)), device)
    with pytest.raises(ValueError, match="uncertainty head"):
        UncertaintyPolicy().act(_obs(plain))
