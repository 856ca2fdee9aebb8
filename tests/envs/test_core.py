import copy
import dataclasses

import pytest
import torch
from env_helpers import BlurredZeroFilled

from activemri.envs.core import AcquisitionCore, centered_idft_rows
from activemri.kspace import ifft2c, zero_filled
from activemri.recon_models import UnetReconstructor, ZeroFilled

B, C, H, W, h, w = 3, 2, 37, 31, 20, 17


class GenericZeroFilled(ZeroFilled):
    """Same maths as ZeroFilled but takes the core's generic (forward every step) path."""

    linear_in_columns = False


def _inputs(device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    k = torch.randn(B, C, H, W, dtype=torch.complex64, generator=gen).to(device)
    target = torch.rand(B, h, w, generator=gen).to(device)
    valid = torch.ones(B, W, dtype=torch.bool, device=device)
    valid[:, :2] = False
    valid[:, -1] = False
    mask = torch.zeros(B, W, dtype=torch.bool, device=device)
    mask[:, 14:17] = True
    return k, target, torch.ones(B, device=device), valid, mask


def _reset(core, device, budget=8, seed=0):
    k, target, dr, valid, mask = _inputs(device, seed)
    num_low = torch.full((B,), 3, device=device)
    return core.initial(
        k, target, dr, valid, mask, num_low, torch.full((B,), budget, device=device)
    )


def _step(core, state, actions, donate=False):
    """One transition: the next state, its reward and termination."""
    nxt = core.transition(state, actions, donate=donate)
    return nxt, core.reward(state, nxt), core.terminal(nxt)


def test_idft_rows_reproduce_ifft2c():
    x = torch.randn(5, 9, 31, dtype=torch.complex64)
    readout = torch.fft.fftshift(
        torch.fft.ifft(torch.fft.ifftshift(x, dim=-2), dim=-2, norm="ortho"), dim=-2
    )
    assert torch.allclose(
        readout @ centered_idft_rows(31, 31, torch.device("cpu")), ifft2c(x), atol=1e-5
    )


def test_fast_zero_filled_path_matches_full_reconstruction(device):
    fast, slow = (
        AcquisitionCore(ZeroFilled((h, w)), device=device),
        AcquisitionCore(GenericZeroFilled((h, w)), device=device),
    )
    assert fast.fast_linear and not slow.fast_linear
    sf, ss = _reset(fast, device), _reset(slow, device)
    gen = torch.Generator().manual_seed(1)
    for _ in range(8):
        a = torch.randint(0, W, (B,), generator=gen).to(device)
        (sf, rf, _), (ss, rs, _) = _step(fast, sf, a), _step(slow, ss, a)
        assert torch.equal(sf.repeated, ss.repeated)
        torch.testing.assert_close(rf, rs, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        sf.recon, zero_filled(sf.kspace, sf.mask, (h, w)), atol=2e-6, rtol=1e-5
    )
    torch.testing.assert_close(sf.recon, ss.recon, atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "model", [ZeroFilled((h, w)), GenericZeroFilled((h, w)), BlurredZeroFilled((h, w))]
)
def test_rewards_telescope_masks_grow_budget_terminates(model, device):
    core = AcquisitionCore(model, device=device)
    state = _reset(core, device, budget=5)
    initial = state.score.clone()
    total = torch.zeros(B, device=device)
    previous = state.mask.clone()
    gen = torch.Generator().manual_seed(2)
    for t in range(5):
        actions = torch.randint(0, W, (B,), generator=gen).to(device)
        state, reward, terminated = _step(core, state, actions, donate=t % 2 == 1)
        total += reward
        assert (state.mask | previous).equal(state.mask)  # only grows
        assert not (state.mask & ~state.valid).any()  # padding never acquired
        previous = state.mask.clone()
        assert terminated.all() == (t == 4)
    torch.testing.assert_close(total, state.score - initial, atol=1e-5, rtol=0)


def test_repeated_and_padding_actions_change_nothing(device):
    core = AcquisitionCore(GenericZeroFilled((h, w)), repeat_penalty=0.25, device=device)
    state = _reset(core, device)
    before = copy.deepcopy(state)
    actions = torch.tensor([15, 0, W - 1], device=device)  # acquired, padding, padding
    state, reward, _ = _step(core, state, actions)
    assert state.repeated.all() and core.info(state)["repeated"].all()
    torch.testing.assert_close(reward, torch.full((B,), -0.25, device=device))
    assert torch.equal(state.mask, before.mask) and torch.equal(state.observed, before.observed)
    assert torch.equal(state.recon, before.recon) and state.steps.tolist() == [1, 1, 1]


def test_observed_kspace_has_exact_positive_zeros(device):
    core = AcquisitionCore(ZeroFilled((h, w)), device=device)
    k, target, dr, valid, mask = _inputs(device)
    k[..., 20] = torch.complex(torch.tensor(-0.0), torch.tensor(-0.0))  # unseen, signed zero
    state = core.initial(k, target, dr, valid, mask, torch.full((B,), 3, device=device),
                         torch.full((B,), 5, device=device))  # fmt: skip
    state = core.transition(state, torch.full((B,), 21, device=device))
    unseen = state.observed.permute(0, 3, 1, 2)[~state.mask]
    assert torch.equal(torch.view_as_real(unseen), torch.zeros_like(torch.view_as_real(unseen)))
    assert not torch.signbit(torch.view_as_real(unseen)).any()


@pytest.mark.parametrize("noise", ["finite", "nonfinite"])
@pytest.mark.parametrize("model", [ZeroFilled((h, w)), BlurredZeroFilled((h, w))])
def test_unacquired_kspace_does_not_leak(model, noise, device):
    """Perturbing lines never acquired changes no reconstruction, uncertainty or reward."""
    actions = [torch.tensor([5, 6, 7]), torch.tensor([20, 21, 22]), torch.tensor([6, 9, 25])]
    runs = []
    for perturb in (False, True):
        core = AcquisitionCore(model, device=device)
        k, target, dr, valid, mask = _inputs(device)
        final = mask.clone()
        for a in actions:
            final[torch.arange(B), a.to(device)] = True
        if perturb:
            gen = torch.Generator().manual_seed(9)
            junk = 1e3 * torch.randn(k.shape, dtype=k.dtype, generator=gen).to(device)
            if noise == "nonfinite":
                junk[..., ::3] = complex(float("inf"), float("nan"))
            k = torch.where(final[:, None, None, :], k, junk)
        state = core.initial(
            k,
            target,
            dr,
            valid,
            mask,
            torch.full((B,), 3, device=device),
            torch.full((B,), 9, device=device),
        )
        trace = [
            (
                state.recon.clone(),
                None if state.uncertainty is None else state.uncertainty.clone(),
                state.scale.clone(),
            )
        ]
        for a in actions:
            state, reward, _ = _step(core, state, a.to(device), donate=True)
            trace.append((state.recon.clone(), state.uncertainty, reward.clone()))
        runs.append(trace)
    for (r0, u0, x0), (r1, u1, x1) in zip(*runs, strict=True):
        assert torch.equal(r0, r1) and torch.equal(x0, x1)
        assert (u0 is None and u1 is None) or torch.equal(u0, u1)


@pytest.mark.parametrize(
    "model",
    [ZeroFilled((h, w)), UnetReconstructor((h, w), chans=4, num_pool_layers=1, uncertainty=True)],
)
def test_score_candidates_matches_stepping_without_mutating(model, device):
    core = AcquisitionCore(model, device=device, candidate_chunk=4)
    state = core.transition(_reset(core, device), torch.tensor([3, 20, 25], device=device))
    snapshot = copy.deepcopy(state)
    lines = torch.tensor([[4, 15, 0, 10], [3, 12, 29, 30], [20, 2, 8, 25]], device=device)
    scores = core.score_candidates(state, lines)
    for name in ("mask", "observed", "recon", "score", "steps"):
        assert torch.equal(getattr(state, name), getattr(snapshot, name))
    for j in range(lines.shape[1]):
        trial = core.transition(snapshot, lines[:, j])
        torch.testing.assert_close(scores[:, j], trial.score, atol=1e-5, rtol=0)
    assert core.score_candidates(state, lines, metric="psnr").shape == (B, 4)


def test_replace_rows_and_input_checks(device):
    core = AcquisitionCore(ZeroFilled((h, w)), device=device)
    state, other = _reset(core, device, seed=0), _reset(core, device, seed=1)
    state.replace_rows(
        torch.tensor([1], device=device),
        AcquisitionCore(ZeroFilled((h, w)), device=device).initial(
            other.kspace[1:2],
            other.target[1:2],
            other.data_range[1:2],
            other.valid[1:2],
            other.mask[1:2],
            other.num_low[1:2],
            other.budget[1:2],
        ),
    )
    for f in dataclasses.fields(state):
        mine, theirs = getattr(state, f.name), getattr(other, f.name)
        if f.name == "metrics":
            for key in mine:
                assert torch.equal(mine[key][1], theirs[key][1]), key
                assert not torch.equal(mine[key][0], theirs[key][0]), key
        elif f.name == "targets":
            for a, b in zip(mine.leaves(), theirs.leaves(), strict=True):
                assert torch.equal(a[1], b[1])
        elif mine is not None:
            assert torch.equal(mine[1], theirs[1]), f.name
    assert not torch.equal(state.kspace[0], other.kspace[0])
    k, target, dr, valid, mask = _inputs(device)
    with pytest.raises(ValueError, match="target must be"):
        core.initial(
            k,
            target[:, :5],
            dr,
            valid,
            mask,
            torch.full((B,), 3, device=device),
            torch.full((B,), 3, device=device),
        )
    with pytest.raises(ValueError, match="mask must be bool"):
        core.initial(
            k,
            target,
            dr,
            valid,
            mask.int(),
            torch.full((B,), 3, device=device),
            torch.full((B,), 3, device=device),
        )


@pytest.mark.parametrize("model", [ZeroFilled((h, w)), BlurredZeroFilled((h, w))])
def test_transition_is_pure_unless_donated(model, device):
    core = AcquisitionCore(model, device=device)
    state = _reset(core, device)
    before = copy.deepcopy(state)
    actions = torch.tensor([5, 15, 20], device=device)
    pure = core.transition(state, actions)
    for f in dataclasses.fields(state):
        mine, theirs = getattr(state, f.name), getattr(before, f.name)
        if f.name == "metrics":
            assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
        elif f.name == "targets":
            pairs = zip(mine.leaves(), theirs.leaves(), strict=True)
            assert all(torch.equal(a, b) for a, b in pairs)
        elif mine is not None:
            assert torch.equal(mine, theirs), f.name  # the input is untouched
    assert pure.mask[torch.arange(B), actions].all() and pure.steps.tolist() == [1, 1, 1]
    donated = core.transition(state, actions, donate=True)
    assert donated.mask is state.mask and donated.observed is state.observed  # reused
    for name in ("mask", "observed", "recon", "score", "steps", "repeated"):
        assert torch.equal(getattr(donated, name), getattr(pure, name)), name
    # what reward() reads of the old state survives the donation
    torch.testing.assert_close(core.reward(state, donated), pure.score - before.score)


def test_observation_entries_are_selected_and_follow_acquired_data(device):
    keys = ["budget_used", "mask", "action_mask", "kspace", "reconstruction"]
    core = AcquisitionCore(ZeroFilled((h, w)), device=device, observation=keys)
    assert core.observation_keys == (
        "reconstruction", "mask", "kspace", "action_mask", "budget_used"
    )  # fmt: skip
    state = core.transition(_reset(core, device, budget=4), torch.tensor([5, 6, 7], device=device))
    obs = core.observation(state)
    assert list(obs) == list(core.observation_keys)
    torch.testing.assert_close(obs["budget_used"], torch.full((B, 1), 0.25, device=device))
    assert torch.equal(obs["action_mask"].bool(), state.valid & ~state.mask)
    assert obs["kspace"].shape == (B, 2 * C, H, W) and obs["mask"].dtype == torch.int8
    seen = core.policy_observation(state)
    assert set(seen) >= {*core.observation_keys, "valid", "budget", "steps", "num_low"}
    assert seen["action_mask"].dtype == torch.bool
    with pytest.raises(ValueError, match="unknown observation entries"):
        AcquisitionCore(ZeroFilled((h, w)), observation=["reconstruction", "target"])
    with pytest.raises(ValueError, match="no uncertainty head"):
        AcquisitionCore(ZeroFilled((h, w)), observation=["uncertainty"])


def test_info_and_select(device):
    core = AcquisitionCore(ZeroFilled((h, w)), device=device)
    state = core.transition(_reset(core, device, budget=4), torch.tensor([5, 15, 7], device=device))
    info = core.info(state)
    assert info["lines_acquired"].tolist() == [4, 3, 4]
    assert info["repeated"].tolist() == [False, True, False]
    measured = state.valid.sum(dim=1)
    torch.testing.assert_close(info["actual_acceleration"], measured / 7)
    part = state.select(torch.tensor([2, 0], device=device))
    assert part.batch_size == 2 and torch.equal(part.mask[0], state.mask[2])
    assert torch.equal(part.metrics["ssim"], state.metrics["ssim"][[2, 0]])


def test_metric_pass_runs_at_metric_threads_and_restores(monkeypatch):
    from activemri import metrics

    seen = []
    real = metrics.metrics_against

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(metrics, "metrics_against", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        one = AcquisitionCore(ZeroFilled((h, w)), metric_threads=1)
        inherit = AcquisitionCore(ZeroFilled((h, w)))
        a, b = _reset(one, "cpu"), _reset(inherit, "cpu")
        one.score_candidates(a, torch.tensor([[4, 5]] * B))
        # one's initial scoring and candidates at 1 thread, inherit's at the process's 2
        assert seen == [1, 2, 1] and torch.get_num_threads() == 2  # restored after each
        for key in a.metrics:
            assert torch.equal(a.metrics[key], b.metrics[key])
    finally:
        torch.set_num_threads(before)
