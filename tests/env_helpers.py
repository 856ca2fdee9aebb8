"""Environment test helpers: a custom reconstructor (plugged in by class path) and env builders."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from activemri.envs import ActiveMRIEnv, ActiveMRIVectorEnv
from activemri.kspace import zero_filled
from activemri.recon_models.base import ReconOutput, Reconstructor


class BlurredZeroFilled(Reconstructor):
    """A user-style reconstructor: zero-filled, 3x3 blurred, with a learned-looking uncertainty.

    Deliberately reads its k-space input everywhere (not only at the mask), so leak tests
    prove the core hands it nothing but acquired data.
    """

    supports_multicoil = True

    def __init__(self, recon_size: Sequence[int], weight: float = 0.5) -> None:
        super().__init__(recon_size, {"weight": weight})
        self.weight = torch.nn.Parameter(torch.tensor(float(weight)))

    @property
    def has_uncertainty(self) -> bool:
        return True

    def forward(self, kspace: torch.Tensor, mask: torch.Tensor, **aux: Any) -> ReconOutput:
        self.check_inputs(kspace, mask)
        ones = torch.ones_like(mask)
        image = zero_filled(kspace, ones, self.recon_size)  # uses every column it is given
        blurred = F.avg_pool2d(image[:, None], 3, stride=1, padding=1)[:, 0]
        out = self.weight * image + (1 - self.weight) * blurred
        return ReconOutput(
            out, (image - blurred).abs() + 1e-3 * mask.flatten(1).float().mean(dim=1)[:, None, None]
        )


CUSTOM = "env_helpers:BlurredZeroFilled"


class SingleCoilOnly(BlurredZeroFilled):
    """A user model that declares it cannot take multi-coil k-space."""

    supports_multicoil = False


class NaNRecon(Reconstructor):
    """A broken user model: NaN images."""

    def forward(self, kspace: torch.Tensor, mask: torch.Tensor, **aux: Any) -> ReconOutput:
        b = kspace.shape[0]
        return ReconOutput(torch.full((b, *self.recon_size), float("nan"), device=kspace.device))


SINGLE_COIL_ONLY = "env_helpers:SingleCoilOnly"
NAN_RECON = "env_helpers:NaNRecon"


def tiny_config(data, **overrides: Any) -> dict[str, Any]:
    """Env overrides for tiny data: zero-filled, 4 central lines, 6 steps, CPU."""
    config: dict[str, Any] = {
        "data_root": str(data),
        "split": None,
        "reconstructor": "zero_filled",
        "initial_lines": 4,
        "budget": 6,
        "device": "cpu",
    }
    config.update(overrides)
    return config


def tiny_env(data, **overrides: Any) -> ActiveMRIEnv:
    return ActiveMRIEnv(**tiny_config(data, **overrides))


def tiny_vec(data, num_envs: int, **overrides: Any) -> ActiveMRIVectorEnv:
    return ActiveMRIVectorEnv(num_envs, **tiny_config(data, **overrides))
