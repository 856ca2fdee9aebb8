"""SSIM speed: batched torch (activemri.metrics.ssim) vs scikit-image looping over images.

Images are simulated knee slices (activemri's phantom) with noise added, so the numbers
reflect realistic content. Prints the median of several repeats, the ratio, and the largest
absolute difference between the two implementations.

    python benchmarks/ssim_bench.py [--batch 64] [--size 320] [--repeats 7]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from skimage.metrics import structural_similarity
from timing import median_time

from activemri.data.phantom import knee_volume
from activemri.metrics import ssim


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    size = (args.size, args.size)
    target = knee_volume(rng, args.batch, size, size, "CORPD_FBK").astype(np.float32) * 1e-4
    pred = (target + rng.normal(0, 3e-6, target.shape)).clip(0).astype(np.float32)
    data_range = target.reshape(args.batch, -1).max(axis=1)
    pred64, target64 = pred.astype(np.float64), target.astype(np.float64)

    def skimage_loop() -> list[float]:
        return [
            structural_similarity(target64[i], pred64[i], win_size=7, data_range=data_range[i])
            for i in range(args.batch)
        ]

    pred_t, target_t = torch.from_numpy(pred), torch.from_numpy(target)
    range_t = torch.from_numpy(data_range)
    t_sk = median_time(skimage_loop, args.repeats)
    t_cpu = median_time(lambda: ssim(pred_t, target_t, range_t), args.repeats)
    diff = np.abs(ssim(pred_t, target_t, range_t).numpy() - np.array(skimage_loop())).max()
    print(f"SSIM of {args.batch} images of {args.size}x{args.size}, median of {args.repeats}")
    print(f"  torch threads: {torch.get_num_threads()}")
    print(f"  scikit-image loop (float64): {t_sk * 1e3:8.1f} ms")
    print(f"  activemri batched, CPU:      {t_cpu * 1e3:8.1f} ms  ({t_cpu / t_sk:.2f}x skimage)")
    print(f"  max |difference|:            {diff:.2e}")
    if torch.cuda.is_available():
        dev = torch.device("cuda")
        p, t, r = pred_t.to(dev), target_t.to(dev), range_t.to(dev)
        # Any host<->device synchronization inside ssim raises here.
        torch.cuda.set_sync_debug_mode("error")
        ssim(p, t, r)
        torch.cuda.set_sync_debug_mode(0)
        t_gpu = median_time(lambda: ssim(p, t, r), args.repeats, dev)
        print(f"  activemri batched, CUDA:     {t_gpu * 1e3:8.2f} ms  (no host synchronization)")


if __name__ == "__main__":
    main()
