"""U-Net on the zero-filled image (fastMRI's architecture), with an optional uncertainty head.

:class:`Unet` has fastMRI's ``Unet`` parameter names and shapes, so fastMRI's released
U-Net state dicts load into it strictly and give the same output: blocks of
Conv3x3 (no bias) - InstanceNorm - LeakyReLU(0.2) - Dropout2d, twice; average-pool
downsampling; 2x2 transposed-conv upsampling; reflect padding of odd sizes; a final 1x1 conv.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from activemri.kspace import zero_filled
from activemri.recon_models.base import ReconOutput, Reconstructor

__all__ = ["LOGVAR_RANGE", "Unet", "UnetReconstructor", "normalize_instance"]

# Log-variance clamp of the uncertainty head, in normalized image units (Zhang et al. 2019).
LOGVAR_RANGE = (-9.2, 1.609)
_EPS = 1e-11


class _ConvBlock(nn.Module):
    def __init__(self, in_chans: int, out_chans: int, drop_prob: float) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_chans, out_chans, kernel_size=3, padding=1, bias=False),
            nn.InstanceNorm2d(out_chans),
            nn.LeakyReLU(negative_slope=0.2, inplace=True),
            nn.Dropout2d(drop_prob),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            nn.InstanceNorm2d(out_chans),
            nn.LeakyReLU(negative_slope=0.2, inplace=True),
            nn.Dropout2d(drop_prob),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.layers(x)
        return out


class _TransposeConvBlock(nn.Module):
    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.ConvTranspose2d(in_chans, out_chans, kernel_size=2, stride=2, bias=False),
            nn.InstanceNorm2d(out_chans),
            nn.LeakyReLU(negative_slope=0.2, inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.layers(x)
        return out


class Unet(nn.Module):
    """fastMRI-compatible U-Net (Ronneberger et al. 2015, as in fastMRI).

    Args:
        in_chans: Input channels.
        out_chans: Output channels.
        chans: Channels of the first block (doubled at each level).
        num_pool_layers: Down/up-sampling levels.
        drop_prob: Dropout probability.
    """

    def __init__(
        self, in_chans: int, out_chans: int, chans: int = 32, num_pool_layers: int = 4,
        drop_prob: float = 0.0,
    ) -> None:  # fmt: skip
        super().__init__()
        self.in_chans = in_chans
        self.out_chans = out_chans
        self.chans = chans
        self.num_pool_layers = num_pool_layers
        self.down_sample_layers = nn.ModuleList([_ConvBlock(in_chans, chans, drop_prob)])
        ch = chans
        for _ in range(num_pool_layers - 1):
            self.down_sample_layers.append(_ConvBlock(ch, ch * 2, drop_prob))
            ch *= 2
        self.conv = _ConvBlock(ch, ch * 2, drop_prob)
        self.up_transpose_conv = nn.ModuleList()
        self.up_conv = nn.ModuleList()
        for _ in range(num_pool_layers - 1):
            self.up_transpose_conv.append(_TransposeConvBlock(ch * 2, ch))
            self.up_conv.append(_ConvBlock(ch * 2, ch, drop_prob))
            ch //= 2
        self.up_transpose_conv.append(_TransposeConvBlock(ch * 2, ch))
        self.up_conv.append(
            nn.Sequential(_ConvBlock(ch * 2, ch, drop_prob), nn.Conv2d(ch, out_chans, 1))
        )

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the output and the ``chans``-channel features before the final 1x1 conv."""
        stack = []
        out = x
        for layer in self.down_sample_layers:
            out = layer(out)
            stack.append(out)
            out = F.avg_pool2d(out, kernel_size=2, stride=2)
        out = self.conv(out)
        last = len(self.up_conv) - 1
        features = out
        for i, (up, conv) in enumerate(zip(self.up_transpose_conv, self.up_conv, strict=True)):
            skip = stack.pop()
            out = up(out)
            pad_w = int(out.shape[-1] != skip.shape[-1])
            pad_h = int(out.shape[-2] != skip.shape[-2])
            if pad_w or pad_h:
                out = F.pad(out, [0, pad_w, 0, pad_h], "reflect")
            out = torch.cat([out, skip], dim=1)
            if i == last:
                assert isinstance(conv, nn.Sequential)
                features = conv[0](out)
                out = conv[1](features)
            else:
                out = conv(out)
        return out, features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_chans, H, W)`` to ``(B, out_chans, H, W)``."""
        return self.forward_with_features(x)[0]


def normalize_instance(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample ``(x - mean) / (std + eps)`` over the last two dims, as fastMRI's U-Net."""
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True)
    return (x - mean) / (std + _EPS), mean, std + _EPS


