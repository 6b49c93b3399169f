"""Confidence intervals of a rate and of a difference of two rates (score intervals, closed form).

* :func:`wilson`: the Wilson score interval of k successes in n (equal to
  ``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``).
* :func:`newcombe_diff`: Newcombe's hybrid score interval for the difference of two
  independent proportions (Newcombe 1998, Stat Med 17:873, method 10).
* :func:`newcombe_paired_diff`: Newcombe's square-and-add interval for a paired difference,
  with the continuity-corrected correlation (Newcombe 1998, Stat Med 17:2635; Fagerland,
  Lydersen & Laake 2014, Stat Med 33:2850).
"""

from __future__ import annotations

import math
from statistics import NormalDist

__all__ = ["newcombe_diff", "newcombe_paired_diff", "wilson", "z_score"]


def z_score(confidence: float) -> float:
    """The two-sided normal quantile of `confidence` (1.96 at 0.95)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials; (0, 1) when n = 0."""
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return (0.0, 1.0)
    z = z_score(confidence)
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return (low, high)


def newcombe_diff(k1: int, n1: int, k2: int, n2: int, confidence: float = 0.95) -> tuple[float, float, float]:
    """p1 - p2 for independent samples and Newcombe's hybrid score interval: (diff, low, high)."""
    if n1 == 0 or n2 == 0:
        return (float("nan"), -1.0, 1.0)
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1, confidence)
    l2, u2 = wilson(k2, n2, confidence)
    d = p1 - p2
    return (d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))


def newcombe_paired_diff(both: int, only1: int, only2: int, neither: int, confidence: float = 0.95) -> tuple[float, float, float]:
    """p1 - p2 for paired binary outcomes and Newcombe's square-and-add interval: (diff, low, high).

    `both` = pairs where 1 and 2 succeed, `only1` = 1 succeeds and 2 fails, `only2` the
    reverse, `neither` = both fail.

    The Wilson score intervals of the two marginal rates are combined by square-and-add
    with the correlation phi of the 2x2 table, **continuity-corrected** (Newcombe 1998,
    Stat Med 17:2635, score-based method; as in Altman et al., Statistics with Confidence,
    2000, and the "Newcombe square-and-add" interval of Fagerland, Lydersen & Laake 2014,
    Stat Med 33:2850). With ``A = both * neither - only1 * only2``: phi = (A - n/2) /
    sqrt(margins) when A > n/2, 0 when 0 <= A <= n/2, A / sqrt(margins) when A < 0, and 0
    when a margin is empty.

    Coverage: the uncorrected phi made the interval collapse to zero width when there
    are no discordant pairs ((15, 0, 0, 15) gave [0, 0]) and its exact coverage fell to
    0.68 at n = 20. With the corrected phi the exact coverage, enumerated over every
    outcome on a grid of cell probabilities, has a minimum of 0.91 and a mean of 0.955 at
    n = 20 (0.86 and 0.96 at n = 10; ``tests/reliability/test_hostile_inputs.py`` enumerates it).
    Like every asymptotic interval it does not reach the nominal level at every setting;
    the dips are at the edges (a kind of pair that never occurs).
    """
    a, b, c, d = both, only1, only2, neither
    if min(a, b, c, d) < 0:
        raise ValueError(f"pair counts must be >= 0, got {(a, b, c, d)}")
    n = a + b + c + d
    if n == 0:
        return (float("nan"), -1.0, 1.0)
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson(a + b, n, confidence)
    l2, u2 = wilson(a + c, n, confidence)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    cross = a * d - b * c
    if margins == 0 or 0 <= cross <= n / 2:
        phi = 0.0
    elif cross > n / 2:
        phi = (cross - n / 2) / math.sqrt(margins)
    else:
        phi = cross / math.sqrt(margins)
    diff = p1 - p2
    dl = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    du = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return (diff, max(-1.0, diff - dl), min(1.0, diff + du))
