"""Registration of the activemri env ids with Gymnasium (lazy ``module:Class`` strings)."""

from __future__ import annotations

import gymnasium as gym

__all__ = ["ENV_IDS", "register_envs"]

ENV_IDS: dict[str, str] = {
    "ActiveMRI/Builtin-v0": "builtin-v0",
    "ActiveMRI/BuiltinRepeatPenalty-v0": "builtin-repeat-penalty-v0",
    "ActiveMRI/BuiltinMultiCoil-v0": "builtin-multicoil-v0",
    "ActiveMRI/KneeSingleCoil-v0": "knee-singlecoil-v0",
    "ActiveMRI/KneeMultiCoil-v0": "knee-multicoil-v0",
}
"""Registered id -> env preset (``envs/<preset>.yaml``)."""


def register_envs() -> None:
    """Register every id in :data:`ENV_IDS` (idempotent)."""
    for env_id, preset in ENV_IDS.items():
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point="activemri.envs.env:ActiveMRIEnv",
            vector_entry_point="activemri.envs.vector:ActiveMRIVectorEnv",
            kwargs={"preset": preset},
        )
