"""LOUPE masks: exact budgets, gradients, learning, files, playing as a policy, resume, 3-D."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from env_helpers import CUSTOM, tiny_config

from activemri.agents.learned_mask import OrderingWarning, check_ordering_context, load_ordering
from activemri.agents.loupe import (
    LoupeConfig,
    LoupeMask,
    learn_loupe,
    loupe_paths,
    rescale_probabilities,
    weighted_kspace,
)
from activemri.agents.policy_specs import parse_policy
from activemri.agents.rollout import run_policy
from activemri.cli import main
from activemri.data import make_builtin
from activemri.envs import ActiveMRIVectorEnv
from activemri.envs.config import load_env_config
from activemri.geometry import Lines, Points
from activemri.kspace import apply_mask, zero_filled
from activemri.recon_models import Reconstructor, ZeroFilled
from activemri.recon_models.base import ReconOutput
from activemri.recon_models.domain import model_fingerprint
from activemri.recon_models.unet import UnetReconstructor

# tiny data: 36 columns, 2 + 2 padding (32 measured), 4 central initial lines (16..19)
VALID = np.r_[np.zeros(2, bool), np.ones(32, bool), np.zeros(2, bool)]
INITIAL = np.zeros(36, bool)
INITIAL[16:20] = True


def _env(data: Path, **extra: Any) -> dict[str, Any]:
    config = tiny_config(data, **extra)
    config["split"] = "train"
    return config


def _tiny_unet(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = UnetReconstructor((32, 32), chans=4, num_pool_layers=2, uncertainty=True,
                              residual=True, head_chans=4)  # fmt: skip
    path = tmp_path / "tiny_unet.pt"
    model.save(path)
    return path


def test_every_training_mask_and_the_final_mask_have_exactly_the_budget() -> None:
    mask = LoupeMask(torch.from_numpy(VALID), torch.from_numpy(INITIAL), end_count=11)
    with torch.no_grad():
        mask.logits.normal_(generator=torch.Generator().manual_seed(0))
    p = mask.probabilities()
    assert mask.budget == 7 and p.shape == (28,)
    torch.testing.assert_close(p.mean(), torch.tensor(7 / 28))  # LOUPE's renormalization
    hard, weights = mask.sample(256, torch.Generator().manual_seed(1))
    assert hard.dtype == torch.bool and (hard.sum(dim=1) == 11).all()
    assert hard[:, INITIAL].all() and not hard[:, ~VALID].any()
    assert torch.equal(weights.detach(), hard.float())  # straight-through: hard in value
    assert len({tuple(m) for m in hard.tolist()}) > 200  # random draws of exactly 7 free lines
    final = mask.mask()
    assert final.sum() == 11 and final[INITIAL].all() and not final[~VALID].any()
    assert final[mask.ranking()[:7]].all()
    probs = mask.action_probabilities()
    assert (probs[INITIAL] == 1).all() and (probs[~VALID] == 0).all()
    # The k-space the reconstructor gets is exactly the hard acquisition, with no -0.0.
    kspace = torch.randn(256, 2, 40, 36, dtype=torch.complex64)
    given = weighted_kspace(kspace, weights, Lines())
    assert torch.equal(given, apply_mask(kspace, hard))
    assert not torch.signbit(given.real).logical_and(given.real == 0).any()
    assert not torch.signbit(given.imag).logical_and(given.imag == 0).any()


class _Recorder(ZeroFilled):
    """Zero-filled that records, in training mode, which columns of its k-space hold data."""

    def __init__(self, recon_size: Any) -> None:
        super().__init__(recon_size)
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, kspace: torch.Tensor, mask: torch.Tensor, **aux: Any) -> ReconOutput:
        if self.training:
            self.seen.append((kspace.detach().abs().sum(dim=(1, 2)) > 0, mask.clone()))
        return super().forward(kspace, mask, **aux)


def test_the_reconstructor_gets_exactly_the_budget_during_training(tiny_data: Path) -> None:
    recorder = _Recorder((32, 32))
    config = load_env_config(None, **_env(tiny_data))
    config = dataclasses.replace(config, reconstructor=recorder)
    result = learn_loupe(config, LoupeConfig(max_lines=10, steps=5, batch_size=4))
    assert result.ordering.provenance["mask_pass"] == "shared"  # zero-filled reads only k-space
    assert len(recorder.seen) == 5
    for acquired, mask in recorder.seen:
        assert (acquired.sum(dim=1) == 10).all()  # data in exactly the budget's columns
        assert acquired[:, INITIAL].all() and not acquired[:, ~VALID].any()
        assert not (acquired & ~mask).any()


def test_budget_errors_and_the_renormalization() -> None:
    p = torch.tensor([0.9, 0.8, 0.1, 0.6])
    for fraction in (0.2, 0.5, 0.9):
        out = rescale_probabilities(p, fraction)
        assert abs(float(out.mean()) - fraction) < 1e-6 and out.min() >= 0 and out.max() <= 1
        assert torch.equal(out.argsort(), p.argsort())
    with pytest.raises(ValueError, match="end_count must be in"):
        LoupeMask(torch.from_numpy(VALID), torch.from_numpy(INITIAL), end_count=4)
    with pytest.raises(ValueError, match="end_count must be in"):
        LoupeMask(torch.from_numpy(VALID), torch.from_numpy(INITIAL), end_count=33)
    with pytest.raises(ValueError, match="not both"):
        LoupeConfig(acceleration=4, max_lines=10)


def test_gradients_reach_every_free_logit() -> None:
    """Under the measured mask the reconstruction reads (zeros at) unacquired lines too."""
    mask = LoupeMask(torch.from_numpy(VALID), torch.from_numpy(INITIAL), end_count=10)
    kspace = torch.randn(8, 1, 40, 36, dtype=torch.complex64) * torch.from_numpy(VALID)
    target = zero_filled(kspace, torch.from_numpy(VALID).expand(8, -1), (32, 32))
    hard, weights = mask.sample(8, torch.Generator().manual_seed(0))
    measured = mask.measured.expand_as(hard)
    image = zero_filled(weighted_kspace(kspace, weights, Lines()), measured, (32, 32))
    (image - target).abs().mean().backward()
    grad = mask.logits.grad
    assert grad is not None
    assert (grad[mask.free_index] != 0).all()
    assert (grad[torch.from_numpy(INITIAL | ~VALID)] == 0).all()


def test_a_short_run_learns_a_mask_far_better_than_random_ones(tiny_data: Path) -> None:
    config = LoupeConfig(max_lines=10, steps=150, batch_size=4, checkpoint_every=50)
    result = learn_loupe(_env(tiny_data), config)
    ordering, history = result.ordering, result.history
    assert ordering.initial == list(range(16, 20)) and len(ordering.order) == 6
    assert all(VALID[c] for c in ordering.order)
    assert ordering.scores[-1] > history[0]["val_random_ssim"] + 0.1
    assert history[-1]["train_loss"] < 0.9 * history[1]["train_loss"]
    assert history[-1]["val_ssim"] == pytest.approx(ordering.scores[-1])


def test_the_file_loads_and_plays_exactly_as_learned(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "loupe.json"
    env = _env(tiny_data, reconstructor=str(_tiny_unet(tmp_path)))
    config = LoupeConfig(max_lines=10, steps=6, batch_size=3, val_size=3, checkpoint_every=3)
    result = learn_loupe(env, config, out=out)
    recon_path, state_path = loupe_paths(out)
    assert recon_path.is_file() and state_path.is_file()
    ordering = load_ordering(out)
    assert ordering == result.ordering and ordering.complete
    assert ordering.provenance["mask_pass"] == "shared"  # a U-Net reads its mask via k-space
    settings = ordering.settings
    assert settings["method"] == "loupe" and settings["max_lines"] == 10
    assert settings["reconstructor_checkpoint"] == recon_path.name
    assert len(settings["probabilities"]) == 36
    model = Reconstructor.load(recon_path)
    assert settings["reconstructor_fingerprint"] == model_fingerprint(model)
    assert model.training_domain is not None and model.training_domain["mode"] == "loupe"
    assert model_fingerprint(model) != settings["initial_reconstructor_fingerprint"]
    # Played with its own reconstructor on the held-out sample: the exact mask, the scores.
    venv = ActiveMRIVectorEnv(
        3, **{**env, "reconstructor": str(recon_path), "split": "val", "budget": 6,
              "order": "sequential", "max_slices": 3, "subset_seed": 0},
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error", OrderingWarning)
        policy = parse_policy(f"learned:{out}").build(venv, 0)
    runs = run_policy(venv, policy)
    assert runs.example is not None and np.array_equal(runs.example["mask"], ordering.mask(10))
    assert all(lines == list(range(4, 11)) for lines in runs.lines)
    np.testing.assert_allclose(np.mean(runs.metrics["ssim"], axis=0), ordering.scores, atol=1e-5)
    # With the env's untrained model instead, the warning names the jointly trained one.
    with pytest.warns(OrderingWarning, match=recon_path.name):
        check_ordering_context(ordering, Reconstructor.load(env["reconstructor"]), venv.config.data)


class _Stop(Exception):
    pass


def test_resume_continues_exactly_and_refuses_other_settings(
    tiny_data: Path, tmp_path: Path
) -> None:
    env = _env(tiny_data, reconstructor=CUSTOM)  # a learnable model the mask check sees
    config = LoupeConfig(max_lines=9, steps=8, batch_size=3, val_size=3, checkpoint_every=4)
    whole = learn_loupe(env, config, out=tmp_path / "whole.json").ordering
    assert whole.provenance["mask_pass"] == "separate"  # its uncertainty reads the mask

    out = tmp_path / "cut.json"

    def stop(step: int, total: int, loss: float) -> None:
        if step == 6:
            raise _Stop

    with pytest.raises(_Stop):
        learn_loupe(env, config, out=out, progress=stop)
    assert not out.exists() and loupe_paths(out)[1].is_file()  # only the state of step 4
    steps: list[int] = []
    resumed = learn_loupe(env, config, out=out, progress=lambda s, t, v: steps.append(s))
    assert steps == [5, 6, 7, 8]
    assert resumed.ordering.order == whole.order and resumed.ordering.scores == whole.scores
    for key in ("probabilities", "reconstructor_fingerprint"):
        assert resumed.ordering.settings[key] == whole.settings[key]
    assert resumed.history == whole.provenance["history"]
    # Complete: the same command returns it; more steps continue it; other settings refuse.
    assert learn_loupe(env, config, out=out).ordering == resumed.ordering
    with pytest.raises(ValueError, match=r"other settings.*seed"):
        learn_loupe(env, LoupeConfig(**{**config.__dict__, "seed": 1}), out=out)
    longer = LoupeConfig(**{**config.__dict__, "steps": 10})
    steps.clear()
    learn_loupe(env, longer, out=out, progress=lambda s, t, v: steps.append(s))
    assert steps == [9, 10] and load_ordering(out).settings["steps"] == 10
    state = loupe_paths(out)[1]
    out.unlink()
    with pytest.raises(ValueError, match=r"cannot resume .*mask_lr"):
        learn_loupe(env, LoupeConfig(**{**longer.__dict__, "mask_lr": 0.5}), out=out)
    assert state.is_file()


def test_bad_input_gives_clear_errors(tiny_data: Path) -> None:
    # 32 measured lines: 8x ends at 4 lines, which the 4 initial lines already fill
    with pytest.raises(ValueError, match=r"acceleration 8 ends at round\(32 / 8\) = 4 lines"):
        learn_loupe(_env(tiny_data), LoupeConfig(acceleration=8))
    with pytest.raises(ValueError, match="max_lines must be in"):
        learn_loupe(_env(tiny_data), LoupeConfig(max_lines=40))
    with pytest.raises(ValueError, match="deterministic initial mask"):
        learn_loupe(_env(tiny_data, extra_random_lines=2), LoupeConfig(max_lines=10))
    with pytest.raises(ValueError, match="held-out"):
        learn_loupe(_env(tiny_data), LoupeConfig(max_lines=10, val_split="nope"))


@pytest.fixture(scope="module")
def tiny3d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny3d")
    make_builtin(out, "tiny3d", seed=0)
    return out


def test_points_of_a_3d_volume(tiny3d: Path, tmp_path: Path) -> None:
    env = {"data_root": str(tiny3d), "split": "train", "reconstructor": "zero_filled",
           "geometry": "points", "elliptical_shutter": True, "initial_lines": 4,
           "device": "cpu"}  # fmt: skip
    out = tmp_path / "points.json"
    config = LoupeConfig(acceleration=4, steps=20, batch_size=4, val_size=4, checkpoint_every=10)
    ordering = learn_loupe(env, config, out=out).ordering
    measured = Points(ellipse=True).measured(np.ones(12, bool), 16)
    assert ordering.width == 16 * 12 and len(ordering.initial) == 16
    end = round(measured.sum() / 4)
    assert len(ordering.initial) + len(ordering.order) == end
    assert all(measured[a] for a in ordering.order) and not set(ordering.order) & set(
        ordering.initial
    )
    venv = ActiveMRIVectorEnv(2, **{**env, "acceleration": 4, "split": "val",
                                    "order": "sequential"})  # fmt: skip
    runs = run_policy(venv, parse_policy(f"learned:{out}").build(venv, 0))
    assert runs.example is not None
    assert np.array_equal(runs.example["mask"].reshape(-1), ordering.mask(end))


def test_cli(tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.json"
    sets = [f"--set=data_root={tiny_data}", "--set=reconstructor=zero_filled",
            "--set=initial_lines=4", "--set=split=train", "--set=device=cpu"]  # fmt: skip
    args = ["mask", "learn", "--method", "loupe", "--out", str(out), "--quiet", "--steps", "4",
            "--batch-size", "2", "--val-size", "2", *sets]  # fmt: skip
    assert main([*args, "--max-lines", "8", "--augment"]) == 0
    text = capsys.readouterr().out
    assert "LOUPE mask of 4 initial + 4 learned of 36 actions (4x)" in text
    settings = json.loads(out.read_text())["settings"]
    assert settings["method"] == "loupe" and settings["augment"] is True
    assert main([*args, "--acceleration", "8", "--out", str(tmp_path / "x.json")]) == 2
    assert "initial mask already has 4" in capsys.readouterr().err
    greedy = ["mask", "learn", "--out", str(tmp_path / "g.json"), "--acceleration", "4", *sets]
    assert main(greedy) == 2
    assert "--acceleration: only with --method loupe" in capsys.readouterr().err
