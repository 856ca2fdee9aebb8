"""Registration of the activemri env ids with Gymnasium, by ``module:Class`` strings only.

:func:`register_when_gymnasium_loads` (called by ``import activemri``) registers the ids
at once if Gymnasium is already imported, and otherwise the moment it is: a finder on
:data:`sys.meta_path` wraps Gymnasium's loader for that one import and registers after the
module has run. So ``import activemri`` (and ``import activemri.kspace``) does not import
Gymnasium, while ``import activemri; import gymnasium as gym; gym.make("ActiveMRI/...")``
works in either order. This module imports nothing of the package.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

__all__ = ["ENV_IDS", "register_envs", "register_when_gymnasium_loads"]

ENV_IDS: dict[str, str] = {
    "ActiveMRI/Builtin-v0": "builtin-v0",
    "ActiveMRI/BuiltinRepeatPenalty-v0": "builtin-repeat-penalty-v0",
    "ActiveMRI/BuiltinMultiCoil-v0": "builtin-multicoil-v0",
    "ActiveMRI/Builtin3D-v0": "builtin3d-v0",
    "ActiveMRI/KneeSingleCoil-v0": "knee-singlecoil-v0",
    "ActiveMRI/KneeMultiCoil-v0": "knee-multicoil-v0",
}
"""Registered id -> env preset (``envs/<preset>.yaml``)."""


def register_envs() -> None:
    """Register every id in :data:`ENV_IDS` (idempotent; imports Gymnasium)."""
    import gymnasium as gym

    for env_id, preset in ENV_IDS.items():
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point="activemri.envs.env:ActiveMRIEnv",
            vector_entry_point="activemri.envs.vector:ActiveMRIVectorEnv",
            kwargs={"preset": preset},
        )


class _RegisteringLoader(importlib.abc.Loader):
    """Gymnasium's own loader, followed by :func:`register_envs` once the module has run."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        register_envs()

    def __getattr__(self, name: str) -> Any:  # is_package, get_resource_reader, ...
        return getattr(self.loader, name)


class _GymnasiumFinder(importlib.abc.MetaPathFinder):
    """Finds ``gymnasium`` with the other finders and wraps its loader (then steps aside)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "gymnasium":
            return None
        _remove_finder()
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec: importlib.machinery.ModuleSpec | None = (
                None if find is None else find(fullname, path, target)
            )
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _RegisteringLoader(spec.loader)
                return spec
        return None


def _remove_finder() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _GymnasiumFinder)]


def register_when_gymnasium_loads() -> None:
    """Register the ids now if Gymnasium is imported, else as soon as it is imported."""
    if "gymnasium" in sys.modules:
        register_envs()
    elif not any(isinstance(f, _GymnasiumFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _GymnasiumFinder())
