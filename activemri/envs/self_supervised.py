"""A reward that never reads the target: how well the acquired data predicts itself.

SSDU's idea (Yaman et al. 2020) applied to the reward. The acquired actions Ω of each
episode are split into an input set Θ and a held-out set Λ (``|Λ| = round(rho |Ω - P|)``,
at least one action while any is free to hold out; the central calibration block ``P``
always stays in Θ). The reconstructor sees Θ only, its prediction of the held-out
measurements is compared with them, and the score is minus their normalized error

    score = -‖k̂_Λ - y_Λ‖² / ‖y_Λ‖²,

so it is ``-1`` for a prediction of zeros and ``0`` for a perfect one; with nothing to hold
out (only the calibration block acquired) the score is ``-1``. The dense reward is the score's
gain, so rewards telescope to final - initial score as for every other reward.

The prediction ``k̂`` of a model that predicts k-space (``predicts_kspace``, e.g. E2E-VarNet)
is its own. For a model that outputs magnitude images, ``k̂`` is the Fourier transform of the
zero-filled coil images of Θ whose coil-combined (root-sum-of-squares) magnitude is set to the
model's image inside the reconstruction window (the coils' phases and relative sensitivities
are those of the zero-filled images). A model that adds nothing to zero-filling (the
zero-filled reconstructor) therefore predicts zeros and scores ``-1`` everywhere: the reward
is only as informative as the model's ability to predict unseen data.

The split is a pure function of the episode's split seed, a counter (the env passes the
number of acquired actions) and the action index (an integer hash evaluated on the device),
so it is reproducible, independent of how episodes are batched, and drawn afresh whenever an
action is added; a step that adds nothing keeps it. The candidates of one step share the
per-action keys (common random numbers for oracle scoring), though each one's held-out set
follows its own mask. Nothing here touches the target: the target is not even an argument.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from activemri.geometry import Geometry, Points
from activemri.kspace import acs_mask, center_crop, fft2c, ifft2c, rss

__all__ = ["DEFAULT_HOLDOUT_FRACTION", "heldout_split", "self_supervised_score", "split_keys"]

DEFAULT_HOLDOUT_FRACTION = 0.4
"""SSDU's rho = |Λ| / |Ω| (Yaman et al. 2020)."""

_P = 2_147_483_647  # 2**31 - 1: products of two residues fit in int64
_MULTIPLIERS = (48_271, 69_621, 16_807)

Forward = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]
]
PredictKspace = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _mix(x: torch.Tensor) -> torch.Tensor:
    for a in _MULTIPLIERS:
        x = (x * a) % _P
        x = x ^ (x >> 13)
    return x


def split_keys(seed: torch.Tensor, step: torch.Tensor, num_actions: int) -> torch.Tensor:
    """Uniform keys in ``[0, 1)`` per episode and action: a hash of (seed, counter, action).

    Args:
        seed: Long ``(B,)`` split seeds.
        step: Long ``(B,)`` counters (a new split for each value).
        num_actions: ``A``.

    Returns:
        Float64 ``(B, A)``.
    """
    device = seed.device
    s = _mix((seed.long() % _P) + 1)
    s = _mix((s + step.long() * 1_000_003) % _P)
    action = torch.arange(num_actions, device=device, dtype=torch.long)
    x = _mix((s[:, None] + action[None, :] * 7_919 + 1) % _P)
    return x.double() / _P


