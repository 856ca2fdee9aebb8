"""Training-free compressed sensing: total-variation regularized reconstruction.

Solves, per sample, ``min_x 0.5 ||A x - y||^2 + lam ||grad x||_{2,1}`` over the complex image
``x`` of the full field of view, with ``A = M F`` (single-coil) or ``A = M F S`` (SENSE,
multi-coil; ``S`` the coil sensitivities, given or estimated from the ACS block), and
isotropic total variation. The solver is the primal-dual hybrid gradient method of Chambolle
and Pock (2011) with both terms dualized, so each iteration costs one forward and one adjoint
of ``A`` plus a gradient and a divergence, fully batched on any device. ``lam`` is relative:
the data are scaled by each sample's zero-filled maximum before solving.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from activemri.kspace import apply_mask, center_crop, estimate_sens_maps, fft2c, ifft2c
from activemri.recon_models.base import ReconOutput, Reconstructor, num_low_frequencies_tensor

__all__ = ["TVReconstructor", "tv_reconstruct"]


def _grad(x: torch.Tensor) -> torch.Tensor:
    """Forward differences over the last two dims (zero at the far edge): ``(2, ...)``."""
    gy = torch.zeros_like(x)
    gx = torch.zeros_like(x)
    gy[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    gx[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    return torch.stack([gy, gx])


def _div(q: torch.Tensor) -> torch.Tensor:
    """Negative adjoint of :func:`_grad`."""
    qy, qx = q[0], q[1]
    dy = torch.zeros_like(qy)
    dx = torch.zeros_like(qx)
    dy[..., 0, :] = qy[..., 0, :]
    dy[..., 1:-1, :] = qy[..., 1:-1, :] - qy[..., :-2, :]
    dy[..., -1, :] = -qy[..., -2, :]
    dx[..., :, 0] = qx[..., :, 0]
    dx[..., :, 1:-1] = qx[..., :, 1:-1] - qx[..., :, :-2]
    dx[..., :, -1] = -qx[..., :, -2]
    return dy + dx


def tv_reconstruct(
    kspace: torch.Tensor,
    mask: torch.Tensor,
    lam: float,
    iterations: int,
    sens_maps: torch.Tensor | None = None,
) -> torch.Tensor:
    """TV-regularized reconstruction by primal-dual iterations (see the module docstring).

    Args:
        kspace: Complex ``(B, C, H, W)``; only the masked columns are used.
        mask: Bool ``(B, W)``.
        lam: Relative TV weight.
        iterations: Number of primal-dual iterations.
        sens_maps: Complex ``(B, C, H, W)`` with ``sum_c |S_c|^2 <= 1``; required for C > 1.

    Returns:
        Complex image ``(B, H, W)`` of the full field of view.
    """
    if kspace.shape[1] > 1 and sens_maps is None:
        raise ValueError("multi-coil TV needs sens_maps")

    def forward(x: torch.Tensor) -> torch.Tensor:
        coils = x.unsqueeze(1) if sens_maps is None else sens_maps * x.unsqueeze(1)
        return apply_mask(fft2c(coils), mask)

    def adjoint(k: torch.Tensor) -> torch.Tensor:
        coils = ifft2c(apply_mask(k, mask))
        return coils[:, 0] if sens_maps is None else (sens_maps.conj() * coils).sum(dim=1)

    y = apply_mask(kspace, mask)
    x = adjoint(y)
    scale = x.abs().flatten(1).amax(dim=1).clamp_min(torch.finfo(x.real.dtype).tiny)
    scale = scale[:, None, None]
    y = y / scale[:, None]
    x = x / scale
    # ||A|| <= 1 and ||grad||^2 <= 8, so tau * sigma * ||K||^2 < 1 with tau = sigma = 0.33.
    tau = sigma = 0.99 / math.sqrt(9.0)
    p = torch.zeros_like(y)
    q = torch.zeros((2, *x.shape), dtype=x.dtype, device=x.device)
    x_bar = x
    for _ in range(iterations):
        p = (p + sigma * (forward(x_bar) - y)) / (1.0 + sigma)
        q = q + sigma * _grad(x_bar)
        magnitude = torch.sqrt((q.abs() ** 2).sum(dim=0))
        q = q / torch.clamp(magnitude / lam, min=1.0)
        x_new = x - tau * (adjoint(p) - _div(q))
        x_bar = 2 * x_new - x
        x = x_new
    return x * scale


class TVReconstructor(Reconstructor):
    """Total-variation compressed sensing (single-coil) and SENSE + TV (multi-coil).

    Multi-coil data use ``sens_maps`` from the keyword inputs if given, else maps estimated
    from the ACS block (``num_low_frequencies`` is then required).

    Args:
        recon_size: ``(h, w)`` of the output.
        lam: Relative TV weight (data are scaled to a zero-filled maximum of 1).
        iterations: Primal-dual iterations.
    """

    def __init__(self, recon_size: Sequence[int], lam: float = 0.01, iterations: int = 60) -> None:
        if lam <= 0 or iterations < 1:
            raise ValueError(f"need lam > 0 and iterations >= 1, got {lam}, {iterations}")
        super().__init__(recon_size, {"lam": lam, "iterations": iterations})
        self.lam = lam
        self.iterations = iterations

    def forward(self, kspace: torch.Tensor, mask: torch.Tensor, **aux: Any) -> ReconOutput:
        """See :meth:`Reconstructor.forward`."""
        self.check_inputs(kspace, mask)
        sens = aux.get("sens_maps")
        if kspace.shape[1] > 1 and sens is None:
            num_low = num_low_frequencies_tensor(
                aux.get("num_low_frequencies"), kspace.shape[0], kspace.device
            )
            # Only acquired columns: an ACS block not fully in the mask must not see unseen data.
            sens = estimate_sens_maps(apply_mask(kspace, mask), num_low, points=mask.ndim == 3)
        with torch.no_grad():
            image = tv_reconstruct(kspace, mask, self.lam, self.iterations, sens)
        return ReconOutput(center_crop(image.abs(), self.recon_size).float())
