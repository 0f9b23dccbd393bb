"""Summary statistics over sequences: mean, median, sample standard deviation and the confidence interval
of the mean, ``mean +- t(0.975, n - 1) * std / sqrt(n)`` (Student t, `t_quantile`)."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np


@functools.lru_cache(maxsize=256)
def t_quantile(prob: float, df: int) -> float:
    """Quantile of Student's t distribution with `df` degrees of freedom (0.5 < prob < 1).

    df = 1 is the Cauchy closed form; otherwise the CDF is integrated numerically (composite Simpson
    on the density, 4000 intervals) and inverted by bisection, accurate to about 1e-9.
    """
    if not 0.5 < prob < 1.0:
        raise ValueError(f"t_quantile: prob must be in (0.5, 1), got {prob}")
    if df < 1:
        raise ValueError(f"t_quantile: df must be >= 1, got {df}")
    if df == 1:
        return math.tan(math.pi * (prob - 0.5))
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    simpson = np.ones(4001)
    simpson[1:-1:2], simpson[2:-1:2] = 4.0, 2.0

    def central(x: float) -> float:  # P(0 < T < x)
        t = np.linspace(0.0, x, 4001)
        density = np.exp(log_c - (df + 1) / 2 * np.log1p(t * t / df))
        return float(simpson @ density) * x / 4000 / 3

    lo, hi = 0.0, 1.0
    while central(hi) < prob - 0.5:
        hi *= 2
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if central(mid) < prob - 0.5 else (lo, mid)
    return 0.5 * (lo + hi)


def summary_stats(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """n, mean, median, sample std (ddof 1) and the t confidence interval of the mean.

    With one value the std and the interval are NaN.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("summary_stats: no values")
    n = int(v.size)
    mean = float(v.mean())
    out = {"n": n, "mean": mean, "median": float(np.median(v)), "std": math.nan,
           "ci_low": math.nan, "ci_high": math.nan}
    if n > 1:
        std = float(v.std(ddof=1))
        half = t_quantile(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
        out.update(std=std, ci_low=mean - half, ci_high=mean + half)
    return out
