"""Exact two-sided tests of two success rates (scipy): paired (McNemar) and independent (Fisher)."""

from __future__ import annotations

from scipy.stats import binomtest
from scipy.stats import fisher_exact as _scipy_fisher_exact

__all__ = ["fisher_exact", "mcnemar_exact"]


def mcnemar_exact(only1: int, only2: int) -> float:
    """Exact McNemar p-value (two-sided): a binomial test of the discordant pairs against 1/2.

    `only1` = pairs where only the first succeeded, `only2` = only the second; 1.0 when
    there are no discordant pairs.
    """
    only1, only2 = int(only1), int(only2)
    if only1 < 0 or only2 < 0:
        raise ValueError(f"discordant counts must be >= 0, got {only1}, {only2}")
    n = only1 + only2
    if n == 0:
        return 1.0
    return float(binomtest(only1, n, 0.5, alternative="two-sided").pvalue)


def fisher_exact(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided Fisher exact test of two independent proportions (k1 of n1 against k2 of n2)."""
    if n1 == 0 or n2 == 0:
        return 1.0
    return float(_scipy_fisher_exact([[k1, n1 - k1], [k2, n2 - k2]], alternative="two-sided").pvalue)
