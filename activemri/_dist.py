"""torch.distributed for sharded jobs: the process group from ``torchrun``, and gathers.

A job launched with ``torchrun --nproc-per-node N -m activemri.cli ...`` finds ``RANK``,
``WORLD_SIZE`` and the rendezvous address in its environment; :func:`init_from_env` joins the
group (gloo on CPU, nccl on CUDA). Without them, or with one process, nothing is initialized
and every helper here is the single-process identity, so sharded code has one path.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["barrier", "gather_strided", "init_from_env", "is_main", "local_device", "world"]


def init_from_env(device: str | torch.device = "cpu") -> tuple[int, int]:
    """Join the process group ``torchrun`` describes, if any; returns ``(rank, world)``.

    Args:
        device: The job's device; its type chooses the backend (``nccl`` for CUDA, else
            ``gloo``).
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1 and dist.is_available() and not dist.is_initialized():
        backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
        dist.init_process_group(backend)
    return world()


def local_device(device: str) -> str:
    """``device`` for this process: with several processes on CUDA, its own GPU.

    ``"cuda"`` (or ``"auto"`` with CUDA present) becomes ``cuda:LOCAL_RANK``; anything else,
    and any single-process job, is returned as given.
    """
    if world()[1] == 1:
        return device
    wants_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return f"cuda:{os.environ.get('LOCAL_RANK', world()[0])}" if wants_cuda else device


def barrier() -> None:
    """Wait for every process (no-op with one)."""
    if world()[1] > 1:
        dist.barrier()


def world() -> tuple[int, int]:
    """``(rank, world size)`` of the initialized process group, else ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Whether this process is rank 0 (the one that writes files)."""
    return world()[0] == 0


def gather_strided(part: torch.Tensor, total: int) -> torch.Tensor:
    """The ``(total, ...)`` tensor whose rows ``rank::world`` each rank holds as ``part``.

    Every rank gets the whole tensor (an all-gather; rows are padded to the longest share
    for the transfer). With one process, ``part`` itself.
    """
    size = world()[1]
    if size == 1:
        return part
    longest = -(-total // size)
    padded = part.new_zeros((longest, *part.shape[1:]))
    padded[: part.shape[0]] = part
    shares = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(shares, padded)
    out = part.new_empty((total, *part.shape[1:]))
    for r, share in enumerate(shares):
        count = len(range(r, total, size))
        out[r::size] = share[:count]
    return out
