"""Tiny reconstructor configurations and k-space batches shared by the reconstructor tests."""

from __future__ import annotations

import torch

from activemri.recon_models import (
    TVReconstructor,
    UnetReconstructor,
    VarNetReconstructor,
    ZeroFilled,
)

TINY_UNET = {"chans": 4, "num_pool_layers": 2}
TINY_VARNET = {"num_cascades": 2, "sens_chans": 4, "sens_pools": 2, "chans": 4, "pools": 2}


def make_model(name: str, recon_size=(20, 18), uncertainty: bool = False):
    if name == "zero_filled":
        return ZeroFilled(recon_size)
    if name == "tv":
        return TVReconstructor(recon_size, lam=0.01, iterations=5)
    if name == "unet":
        return UnetReconstructor(recon_size, uncertainty=uncertainty, **TINY_UNET)
    return VarNetReconstructor(recon_size, uncertainty=uncertainty, **TINY_VARNET)


def kspace_batch(b: int, c: int, h: int, w: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    k = torch.randn(b, c, h, w, dtype=torch.complex64, generator=gen)
    mask = torch.rand(b, w, generator=gen) < 0.3
    start = (w - 4 + 1) // 2
    mask[:, start : start + 4] = True
    return k, mask
