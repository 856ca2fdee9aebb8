from __future__ import annotations

import numpy as np
import pytest

from activemri.masks import (
    MASK_TYPES,
    center_block,
    lines_for_acceleration,
    make_mask,
    random_mask,
    volume_seed,
)

FASTMRI_SEMANTICS = {"random_fastmri", "equispaced_fastmri"}  # counts are not exact


@pytest.mark.parametrize("mask_type", sorted(MASK_TYPES))
@pytest.mark.parametrize("width", [31, 36, 368])
def test_count_acs_and_valid_columns(mask_type, width):
    valid = np.ones(width, dtype=bool)
    valid[:2] = valid[-3:] = False
    lines, acs = width // 4, max(2, width // 12)
    for seed in range(5):
        mask, n_low = make_mask(mask_type, width, lines, acs, np.random.default_rng(seed), valid)
        assert mask.dtype == bool and mask.shape == (width,)
        assert n_low == acs
        assert (mask & center_block(width, acs)).sum() == acs
        assert not (mask & ~valid).any()
        if mask_type not in FASTMRI_SEMANTICS:
            assert mask.sum() == lines


@pytest.mark.parametrize("mask_type", sorted(set(MASK_TYPES) - {"low_to_high"}))
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


def test_fastmri_random_keeps_the_expected_count():
    counts = [
        random_mask(368, 92, 30, np.random.default_rng(s), exact=False)[0].sum() for s in range(400)
    ]
    assert abs(np.mean(counts) - 92) < 1.0 and np.std(counts) > 2  # expected, not exact


def test_fastmri_equispaced_uses_the_acceleration_as_spacing():
    mask, _ = make_mask("equispaced_fastmri", 368, 92, 0, np.random.default_rng(2))
    gaps = np.diff(np.flatnonzero(mask))
    assert set(gaps.tolist()) == {4}


def test_variable_density_prefers_low_frequencies():
    def mean_distance(mask_type):
        d = []
        for s in range(50):
            mask, _ = make_mask(mask_type, 128, 32, 4, np.random.default_rng(s))
            mask &= ~center_block(128, 4)
            d.extend(np.abs(np.flatnonzero(mask) - 64).tolist())
        return np.mean(d)

    uniform = mean_distance("random")
    assert mean_distance("variable_density") < 0.7 * uniform
    assert mean_distance("variable_density_polynomial") < 0.85 * uniform


def test_volume_seed_and_no_global_state():
    state = np.random.get_state()  # noqa: NPY002  (the global state must stay untouched)
    a = make_mask("random", 64, 16, 4, np.random.default_rng([0, volume_seed("file1.h5")]))[0]
    b = make_mask("random", 64, 16, 4, np.random.default_rng([0, volume_seed("file1.h5")]))[0]
    c = make_mask("random", 64, 16, 4, np.random.default_rng([0, volume_seed("file2.h5")]))[0]
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert volume_seed("file1.h5") == volume_seed("file1.h5") != volume_seed("file2.h5")
    after = np.random.get_state()  # noqa: NPY002
    assert all(np.array_equal(x, y) for x, y in zip(state, after, strict=True))
    assert lines_for_acceleration(334, 4) == 84 and lines_for_acceleration(3, 8) == 1
