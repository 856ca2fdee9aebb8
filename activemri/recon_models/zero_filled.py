"""The parameter-free zero-filled reconstruction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from activemri.kspace import zero_filled
from activemri.recon_models.base import ReconOutput, Reconstructor

__all__ = ["ZeroFilled"]


class ZeroFilled(Reconstructor):
    """``ifft2c`` of the masked k-space, RSS (or SENSE, given ``sens_maps``), center crop.

    Args:
        recon_size: ``(h, w)`` of the output.
    """

    def __init__(self, recon_size: Sequence[int]) -> None:
        super().__init__(recon_size)

    def forward(self, kspace: torch.Tensor, mask: torch.Tensor, **aux: Any) -> ReconOutput:
        """See :meth:`Reconstructor.forward`."""
        self.check_inputs(kspace, mask)
        image = zero_filled(kspace, mask, self.recon_size, sens_maps=aux.get("sens_maps"))
        return ReconOutput(image.float())
