"""The parameter-free zero-filled reconstruction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from activemri.kspace import rss, zero_filled
from activemri.recon_models.base import ReconOutput, Reconstructor

__all__ = ["ZeroFilled"]


class ZeroFilled(Reconstructor):
    """``ifft2c`` of the masked k-space, RSS (or SENSE, given ``sens_maps``), center crop.

    Linear in the acquired columns (``linear_in_columns``): without ``sens_maps`` the output
    is the RSS of the zero-filled coil images (:meth:`from_coil_images`).

    Args:
        recon_size: ``(h, w)`` of the output.
    """

    linear_in_columns = True

    def __init__(self, recon_size: Sequence[int]) -> None:
        super().__init__(recon_size)

    def forward(self, kspace: torch.Tensor, mask: torch.Tensor, **aux: Any) -> ReconOutput:
        """See :meth:`Reconstructor.forward`."""
        self.check_inputs(kspace, mask)
        image = zero_filled(kspace, mask, self.recon_size, sens_maps=aux.get("sens_maps"))
        return ReconOutput(image.float())

    def from_coil_images(self, coil_images: torch.Tensor) -> torch.Tensor:
        """RSS of the zero-filled coil images (see :attr:`Reconstructor.linear_in_columns`)."""
        return rss(coil_images, dim=1).float()
