"""Deterministic, volume-level train/val/test splits.

A split assigns whole volumes (files), never slices, so no volume can appear in two splits.
The order is a seeded hash of each file's name, so it is the same on every machine and
adding a file to a folder moves few others across splits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

__all__ = ["DEFAULT_SPLIT_FRACTIONS", "SPLIT_NAMES", "split_volumes"]

SPLIT_NAMES = ("train", "val", "test")
DEFAULT_SPLIT_FRACTIONS: Mapping[str, float] = {"train": 0.8, "val": 0.1, "test": 0.1}


def _rank_key(name: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()


def split_volumes(
    names: Sequence[str],
    fractions: Mapping[str, float] = DEFAULT_SPLIT_FRACTIONS,
    seed: int = 0,
) -> dict[str, list[str]]:
    """Assign volume names to splits by seeded hashing.

    Names are ordered by ``sha256(f"{seed}:{name}")`` and cut into consecutive blocks whose
    sizes are the rounded fractions (largest remainder), so counts are exact up to rounding.
    Every split with a positive fraction gets at least one volume when there are enough.

    Args:
        names: Volume identifiers (file names); duplicates are not allowed.
        fractions: Split name to fraction; must be non-negative and sum to 1.
        seed: Seed of the assignment.

    Returns:
        Split name to the sorted list of its volume names, in the order of ``fractions``.
    """
    if len(set(names)) != len(names):
        raise ValueError("volume names must be unique")
    if any(f < 0 for f in fractions.values()):
        raise ValueError(f"split fractions must be non-negative, got {dict(fractions)}")
    total = sum(fractions.values())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {dict(fractions)} (sum {total})")
    n = len(names)
    exact = {k: f * n for k, f in fractions.items()}
    counts = {k: int(v) for k, v in exact.items()}
    by_remainder = sorted(fractions, key=lambda k: exact[k] - counts[k], reverse=True)
    for k in by_remainder[: n - sum(counts.values())]:
        counts[k] += 1
    # Give each non-empty split a volume, taken from the largest split, while that is possible.
    for k in fractions:
        if fractions[k] > 0 and counts[k] == 0:
            donor = max(counts, key=lambda d: counts[d])
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[k] += 1
    ordered = sorted(names, key=lambda name: _rank_key(name, seed))
    out: dict[str, list[str]] = {}
    start = 0
    for k in fractions:
        out[k] = sorted(ordered[start : start + counts[k]])
        start += counts[k]
    return out
