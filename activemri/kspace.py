"""K-space operators: centered orthonormal FFTs, masking, coil combination and cropping.

Layouts follow DESIGN §2: k-space is a complex tensor ``(B, C, H, W)`` with ``C`` coils,
``H`` the (fully sampled) readout and ``W`` the phase-encode lines; a mask is a bool tensor
``(B, W)`` that broadcasts over coils and readout; images are ``(B, h, w)``.

Every function here is pure torch, batched, differentiable where it makes sense, and runs on
whatever device its inputs live on.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "acs_like",
    "acs_mask",
    "apply_mask",
    "broadcast_mask",
    "center_crop",
    "estimate_sens_maps",
    "fft2c",
    "ifft2c",
    "rss",
    "sens_expand",
    "sens_reduce",
    "zero_filled",
]

_DIMS = (-2, -1)


def _require_complex(x: torch.Tensor, name: str) -> None:
    if not x.is_complex():
        raise TypeError(f"{name} must be a complex tensor, got dtype {x.dtype}")


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centered, orthonormal 2-D FFT over the last two dimensions.

    ``fft2c(x) = fftshift(fft2(ifftshift(x), norm="ortho"))``: the zero frequency sits at index
    ``n // 2`` of each dimension (also for odd sizes) and the transform is unitary.

    Args:
        x: Complex tensor of shape ``(..., H, W)`` (image domain).

    Returns:
        Complex tensor of the same shape and dtype (k-space).
    """
    _require_complex(x, "x")
    x = torch.fft.ifftshift(x, dim=_DIMS)
    x = torch.fft.fft2(x, dim=_DIMS, norm="ortho")
    out: torch.Tensor = torch.fft.fftshift(x, dim=_DIMS)
    return out


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`fft2c`: centered, orthonormal 2-D inverse FFT over the last two dims.

    Args:
        k: Complex tensor of shape ``(..., H, W)`` (k-space).

    Returns:
        Complex tensor of the same shape and dtype (image domain).
    """
    _require_complex(k, "k")
    k = torch.fft.ifftshift(k, dim=_DIMS)
    k = torch.fft.ifft2(k, dim=_DIMS, norm="ortho")
    out: torch.Tensor = torch.fft.fftshift(k, dim=_DIMS)
    return out


def broadcast_mask(kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """View a mask so that it broadcasts against ``(B, C, H, W)`` k-space.

    Args:
        kspace: Complex ``(B, C, H, W)`` (only its shape is used).
        mask: Bool column mask ``(B, W)`` or ``(W,)`` (2-D slices), or point mask
            ``(B, H, W)`` (ky-kz planes of 3-D volumes; see :mod:`activemri.geometry`).

    Returns:
        ``(B, 1, 1, W)`` or ``(B, 1, H, W)`` (``B`` may be 1).
    """
    if kspace.ndim != 4:
        raise ValueError(f"kspace must have shape (B, C, H, W), got {tuple(kspace.shape)}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got dtype {mask.dtype}")
    b, _, h, w = kspace.shape
    if mask.ndim == 3:
        if tuple(mask.shape[1:]) != (h, w) or mask.shape[0] not in (1, b):
            raise ValueError(
                f"a point mask must have shape ({b}, {h}, {w}) for kspace "
                f"{tuple(kspace.shape)}, got {tuple(mask.shape)}"
            )
        return mask[:, None]
    if mask.ndim == 1:
        mask = mask.unsqueeze(0)
    if mask.ndim != 2 or mask.shape[-1] != w or mask.shape[0] not in (1, b):
        raise ValueError(
            f"mask must have shape ({b}, {w}) or ({w},) (columns) or ({b}, {h}, {w}) (points) "
            f"for kspace {tuple(kspace.shape)}, got {tuple(mask.shape)}"
        )
    return mask[:, None, None, :]


def apply_mask(kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Keep the acquired phase-encode columns of ``kspace`` and zero the rest.

    Unacquired entries are exactly ``+0.0`` (real and imaginary parts): they are *selected*
    from a zero tensor rather than multiplied by zero, so neither the sign of unseen values
    (``-0.0``) nor NaN/inf in unseen data can leak through.

    Args:
        kspace: Complex tensor ``(B, C, H, W)``.
        mask: Bool tensor ``(B, W)`` (or ``(W,)``, shared by the batch), or a point mask
            ``(B, H, W)``; True = acquired.

    Returns:
        Masked k-space, same shape and dtype as ``kspace``.
    """
    m = broadcast_mask(kspace, mask)
    return torch.where(m, kspace, torch.zeros((), dtype=kspace.dtype, device=kspace.device))


