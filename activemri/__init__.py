"""activemri: a simulator and toolkit for active MRI acquisition.

The package is organised in layers, each importing only those below it (DESIGN.md; held by
``tests/test_layers.py``): :mod:`activemri.kspace`, :mod:`activemri.metrics` and
:mod:`activemri.masks` (operators, fastMRI metrics, sampling masks) <- :mod:`activemri.data`
(fastMRI h5 slices, the built-in data generator) <- :mod:`activemri.recon_models`
(reconstructors, checkpoints, training) <- :mod:`activemri.envs` (the batched core and the
Gymnasium/SB3 environments) <- :mod:`activemri.agents` (policies, rollouts, RL agents, learned
masks) <- :mod:`activemri.evaluation` (the harness) <- :mod:`activemri.cli`.

Importing :mod:`activemri` registers the ``ActiveMRI/*`` ids with Gymnasium, by name only:
nothing of the env is imported until an env is made, and Gymnasium itself is not imported
here — the ids are registered as soon as Gymnasium is (at once if it already is). So
``import activemri.kspace`` loads torch, not Gymnasium, Stable-Baselines3 or any model.
"""

from __future__ import annotations

from activemri._version import __version__
from activemri.envs.registration import register_when_gymnasium_loads

register_when_gymnasium_loads()

__all__ = ["__version__"]
