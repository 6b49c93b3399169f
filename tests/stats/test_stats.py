"""roboloop.stats: intervals, exact tests and Holm against reference values; pure statistics (no catalog)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from roboloop.stats.exact import mcnemar_exact
from roboloop.stats.intervals import newcombe_diff, newcombe_paired_diff, wilson
from roboloop.stats.multiplicity import holm

STATS_MODULES = ("roboloop.stats", "roboloop.stats.intervals", "roboloop.stats.exact", "roboloop.stats.multiplicity", "roboloop.stats.sequential")
ALLOWED = {"roboloop", "roboloop.schema", "roboloop.errors", "roboloop.config", *STATS_MODULES}


def test_stats_imports_nothing_below_its_floor():
    code = (
        "import sys\n"
        f"for m in {STATS_MODULES!r}: __import__(m)\n"
        "print(' '.join(sorted(m for m in sys.modules if m == 'roboloop' or m.startswith('roboloop.'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert set(out) <= ALLOWED, f"stats pulled in {sorted(set(out) - ALLOWED)}"


# --- statistics against reference values ----------------------------------------------------------

@pytest.mark.parametrize(
    "k,n,low,high",
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)],
)
def test_wilson_matches_published_values(k, n, low, high):
    lo, hi = wilson(k, n)
    assert lo == pytest.approx(low, abs=5e-5) and hi == pytest.approx(high, abs=5e-5)


def test_wilson_matches_scipy_and_edges():
    from scipy.stats import binomtest

    for k, n in [(0, 1), (1, 1), (3, 7), (29, 30), (30, 30), (500, 1000)]:
        ref = binomtest(k, n).proportion_ci(method="wilson", confidence_level=0.9)
        lo, hi = wilson(k, n, confidence=0.9)
        assert lo == pytest.approx(ref.low, abs=1e-12) and hi == pytest.approx(ref.high, abs=1e-12)
    assert wilson(0, 0) == (0.0, 1.0)
    assert wilson(5, 5)[1] == 1.0 and wilson(0, 5)[0] == 0.0
    with pytest.raises(ValueError):
        wilson(3, 2)


def test_mcnemar_exact_by_hand():
    # 10 vs 2 discordant pairs: p = 2 * P(X <= 2 | 12, 1/2) = 2 * (1 + 12 + 66) / 4096
    assert mcnemar_exact(10, 2) == pytest.approx(158 / 4096, rel=1e-12)
    assert mcnemar_exact(2, 10) == pytest.approx(158 / 4096, rel=1e-12)
    # 0 vs 5: 2 * (1/2)^5
    assert mcnemar_exact(0, 5) == pytest.approx(0.0625, rel=1e-12)
    assert mcnemar_exact(3, 3) == pytest.approx(1.0)
    assert mcnemar_exact(0, 0) == 1.0


def test_newcombe_difference_published():
    d, lo, hi = newcombe_diff(56, 70, 48, 80)
    assert d == pytest.approx(0.2)
    assert lo == pytest.approx(0.0524, abs=5e-5) and hi == pytest.approx(0.3339, abs=5e-5)


def test_newcombe_paired_basic_properties():
    d, lo, hi = newcombe_paired_diff(12, 9, 2, 21)
    assert d == pytest.approx(7 / 44)
    assert lo < d < hi and -1 <= lo and hi <= 1
    # identical outcomes: zero difference, interval contains 0 and is narrower than unpaired
    d, lo, hi = newcombe_paired_diff(15, 0, 0, 15)
    _, ulo, uhi = newcombe_diff(15, 30, 15, 30)
    assert d == 0 and lo <= 0 <= hi and (hi - lo) < (uhi - ulo)


def test_holm_by_hand():
    # sorted: .005*4=.02, .01*3=.03, .03*2=.06, .04*1=.04 -> monotone .06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([None, 0.5]) == [None, 0.5]


def test_wilson_reference_values():
    assert wilson(0, 30) == pytest.approx((0.0, 0.11351), abs=1e-4)
    assert wilson(15, 30) == pytest.approx((0.33153, 0.66847), abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)
