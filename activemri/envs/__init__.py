"""The active-acquisition env: functional core, episode source, Gymnasium envs, SB3 adapter.

Importing :mod:`activemri` registers the ids in :data:`ENV_IDS`::

    import gymnasium as gym
    import activemri  # noqa: F401  (registers ActiveMRI/*)

    env = gym.make("ActiveMRI/Builtin-v0")
    venv = gym.make_vec("ActiveMRI/Builtin-v0", num_envs=16)

The names below are imported from their modules on first use (so importing the package, as
registration does, imports neither the models nor the data code); the SB3 adapter lives in
:mod:`activemri.envs.sb3` and imports Stable-Baselines3 only there.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from activemri.envs.registration import ENV_IDS, register_envs

if TYPE_CHECKING:
    from activemri.envs.config import EnvConfig, load_env_config
    from activemri.envs.core import AcquisitionCore, EnvState
    from activemri.envs.env import ActiveMRIEnv
    from activemri.envs.scenario import SCENARIOS, BudgetError, Scenario, resolve_scenario
    from activemri.envs.source import EpisodeSource, NoReadableSliceError
    from activemri.envs.vector import ActiveMRIVectorEnv, ResetNeededError

_LAZY = {
    "EnvConfig": "config",
    "load_env_config": "config",
    "AcquisitionCore": "core",
    "EnvState": "core",
    "EpisodeSource": "source",
    "ActiveMRIEnv": "env",
    "SCENARIOS": "scenario",
    "BudgetError": "scenario",
    "Scenario": "scenario",
    "resolve_scenario": "scenario",
    "NoReadableSliceError": "source",
    "ResetNeededError": "vector",
    "ActiveMRIVectorEnv": "vector",
}

__all__ = [
    "ENV_IDS",
    "SCENARIOS",
    "AcquisitionCore",
    "ActiveMRIEnv",
    "ActiveMRIVectorEnv",
    "BudgetError",
    "EnvConfig",
    "EnvState",
    "EpisodeSource",
    "NoReadableSliceError",
    "ResetNeededError",
    "Scenario",
    "load_env_config",
    "make_sb3_vec_env",
    "register_envs",
    "resolve_scenario",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"activemri.envs.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'activemri.envs' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def make_sb3_vec_env(env_id: str = "ActiveMRI/Builtin-v0", n_envs: int = 1, **kwargs: Any) -> Any:
    """Batched env of ``env_id`` wrapped for SB3 (imports Stable-Baselines3).

    Args:
        env_id: A registered id.
        n_envs: Episodes stepped together.
        **kwargs: ``seed``, ``monitor`` and env overrides; see
            :func:`activemri.envs.sb3.make_sb3_vec_env`.
    """
    from activemri.envs.sb3 import make_sb3_vec_env as make

    return make(env_id, n_envs, **kwargs)
