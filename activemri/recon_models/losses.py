"""Training losses: image losses, heteroscedastic Gaussian NLL, and SSDU's k-space loss."""

from __future__ import annotations

import torch

from activemri.kspace import apply_mask
from activemri.metrics import ssim

__all__ = ["gaussian_nll", "image_loss", "ssdu_kspace_loss", "supervised_loss"]


def image_loss(
    kind: str, pred: torch.Tensor, target: torch.Tensor, data_range: torch.Tensor
) -> torch.Tensor:
    """Scale-free image loss averaged over the batch.

    Args:
        kind: ``"l1"`` (mean absolute error over ``data_range``) or ``"ssim"`` (``1 - SSIM``).
        pred: ``(B, h, w)``.
        target: ``(B, h, w)``.
        data_range: ``(B,)``.

    Returns:
        Scalar loss.
    """
    if kind == "l1":
        return ((pred - target).abs().mean(dim=(-2, -1)) / data_range).mean()
    if kind == "ssim":
        return 1.0 - ssim(pred, target, data_range).mean()
    raise ValueError(f"unknown image loss {kind!r}; use 'l1' or 'ssim'")


def gaussian_nll(
    pred: torch.Tensor, sigma: torch.Tensor, target: torch.Tensor, data_range: torch.Tensor
) -> torch.Tensor:
    """Heteroscedastic Gaussian negative log-likelihood, ``0.5 (e^2 / s^2 + log s^2)``.

    Computed in units of ``data_range`` (so it is comparable across volumes), up to a
    constant. The mean prediction is detached: the NLL trains the uncertainty head only, so it
    cannot trade image accuracy for a smaller variance.

    Args:
        pred: Predicted images ``(B, h, w)``.
        sigma: Predicted standard deviations ``(B, h, w)``, positive.
        target: ``(B, h, w)``.
        data_range: ``(B,)``.

    Returns:
        Scalar mean NLL per pixel.
    """
    scale = data_range[:, None, None]
    err = (pred.detach() - target) / scale
    s = sigma / scale
    return 0.5 * ((err / s) ** 2 + 2.0 * torch.log(s)).mean()


def supervised_loss(
    image: torch.Tensor,
    uncertainty: torch.Tensor | None,
    target: torch.Tensor,
    data_range: torch.Tensor,
    kind: str = "l1",
    nll_weight: float = 0.1,
) -> torch.Tensor:
    """The supervised training loss: the image loss plus the uncertainty head's NLL.

    :func:`image_loss` of ``image``, plus ``nll_weight`` times :func:`gaussian_nll` when the
    model has an uncertainty head (``uncertainty`` given) and ``nll_weight > 0``. What
    ``activemri recon train`` (supervised mode), LOUPE and joint training minimize.

    Args:
        image: Predicted images ``(B, h, w)``.
        uncertainty: Predicted standard deviations ``(B, h, w)``, or ``None``.
        target: ``(B, h, w)``.
        data_range: ``(B,)``.
        kind: The image loss, ``"l1"`` or ``"ssim"``.
        nll_weight: Weight of the NLL term.

    Returns:
        Scalar loss.
    """
    loss = image_loss(kind, image, target, data_range)
    if uncertainty is not None and nll_weight > 0:
        loss = loss + nll_weight * gaussian_nll(image, uncertainty, target, data_range)
    return loss


def ssdu_kspace_loss(
    predicted: torch.Tensor, measured: torch.Tensor, loss_mask: torch.Tensor
) -> torch.Tensor:
    """SSDU loss on the held-out lines Λ: normalized L2 plus normalized L1, halved each.

    ``0.5 ||y_Λ - ŷ_Λ||_2 / ||y_Λ||_2 + 0.5 ||y_Λ - ŷ_Λ||_1 / ||y_Λ||_1`` per sample
    (Yaman et al. 2020), averaged over the batch.

    Args:
        predicted: Complex ``(B, C, H, W)`` predicted k-space.
        measured: Complex ``(B, C, H, W)`` measured k-space (only Λ columns are read).
        loss_mask: Bool ``(B, W)``, the set Λ.

    Returns:
        Scalar loss.
    """
    y = apply_mask(measured, loss_mask).flatten(1)
    diff = apply_mask(predicted - measured, loss_mask).flatten(1)
    tiny = torch.finfo(y.real.dtype).tiny
    l2 = torch.linalg.vector_norm(diff, dim=1) / torch.linalg.vector_norm(y, dim=1).clamp_min(tiny)
    l1 = diff.abs().sum(dim=1) / y.abs().sum(dim=1).clamp_min(tiny)
    loss: torch.Tensor = (0.5 * l2 + 0.5 * l1).mean()
    return loss
