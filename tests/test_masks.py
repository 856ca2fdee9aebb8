from __future__ import annotations

import numpy as np
import pytest

from activemri.masks import MASK_TYPES, center_block, make_mask


@pytest.mark.parametrize("mask_type", sorted(MASK_TYPES))
@pytest.mark.parametrize("width", [31, 36, 368])
def test_exact_count_acs_and_valid_columns(mask_type, width):
    valid = np.ones(width, dtype=bool)
    valid[:2] = valid[-3:] = False
    lines, acs = width // 4, max(2, width // 12)
    mask, n_low = make_mask(mask_type, width, lines, acs, np.random.default_rng(0), valid)
    assert mask.dtype == bool and mask.shape == (width,)
    assert mask.sum() == lines and n_low == acs
    assert (mask & center_block(width, acs)).sum() == acs
    assert not (mask & ~valid).any()


@pytest.mark.parametrize("mask_type", ["random", "equispaced"])
def test_deterministic_per_seed(mask_type):
    def draw(seed: int) -> np.ndarray:
        return make_mask(mask_type, 128, 32, 10, np.random.default_rng(seed))[0]

    assert np.array_equal(draw(3), draw(3))
    assert not np.array_equal(draw(3), draw(4))


def test_equispaced_is_evenly_spaced():
    mask, _ = make_mask("equispaced", 128, 32, 0, np.random.default_rng(1))
    gaps = np.diff(np.flatnonzero(mask))
    assert gaps.min() >= 3 and gaps.max() <= 5


@pytest.mark.parametrize(("width", "expected"), [(8, [4, 3, 5, 2]), (7, [3, 2, 4, 1])])
def test_low_to_high_alternates_from_the_center(width, expected):
    for n, col in enumerate(expected, start=1):
        mask, _ = make_mask("low_to_high", width, n, 0, np.random.default_rng(0))
        assert mask[col] and mask.sum() == n


def test_center_block_position_follows_fastmri():
    assert np.flatnonzero(center_block(10, 4)).tolist() == [3, 4, 5, 6]  # (10 - 4 + 1) // 2 = 3
    assert np.flatnonzero(center_block(9, 3)).tolist() == [3, 4, 5]


def test_mask_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="cannot acquire"):
        make_mask("random", 16, 20, 4, rng)
    with pytest.raises(ValueError, match="cannot acquire"):
        make_mask("random", 16, 2, 4, rng)
    with pytest.raises(ValueError, match="unknown mask type"):
        make_mask("spiral", 16, 8, 4, rng)
