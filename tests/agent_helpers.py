"""Agent test helpers: record whether every action an SB3 model takes was allowed."""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm


def record_allowed(model: BaseAlgorithm) -> list[bool]:
    """Spy on ``model``'s env: one entry per action taken, True if it was allowed.

    Allowed means free in the observation the agent acted on: ``action_mask == 1`` when the
    observation has that entry, else ``mask == 0`` (not yet acquired).
    """
    venv = model.get_env()
    assert venv is not None
    allowed: list[bool] = []
    original = venv.step_async

    def spy(actions: np.ndarray) -> None:
        seen = model._last_obs  # what the agent saw when it chose
        assert isinstance(seen, dict)
        if "action_mask" in seen:
            free = np.asarray(seen["action_mask"]) == 1
        else:
            free = np.asarray(seen["mask"]) == 0
        allowed.extend(bool(free[i, a]) for i, a in enumerate(actions))
        original(actions)

    venv.step_async = spy  # type: ignore[method-assign]
    return allowed
