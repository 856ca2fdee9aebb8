"""Statistics: t intervals, AUC, Holm, paired tests on synthetic data with known effects."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from activemri.evaluation.stats import holm, mean_ci, normalized_auc, paired_tests


def test_mean_ci_matches_the_t_interval() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(0.7, 0.05, size=(12, 3))
    mean, low, high, n = mean_ci(values)
    for j in range(3):
        col = values[:, j]
        expected = stats.t.interval(0.95, len(col) - 1, loc=col.mean(), scale=stats.sem(col))
        assert mean[j] == pytest.approx(col.mean())
        assert (low[j], high[j]) == pytest.approx(expected)
    assert n.tolist() == [12, 12, 12]


def test_mean_ci_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(1)
    draws = rng.normal(0.5, 0.1, size=(10, 4000))  # 4000 experiments of 10 slices
    _, low, high, _ = mean_ci(draws)
    coverage = np.mean((low <= 0.5) & (high >= 0.5))
    assert 0.935 < coverage < 0.965


def test_mean_ci_ignores_missing_values_and_needs_two_samples() -> None:
    values = np.array([[1.0, 2.0], [3.0, np.nan], [5.0, np.nan]])
    mean, low, high, n = mean_ci(values)
    assert mean.tolist() == [3.0, 2.0]
    assert n.tolist() == [3, 1]
    assert np.isfinite(low[0]) and np.isnan(low[1]) and np.isnan(high[1])


def test_normalized_auc() -> None:
    lines = np.array([10, 11, 12, 14])
    assert normalized_auc(lines, np.full((1, 4), 0.8))[0] == pytest.approx(0.8)
    ramp = (lines - 10) / 4.0
    assert normalized_auc(lines, ramp[None])[0] == pytest.approx(0.5)  # linear: the midpoint
    values = np.array([[0.0, 1.0, 1.0, 0.0]])
    # trapezoids: (0+1)/2*1 + (1+1)/2*1 + (1+0)/2*2 = 2.5 over a span of 4
    assert normalized_auc(lines, values)[0] == pytest.approx(2.5 / 4)
    assert normalized_auc(np.array([7]), np.array([[0.3]]))[0] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="increase"):
        normalized_auc(np.array([3, 3]), np.zeros((1, 2)))


def test_holm_adjustment() -> None:
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1 -> max(0.06, 0.04)
    assert adjusted.tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.9, 0.8]).tolist() == [1.0, 1.0]


def test_paired_tests_find_a_known_difference_and_only_it() -> None:
    rng = np.random.default_rng(2)
    keys = [("f", i) for i in range(30)]
    base = rng.uniform(0.5, 0.9, size=30)  # slice difficulty: shared by every policy
    better = base + 0.02 + rng.normal(0, 0.005, size=30)
    same = base + rng.normal(0, 0.005, size=30)
    values = {
        "better": dict(zip(keys, better, strict=True)),
        "base": dict(zip(keys, base, strict=True)),
        "same": dict(zip(keys, same, strict=True)),
        "few": dict(zip(keys[:5], base[:5] + 0.02, strict=True)),
    }
    tests = {(t.a, t.b): t for t in paired_tests(values)}
    assert len(tests) == 6
    t = tests[("better", "base")]
    assert t.significant and t.better == "better" and t.n == 30 and t.wins >= 28
    assert t.ci_low < 0.02 < t.ci_high
    assert tests[("better", "same")].significant
    assert not tests[("base", "same")].significant and tests[("base", "same")].better == ""
    assert tests[("base", "few")].n == 5  # paired on the common slices only
    for t in tests.values():
        assert 0 <= t.p_value <= t.p_holm <= 1


def test_paired_tests_skip_disjoint_policies_and_identical_values() -> None:
    values = {"a": {1: 0.5, 2: 0.6}, "b": {3: 0.5}, "c": {1: 0.5, 2: 0.6}}
    tests = {(t.a, t.b): t for t in paired_tests(values)}
    assert set(tests) == {("a", "c")}
    assert tests[("a", "c")].p_value == 1.0 and not tests[("a", "c")].significant
