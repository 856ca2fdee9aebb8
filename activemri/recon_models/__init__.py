"""Reconstructors: the contract, built-in models, checkpoints, presets, training, evaluation.

- :class:`Reconstructor` / :class:`ReconOutput`: the contract every model follows.
- Built-ins (registry names): ``zero_filled`` (:class:`ZeroFilled`), ``tv``
  (:class:`TVReconstructor`), ``unet`` (:class:`UnetReconstructor`), ``varnet``
  (:class:`VarNetReconstructor`).
- :func:`resolve` turns any spec (instance, preset, checkpoint, registry name or
  ``module:Class``) into a model, with the trust and capability rules in one place;
  :func:`reconstructor_from_preset` builds the model of a YAML preset; :func:`load_default`
  returns the shipped default U-Net.
"""

from __future__ import annotations

from pathlib import Path

from activemri.recon_models.base import ReconOutput, Reconstructor
from activemri.recon_models.checkpoint import CheckpointError, load_reconstructor
from activemri.recon_models.cs import TVReconstructor
from activemri.recon_models.registry import (
    BUILTIN,
    build_reconstructor,
    load_preset,
    reconstructor_from_preset,
)
from activemri.recon_models.resolve import describe_reconstructor, resolve
from activemri.recon_models.unet import Unet, UnetReconstructor
from activemri.recon_models.varnet import VarNet, VarNetReconstructor
from activemri.recon_models.zero_filled import ZeroFilled

__all__ = [
    "BUILTIN",
    "DEFAULT_CHECKPOINT",
    "CheckpointError",
    "ReconOutput",
    "Reconstructor",
    "TVReconstructor",
    "Unet",
    "UnetReconstructor",
    "VarNet",
    "VarNetReconstructor",
    "ZeroFilled",
    "build_reconstructor",
    "describe_reconstructor",
    "load_default",
    "load_preset",
    "load_reconstructor",
    "reconstructor_from_preset",
    "resolve",
]

DEFAULT_CHECKPOINT = Path(__file__).parent / "weights" / "unet_default.pt"


def load_default(map_location: str = "cpu") -> Reconstructor:
    """The shipped default reconstructor: a small U-Net with uncertainty for built-in data.

    Trained by ``activemri recon train --preset recon_models/unet_default.yaml`` on the
    built-in ``default`` data (see ``recon_models/README.md``).
    """
    if not DEFAULT_CHECKPOINT.is_file():
        raise FileNotFoundError(f"the default checkpoint {DEFAULT_CHECKPOINT} is missing")
    return UnetReconstructor.load(DEFAULT_CHECKPOINT, map_location=map_location)
