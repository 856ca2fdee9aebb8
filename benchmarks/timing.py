"""Shared timing helper of the benchmark scripts (median wall time with device sync)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def median_time(
    fn: Callable[[], object], repeats: int, device: torch.device | None = None
) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up run.

    CUDA work is synchronized before each clock read so queued kernels are counted.
    """

    def sync() -> None:
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
