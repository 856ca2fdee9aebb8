"""One entry point from a reconstructor spec to a model: :func:`resolve`.

A spec is any of:

- a :class:`~activemri.recon_models.base.Reconstructor` instance (returned as is);
- a YAML preset: a ``.yaml``/``.yml`` path, a preset name (``unet_default``, looked up in
  :func:`~activemri.recon_models.registry.recon_preset_dir`), a mapping or a parsed
  :class:`~activemri.recon_models.registry.ReconPreset`;
- a checkpoint (``.pt``/``.pth``; or any other existing file, or any other
  :class:`~pathlib.Path`), read by
  :func:`~activemri.recon_models.checkpoint.load_reconstructor`;
- a registry name (``zero_filled``, ``unet``, ...) or a ``module:Class`` path (a ``str``),
  built with ``recon_size`` and ``config``.

A string is tried in that order: preset or checkpoint suffix, registry name or class path,
existing file (a checkpoint), preset name.

Trust: a class path the *user* writes (in a spec or their own preset) is imported, since
the user chose it; a class path stored *inside a checkpoint* is imported only if it is built
in or ``trust_class_path=True`` (the rule is
:func:`~activemri.recon_models.checkpoint.checkpoint_class`, its only home). Capabilities:
a class with ``needs_weights`` is refused without a checkpoint unless ``allow_untrained``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from activemri.recon_models.base import Reconstructor
from activemri.recon_models.checkpoint import load_reconstructor
from activemri.recon_models.classes import BUILTIN
from activemri.recon_models.registry import (
    ReconPreset,
    build_reconstructor,
    load_preset,
    recon_preset_dir,
    reconstructor_from_preset,
    resolve_class,
)

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "PRESET_SUFFIXES",
    "ReconSpec",
    "describe_reconstructor",
    "resolve",
]

PRESET_SUFFIXES = (".yaml", ".yml")
CHECKPOINT_SUFFIXES = (".pt", ".pth")

ReconSpec = Reconstructor | ReconPreset | Mapping[str, Any] | str | Path
"""What :func:`resolve` accepts."""


def resolve(
    spec: ReconSpec,
    *,
    recon_size: Sequence[int] | None = None,
    config: Mapping[str, Any] | None = None,
    map_location: str | torch.device | None = "cpu",
    trust_class_path: bool = False,
    base_dir: str | Path | None = None,
    allow_untrained: bool = False,
) -> Reconstructor:
    """The reconstructor a spec names (see the module docstring for the kinds of spec).

    Args:
        spec: Instance, preset, checkpoint, registry name or ``module:Class``.
        recon_size: ``(h, w)`` for a model built from a name or class path (overrides
            ``config["recon_size"]``); ignored for instances, presets and checkpoints,
            which carry their own.
        config: Constructor keyword arguments for a name or class path.
        map_location: Device for a checkpoint's tensors (presets' checkpoints too).
        trust_class_path: Import a class path stored in a checkpoint even if it is not built
            in. Only for files you trust: importing a module runs its code.
        base_dir: Folder that relative preset and checkpoint paths are relative to.
        allow_untrained: Build a ``needs_weights`` model without weights (e.g. to train it).

    Returns:
        The reconstructor (eval mode when loaded from a checkpoint).

    Raises:
        FileNotFoundError: A preset or checkpoint file does not exist.
        ValueError: Unknown spec, a config that does not fit, a non-reconstructor class, an
            untrained ``needs_weights`` model, or an untrusted class path in a checkpoint
            (:class:`~activemri.recon_models.checkpoint.CheckpointError`).
    """
    if isinstance(spec, Reconstructor):
        return spec
    if isinstance(spec, (ReconPreset, Mapping)):
        return _from_preset(spec, spec, map_location, allow_untrained)
    if not isinstance(spec, (str, Path)):
        raise ValueError(f"a reconstructor spec is a name, path or Reconstructor, got {spec!r}")
    text = str(spec)
    if text.endswith(PRESET_SUFFIXES):
        return _from_preset(_path(spec, base_dir), spec, map_location, allow_untrained)
    if text.endswith(CHECKPOINT_SUFFIXES):
        path = _path(spec, base_dir)
        return load_reconstructor(
            path, map_location=map_location, trust_class_path=trust_class_path
        )
    if isinstance(spec, str) and (spec in BUILTIN or ":" in spec):
        cls = resolve_class(spec)
        if cls.needs_weights and not allow_untrained:
            raise ValueError(
                f"reconstructor={spec!r} would be untrained ({cls.__name__} needs trained "
                "weights); pass a checkpoint (.pt) or a preset"
            )
        kwargs = dict(config or {})
        if recon_size is not None:
            kwargs["recon_size"] = [int(s) for s in recon_size]
        return build_reconstructor(spec, **kwargs)
    path = _path(spec, base_dir)
    if isinstance(spec, Path) or path.is_file():
        return load_reconstructor(
            path, map_location=map_location, trust_class_path=trust_class_path
        )
    if isinstance(spec, str) and (recon_preset_dir() / f"{spec}.yaml").is_file():
        return _from_preset(spec, spec, map_location, allow_untrained)
    raise ValueError(
        f"reconstructor {text!r} is not a preset (.yaml), a checkpoint (.pt), one of "
        f"{sorted(BUILTIN)} or a 'module:Class' path"
    )


def describe_reconstructor(reconstructor: ReconSpec) -> str:
    """A machine-independent name of a reconstructor spec, for reports and provenance.

    A preset's or checkpoint's file name, a registry name or class path as given, a parsed
    preset's model, or an instance's class name.
    """
    if isinstance(reconstructor, (str, Path)):
        text = str(reconstructor)
        return Path(text).name if text.endswith(PRESET_SUFFIXES + CHECKPOINT_SUFFIXES) else text
    if isinstance(reconstructor, ReconPreset):
        return reconstructor.source.name if reconstructor.source else reconstructor.model
    if isinstance(reconstructor, Mapping):
        return str(reconstructor.get("model"))
    return type(reconstructor).__name__


def _path(spec: str | Path, base_dir: str | Path | None) -> Path:
    path = Path(spec).expanduser()
    if base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    return path


def _from_preset(
    preset: str | Path | Mapping[str, Any] | ReconPreset,
    spec: object,
    map_location: str | torch.device | None,
    allow_untrained: bool,
) -> Reconstructor:
    parsed = preset if isinstance(preset, ReconPreset) else load_preset(preset)
    if parsed.checkpoint is None and not allow_untrained:
        cls = resolve_class(parsed.model)
        if cls.needs_weights:
            where = parsed.source or spec
            raise ValueError(
                f"reconstructor preset {where} has no checkpoint: an untrained {parsed.model} "
                "would make rewards meaningless (train it with `activemri recon train` and set "
                "reconstructor= to the checkpoint)"
            )
    return reconstructor_from_preset(parsed, map_location=map_location)
