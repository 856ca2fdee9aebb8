"""The reconstructor contract every model in activemri follows (DESIGN §4)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from activemri.recon_models.checkpoint import load_reconstructor, save_reconstructor

__all__ = [
    "ReconOutput",
    "Reconstructor",
    "bf16_autocast",
    "native_bf16",
    "num_low_frequencies_tensor",
]


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 natively.

    CUDA does; a CPU does when oneDNN reports bf16 (AVX512-BF16 or AMX), where bf16
    convolutions are faster than float32 ones rather than emulated.
    """
    if device.type == "cuda":
        return True
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def bf16_autocast(device: torch.device) -> Any:
    """A bf16 autocast context where the hardware runs bf16 natively, else a no-op."""
    if native_bf16(device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class ReconOutput(NamedTuple):
    """What a reconstructor returns.

    Attributes:
        image: Float32 magnitude images ``(B, h, w)`` at the reconstruction size.
        uncertainty: Per-pixel standard deviation ``(B, h, w)`` in image units, or ``None``
            when the model has no uncertainty head.
    """

    image: torch.Tensor
    uncertainty: torch.Tensor | None = None


class Reconstructor(nn.Module):
    """Base class: ``forward(kspace, mask, **aux) -> ReconOutput``.

    Inputs are complex k-space ``(B, C, H, W)`` (only the entries in ``mask`` may be used)
    and a bool mask: ``(B, W)`` acquired columns of 2-D slices, or ``(B, H, W)`` acquired
    points of ky-kz planes (:class:`activemri.geometry.Points`). Optional keyword inputs
    (``aux``):

    - ``num_low_frequencies``: int or ``(B,)`` tensor, the size of the fully sampled central
      (ACS) block. Models that estimate coil sensitivities need it *explicitly*: inferring it
      from the contiguous mask center drifts as an active episode adds lines.
    - ``sens_maps``: complex ``(B, C, H, W)`` coil sensitivities, where known.

    Subclasses call ``super().__init__(recon_size, config)`` with ``config`` the JSON-like
    keyword arguments that rebuild them (checkpoints store it), and set the capability class
    attributes below; every consumer (the env's checks and fast paths, training, loading)
    reads them, so a user's class gets the same guards and fast paths as a built-in one.
    Checkpointing: :meth:`save` / :meth:`load`.

    Attributes:
        recon_size: ``(h, w)`` of the output images.
        needs_weights: Class attribute: the model is meaningless without trained weights
            (:func:`activemri.recon_models.resolve` refuses to build it untrained unless
            asked to). Default False.
        linear_in_columns: Class attribute: the output image is
            ``from_coil_images(coil_images)``, where ``coil_images`` (complex
            ``(B, C, h, w)``) are the zero-filled coil images (centered 2-D inverse FFT of the
            masked k-space, center-cropped to ``recon_size``), which are linear in the
            acquired columns. Then the env core keeps the coil images and adds one rank-one
            term per acquired line instead of running :meth:`forward` (no FFT per step). Only
            for models whose output depends on nothing else (no ``aux``, no uncertainty).
            Default False.
        supports_multicoil: Class attribute: whether ``C > 1`` inputs are handled. Default
            True.
        predicts_kspace: Class attribute: whether :meth:`forward_kspace` returns full
            k-space predictions (needed by self-supervised training, whose loss lives in
            k-space). Default False.
    """

    needs_weights: ClassVar[bool] = False
    linear_in_columns: ClassVar[bool] = False
    supports_multicoil: ClassVar[bool] = True
    predicts_kspace: ClassVar[bool] = False

    def __init__(self, recon_size: Sequence[int], config: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if len(recon_size) != 2 or min(int(s) for s in recon_size) < 1:
            raise ValueError(f"recon_size must be (h, w) of positive ints, got {recon_size}")
        self.recon_size: tuple[int, int] = (int(recon_size[0]), int(recon_size[1]))
        self._config: dict[str, Any] = {"recon_size": list(self.recon_size), **(config or {})}
        #: What the model was trained on (``extra["domain"]`` of its checkpoint, see
        #: :func:`activemri.recon_models.training.training_domain`); ``None`` if unknown.
        self.training_domain: dict[str, Any] | None = None

    @property
    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this model (stored in checkpoints)."""
        return dict(self._config)

    @property
    def has_uncertainty(self) -> bool:
        """Whether :attr:`ReconOutput.uncertainty` is filled."""
        return False

    @property
    def sigma_scale(self) -> float:
        """Calibration factor applied to the predicted uncertainty (1 = uncalibrated)."""
        return float(self._config.get("sigma_scale", 1.0))

    def set_sigma_scale(self, value: float) -> None:
        """Set the uncertainty calibration factor (temperature scaling); stored in ``config``.

        Models whose constructor takes ``sigma_scale`` multiply their uncertainty by it.
        """
        if not value > 0 or not torch.isfinite(torch.tensor(value)):
            raise ValueError(f"sigma_scale must be a positive finite number, got {value}")
        if value == 1.0:
            self._config.pop("sigma_scale", None)
        else:
            self._config["sigma_scale"] = float(value)

    def forward(self, kspace: torch.Tensor, mask: torch.Tensor, **aux: Any) -> ReconOutput:
        """Reconstruct images from masked k-space.

        Args:
            kspace: Complex ``(B, C, H, W)``.
            mask: Bool ``(B, W)``, True for acquired columns.
            **aux: ``num_low_frequencies``, ``sens_maps`` (see the class docstring).

        Returns:
            The :class:`ReconOutput`.
        """
        raise NotImplementedError

    def forward_kspace(self, kspace: torch.Tensor, mask: torch.Tensor, **aux: Any) -> torch.Tensor:
        """Predict full multi-coil k-space ``(B, C, H, W)`` (models with ``predicts_kspace``)."""
        raise NotImplementedError(f"{type(self).__name__} does not predict k-space")

    def from_coil_images(self, coil_images: torch.Tensor) -> torch.Tensor:
        """The output image from zero-filled coil images (models with ``linear_in_columns``).

        Args:
            coil_images: Complex ``(B, C, h, w)`` zero-filled coil images at ``recon_size``.

        Returns:
            Float ``(B, h, w)``: what :meth:`forward` returns as ``image`` for the k-space
            those coil images come from.
        """
        raise NotImplementedError(f"{type(self).__name__} is not linear in the acquired columns")

    def check_inputs(self, kspace: torch.Tensor, mask: torch.Tensor) -> None:
        """Raise a clear error if ``kspace``/``mask`` do not follow the contract."""
        if kspace.ndim != 4 or not kspace.is_complex():
            raise ValueError(
                f"kspace must be complex (B, C, H, W), got {tuple(kspace.shape)} {kspace.dtype}"
            )
        b, c, h, w = kspace.shape
        if mask.dtype != torch.bool or tuple(mask.shape) not in ((b, w), (b, h, w)):
            raise ValueError(
                f"mask must be bool ({b}, {w}) (columns) or ({b}, {h}, {w}) (points), got "
                f"{tuple(mask.shape)} {mask.dtype}"
            )
        if c > 1 and not self.supports_multicoil:
            raise ValueError(f"{type(self).__name__} handles single-coil data only, got {c} coils")
        if h < self.recon_size[0] or w < self.recon_size[1]:
            raise ValueError(f"k-space {h}x{w} is smaller than the recon size {self.recon_size}")

    def save(self, path: str | Path, extra: Mapping[str, Any] | None = None) -> None:
        """Write a checkpoint atomically (see :mod:`activemri.recon_models.checkpoint`)."""
        save_reconstructor(self, path, extra=extra)

    @classmethod
    def load(
        cls,
        path: str | Path,
        map_location: str | torch.device | None = "cpu",
        trust_class_path: bool = False,
    ) -> Reconstructor:
        """Load a checkpoint written by :meth:`save`.

        Called on a subclass (``UnetReconstructor.load(p)``), the checkpoint must be of that
        class; called on :class:`Reconstructor`, the class stored in the file is used if it is
        built in (or ``trust_class_path=True``). No code from the file is ever executed.
        """
        return load_reconstructor(
            path,
            map_location=map_location,
            cls=None if cls is Reconstructor else cls,
            trust_class_path=trust_class_path,
        )


def num_low_frequencies_tensor(
    value: int | torch.Tensor | None, batch: int, device: torch.device
) -> torch.Tensor:
    """Normalize ``num_low_frequencies`` to a long ``(B,)`` tensor on ``device``."""
    if value is None:
        raise ValueError(
            "num_low_frequencies is required: pass the ACS block size explicitly (inferring it "
            "from the mask center drifts as an active episode adds lines)"
        )
    t = torch.as_tensor(value, device=device).long()
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"num_low_frequencies must be an int or ({batch},), got {tuple(t.shape)}")
    return t
