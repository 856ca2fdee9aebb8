"""The rollout loop gives a non-oracle policy observations only: no way to the target."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from env_helpers import BlurredZeroFilled, tiny_config

from activemri.agents.policies import Policy, free_lines
from activemri.agents.rollout import run_policy
from activemri.envs import ActiveMRIVectorEnv
from activemri.envs.observation import POLICY_KEYS

ALLOWED = {"reconstruction", "mask", "uncertainty", *POLICY_KEYS}


class Spy(Policy):
    """Plays the first free line and keeps everything it is given."""

    def __init__(self, venv: ActiveMRIVectorEnv) -> None:
        self.venv = venv  # the test's handle, to compare against the privileged state
        self.given: list[Any] = []
        self.targets: list[torch.Tensor] = []

    def begin(self, rows: Sequence[int], episodes: Sequence[Any], obs: Mapping[str, Any]) -> None:
        self.given.append((list(rows), list(episodes), dict(obs)))
        self._remember()

    def act(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        self.given.append(dict(obs))
        self._remember()
        return free_lines(obs).to(torch.int8).argmax(dim=1)

    def _remember(self) -> None:
        state = self.venv.state
        self.targets.append((state.target / state.scale[:, None, None]).clone())
        self.storages = {state.target.untyped_storage().data_ptr(),
                         state.kspace.untyped_storage().data_ptr()}  # fmt: skip


def _walk(value: Any) -> list[Any]:
    """Every object reachable from ``value`` through containers and dataclass fields."""
    out = [value]
    if isinstance(value, Mapping):
        for item in value.values():
            out += _walk(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            out += _walk(item)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            out += _walk(getattr(value, f.name))
    return out


def test_a_policy_is_given_observations_only(tiny_data: Path) -> None:
    config = tiny_config(tiny_data, reconstructor="env_helpers:BlurredZeroFilled",
                         trust_class_path=True, order="sequential")  # fmt: skip
    venv = ActiveMRIVectorEnv(3, **config)
    assert isinstance(venv.reconstructor, BlurredZeroFilled)
    spy = Spy(venv)
    runs = run_policy(venv, spy)
    assert len(runs) > 0 and len(spy.given) > len(runs)
    target = torch.cat(spy.targets)
    for given in spy.given:
        for obj in _walk(given):
            # Only tensors, numbers, strings and the episode facts; no state, env, dataset,
            # reconstructor or file handle.
            assert isinstance(obj, (torch.Tensor, int, float, str, dict, list, tuple)) or (
                dataclasses.is_dataclass(obj) and type(obj).__name__ == "PolicyEpisode"
            ), type(obj)
            if isinstance(obj, str):
                assert "/" not in obj and not Path(obj).exists(), obj  # no path to the data
            if isinstance(obj, torch.Tensor):
                assert obj.untyped_storage().data_ptr() not in spy.storages
                if obj.shape[-2:] == target.shape[-2:]:
                    flat = obj.reshape(-1, *target.shape[-2:]).float()
                    for image in flat:
                        # No entry equals a target (images at 4x differ from it visibly).
                        gap = (target - image).abs().flatten(1).amax(dim=1)
                        assert float(gap.min()) > 1e-3
        obs = given[2] if isinstance(given, tuple) else given
        assert set(obs) <= ALLOWED, set(obs) - ALLOWED
    # The policy played real, distinct lines: the spy is a working policy.
    for lines in runs.lines:
        assert np.all(np.diff(lines) == 1)
