"""Reconstructor throughput: inference and training images per second.

Measures each preset's model on random k-space of its size (built-in default: 128x128
single-coil): inference (``no_grad`` forward) and training (forward, L1 loss, backward, Adam
step), median of several repeats, on the CPU and on CUDA when present.

    python benchmarks/recon_bench.py [--presets recon_models/unet_default.yaml ...]
        [--batch 16] [--repeats 5] [--device cpu cuda]
"""

from __future__ import annotations

import argparse

import torch
from timing import median_time

from activemri.recon_models import reconstructor_from_preset

DEFAULT_PRESETS = [
    "recon_models/unet_default.yaml",
    "recon_models/varnet_default.yaml",
    "recon_models/tv.yaml",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=DEFAULT_PRESETS)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", nargs="+", default=["cpu", "cuda"])
    args = parser.parse_args()
    devices = [d for d in args.device if d != "cuda" or torch.cuda.is_available()]
    print(f"batch {args.batch}, median of {args.repeats}, torch threads {torch.get_num_threads()}")
    print(f"{'preset':<36} {'device':<6} {'infer img/s':>12} {'train img/s':>12}")
    for preset in args.presets:
        for name in devices:
            print(_measure(preset, torch.device(name), args.batch, args.repeats))


def _measure(preset: str, device: torch.device, batch: int, repeats: int) -> str:
    model = reconstructor_from_preset(preset, use_checkpoint=False).to(device)
    h, w = model.recon_size
    gen = torch.Generator().manual_seed(0)
    k = torch.randn(batch, 1, h, w, dtype=torch.complex64, generator=gen).to(device)
    mask = torch.zeros(batch, w, dtype=torch.bool, device=device)
    mask[:, ::4] = True
    mask[:, w // 2 - 5 : w // 2 + 5] = True
    target = torch.rand(batch, h, w, generator=gen).to(device)

    def infer() -> None:
        with torch.no_grad():
            model(k, mask, num_low_frequencies=10)

    model.eval()
    row = f"{preset:<36} {device.type:<6} {batch / median_time(infer, repeats, device):>12.1f}"
    params = list(model.parameters())
    if not params:
        return row + f" {'-':>12}"
    opt = torch.optim.Adam(params, lr=1e-4)

    def step() -> None:
        out = model(k, mask, num_low_frequencies=10)
        loss = (out.image - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    model.train()
    return row + f" {batch / median_time(step, repeats, device):>12.1f}"


if __name__ == "__main__":
    main()
