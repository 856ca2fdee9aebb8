"""Reconstructor class paths: the built-in registry and importing ``module:QualName``.

The lowest module of :mod:`activemri.recon_models` (it imports nothing of the package), so
that the contract (:mod:`~activemri.recon_models.base`), checkpoints and presets can all use
it without an import cycle.

The trust rule: a class path *read from a file* (a checkpoint, an agent file's stored env
settings) is imported only if it is built in or the caller trusts the file; :func:`needs_trust`
is that test, used by :func:`activemri.recon_models.checkpoint.checkpoint_class` (the only
importer of stored class paths) and by the agent-file checks. A class path the user writes
themselves (a spec, their own preset) is theirs and imported as given.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "BUILTIN",
    "BUILTIN_CLASS_PATHS",
    "RECONSTRUCTOR_PATH",
    "class_path_of",
    "import_class",
    "is_reconstructor_class",
    "needs_trust",
]

BUILTIN: dict[str, str] = {
    "zero_filled": "activemri.recon_models.zero_filled:ZeroFilled",
    "tv": "activemri.recon_models.cs:TVReconstructor",
    "unet": "activemri.recon_models.unet:UnetReconstructor",
    "varnet": "activemri.recon_models.varnet:VarNetReconstructor",
}
"""Registry names of the built-in reconstructors and their class paths."""

BUILTIN_CLASS_PATHS = frozenset(BUILTIN.values())
RECONSTRUCTOR_PATH = "activemri.recon_models.base:Reconstructor"
"""Class path of the contract's base class (checked without importing it)."""


def class_path_of(cls: type) -> str:
    """``module:QualName`` of a class."""
    return f"{cls.__module__}:{cls.__qualname__}"


def is_reconstructor_class(obj: Any) -> bool:
    """Whether ``obj`` is a subclass of :class:`~activemri.recon_models.base.Reconstructor`."""
    return isinstance(obj, type) and any(
        class_path_of(c) == RECONSTRUCTOR_PATH for c in obj.__mro__
    )


def needs_trust(class_path: str) -> bool:
    """Whether importing ``class_path`` read from a file needs the caller's trust.

    True for every ``module:Class`` path outside :data:`BUILTIN_CLASS_PATHS` (importing it
    runs that module's code); False for built-in paths and for registry names.
    """
    return ":" in class_path and class_path not in BUILTIN_CLASS_PATHS


def import_class(class_path: str) -> Any:
    """Import ``module:QualName`` and return the object it names (runs the module's code)."""
    module_name, sep, qualname = class_path.partition(":")
    if not sep or not module_name or not qualname:
        raise ValueError(f"class path must look like 'package.module:Class', got {class_path!r}")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import {class_path!r}: {exc}") from exc
    return obj
