"""Reference env step emulating the prior art (per-image NumPy inverse FFT + scikit-image metrics).

active-mri-acquisition's environment reconstructs and scores each image separately on the
host: it applies the mask, runs a full inverse 2-D FFT with NumPy, takes the magnitude
(root-sum-of-squares over coils), center-crops it, and computes SSIM, PSNR, NMSE and MSE with
scikit-image. ``activemri bench`` times this next to the batched env step for the same batch
and prints the ratio. Needs scikit-image (the ``dev`` extra; imported on first use).

Run directly for a standalone figure::

    python -m activemri.bench_reference --batch-size 16 --height 640 --width 368 --crop 320
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import numpy as np

__all__ = ["available", "reference_step", "time_reference"]


def available() -> bool:
    """Whether scikit-image, which the reference needs, is installed."""
    return importlib.util.find_spec("skimage") is not None


def _center_crop(image: np.ndarray, h: int, w: int) -> np.ndarray:
    top = (image.shape[-2] - h) // 2
    left = (image.shape[-1] - w) // 2
    return image[..., top : top + h, left : left + w]


def reference_step(
    kspace: np.ndarray, mask: np.ndarray, target: np.ndarray, data_range: np.ndarray
) -> list[dict[str, float]]:
    """Zero-filled reconstruction and metrics, one image at a time.

    Args:
        kspace: Complex ``(B, C, H, W)``.
        mask: Bool ``(B, W)``.
        target: Float ``(B, h, w)``.
        data_range: ``(B,)``.

    Returns:
        Per image ``{"ssim", "psnr", "nmse", "mse"}``.
    """
    from skimage.metrics import (
        mean_squared_error,
        peak_signal_noise_ratio,
        structural_similarity,
    )

    h, w = target.shape[-2:]
    results = []
    for b in range(kspace.shape[0]):
        masked = kspace[b] * mask[b][None, None, :]
        image = np.fft.fftshift(
            np.fft.ifft2(np.fft.ifftshift(masked, axes=(-2, -1)), norm="ortho"), axes=(-2, -1)
        )
        recon = _center_crop(np.sqrt((np.abs(image) ** 2).sum(axis=0)), h, w).astype(np.float32)
        gt = target[b]
        dr = float(data_range[b])
        results.append(
            {
                "ssim": float(structural_similarity(gt, recon, win_size=7, data_range=dr)),
                "psnr": float(peak_signal_noise_ratio(gt, recon, data_range=dr)),
                "nmse": float(np.linalg.norm(gt - recon) ** 2 / np.linalg.norm(gt) ** 2),
                "mse": float(mean_squared_error(gt, recon)),
            }
        )
    return results


def time_reference(
    kspace: np.ndarray,
    mask: np.ndarray,
    target: np.ndarray,
    data_range: np.ndarray,
    repeats: int = 3,
) -> float:
    """Median seconds of :func:`reference_step` on one batch."""
    # skimage and scipy load lazily (scipy.stats takes ~1 s): warm up off the clock
    reference_step(kspace[:1], mask[:1], target[:1], data_range[:1])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        reference_step(kspace, mask, target, data_range)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--height", type=int, default=640)
    parser.add_argument("--width", type=int, default=368)
    parser.add_argument("--crop", type=int, default=320)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    shape = (args.batch_size, 1, args.height, args.width)
    kspace = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    mask = rng.random((args.batch_size, args.width)) < 0.25
    target = rng.random((args.batch_size, args.crop, args.crop)).astype(np.float32)
    seconds = time_reference(kspace, mask, target, np.ones(args.batch_size), args.repeats)
    print(
        f"reference step, B={args.batch_size}, k-space {args.height}x{args.width}, "
        f"crop {args.crop}: {seconds * 1e3:.1f} ms ({args.batch_size / seconds:.0f} images/s)"
    )


if __name__ == "__main__":
    main()
