"""Paired comparisons that carry their uncertainty.

Runs of the same seed start from the same initial weights and see the data in the same
order, so two settings compared seed by seed form pairs. For the per-seed differences
d_1..d_n the mean difference gets a Student-t 95% interval,
``mean ± t_{0.975, n-1} * sd / sqrt(n)`` (sd with n-1 in the denominator). The verdict
follows the interval: above 0 "helps", below 0 "hurts", otherwise no difference is
detectable at this budget and seed count. One pair has no interval.
"""
from __future__ import annotations

import math
from typing import Dict, Sequence

# Two-sided 95% quantiles of Student's t, t_{0.975, df}, df = 1..30; above 30 the normal 1.96 is
# within 2% of it.
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)

HELPS, HURTS, NONE = "helps", "hurts", "no difference detectable at this budget and seed count"


def t975(df: int) -> float:
    if df < 1:
        raise ValueError(f"need at least 2 pairs for an interval, got df={df}")
    return T975[df - 1] if df <= len(T975) else 1.96


def paired_interval(differences: Sequence[float]) -> Dict:
    """Mean of paired differences, its 95% t interval and the verdict.

    Returns ``{'n', 'differences', 'mean', 'low', 'high', 'verdict'}``; ``low`` and
    ``high`` are NaN for a single pair (and the verdict is then "no difference detectable").
    """
    d = [float(x) for x in differences if x is not None and not math.isnan(x)]
    n = len(d)
    if n == 0:
        return {"n": 0, "differences": [], "mean": math.nan, "low": math.nan, "high": math.nan, "verdict": NONE}
    mean = sum(d) / n
    if n == 1:
        return {"n": 1, "differences": d, "mean": mean, "low": math.nan, "high": math.nan, "verdict": NONE}
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    half = t975(n - 1) * sd / math.sqrt(n)
    low, high = mean - half, mean + half
    verdict = HELPS if low > 0 else HURTS if high < 0 else NONE
    return {"n": n, "differences": d, "mean": mean, "low": low, "high": high, "verdict": verdict}
