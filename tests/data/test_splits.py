from __future__ import annotations

import pytest

from activemri.data import split_volumes

NAMES = [f"file{i:04d}.h5" for i in range(50)]


def test_split_partitions_and_counts():
    splits = split_volumes(NAMES, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=0)
    assert [len(v) for v in splits.values()] == [40, 5, 5]
    flat = [n for v in splits.values() for n in v]
    assert sorted(flat) == sorted(NAMES)


def test_split_is_deterministic_and_seeded():
    a = split_volumes(NAMES, seed=1)
    assert a == split_volumes(list(reversed(NAMES)), seed=1)  # input order does not matter
    assert a != split_volumes(NAMES, seed=2)


def test_adding_a_volume_moves_few_others():
    before = split_volumes(NAMES, seed=0)
    after = split_volumes([*NAMES, "new.h5"], seed=0)
    moved = sum(1 for k in before for n in before[k] if n not in after[k])
    assert moved <= 2


def test_small_sets_give_every_split_a_volume():
    splits = split_volumes(["a", "b", "c"], seed=0)
    assert all(len(v) == 1 for v in splits.values())


def test_split_validation():
    with pytest.raises(ValueError, match="sum to 1"):
        split_volumes(NAMES, {"train": 0.5, "val": 0.1})
    with pytest.raises(ValueError, match="unique"):
        split_volumes(["a", "a"])
    with pytest.raises(ValueError, match="non-negative"):
        split_volumes(NAMES, {"train": 1.5, "val": -0.5})
