"""Reconstructor names, class paths and YAML presets.

A preset (YAML in the top-level ``recon_models/`` folder) names a model either by a registry
name (built-ins, :data:`BUILTIN`) or by a ``module:Class`` path to a user's own
:class:`~activemri.recon_models.Reconstructor` subclass, importable from ``sys.path``::

    model: my_package.models:MyRecon     # or: unet
    config: {recon_size: [128, 128], width: 32}
    checkpoint: weights/my_recon.pt      # optional; relative to the YAML file

Presets are read with ``yaml.safe_load``. A class path written by the user in their own
preset is trusted (the user chose it); a class path found inside a checkpoint is not (see
:mod:`activemri.recon_models.checkpoint`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from activemri._config import from_mapping
from activemri._io import read_yaml
from activemri.recon_models.base import Reconstructor
from activemri.recon_models.classes import BUILTIN, BUILTIN_CLASS_PATHS, import_class

__all__ = [
    "BUILTIN",
    "BUILTIN_CLASS_PATHS",
    "PACKAGE_PREFIX",
    "ReconPreset",
    "build_reconstructor",
    "import_class",
    "load_preset",
    "reconstructor_from_preset",
    "resolve_class",
]

PACKAGE_PREFIX = "package:"


def resolve_class(name: str) -> type[Reconstructor]:
    """A reconstructor class from a registry name or a ``module:Class`` path."""
    if name in BUILTIN:
        path = BUILTIN[name]
    elif ":" in name:
        path = name
    else:
        raise ValueError(
            f"unknown reconstructor {name!r}: use one of {sorted(BUILTIN)} or 'module:Class'"
        )
    cls = import_class(path)
    if not (isinstance(cls, type) and issubclass(cls, Reconstructor)):
        raise ValueError(f"{path} is not a subclass of activemri.recon_models.Reconstructor")
    return cls


def build_reconstructor(name: str, **config: Any) -> Reconstructor:
    """Instantiate a reconstructor by registry name or class path with ``config``.

    Raises:
        ValueError: If the name is unknown or ``config`` does not fit the constructor.
    """
    cls = resolve_class(name)
    try:
        return cls(**config)
    except TypeError as exc:
        raise ValueError(f"config {config} does not fit {cls.__name__}: {exc}") from exc


@dataclass(frozen=True)
class ReconPreset:
    """A parsed reconstructor preset.

    Attributes:
        model: Registry name or ``module:Class``.
        config: Constructor keyword arguments.
        checkpoint: Resolved checkpoint path, or ``None`` (untrained / parameter-free).
        train: Training recipe (see :class:`activemri.recon_models.training.TrainConfig`).
        source: The YAML file, if read from one.
        description: One line about the preset.
    """

    model: str
    config: dict[str, Any] = field(default_factory=dict)
    checkpoint: Path | None = None
    train: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None
    description: str = ""


def _resolve_checkpoint(value: str, base: Path | None) -> Path:
    if value.startswith(PACKAGE_PREFIX):
        return Path(__file__).parent / "weights" / value[len(PACKAGE_PREFIX) :]
    path = Path(value).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    return path


def recon_preset_dir() -> Path:
    """The folder of reconstructor presets (``recon_models/`` of a checkout, else installed)."""
    package = Path(__file__).resolve().parents[1]
    checkout = package.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "recon_models").is_dir():
        return checkout / "recon_models"
    return package / "presets" / "recon_models"


def load_preset(preset: str | Path | Mapping[str, Any]) -> ReconPreset:
    """Read a reconstructor preset from a YAML file, a preset name or a mapping.

    A name without ``.yaml`` (``unet_default``) is looked up in :func:`recon_preset_dir`.

    ``checkpoint: package:NAME`` refers to a checkpoint shipped inside activemri; relative
    paths are relative to the YAML file.

    Raises:
        FileNotFoundError: If the YAML file does not exist.
        ValueError: If the preset is malformed.
    """
    source: Path | None = None
    if isinstance(preset, Mapping):
        data: Any = dict(preset)
    else:
        source = Path(preset)
        if source.suffix not in (".yaml", ".yml") and not source.exists():
            source = recon_preset_dir() / f"{preset}.yaml"
        if not source.is_file():
            raise FileNotFoundError(f"reconstructor preset {source} does not exist")
        data = read_yaml(source)
    where = source or "preset"
    if not isinstance(data, dict) or "model" not in data:
        raise ValueError(f"{where}: a reconstructor preset is a mapping with a 'model' key")
    values = dict(data)
    for key in ("config", "train"):
        if values.get(key) is None:
            values[key] = {}
    checkpoint = values.get("checkpoint")
    if isinstance(checkpoint, (str, Path)):
        base = source.parent if source is not None else None
        values["checkpoint"] = _resolve_checkpoint(str(checkpoint), base)
    parsed = from_mapping(ReconPreset, values, source=source, exclude=("source",))
    return replace(parsed, source=source) if source is not None else parsed


def reconstructor_from_preset(
    preset: str | Path | Mapping[str, Any] | ReconPreset,
    map_location: str | Any = "cpu",
    use_checkpoint: bool = True,
) -> Reconstructor:
    """Build the model a preset describes, loading its checkpoint when it names one.

    Args:
        preset: YAML path, mapping or parsed preset.
        map_location: Device for the checkpoint's tensors.
        use_checkpoint: Set False to get the untrained model (e.g. to train it).

    Returns:
        The reconstructor (eval mode when loaded from a checkpoint).
    """
    spec = preset if isinstance(preset, ReconPreset) else load_preset(preset)
    cls = resolve_class(spec.model)
    if use_checkpoint and spec.checkpoint is not None:
        return cls.load(spec.checkpoint, map_location=map_location)
    return build_reconstructor(spec.model, **spec.config)