def rss(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Root-sum-of-squares coil combination.

    Args:
        x: Real or complex tensor with a coil dimension.
        dim: The coil dimension (``1`` for ``(B, C, H, W)``).

    Returns:
        Real tensor with ``dim`` reduced: ``sqrt(sum_c |x_c|^2)``.
    """
    # vector_norm has a finite gradient at all-zero pixels, unlike sqrt(sum(|x|^2)).
    out: torch.Tensor = torch.linalg.vector_norm(x, ord=2, dim=dim)
    return out


def center_crop(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Crop the last two dimensions of ``x`` around their center.

    The crop starts at ``(n - s) // 2`` in each dimension, as fastMRI's ``center_crop``.

    Args:
        x: Tensor of shape ``(..., H, W)``.
        size: Target ``(h, w)`` with ``h <= H`` and ``w <= W``.

    Returns:
        A view of ``x`` of shape ``(..., h, w)``.
    """
    h, w = int(size[0]), int(size[1])
    big_h, big_w = x.shape[-2], x.shape[-1]
    if not (0 < h <= big_h and 0 < w <= big_w):
        raise ValueError(f"cannot center-crop shape {tuple(x.shape)} to {(h, w)}")
    top = (big_h - h) // 2
    left = (big_w - w) // 2
    return x[..., top : top + h, left : left + w]


def sens_expand(image: torch.Tensor, sens_maps: torch.Tensor) -> torch.Tensor:
    """Forward SENSE operator without sampling: coil images to multi-coil k-space.

    Args:
        image: Complex image ``(B, H, W)``.
        sens_maps: Complex coil sensitivities ``(B, C, H, W)``.

    Returns:
        Multi-coil k-space ``(B, C, H, W)``: ``fft2c(S_c * image)``.
    """
    _require_complex(image, "image")
    _require_complex(sens_maps, "sens_maps")
    return fft2c(sens_maps * image.unsqueeze(1))


def sens_reduce(kspace: torch.Tensor, sens_maps: torch.Tensor) -> torch.Tensor:
    """Adjoint of :func:`sens_expand`: multi-coil k-space to one complex image.

    Args:
        kspace: Complex k-space ``(B, C, H, W)``.
        sens_maps: Complex coil sensitivities ``(B, C, H, W)``.

    Returns:
        Complex image ``(B, H, W)``: ``sum_c conj(S_c) * ifft2c(k_c)``.
    """
    _require_complex(kspace, "kspace")
    _require_complex(sens_maps, "sens_maps")
    return (sens_maps.conj() * ifft2c(kspace)).sum(dim=1)


def zero_filled(
    kspace: torch.Tensor,
    mask: torch.Tensor,
    recon_size: Sequence[int],
    sens_maps: torch.Tensor | None = None,
) -> torch.Tensor:
    """Zero-filled magnitude reconstruction.

    ``ifft2c`` of the masked k-space, coil-combined by root-sum-of-squares (or by the SENSE
    adjoint when ``sens_maps`` is given), center-cropped to ``recon_size``.

    Args:
        kspace: Complex k-space ``(B, C, H, W)``; only the columns in ``mask`` are used.
        mask: Bool tensor ``(B, W)`` or ``(W,)``, or a point mask ``(B, H, W)``.
        recon_size: Output ``(h, w)``.
        sens_maps: Optional complex coil sensitivities ``(B, C, H, W)``.

    Returns:
        Real magnitude images ``(B, h, w)`` in the real dtype matching ``kspace``.
    """
    _require_complex(kspace, "kspace")
    masked = apply_mask(kspace, mask)
    if sens_maps is None:
        image = rss(ifft2c(masked), dim=1)
    else:
        image = sens_reduce(masked, sens_maps).abs()
    return center_crop(image, recon_size)


def acs_mask(
    num_low_frequencies: torch.Tensor, width: int, height: int | None = None
) -> torch.Tensor:
    """Bool mask of each sample's central (ACS) block.

    The block of ``n`` columns starts at ``(W - n + 1) // 2``, fastMRI's convention. With
    ``height`` (point masks of ky-kz planes) it is the central ``n x n`` block, placed by the
    same rule along both axes.

    Args:
        num_low_frequencies: Long ``(B,)`` block sizes.
        width: ``W``.
        height: ``H`` for a point mask, else ``None``.

    Returns:
        Bool ``(B, W)``, or ``(B, H, W)`` with ``height``, on the device of
        ``num_low_frequencies``.
    """
    n = num_low_frequencies
    start = (width - n + 1) // 2
    cols = torch.arange(width, device=n.device)
    in_cols = (cols >= start[:, None]) & (cols < (start + n)[:, None])
    if height is None:
        return in_cols
    n_rows = n.clamp_max(height)
    top = (height - n_rows + 1) // 2
    rows = torch.arange(height, device=n.device)
    in_rows = (rows >= top[:, None]) & (rows < (top + n_rows)[:, None])
    return in_rows[:, :, None] & in_cols[:, None, :]


def acs_like(num_low_frequencies: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """:func:`acs_mask` of the same kind as ``mask``: columns ``(B, W)`` or points ``(B, H, W)``."""
    height = int(mask.shape[-2]) if mask.ndim == 3 else None
    return acs_mask(num_low_frequencies, int(mask.shape[-1]), height)


def estimate_sens_maps(
    kspace: torch.Tensor,
    num_low_frequencies: torch.Tensor,
    eps: float = 1e-12,
    points: bool = False,
) -> torch.Tensor:
    """Coil sensitivities from the ACS block: low-resolution coil images over their RSS.

    A classical, training-free estimate (the ACS coil images are smooth because only low
    frequencies are kept); normalized so ``sum_c |S_c|^2 = 1`` wherever there is signal.

    Args:
        kspace: Complex ``(B, C, H, W)``; only the ACS columns are used.
        num_low_frequencies: Long ``(B,)`` ACS block sizes.
        eps: Floor of the RSS denominator.
        points: The block is the central ``n x n`` ky-kz block (point masks).

    Returns:
        Complex ``(B, C, H, W)`` sensitivity maps.
    """
    _require_complex(kspace, "kspace")
    height = kspace.shape[-2] if points else None
    low = ifft2c(apply_mask(kspace, acs_mask(num_low_frequencies, kspace.shape[-1], height)))
    return low / rss(low, dim=1).clamp_min(eps).unsqueeze(1)
