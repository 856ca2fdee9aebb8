"""End-to-end variational network (Sriram et al. 2020) with fastMRI's parameter layout.

:class:`VarNet` has fastMRI's ``VarNet`` module names (``sens_net.norm_unet.unet.*``,
``cascades.{i}.dc_weight``, ``cascades.{i}.model.unet.*``) and arithmetic, on complex tensors:
each cascade computes ``k - dc_weight * M (k - k0) - F S U(R F^-1 k)`` with a normalized
U-Net ``U``, and coil sensitivities come from the ACS block by a small normalized U-Net,
normalized by their root-sum-of-squares. The ACS size is always passed explicitly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from activemri.kspace import (
    acs_mask,
    apply_mask,
    broadcast_mask,
    center_crop,
    fft2c,
    ifft2c,
    rss,
    zero_filled,
)
from activemri.recon_models.base import ReconOutput, Reconstructor, num_low_frequencies_tensor
from activemri.recon_models.unet import LOGVAR_RANGE, Unet, normalize_instance

__all__ = ["NormUnet", "SensitivityModel", "VarNet", "VarNetBlock", "VarNetReconstructor"]


class NormUnet(nn.Module):
    """U-Net on complex images: real/imag channels, group-normalized, padded to 16.

    Args:
        chans: U-Net channels of the first block.
        num_pools: U-Net levels.
        in_chans: Real channels in (2 per complex channel).
        out_chans: Real channels out.
        drop_prob: Dropout probability.
    """

    def __init__(
        self, chans: int, num_pools: int, in_chans: int = 2, out_chans: int = 2,
        drop_prob: float = 0.0,
    ) -> None:  # fmt: skip
        super().__init__()
        self.unet = Unet(in_chans, out_chans, chans=chans, num_pool_layers=num_pools,
                         drop_prob=drop_prob)  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map complex ``(B, c, H, W)`` to complex ``(B, c, H, W)``."""
        b, c, h, w = x.shape
        real = torch.cat([x.real, x.imag], dim=1).float()
        # Normalize the real and the imaginary channel groups separately (fastMRI's group norm).
        grouped = real.reshape(b, 2, c * h * w)
        mean = grouped.mean(dim=2).repeat_interleave(c, dim=1)[:, :, None, None]
        std = grouped.std(dim=2).repeat_interleave(c, dim=1)[:, :, None, None]
        real = (real - mean) / std
        h_mult, w_mult = ((h - 1) | 15) + 1, ((w - 1) | 15) + 1
        h_pad = ((h_mult - h) // 2, (h_mult - h + 1) // 2)
        w_pad = ((w_mult - w) // 2, (w_mult - w + 1) // 2)
        real = F.pad(real, [w_pad[0], w_pad[1], h_pad[0], h_pad[1]])
        real = self.unet(real).float()
        real = real[..., h_pad[0] : h_mult - h_pad[1], w_pad[0] : w_mult - w_pad[1]]
        real = real * std + mean
        return torch.complex(real[:, :c], real[:, c:]).to(x.dtype)


class SensitivityModel(nn.Module):
    """Coil sensitivities from the ACS block: per-coil :class:`NormUnet`, RSS-normalized.

    Args:
        chans: U-Net channels.
        num_pools: U-Net levels.
        drop_prob: Dropout probability.
    """

    def __init__(self, chans: int, num_pools: int, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.norm_unet = NormUnet(chans, num_pools, drop_prob=drop_prob)

    def forward(
        self, masked_kspace: torch.Tensor, num_low: torch.Tensor, points: bool = False
    ) -> torch.Tensor:
        """Estimate ``(B, C, H, W)`` complex sensitivities with ``sum_c |S_c|^2 = 1``.

        ``points``: the ACS block is the central ``n x n`` ky-kz block (point masks).
        """
        b, c, h, w = masked_kspace.shape
        acs = apply_mask(masked_kspace, acs_mask(num_low, w, h if points else None))
        coils = ifft2c(acs).reshape(b * c, 1, h, w)
        maps = self.norm_unet(coils).reshape(b, c, h, w)
        normalized: torch.Tensor = maps / rss(maps, dim=1).unsqueeze(1)
        return normalized


class VarNetBlock(nn.Module):
    """One cascade: soft data consistency plus a learned refinement in image space."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.dc_weight = nn.Parameter(torch.ones(1))

    def forward(
        self,
        current: torch.Tensor,
        reference: torch.Tensor,
        mask: torch.Tensor,
        sens_maps: torch.Tensor,
    ) -> torch.Tensor:
        """``k - dc_weight * M (k - k0) - F S model(R F^-1 k)``."""
        soft_dc = apply_mask(current - reference, mask) * self.dc_weight
        reduced = (ifft2c(current) * sens_maps.conj()).sum(dim=1, keepdim=True)
        model_term = fft2c(self.model(reduced) * sens_maps)
        out: torch.Tensor = current - soft_dc - model_term
        return out


class VarNet(nn.Module):
    """The cascade network on masked multi-coil k-space; returns predicted k-space.

    Args:
        num_cascades: Number of cascades.
        sens_chans: Channels of the sensitivity U-Net.
        sens_pools: Levels of the sensitivity U-Net.
        chans: Channels of each cascade's U-Net.
        pools: Levels of each cascade's U-Net.
    """

    def __init__(
        self, num_cascades: int = 12, sens_chans: int = 8, sens_pools: int = 4, chans: int = 18,
        pools: int = 4,
    ) -> None:  # fmt: skip
        super().__init__()
        self.sens_net = SensitivityModel(sens_chans, sens_pools)
        self.cascades = nn.ModuleList(
            [VarNetBlock(NormUnet(chans, pools)) for _ in range(num_cascades)]
        )

    def forward(
        self, masked_kspace: torch.Tensor, mask: torch.Tensor, num_low: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the predicted k-space ``(B, C, H, W)`` and the sensitivity maps."""
        sens_maps = self.sens_net(masked_kspace, num_low, points=mask.ndim == 3)
        kspace = masked_kspace.clone()
        for cascade in self.cascades:
            kspace = cascade(kspace, masked_kspace, mask, sens_maps)
        return kspace, sens_maps


class VarNetReconstructor(Reconstructor):
    """E2E-VarNet as a reconstructor, single- or multi-coil, with an optional uncertainty head.

    Requires ``num_low_frequencies`` (int or ``(B,)``) in ``forward``'s keyword inputs.
    The image is the RSS of the predicted k-space's coil images, center-cropped. With
    ``uncertainty=True`` a small U-Net maps the normalized final image and zero-filled image
    to a log-variance (clamped to :data:`LOGVAR_RANGE`); uncertainty is its standard deviation
    in image units.

    Args:
        recon_size: ``(h, w)`` of the output.
        num_cascades: Cascades.
        sens_chans: Channels of the sensitivity U-Net.
        sens_pools: Levels of the sensitivity U-Net.
        chans: Channels of each cascade U-Net.
        pools: Levels of each cascade U-Net.
        uncertainty: Add the uncertainty head.
        uncertainty_chans: Channels of the uncertainty U-Net.
        final_dc: Replace the predicted values of the acquired columns by the measured ones
            at the end (hard data consistency). Off by default, as fastMRI's VarNet; needed
            for self-supervised training, whose loss never constrains the input columns.
        sigma_scale: Calibration factor of the uncertainty (set by training).
    """

    needs_weights = True
    predicts_kspace = True

    def __init__(
        self,
        recon_size: Sequence[int],
        num_cascades: int = 12,
        sens_chans: int = 8,
        sens_pools: int = 4,
        chans: int = 18,
        pools: int = 4,
        uncertainty: bool = False,
        uncertainty_chans: int = 8,
        final_dc: bool = False,
        sigma_scale: float = 1.0,
    ) -> None:
        config: dict[str, Any] = {
            "num_cascades": num_cascades, "sens_chans": sens_chans, "sens_pools": sens_pools,
            "chans": chans, "pools": pools, "uncertainty": uncertainty,
            "uncertainty_chans": uncertainty_chans, "final_dc": final_dc,
        }  # fmt: skip
        if sigma_scale != 1.0:  # only stored when set, so earlier checkpoints keep their config
            config["sigma_scale"] = float(sigma_scale)
        super().__init__(recon_size, config)
        self.final_dc = final_dc
        self.varnet = VarNet(num_cascades, sens_chans, sens_pools, chans, pools)
        self.uncertainty_head = (
            Unet(2, 1, chans=uncertainty_chans, num_pool_layers=2) if uncertainty else None
        )

    @property
    def has_uncertainty(self) -> bool:
        """Whether the uncertainty head is present."""
        return self.uncertainty_head is not None

    def forward_kspace(self, kspace: torch.Tensor, mask: torch.Tensor, **aux: Any) -> torch.Tensor:
        """Predicted full k-space ``(B, C, H, W)`` from the acquired columns."""
        self.check_inputs(kspace, mask)
        num_low = num_low_frequencies_tensor(
            aux.get("num_low_frequencies"), kspace.shape[0], kspace.device
        )
        measured = apply_mask(kspace, mask)
        prediction: torch.Tensor = self.varnet(measured, mask, num_low)[0]
        if self.final_dc:
            prediction = torch.where(broadcast_mask(measured, mask), measured, prediction)
        return prediction

    def forward(self, kspace: torch.Tensor, mask: torch.Tensor, **aux: Any) -> ReconOutput:
        """See :meth:`Reconstructor.forward`."""
        prediction = self.forward_kspace(kspace, mask, **aux)
        image = center_crop(rss(ifft2c(prediction), dim=1), self.recon_size).float()
        sigma = None
        if self.uncertainty_head is not None:
            zf = zero_filled(kspace, mask, self.recon_size).float()
            stacked, _, std = normalize_instance(torch.stack([image, zf], dim=1))
            logvar = self.uncertainty_head(stacked.detach().clamp(-6.0, 6.0)).float()
            sigma = (torch.exp(0.5 * logvar.clamp(*LOGVAR_RANGE)) * std[:, :1])[:, 0]
            sigma = sigma * self.sigma_scale
        return ReconOutput(image, sigma)

    def load_fastmri_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load a fastMRI ``VarNet`` state dict into :attr:`varnet`."""
        from activemri.recon_models.checkpoint import load_state_strict

        load_state_strict(self.varnet, state, "fastMRI VarNet state dict")
