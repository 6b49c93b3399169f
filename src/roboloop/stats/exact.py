"""Exact two-sided tests of two success rates: paired (McNemar) and independent (Fisher), in integer arithmetic.

**Definitions: scipy's.** :func:`mcnemar_exact` is ``scipy.stats.binomtest(k, n, 0.5).pvalue`` on the discordant
pairs, :func:`fisher_exact` is ``scipy.stats.fisher_exact(table).pvalue`` (both two-sided): the probability of the
observed tail, plus that of the outcomes on the other side of the mode no more likely than the observed one, "no more
likely" with scipy's relative tolerance (``pmf <= d * (1 + 1e-7)`` for the binomial test, ``pmf < d * (1 + 1e-14)``
for Fisher's, where a table as likely as the mode gives 1).

**Why not scipy.stats.** Importing it costs 0.5-2.5 s on this machine (it loads scipy.optimize, sparse, spatial,
integrate, ...): on its own half or more of the 1 s a cold ``roboloop compare`` on 100,000 rollouts may take (issue
25). These two p-values need only integers. (The fixed-n power and sample sizes of :mod:`roboloop.stats.sequential`,
where time does not matter, keep scipy.)

**How.** The probabilities are sums of exact integers (products of binomial coefficients, :func:`math.comb` and
their ratio recurrences) over an exact integer denominator (``2**n``, ``comb(n1 + n2, k1 + k2)``), and the p-value
is their quotient correctly rounded (Python's ``int / int``). Terms far out in a tail are bounded instead of summed:
both distributions are log-concave, so once the next term ``t`` has ratio ``r < 1`` to the one after it, the rest of
the tail is at most ``t / (1 - r)``; summing stops when the lower and the upper sum round to the same float, which
is then the correctly rounded exact p-value (about ``10 * sqrt(n)`` terms at most; the binomial coefficient of the
first term is the main cost: ~2 ms at n = 10,000, ~0.2 s at 100,000 discordant pairs).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction

__all__ = ["fisher_exact", "mcnemar_exact"]

BINOM_TOLERANCE = Fraction(1 + 1e-7)
"""scipy's ``binomtest``: an outcome counts as no more likely than the observed one when ``pmf <= d * (1 + 1e-7)``."""
FISHER_TOLERANCE = Fraction(1 + 1e-14)
"""scipy's ``fisher_exact``: the other tail holds the tables with ``pmf < d * (1 + 1e-14)``; one this close to the
mode's probability gives p = 1."""
FISHER_MODE_TOLERANCE = Fraction(1e-14)
"""scipy's ``fisher_exact``: p = 1 when the observed table's pmf is within this relative distance of the mode's."""


