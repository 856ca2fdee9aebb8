"""activemri: a simulator and toolkit for active MRI acquisition.

The package is organised by role (see DESIGN.md): :mod:`activemri.kspace` (k-space operators),
:mod:`activemri.metrics` (fastMRI metrics), :mod:`activemri.masks` (sampling masks),
:mod:`activemri.data` (fastMRI h5 slices and the built-in data generator),
:mod:`activemri.recon_models` (reconstructors, checkpoints, training, evaluation),
:mod:`activemri.envs` (the batched core and the Gymnasium/SB3 environments; importing
:mod:`activemri` registers the ``ActiveMRI/*`` ids), and the command-line interface in
:mod:`activemri.cli`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("activemri")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

from activemri.envs.registration import register_envs

register_envs()

__all__ = ["__version__"]
