"""A concurrent CPU load for benchmarks: busy-looping processes that import nothing heavy.

The bench times the env beside such a load because a training process rarely has the CPU
to itself, and batched tensor code that is fast on an idle machine can collapse when its
threads are descheduled.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Iterator

__all__ = ["cpu_load"]


def _busy() -> None:  # pragma: no cover - runs in the load processes
    while True:
        pass


@contextlib.contextmanager
def cpu_load(processes: int) -> Iterator[None]:
    """Keep ``processes`` busy-looping processes running while inside.

    They are started with ``spawn`` and import only this module (not torch), so they start
    in well under a second and share nothing with the caller.

    Raises:
        ValueError: For a negative count.
    """
    if processes < 0:
        raise ValueError(f"the load must be >= 0 processes, got {processes}")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_busy, daemon=True) for _ in range(processes)]
    for worker in workers:
        worker.start()
    try:
        yield
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.join()