class UnetReconstructor(Reconstructor):
    """U-Net refinement of the zero-filled magnitude image.

    The zero-filled image (RSS over coils, center-cropped to ``recon_size``) is normalized per
    sample (mean/std, clamped to ±6 as fastMRI), passed through :class:`Unet`, and
    un-normalized. With ``uncertainty=True`` a 1x1 conv head on the U-Net's last features
    predicts a per-pixel log-variance (clamped to :data:`LOGVAR_RANGE` in normalized units);
    the returned uncertainty is the standard deviation in image units,
    ``exp(logvar / 2) * std``. The head is separate from the image path, so a fastMRI U-Net
    state dict loads into :attr:`unet` unchanged.

    Args:
        recon_size: ``(h, w)`` of the output.
        chans: U-Net channels of the first block.
        num_pool_layers: U-Net levels.
        drop_prob: Dropout probability.
        uncertainty: Add the log-variance head.
        residual: Predict a correction added to the (normalized) zero-filled input instead of
            the image itself, so an untrained or out-of-domain network stays near zero-filled.
        sigma_scale: Calibration factor of the uncertainty (set by training, see
            :func:`activemri.recon_models.calibration.fit_sigma_scale`).
        head_chans: ``0``: the log-variance head is a 1x1 conv on the U-Net's last features
            (its loss then trains the image path too). ``> 0``: a small CNN of this width
            (two 3x3 convs and a 1x1) on the *detached* features, input and output, so the
            uncertainty loss can never degrade the image.
    """

    needs_weights = True

    def __init__(
        self,
        recon_size: Sequence[int],
        chans: int = 32,
        num_pool_layers: int = 4,
        drop_prob: float = 0.0,
        uncertainty: bool = False,
        residual: bool = False,
        sigma_scale: float = 1.0,
        head_chans: int = 0,
    ) -> None:
        config = {"chans": chans, "num_pool_layers": num_pool_layers, "drop_prob": drop_prob,
                  "uncertainty": uncertainty}  # fmt: skip
        if residual:  # only stored when set, so earlier checkpoints keep their exact config
            config["residual"] = True
        if sigma_scale != 1.0:
            config["sigma_scale"] = float(sigma_scale)
        if head_chans:
            config["head_chans"] = int(head_chans)
        super().__init__(recon_size, config)
        self.residual = residual
        self.unet = Unet(1, 1, chans=chans, num_pool_layers=num_pool_layers, drop_prob=drop_prob)
        self.detached_head = head_chans > 0
        self.logvar_head: nn.Module | None = None
        if uncertainty and head_chans > 0:
            self.logvar_head = nn.Sequential(
                nn.Conv2d(chans + 2, head_chans, kernel_size=3, padding=1),
                nn.LeakyReLU(0.2),
                nn.Conv2d(head_chans, head_chans, kernel_size=3, padding=1),
                nn.LeakyReLU(0.2),
                nn.Conv2d(head_chans, 1, kernel_size=1),
            )
        elif uncertainty:
            self.logvar_head = nn.Conv2d(chans, 1, kernel_size=1)

    @property
    def has_uncertainty(self) -> bool:
        """Whether the log-variance head is present."""
        return self.logvar_head is not None

    def forward(self, kspace: torch.Tensor, mask: torch.Tensor, **aux: Any) -> ReconOutput:
        """See :meth:`Reconstructor.forward`."""
        self.check_inputs(kspace, mask)
        image = zero_filled(kspace, mask, self.recon_size, sens_maps=aux.get("sens_maps"))
        x, mean, std = normalize_instance(image.float().unsqueeze(1))
        out, features = self.unet.forward_with_features(x.clamp(-6.0, 6.0))
        if self.residual:
            out = out.float() + x
        recon = (out.float() * std + mean)[:, 0]
        sigma = None
        if self.logvar_head is not None:
            if self.detached_head:
                inputs = torch.cat([features, x.clamp(-6.0, 6.0), out.float()], dim=1).detach()
                logvar = self.logvar_head(inputs).float().clamp(*LOGVAR_RANGE)
            else:
                logvar = self.logvar_head(features).float().clamp(*LOGVAR_RANGE)
            sigma = (torch.exp(0.5 * logvar) * std)[:, 0] * self.sigma_scale
        return ReconOutput(recon, sigma)

    def load_fastmri_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load a fastMRI ``Unet`` state dict (``down_sample_layers.0.layers.0.weight``, ...)."""
        from activemri.recon_models.checkpoint import load_state_strict

        load_state_strict(self.unet, state, "fastMRI U-Net state dict")
