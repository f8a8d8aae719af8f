"""Success-rate statistics: the Wilson score interval and the per-run summary numbers.

Wilson rather than the normal approximation because our trial counts are small and rates often sit near 0 or 1,
where p +- 1.96 sqrt(p(1-p)/n) collapses to zero width or leaves [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval (no continuity correction) for `successes` out of `trials`.

    Returns (low, high) within [0, 1]; (0.0, 1.0) when there are no trials (nothing is known).
    """
    if trials < 0 or not 0 <= successes <= max(trials, 0):
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if trials == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / trials
    z2n = z * z / trials
    centre = (p + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * math.sqrt(p * (1 - p) / trials + z2n / (4 * trials))
    # The exact bounds at 0/n and n/n are 0 and 1; floating point leaves ~1e-17 of noise there.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


def difference_interval(successes_a: int, trials_a: int, successes_b: int, trials_b: int,
                        confidence: float = 0.95) -> tuple[float, float]:
    """Interval for rate_a - rate_b from the two Wilson intervals: Newcombe's hybrid score method (Newcombe 1998,
    "Interval estimation for the difference between independent proportions", method 10). Unlike the Wald
    interval it stays inside [-1, 1] and keeps its coverage when a rate is near 0 or 1."""
    p_a, p_b = successes_a / trials_a, successes_b / trials_b
    low_a, high_a = wilson_interval(successes_a, trials_a, confidence)
    low_b, high_b = wilson_interval(successes_b, trials_b, confidence)
    d = p_a - p_b
    return (d - math.sqrt((p_a - low_a) ** 2 + (high_b - p_b) ** 2),
            d + math.sqrt((high_a - p_a) ** 2 + (p_b - low_b) ** 2))


@dataclass(frozen=True)
class SuccessRate:
    """k successes in n trials with its Wilson interval."""

    successes: int
    trials: int
    confidence: float = 0.95

    @property
    def rate(self) -> float:
        return self.successes / self.trials if self.trials else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.successes, self.trials, self.confidence)

    def to_dict(self) -> dict:
        low, high = self.interval
        return {"successes": self.successes, "episodes": self.trials, "rate": self.rate,
                "ci_low": low, "ci_high": high, "confidence": self.confidence}

    def __str__(self) -> str:
        low, high = self.interval
        return (f"{self.rate:.1%} ({self.successes}/{self.trials}, "
                f"{self.confidence:.0%} CI {low:.1%}-{high:.1%})")


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated q-th percentile (0-100) of a non-empty list; nan when empty."""
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)
