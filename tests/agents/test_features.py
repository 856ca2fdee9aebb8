"""The SB3 feature extractor for the env's Dict observation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from env_helpers import CUSTOM, tiny_config
from gymnasium import spaces
from sb3_contrib import MaskablePPO

from activemri.agents.features import ActiveMRIExtractor
from activemri.envs import make_sb3_vec_env


def _space(size: int, width: int, uncertainty: bool = True) -> spaces.Dict:
    image = spaces.Box(-1e4, 1e4, shape=(1, size, size), dtype=np.float32)
    obs: dict[str, spaces.Space] = {"reconstruction": image, "mask": spaces.MultiBinary(width)}
    if uncertainty:
        obs["uncertainty"] = spaces.Box(0, 1e4, shape=(1, size, size), dtype=np.float32)
    return spaces.Dict(obs)


def _batch(space: spaces.Dict, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.rand((n, *s.shape), generator=gen) for k, s in space.spaces.items()}


def test_one_architecture_for_builtin_and_knee_sizes() -> None:
    small = ActiveMRIExtractor(_space(128, 128))
    knee = ActiveMRIExtractor(_space(320, 368))
    cnn_params = [sum(p.numel() for p in e.cnn.parameters()) for e in (small, knee)]
    assert cnn_params[0] == cnn_params[1]  # adaptive pooling: size-independent CNN
    assert small(_batch(_space(128, 128), 3)).shape == (3, 256)
    assert knee(_batch(_space(320, 368), 2)).shape == (2, 256)


def test_every_input_reaches_the_features() -> None:
    space = _space(64, 64)
    extractor = ActiveMRIExtractor(space, features_dim=32)
    obs = _batch(space, 2)
    base = extractor(obs)
    for key in ("reconstruction", "uncertainty", "mask"):
        changed = dict(obs)
        changed[key] = obs[key] + 1.0
        assert not torch.allclose(extractor(changed), base), key
    with_budget = spaces.Dict({**space.spaces, "budget_used": spaces.Box(0, 1, shape=(1,))})
    extractor = ActiveMRIExtractor(with_budget, features_dim=32)
    obs = _batch(with_budget, 2)
    changed = {**obs, "budget_used": obs["budget_used"] + 0.5}
    assert not torch.allclose(extractor(changed), extractor(obs))
    assert ActiveMRIExtractor(_space(64, 64, uncertainty=False)).image_keys == ["reconstruction"]
    with pytest.raises(ValueError, match="reconstruction"):
        ActiveMRIExtractor(spaces.Dict({"mask": spaces.MultiBinary(8)}))


@pytest.mark.slow
def test_maskable_ppo_trains_with_the_extractor(tiny_data: Path) -> None:
    config = tiny_config(tiny_data, reconstructor=CUSTOM, trust_class_path=True)
    venv = make_sb3_vec_env("ActiveMRI/Builtin-v0", n_envs=2, seed=0, **config)
    kwargs = {"features_extractor_class": ActiveMRIExtractor,
              "features_extractor_kwargs": {"features_dim": 64}}  # fmt: skip
    model = MaskablePPO("MultiInputPolicy", venv, n_steps=32, batch_size=32, n_epochs=1,
                        policy_kwargs=kwargs, seed=0)  # fmt: skip
    before = [p.detach().clone() for p in model.policy.features_extractor.parameters()]
    model.learn(64)
    assert isinstance(model.policy.features_extractor, ActiveMRIExtractor)
    after = list(model.policy.features_extractor.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