class _Tail:
    """One tail of integer weights, summed term by term away from the mode, with an upper bound on the rest.

    `ratio(x)` gives (numerator, denominator) of the next term over term `x` (moving outward, by `step`); `last` is
    the tail's last index. Log-concavity makes the ratios non-increasing outward, which is what the bound needs.
    """

    def __init__(self, first: int, x: int, last: int, step: int, ratio: Callable[[int], tuple[int, int]]) -> None:
        self.sum, self.term, self.x, self.last, self.step, self.ratio = 0, first, x, last, step, ratio
        self.done = False

    def add(self, terms: int) -> None:
        for _ in range(terms):
            if self.done:
                return
            self.sum += self.term
            if self.x == self.last:
                self.done = True
                return
            num, den = self.ratio(self.x)
            self.term = self.term * num // den  # exact: the next term is an integer
            self.x += self.step

    def upper(self) -> int | None:
        """The tail's sum is at most this (None: no bound yet, the terms are not decreasing)."""
        if self.done:
            return self.sum
        if self.x == self.last:
            return self.sum + self.term
        num, den = self.ratio(self.x)
        if num >= den:
            return None
        return self.sum + -(-self.term * den // (den - num))  # term / (1 - r), rounded up


def _quotient(tails: list[_Tail], denominator: int, *, scale: int = 1, exact: int = 0) -> float:
    """min(1, (scale * the tails' sums + exact) / denominator), correctly rounded: the tails are summed until their
    lower and upper sums round to the same float."""
    chunk = 32
    while True:
        for t in tails:
            t.add(chunk)
        low = min(1.0, (scale * sum(t.sum for t in tails) + exact) / denominator)
        uppers = [t.upper() for t in tails]
        if all(u is not None for u in uppers) and min(1.0, (scale * sum(uppers) + exact) / denominator) == low:
            return low
        chunk *= 2


def mcnemar_exact(only1: int, only2: int) -> float:
    """Exact McNemar p-value (two-sided): a binomial test of the discordant pairs against 1/2 (module docstring).

    `only1` = pairs where only the first succeeded, `only2` = only the second; 1.0 when
    there are no discordant pairs.
    """
    only1, only2 = int(only1), int(only2)
    if only1 < 0 or only2 < 0:
        raise ValueError(f"discordant counts must be >= 0, got {only1}, {only2}")
    n = only1 + only2
    if n == 0 or only1 == only2:
        return 1.0
    m = min(only1, only2)  # the observed tail is x <= m (at 1/2 the binomial is symmetric: pmf(x) = pmf(n - x))
    first = math.comb(n, m)
    # the other tail, mirrored onto x <= y: every x in (m, n // 2] within the tolerance of pmf(m) joins it
    y, term, extra = m, first, 0
    limit = BINOM_TOLERANCE * first
    while y + 1 <= n // 2:
        nxt = term * (n - y) // (y + 1)
        if nxt > limit:
            break
        y, term, extra = y + 1, nxt, extra + nxt
    # p = P(X <= m) + P(X <= y) = (2 * P(X <= m) + the terms in (m, y]) / 2**n
    return _quotient([_Tail(first, m, 0, -1, lambda x: (x, n - x + 1))], 1 << n, scale=2, exact=extra)


def fisher_exact(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided Fisher exact test of two independent proportions (k1 of n1 against k2 of n2), module docstring.

    The table is scipy's ``[[k1, n1 - k1], [k2, n2 - k2]]``: X, the successes of the first sample given all
    `k1 + k2` successes, is hypergeometric.
    """
    k1, n1, k2, n2 = int(k1), int(n1), int(k2), int(n2)
    if n1 == 0 or n2 == 0:
        return 1.0
    if min(k1, n1 - k1, k2, n2 - k2) < 0:
        raise ValueError(f"successes must lie in 0..n, got {k1} of {n1} and {k2} of {n2}")
    h = _Hypergeometric(n1, n2, k1 + k2)
    if h.lo == h.hi:
        return 1.0
    observed = h.weight(k1)
    if h.as_likely_as_mode(k1, observed):
        return 1.0
    limit = FISHER_TOLERANCE * observed
    log_limit = h.log_weight(k1) + math.log1p(1e-14)
    if k1 < h.mode:  # observed tail x <= k1; the other: x > mode with weight < limit
        tails = [_Tail(observed, k1, h.lo, -1, h.down)]
        near = h.boundary(h.hi, lambda w: w < limit, log_limit)
        if near is not None:
            tails.append(_Tail(near[1], near[0], h.hi, 1, h.up))
    else:  # observed tail x >= k1; the other: x < mode with weight <= limit
        tails = [_Tail(observed, k1, h.hi, 1, h.up)]
        near = h.boundary(h.lo, lambda w: w <= limit, log_limit)
        if near is not None:
            tails.append(_Tail(near[1], near[0], h.lo, -1, h.down))
    return _quotient(tails, math.comb(n1 + n2, k1 + k2))


class _Hypergeometric:
    """X = successes of the first sample (n1) among `draws` successes of n1 + n2: integer weights
    ``comb(n1, x) * comb(n2, draws - x)`` (the pmf times ``comb(n1 + n2, draws)``) on ``lo..hi``."""

    def __init__(self, n1: int, n2: int, draws: int) -> None:
        self.n1, self.n2, self.draws = n1, n2, draws
        self.lo, self.hi = max(0, draws - n2), min(n1, draws)
        self.mode = (draws + 1) * (n1 + 1) // (n1 + n2 + 2)

    def weight(self, x: int) -> int:
        return math.comb(self.n1, x) * math.comb(self.n2, self.draws - x)

    def log_weight(self, x: int) -> float:
        """log(weight(x)) in floating point (only to guess where to look)."""
        n1, n2, d = self.n1, self.n2, self.draws
        lg = math.lgamma
        return lg(n1 + 1) - lg(x + 1) - lg(n1 - x + 1) + lg(n2 + 1) - lg(d - x + 1) - lg(n2 - d + x + 1)

    def up(self, x: int) -> tuple[int, int]:
        """weight(x + 1) / weight(x)."""
        return (self.n1 - x) * (self.draws - x), (x + 1) * (self.n2 - self.draws + x + 1)

    def down(self, x: int) -> tuple[int, int]:
        """weight(x - 1) / weight(x)."""
        return x * (self.n2 - self.draws + x), (self.n1 - x + 1) * (self.draws - x + 1)

    def as_likely_as_mode(self, x: int, w: int) -> bool:
        """scipy's first case: weight(mode) - w <= 1e-14 * weight(mode). The weights grow towards the mode, so the walk
        there stops at the first weight above w / (1 - 1e-14)."""
        bound = w / (1 - FISHER_MODE_TOLERANCE)
        step, ratio = (1, self.up) if self.mode > x else (-1, self.down)
        while x != self.mode:
            num, den = ratio(x)
            w, x = w * num // den, x + step
            if w > bound:
                return False
        return True

    def boundary(self, end: int, beyond: Callable[[int], bool], log_limit: float) -> tuple[int, int] | None:
        """(x, weight(x)) of the first x from the mode towards `end` whose weight is `beyond` the limit; None when no
        weight is. The weights fall away from the mode: a floating-point bisection on `log_weight` guesses x, the
        exact weights then walk to it (one step of the ratio recurrence per index)."""
        step = 1 if end > self.mode else -1
        outward, inward = (self.up, self.down) if step == 1 else (self.down, self.up)
        inside, outside = self.mode, end
        while abs(outside - inside) > 1:
            mid = (inside + outside) // 2
            if self.log_weight(mid) < log_limit:
                outside = mid
            else:
                inside = mid
        x = outside
        w = self.weight(x)
        if beyond(w):
            while x != self.mode:
                num, den = inward(x)
                prev = w * num // den
                if not beyond(prev):
                    break
                x, w = x - step, prev
            return x, w
        while x != end:
            num, den = outward(x)
            x, w = x + step, w * num // den
            if beyond(w):
                return x, w
        return None
