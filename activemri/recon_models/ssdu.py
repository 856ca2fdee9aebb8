"""SSDU's split of the acquired lines into a data-consistency set Θ and a loss set Λ."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["ssdu_split"]


def ssdu_split(
    acquired: torch.Tensor,
    protected: torch.Tensor,
    rho: float,
    rng: np.random.Generator,
    selection: str = "uniform",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split each sample's acquired columns Ω into disjoint Θ (input) and Λ (loss).

    ``|Λ| = round(rho |Ω|)`` columns are drawn without replacement from Ω minus the
    ``protected`` (ACS) columns, which always stay in Θ. ``"gaussian"`` selection weights
    columns by a Gaussian centred on the k-space centre with standard deviation
    ``(W - 1) / 4``, so low frequencies land in Λ more often (Yaman et al. 2020).

    Args:
        acquired: Bool ``(B, W)``, Ω.
        protected: Bool ``(B, W)`` columns kept in Θ (the ACS block).
        rho: ``|Λ| / |Ω|`` in ``(0, 1)``.
        rng: Random generator.
        selection: ``"uniform"`` or ``"gaussian"``.

    Returns:
        ``(theta, lam)``: bool ``(B, W)`` each, disjoint, with ``theta | lam == acquired``.
    """
    if not 0.0 < rho < 1.0:
        raise ValueError(f"rho must be in (0, 1), got {rho}")
    if selection not in ("uniform", "gaussian"):
        raise ValueError(f"selection must be 'uniform' or 'gaussian', got {selection!r}")
    omega = acquired.detach().cpu().numpy().astype(bool)
    keep = protected.detach().cpu().numpy().astype(bool)
    b, w = omega.shape
    cols = np.arange(w)
    weights = np.exp(-0.5 * ((cols - w // 2) / ((w - 1) / 4.0)) ** 2)
    lam = np.zeros_like(omega)
    for i in range(b):
        candidates = np.flatnonzero(omega[i] & ~keep[i])
        count = min(round(rho * omega[i].sum()), len(candidates))
        if count == 0:
            continue
        p = None
        if selection == "gaussian":
            p = weights[candidates] / weights[candidates].sum()
        lam[i, rng.choice(candidates, size=count, replace=False, p=p)] = True
    lam_t = torch.from_numpy(lam).to(acquired.device)
    return acquired & ~lam_t, lam_t
