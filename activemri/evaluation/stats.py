"""Statistics of evaluation results: confidence intervals, SSIM AUC, paired tests.

Conventions (written into every ``results.json``):

- Confidence intervals are two-sided Student-t intervals of the mean across slices,
  ``mean ± t(1 - (1 - level) / 2, n - 1) · sd / sqrt(n)`` with the sample standard deviation.
- The normalized AUC of a metric is the trapezoidal area under metric-versus-lines-acquired
  from the initial mask to the budget, divided by the span of lines: the mean metric over the
  episode, in the metric's units (SSIM AUC lies in [0, 1]).
- Paired tests compare per-slice values of two policies on the slices both were run on:
  Wilcoxon signed-rank (two-sided, zero differences dropped, ``scipy.stats.wilcoxon``), with
  Holm's step-down correction over every pair of one family (preset and budget).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from activemri.metrics import normalized_auc

__all__ = [
    "PairedTest",
    "holm",
    "mean_ci",
    "normalized_auc",
    "paired_tests",
]


def mean_ci(
    values: np.ndarray, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean and Student-t confidence interval along axis 0, ignoring NaNs.

    Args:
        values: ``(N, ...)`` samples (NaN marks a missing value).
        level: Confidence level.

    Returns:
        ``(mean, low, high, n)``, each of shape ``values.shape[1:]``; the interval is NaN
        where fewer than two samples exist.
    """
    values = np.asarray(values, dtype=np.float64)
    n = np.sum(np.isfinite(values), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nansum(values, axis=0) / n
        centered = np.where(np.isfinite(values), values - mean, 0.0)
        sd = np.sqrt(np.sum(centered**2, axis=0) / (n - 1))
        half = stats.t.ppf(0.5 + level / 2, n - 1) * sd / np.sqrt(n)
    half = np.where(n >= 2, half, np.nan)
    return mean, mean - half, mean + half, n


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control), in input order."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


@dataclass(frozen=True)
class PairedTest:
    """One paired comparison ``a - b`` of per-slice values.

    Attributes:
        a: First policy.
        b: Second policy.
        n: Slices both were run on.
        mean_difference: Mean of ``a - b``.
        ci_low: Lower end of its confidence interval.
        ci_high: Upper end.
        median_difference: Median of ``a - b``.
        wins: Slices where ``a > b``.
        statistic: Wilcoxon signed-rank statistic.
        p_value: Two-sided p-value.
        p_holm: Holm-adjusted p-value within the family.
        significant: ``p_holm < alpha``.
        better: ``a``, ``b``, or ``""`` when not significant.
    """

    a: str
    b: str
    n: int
    mean_difference: float
    ci_low: float
    ci_high: float
    median_difference: float
    wins: int
    statistic: float
    p_value: float
    p_holm: float
    significant: bool
    better: str

    def to_dict(self) -> dict[str, object]:
        """Plain-JSON fields."""
        return asdict(self)


def _wilcoxon(diff: np.ndarray) -> tuple[float, float]:
    if diff.size == 0 or not np.any(diff != 0):
        return 0.0, 1.0
    result = stats.wilcoxon(diff, zero_method="wilcox", alternative="two-sided")
    return float(result.statistic), float(result.pvalue)


def paired_tests(
    values: Mapping[str, Mapping[Any, float]], level: float = 0.95, alpha: float = 0.05
) -> list[PairedTest]:
    """Every pair of policies, compared on their common slices, Holm-corrected together.

    Args:
        values: Per policy (in report order), per-slice value keyed by slice identity.
        level: Confidence level of the mean difference's interval.
        alpha: Family-wise significance level.

    Returns:
        One test per pair ``(a, b)`` with ``a`` before ``b`` in ``values``' order (pairs
        without common slices are left out).
    """
    raw = []
    for a, b in itertools.combinations(values, 2):
        common = sorted(set(values[a]) & set(values[b]), key=repr)
        if not common:
            continue  # run on disjoint slices: nothing to pair
        diff = np.array([values[a][k] - values[b][k] for k in common], dtype=np.float64)
        mean, low, high, _ = mean_ci(diff[:, None], level)
        statistic, p = _wilcoxon(diff)
        median = float(np.median(diff))
        raw.append(
            (a, b, diff, float(mean[0]), float(low[0]), float(high[0]), median, statistic, p)
        )
    adjusted = holm([r[-1] for r in raw]) if raw else np.empty(0)
    tests = []
    for (a, b, diff, diff_mean, diff_low, diff_high, median, statistic, p), p_adj in zip(
        raw, adjusted, strict=True
    ):
        significant = bool(p_adj < alpha)
        better = (a if diff_mean > 0 else b) if significant else ""
        tests.append(
            PairedTest(
                a,
                b,
                int(diff.size),
                diff_mean,
                diff_low,
                diff_high,
                median,
                int(np.sum(diff > 0)),
                statistic,
                p,
                float(p_adj),
                significant,
                better,
            )
        )
    return tests
