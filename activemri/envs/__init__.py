"""The active-acquisition environment: batched core, Gymnasium Env/VectorEnv, SB3 adapter.

Importing :mod:`activemri` registers the ids in :data:`ENV_IDS`::

    import gymnasium as gym
    import activemri  # noqa: F401  (registers ActiveMRI/*)

    env = gym.make("ActiveMRI/Builtin-v0")
    venv = gym.make_vec("ActiveMRI/Builtin-v0", num_envs=16)

The SB3 adapter lives in :mod:`activemri.envs.sb3` (imported on use, so importing the env
does not import Stable-Baselines3).
"""

from __future__ import annotations

from typing import Any

from activemri.envs.config import EnvConfig, load_env_config
from activemri.envs.core import AcquisitionCore, EnvState, StepResult
from activemri.envs.env import ActiveMRIEnv
from activemri.envs.registration import ENV_IDS, register_envs
from activemri.envs.scenario import SCENARIOS, BudgetError, Scenario, resolve_scenario
from activemri.envs.simulator import NoReadableSliceError, ResetNeededError
from activemri.envs.vector import ActiveMRIVectorEnv

__all__ = [
    "ENV_IDS",
    "SCENARIOS",
    "AcquisitionCore",
    "ActiveMRIEnv",
    "ActiveMRIVectorEnv",
    "BudgetError",
    "EnvConfig",
    "EnvState",
    "NoReadableSliceError",
    "ResetNeededError",
    "Scenario",
    "StepResult",
    "load_env_config",
    "make_sb3_vec_env",
    "register_envs",
    "resolve_scenario",
]


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


register_envs()
