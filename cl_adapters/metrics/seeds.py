"""Uncertainty over seeds: a mean's 95% confidence interval and whether two rows differ beyond the noise."""

from __future__ import annotations

import statistics

from scipy import stats

NOISE = 0.05  # rows whose means differ with Welch's p >= NOISE are within the noise


def mean_ci(values: list) -> tuple[float | None, float | None]:
    """(mean, half-width of its 95% confidence interval: Student's t over the seeds); None where undefined."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    if len(values) < 2:
        return statistics.mean(values), None
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    return statistics.mean(values), float(half)


def within_noise(a: list[float], b: list[float]) -> bool:
    """Whether two rows' seeds cannot tell their means apart: Welch's t-test p >= NOISE (fewer than two seeds:
    never told apart; no spread in either: only equal means are)."""
    if len(a) < 2 or len(b) < 2:
        return True
    if statistics.pstdev(a) == 0 and statistics.pstdev(b) == 0:
        return statistics.mean(a) == statistics.mean(b)
    return bool(stats.ttest_ind(a, b, equal_var=False).pvalue >= NOISE)