def heldout_split(
    mask: torch.Tensor,
    protected: torch.Tensor,
    seed: torch.Tensor,
    step: torch.Tensor,
    fraction: float = DEFAULT_HOLDOUT_FRACTION,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the acquired actions Ω into disjoint input Θ and held-out Λ sets.

    Args:
        mask: Bool ``(B, A)`` acquired actions Ω.
        protected: Bool ``(B, A)`` actions that stay in Θ (the calibration block).
        seed: Long ``(B,)`` split seeds.
        step: Long ``(B,)`` counters (a new split for each value).
        fraction: rho in ``(0, 1)``.

    Returns:
        ``(theta, lam)``, bool ``(B, A)`` each, with ``theta | lam == mask``, ``lam`` outside
        ``protected`` and ``|lam| = max(1, round(fraction * |mask & ~protected|))`` where
        that set is not empty.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the held-out fraction must be in (0, 1), got {fraction}")
    free = mask & ~protected
    count = torch.round(fraction * free.sum(dim=1).double()).long()
    count = torch.where(free.any(dim=1), count.clamp_min(1), 0)
    keys = torch.where(free, split_keys(seed, step, mask.shape[1]), 2.0)
    rank = keys.argsort(dim=1).argsort(dim=1)
    lam = free & (rank < count[:, None])
    return mask & ~lam, lam


def self_supervised_score(
    forward: Forward,
    observed: torch.Tensor,
    mask: torch.Tensor,
    num_low: torch.Tensor,
    seed: torch.Tensor,
    step: torch.Tensor,
    geometry: Geometry,
    recon_size: tuple[int, int],
    fraction: float = DEFAULT_HOLDOUT_FRACTION,
    predict_kspace: PredictKspace | None = None,
    splits: int = 1,
) -> torch.Tensor:
    """Minus the normalized error of the held-out measurements predicted from the rest.

    Args:
        forward: ``forward(observed, mask, num_low) -> (image, uncertainty)``: the
            reconstructor on k-space ``(N, C, H, W)`` with its ``(N, A)`` action mask and
            ``(N,)`` calibration sizes (the core's forward).
        observed: Complex ``(B, C, H, W)`` acquired k-space, zero elsewhere.
        mask: Bool ``(B, A)`` acquired actions.
        num_low: Long ``(B,)`` calibration block sizes (kept in the input set).
        seed: Long ``(B,)`` split seeds.
        step: Long ``(B,)`` split counters (the env: acquired actions).
        geometry: What an action acquires.
        recon_size: ``(h, w)`` of the reconstructions.
        fraction: The held-out fraction rho.
        predict_kspace: ``predict_kspace(observed, mask, num_low) -> (N, C, H, W)`` for models that
            predict k-space; ``None`` builds the prediction from the image (module docstring).
        splits: Independent splits whose scores are averaged (one batched forward of
            ``splits * B`` images): less noise from which lines happen to be held out.

    Returns:
        Float32 ``(B,)`` in ``(-inf, 0]``; ``-1`` where nothing is held out.
    """
    height, width = observed.shape[-2:]
    if geometry.num_actions(height, width) != mask.shape[1]:
        raise ValueError(f"mask has {mask.shape[1]} actions; the k-space has a different count")
    if splits < 1:
        raise ValueError(f"splits must be >= 1, got {splits}")
    points = isinstance(geometry, Points)
    protected = acs_mask(num_low, width, height if points else None).reshape(mask.shape)
    b = mask.shape[0]
    if splits > 1:
        offsets = torch.arange(splits, device=seed.device).repeat_interleave(b) * 104_729
        seed = seed.repeat(splits) + offsets
        step, mask, protected = (
            step.repeat(splits),
            mask.repeat(splits, 1),
            protected.repeat(splits, 1),
        )
        observed, num_low = observed.repeat(splits, 1, 1, 1), num_low.repeat(splits)
    theta, lam = heldout_split(mask, protected, seed, step, fraction)
    theta_where = geometry.broadcast(theta, height, width)
    lam_where = geometry.broadcast(lam, height, width)
    inputs = torch.where(theta_where, observed, torch.zeros_like(observed))
    if predict_kspace is not None:
        predicted = predict_kspace(inputs, theta, num_low)
    else:
        image = forward(inputs, theta, num_low)[0].float()
        predicted = _kspace_from_image(inputs, image, recon_size)
    held = torch.where(lam_where, observed, torch.zeros_like(observed))
    error = torch.where(lam_where, predicted - observed, torch.zeros_like(observed))
    energy = held.abs().square().flatten(1).sum(dim=1).double()
    err = error.abs().square().flatten(1).sum(dim=1).double()
    has = lam.any(dim=1) & (energy > 0)
    score = torch.where(has, -err / torch.where(has, energy, 1.0), -1.0)
    return score.view(splits, b).mean(dim=0).float()


def _kspace_from_image(
    inputs: torch.Tensor, image: torch.Tensor, recon_size: tuple[int, int]
) -> torch.Tensor:
    """K-space of the zero-filled coil images with their RSS magnitude set to ``image``."""
    coils = ifft2c(inputs)
    combined = rss(coils, dim=1)
    height, width = coils.shape[-2:]
    h, w = recon_size
    top, left = (height - h) // 2, (width - w) // 2
    window = center_crop(combined, recon_size)
    floor = 1e-6 * window.flatten(1).amax(dim=1).clamp_min(1e-30)[:, None, None]
    gain = torch.ones_like(combined)
    gain[:, top : top + h, left : left + w] = image / torch.maximum(window, floor)
    # Where the zero-filled image is ~0 its phase is noise: predict no signal there.
    gain[:, top : top + h, left : left + w] *= (window > floor).to(gain.dtype)
    return fft2c(coils * gain[:, None])
