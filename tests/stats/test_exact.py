"""roboloop.stats.exact: the exact McNemar and Fisher p-values are the exact sums, correctly rounded (against a
brute-force sum over the support in integers), and scipy.stats' binomtest / fisher_exact (whose import the module avoids)."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from scipy.stats import binomtest
from scipy.stats import fisher_exact as scipy_fisher

from roboloop.stats.exact import fisher_exact, mcnemar_exact

TIE = (10**7 + 1, 10**7)
"""The textbook rule (R's binom.test and fisher.test): outcomes with pmf <= observed * (1 + 1e-7) count. On these grids
every near-tie is an exact tie, where it agrees with scipy's rule."""


def _two_sided(weights: dict[int, int], total: int, observed: int) -> float:
    """The sum of every weight no larger than the observed one (brute force over the support) over the total, capped
    at 1: exact integers, one correctly rounded division."""
    top = weights[observed] * TIE[0]
    return min(1.0, sum(w for w in weights.values() if w * TIE[1] <= top) / total)


def _binomial(n: int) -> tuple[dict[int, int], int]:
    weights, w = {}, 1
    for x in range(n + 1):  # comb(n, x), built up (math.comb per x is slow at n = 4000)
        weights[x] = w
        w = w * (n - x) // (x + 1)
    return weights, 2**n


def _hypergeometric(k1: int, n1: int, k2: int, n2: int) -> tuple[dict[int, int], int]:
    draws = k1 + k2
    lo, hi = max(0, draws - n2), min(n1, draws)
    weights = {lo: math.comb(n1, lo) * math.comb(n2, draws - lo)}
    for x in range(lo, hi):  # comb(n1, x) * comb(n2, draws - x), built up
        weights[x + 1] = weights[x] * (n1 - x) * (draws - x) // ((x + 1) * (n2 - draws + x + 1))
    return weights, math.comb(n1 + n2, draws)


def test_mcnemar_is_the_exact_binomial_sum_correctly_rounded():
    for n in range(1, 41):
        weights, total = _binomial(n)
        for k in range(n + 1):
            assert mcnemar_exact(k, n - k) == _two_sided(weights, total, k), (k, n)
    assert mcnemar_exact(0, 0) == 1.0
    with pytest.raises(ValueError, match=">= 0"):
        mcnemar_exact(-1, 3)


def test_fisher_is_the_exact_hypergeometric_sum_correctly_rounded():
    for n1 in range(1, 10):
        for n2 in range(1, 10):
            for k1 in range(n1 + 1):
                for k2 in range(n2 + 1):
                    assert fisher_exact(k1, n1, k2, n2) == _two_sided(*_hypergeometric(k1, n1, k2, n2), k1), (k1, n1, k2, n2)
    assert fisher_exact(3, 0, 2, 5) == 1.0
    with pytest.raises(ValueError, match="successes"):
        fisher_exact(6, 5, 2, 5)


def test_large_n_exact_sums():
    """Deep tails and p near 1 at thousands of pairs: the bounded tail sums give the exact value all the same."""
    for k, n in ((1900, 4000), (1990, 4001), (1500, 4000), (100, 3000)):
        assert mcnemar_exact(k, n - k) == _two_sided(*_binomial(n), k), (k, n)
    for k1, n1, k2, n2 in ((300, 1000, 360, 1000), (500, 1000, 501, 1000), (20, 700, 9, 300)):
        assert fisher_exact(k1, n1, k2, n2) == _two_sided(*_hypergeometric(k1, n1, k2, n2), k1), (k1, n1, k2, n2)


@pytest.mark.parametrize("n", [7, 30, 101, 1000, 17443])  # 17,443: the largest the analysis benchmark compares
def test_mcnemar_matches_scipy_binomtest(n):
    for k in sorted({0, 1, n // 10, n // 3, n // 2 - 40, n // 2 - 1, n // 2, n // 2 + 1, n - 1, n} & set(range(n + 1))):
        expected = binomtest(k, n, 0.5).pvalue
        assert mcnemar_exact(k, n - k) == pytest.approx(expected, rel=1e-12, abs=1e-300), (k, n)


@pytest.mark.parametrize("n1,n2", [(5, 9), (40, 40), (300, 250), (5000, 5000), (12000, 10000)])
def test_fisher_matches_scipy(n1, n2):
    for f1, f2 in ((0.1, 0.1), (0.5, 0.45), (0.3, 0.32), (0.9, 0.7), (0.0, 0.02), (1.0, 0.99)):
        k1, k2 = round(f1 * n1), round(f2 * n2)
        expected = scipy_fisher([[k1, n1 - k1], [k2, n2 - k2]]).pvalue
        assert fisher_exact(k1, n1, k2, n2) == pytest.approx(expected, rel=1e-12, abs=1e-300), (k1, n1, k2, n2)


def test_exact_tests_do_not_import_scipy():
    code = "import sys; import roboloop.stats.exact; print(any(m.split('.')[0] == 'scipy' for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
