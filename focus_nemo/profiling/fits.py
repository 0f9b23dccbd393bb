"""Power-law fits of time and memory against length on log-log axes (`fit_power_law`, `loglog_slope`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PowerLaw:
    """y = coefficient * x ** exponent, fitted on `lengths`."""

    exponent: float
    coefficient: float
    lengths: tuple[int, ...]

    def __call__(self, x: float) -> float:
        return self.coefficient * x ** self.exponent


def fit_power_law(xs: Sequence[float], ys: Sequence[float | None], min_x: float = 0) -> PowerLaw | None:
    """Least squares of log y on log x over points with x >= `min_x` and y > 0 (None: < 2 distinct x)."""
    pts = [(x, y) for x, y in zip(xs, ys, strict=True) if x >= min_x and y is not None and y > 0]
    if len({x for x, _ in pts}) < 2:
        return None
    lx, ly = [math.log(x) for x, _ in pts], [math.log(y) for _, y in pts]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    slope = sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum((a - mx) ** 2 for a in lx)
    return PowerLaw(slope, math.exp(my - slope * mx), tuple(x for x, _ in pts))


def loglog_slope(xs: Sequence[float], ys: Sequence[float | None]) -> float | None:
    """The exponent of `fit_power_law` over all points."""
    fit = fit_power_law(xs, ys)
    return None if fit is None else fit.exponent
