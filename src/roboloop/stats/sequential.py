"""Anytime-valid paired comparison of two policies, a fixed-n baseline, a planner and a driver.

Pure statistics (numpy/scipy, no catalog, no simulator): the evaluate stage feeds it
pairs ``(baseline_value, challenger_value)`` rolled out on the same seed, each value a
binary success (0/1) or a partial-credit score in [0, 1] (furthest stage / (stages - 1)).
The test runs on the paired differences ``d = challenger - baseline`` in [-1, 1].

The test: testing by betting (Waudby-Smith & Ramdas, "Estimating means of bounded random
variables by betting", JRSS-B 2024). For every candidate mean difference ``m`` two
capital processes bet that the mean is above (``K+``) or below (``K-``) ``m``::

    K+_t(m) = mean_j prod_{i<=t} (1 + lam_j(m) (d_i - m)),  lam_j(m) = f_j / (1 + m)
    K-_t(m) = mean_j prod_{i<=t} (1 - lam_j(m) (d_i - m)),  lam_j(m) = f_j / (1 - m)

a uniform mixture over fixed bet fractions ``f_j`` (0.1, 0.15, .., 0.95; the paper's
"diversified Kelly" bet: no tuning, no plug-in estimate that early pairs can mislead). Under a true mean ``mu <= m`` the process ``K+(m)`` is a nonnegative
supermartingale (each factor has expectation <= 1), so by Ville's inequality
``P(sup_t K+_t(m) >= 2/alpha) <= alpha/2``; the same holds for ``K-`` when ``mu >= m``.
``m`` is *rejected* once ``max(K+(m), K-(m))/2 >= 1/alpha`` (WSR's hedged capital in its
max form), for ever (the running intersection). The confidence sequence is the set of
``m`` never rejected; it covers the true mean at all times simultaneously with
probability >= 1 - alpha, so it may be looked at after every pair and the evaluation
stopped whenever it likes (optional stopping does not inflate the error), and resuming
an interrupted evaluation by replaying the pairs in their recorded order continues the
same process (it is a deterministic function of the ordered pairs).

Each factor of ``K+`` is non-increasing in ``m`` (d/dm of ``1 + f(d - m)/(1 + m)`` is
``-f(1 + d)/(1 + m)^2 <= 0``) and each factor of ``K-`` non-decreasing, so the rejected
``m`` form a down-set (``K+``) and an up-set (``K-``): the confidence sequence is an
interval, tracked exactly at the points of a grid (step ``resolution``, which always
contains 0 and +-margin) and reported outward-rounded. Decisions read it:

- ``improved``: 0 rejected from below (``K+(0)``): the mean difference is > 0;
- ``regressed``: 0 rejected from above: < 0;
- ``no_difference``: -margin rejected from below and +margin from above: |mean| < margin;
- ``undecided``: none of these yet (or at the maximum number of pairs).

A decision is wrong only if the confidence sequence failed to cover the true mean, so
the probability that a test *ever* makes a wrong decision is <= alpha (for a mean of
exactly 0 this is the type-I error of the improved/regressed decision). The first
decision reached is kept (sticky; improved/regressed win over no_difference reached on the
same pair, e.g. a 5-point improvement with a 10-point margin); the estimate and interval keep updating with later
pairs (the interval stays valid).

**Alpha across cells** (:class:`CellTests`, :func:`run_sequential`): a Bonferroni split,
``alpha / n_cells`` per cell. Every cell's interval then covers its mean simultaneously
with probability >= 1 - alpha, which makes *all* decisions together (every cell's and the
overall one) correct with probability >= 1 - alpha. The overall difference (the mean
over cells, each cell weighted equally as in a balanced grid) gets its interval from the
cells' intervals (the mean of the lower bounds to the mean of the upper bounds) and its
decision from that interval: no alpha is spent on it separately. Why not per-cell alpha:
``analyze.compare`` controls the familywise error across cells (Holm), and a sequential
verdict per cell should not be weaker than the fixed-grid one it replaces; the price is
``log(2 C / alpha)`` instead of ``log(2 / alpha)`` nats of evidence per cell (for 4 cells at
alpha 0.05, log 160 / log 40 = 1.38: up to ~40% more pairs for small effects, a round or
less for large ones).

**Library or our own code** (measured November 2026, Python 3.11 here):

- ``confseq`` 0.0.11 (last release January 2023; its ``betting`` module implements this
  very CS) ships only an sdist with a C++ extension that needs Boost headers: ``pip install``
  fails here, and its Python modules import matplotlib and multiprocess at import time.
  Its API recomputes a whole CS from an array per call (no incremental object to update
  and resume).
- ``expectation`` 0.6.1 (September 2026, actively developed: confidence sequences,
  e-processes) requires Python >= 3.12: not installable on this project's 3.11.
- ``savvi`` 0.3.1 (October 2024) covers multinomial / Gaussian linear-regression
  anytime-valid inference, no bounded-mean test, and pulls cvxpy.
- ``sequentialized-barnard-tests`` 0.0.9 (September 2026; TRI's STEP, SAVI and Lai tests)
  installs, but handles binary outcomes only (no partial credit), treats the two arms as
  two Bernoulli sources rather than paired differences, has no equivalence (margin)
  decision, ships precomputed STEP policies only for alpha = 0.05 and n_max 200/500, and
  pulls matplotlib, tqdm and pytest as runtime dependencies.

None fits paired differences in [-1, 1] with two-sided and equivalence decisions and an
object that can be updated, frozen and replayed, so the betting martingale is written
here (about sixty lines in :class:`_Betting`), with scipy for the exact fixed-n McNemar
test and its sample size.

**What to expect** (measured in benchmarks/bench_sequential.py, numbers in
benchmarks/README.md): no level-alpha test that stops only on evidence can average fewer
than ``log(2/alpha) / KL`` pairs (Wald), and the fixed-n test at 80% power needs about
``(z_{alpha/2} + z_{0.8})^2 / 2 / KL`` = 1.06x that: at the effect a fixed-n test was
sized for, binary success needs about as many pairs sequentially (0.97-1.04x here) as the
fixed-n exact McNemar test, with a longer tail (p90 1.4-1.9x). The savings come from
effects larger than planned (a gap cell going 0% -> 94% is decided in 10-15 pairs instead
of a grid's 30; against a plan for 15 points a 20-point improvement takes 0.2-0.6 of the
fixed-n), from stopping a cell as soon as *it* is clear, and from partial credit when the
challenger's failures also get further (0.46-0.65x of fixed-n); when an improvement only
turns failures into successes, partial credit is slower than binary.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from roboloop import schema
from roboloop.config import Config
from roboloop.errors import RoboloopError

__all__ = [
    "CellTests",
    "PairedSequentialTest",
    "SequentialConfig",
    "SequentialDriver",
    "SequentialError",
    "SequentialState",
    "mcnemar_power",
    "mcnemar_sample_size",
    "paired_binary_probs",
    "plan_eval",
    "run_sequential",
    "simulate_sequential",
    "stage_distributions",
    "stage_score",
]

DEFAULT_BET_FRACTIONS = tuple(round(0.1 + 0.05 * k, 2) for k in range(18))
"""Mixture of bet sizes (0.1, 0.15, .., 0.95), as fractions of the largest bet that cannot lose everything.

Measured on synthetic paired streams (benchmarks/bench_sequential.py): geometric 0.05 .. 0.9
took 5-15% more pairs at 10-30 point effects; stopping at 0.9 took 10-15% more at very large
effects (a gap cell going from 0% to 94% success); bets of 0.99 cost 4% at 10-point effects."""
DEFAULT_RESOLUTION = 0.005
"""Grid step of the confidence sequence (decisions are exact: 0 and +-margin are grid points)."""
_EPS = 1e-12


class SequentialError(RoboloopError, ValueError):
    """Bad input to a sequential comparison (alpha, margin, pairs); the message says what to fix."""


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------


def _check_alpha(alpha: float) -> float:
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise SequentialError(f"alpha must be a number in (0, 1), got {alpha!r}") from None
    if not (0.0 < a < 1.0):
        raise SequentialError(f"alpha must lie in (0, 1) (e.g. 0.05), got {alpha!r}")
    return a


def _check_margin(margin: float) -> float:
    try:
        m = float(margin)
    except (TypeError, ValueError):
        raise SequentialError(f"margin must be a number in (0, 1], got {margin!r}") from None
    if not (0.0 < m <= 1.0):
        raise SequentialError(
            f"margin must lie in (0, 1] (a difference in success rate or score, e.g. 0.1), got {margin!r}"
        )
    return m


def _as_values(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float).reshape(-1)
    if arr.size and (not np.all(np.isfinite(arr)) or arr.min() < 0.0 or arr.max() > 1.0):
        bad = arr[~(np.isfinite(arr) & (arr >= 0.0) & (arr <= 1.0))][:3]
        raise SequentialError(
            f"{name} values must be successes (0/1) or scores in [0, 1]; got {bad.tolist()}"
        )
    return arr


def _as_pairs(pairs: Any) -> tuple[np.ndarray, np.ndarray]:
    """(baseline, challenger) arrays from a sequence of 2-tuples; SequentialError if malformed."""
    rows = list(pairs)
    for i, p in enumerate(rows):
        if isinstance(p, (str, bytes)) or not hasattr(p, "__len__") or len(p) != 2:
            raise SequentialError(
                f"pair {i} is {p!r}: each observation must be a pair (baseline_value, challenger_value)"
            )
    if not rows:
        return np.zeros(0), np.zeros(0)
    try:
        arr = np.asarray(rows, dtype=float)
    except (TypeError, ValueError) as exc:
        raise SequentialError(f"pairs must hold numbers: {exc}") from None
    return _as_values(arr[:, 0], "baseline"), _as_values(arr[:, 1], "challenger")


def stage_score(stage: int, n_stages: int = len(schema.STAGES)) -> float:
    """Partial credit of a furthest-stage index: stage / (n_stages - 1), in [0, 1]."""
    s = int(stage)
    if not (0 <= s < n_stages):
        raise SequentialError(f"stage index {stage!r} outside [0, {n_stages - 1}] ({', '.join(schema.STAGES)})")
    return s / (n_stages - 1)


# --------------------------------------------------------------------------------------------
# the betting kernel (vectorized over independent streams: one for a test, thousands in a benchmark)
# --------------------------------------------------------------------------------------------


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    """log(sum(exp(x))) along an axis (capitals are finite logs: no inf handling needed)."""
    mx = x.max(axis=axis, keepdims=True)
    return np.squeeze(mx, axis=axis) + np.log(np.exp(x - mx).sum(axis=axis))


def _grid(margin: float, resolution: float | None) -> np.ndarray:
    """Candidate means: a grid of step `resolution` plus the decision points 0 and +-margin.

    resolution None: the decision points and +-1 only (decisions are the same as on any
    finer grid, because the rejected sets are a down-set and an up-set; used in simulation).
    """
    n = 2 if resolution is None else max(2, round(2.0 / resolution))
    pts = np.concatenate([np.linspace(-1.0, 1.0, n + 1), [0.0, -margin, margin]])
    pts = np.round(pts, 12)
    return np.unique(pts)


class _Betting:
    """Hedged mixture-of-bets capital processes for B streams over a grid of candidate means."""

    def __init__(self, batch: int, alpha: float, margin: float, resolution: float | None, fractions: Sequence[float]):
        self.alpha = alpha
        self.margin = margin
        self.m = _grid(margin, resolution)  # (M,)
        f = np.asarray(fractions, dtype=float)
        if f.ndim != 1 or f.size == 0 or f.min() <= 0 or f.max() >= 1:
            raise SequentialError(f"bet fractions must lie in (0, 1), got {list(fractions)}")
        up = 1.0 / np.maximum(1.0 + self.m, _EPS)  # largest safe bet that the mean is above m
        down = 1.0 / np.maximum(1.0 - self.m, _EPS)
        self.lam_up = up[:, None] * f[None, :]  # (M, J)
        self.lam_down = down[:, None] * f[None, :]
        self.log_thr = math.log(2.0 / alpha) + math.log(f.size)  # mean_j K_j >= 2/alpha  <=>  logsumexp >= this
        self.i_zero = int(np.searchsorted(self.m, 0.0))
        self.i_lo_margin = int(np.searchsorted(self.m, round(-margin, 12)))
        self.i_hi_margin = int(np.searchsorted(self.m, round(margin, 12)))
        M, J = self.lam_up.shape
        self.log_up = np.zeros((batch, M, J))
        self.log_down = np.zeros((batch, M, J))
        self.lo = np.full(batch, -1, dtype=np.int64)  # largest index rejected from below (-1: none)
        self.hi = np.full(batch, M, dtype=np.int64)  # smallest index rejected from above (M: none)
        self.n = np.zeros(batch, dtype=np.int64)
        self.sum_d = np.zeros(batch)

    def update(self, d: np.ndarray, active: np.ndarray | None = None) -> None:
        """Add one difference per stream (d: (B,)); streams with active False are left as they are."""
        x = d[:, None, None] - self.m[None, :, None]  # (B, M, 1)
        up = np.log1p(self.lam_up[None] * x)
        down = np.log1p(-self.lam_down[None] * x)
        if active is not None:
            up[~active] = 0.0
            down[~active] = 0.0
        self.log_up += up
        self.log_down += down
        rej_up = _logsumexp(self.log_up, axis=2) >= self.log_thr  # (B, M), a down-set in m
        rej_down = _logsumexp(self.log_down, axis=2) >= self.log_thr  # an up-set in m
        M = self.m.size
        any_up = rej_up.any(axis=1)
        last_up = np.where(any_up, M - 1 - np.argmax(rej_up[:, ::-1], axis=1), -1)
        any_down = rej_down.any(axis=1)
        first_down = np.where(any_down, np.argmax(rej_down, axis=1), M)
        self.lo = np.maximum(self.lo, last_up)
        self.hi = np.minimum(self.hi, first_down)
        inc = np.ones_like(self.n) if active is None else active.astype(np.int64)
        self.n += inc
        self.sum_d += np.where(inc > 0, d, 0.0)

    def update_sequence(self, d: np.ndarray) -> np.ndarray:
        """Add differences d (n,) one after the other to a single stream (B = 1); decision code after each.

        The same arithmetic as n calls of :meth:`update`, vectorized over the pairs (a cumulative
        sum of log factors), so replaying a recorded evaluation is fast.
        """
        if d.size == 0:
            return np.zeros(0, dtype=np.int8)
        x = d[:, None, None] - self.m[None, :, None]  # (n, M, 1)
        log_up = self.log_up[0][None] + np.cumsum(np.log1p(self.lam_up[None] * x), axis=0)
        log_down = self.log_down[0][None] + np.cumsum(np.log1p(-self.lam_down[None] * x), axis=0)
        rej_up = _logsumexp(log_up, axis=2) >= self.log_thr  # (n, M)
        rej_down = _logsumexp(log_down, axis=2) >= self.log_thr
        M = self.m.size
        last_up = np.where(rej_up.any(axis=1), M - 1 - np.argmax(rej_up[:, ::-1], axis=1), -1)
        first_down = np.where(rej_down.any(axis=1), np.argmax(rej_down, axis=1), M)
        lo = np.maximum.accumulate(np.maximum(last_up, self.lo[0]))
        hi = np.minimum.accumulate(np.minimum(first_down, self.hi[0]))
        self.log_up[0] = log_up[-1]
        self.log_down[0] = log_down[-1]
        self.lo[0], self.hi[0] = lo[-1], hi[-1]
        self.n[0] += d.size
        self.sum_d[0] += float(d.sum())
        return self._codes(lo, hi)

    def decisions(self) -> np.ndarray:
        """Decision code per stream: 0 undecided, 1 improved, 2 regressed, 3 no_difference."""
        return self._codes(self.lo, self.hi)

    def _codes(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        out = np.zeros(lo.shape, dtype=np.int8)
        out[(lo >= self.i_lo_margin) & (hi <= self.i_hi_margin)] = 3
        out[hi <= self.i_zero] = 2
        out[lo >= self.i_zero] = 1
        return out

    def bounds(self, k: int) -> tuple[float, float]:
        """Outward-rounded confidence interval of stream k."""
        M = self.m.size
        lo_i, hi_i = int(self.lo[k]), int(self.hi[k])
        if lo_i >= hi_i:  # the grid is too coarse to hold the interval: keep the tightest valid statement
            est = self.sum_d[k] / max(int(self.n[k]), 1)
            return float(est), float(est)
        low = float(self.m[lo_i]) if lo_i >= 0 else -1.0
        high = float(self.m[hi_i]) if hi_i < M else 1.0
        return low, high


_CODES = {
    0: schema.DECISION_UNDECIDED,
    1: schema.DECISION_IMPROVED,
    2: schema.DECISION_REGRESSED,
    3: schema.DECISION_NO_DIFFERENCE,
}


# --------------------------------------------------------------------------------------------
# one paired test
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SequentialState:
    """A snapshot of one paired test (JSON-able via to_dict)."""

    n: int
    """Pairs observed."""
    estimate: float
    """Mean paired difference (challenger - baseline); 0 before any pair."""
    ci_low: float
    """Anytime-valid lower bound of the mean difference (every value below has been rejected)."""
    ci_high: float
    """Anytime-valid upper bound."""
    decision: str
    """improved / regressed / no_difference / undecided (the first decision reached; sticky)."""
    decided_at: int | None
    """Number of pairs at which the decision was reached (None while undecided)."""
    baseline_mean: float
    """Mean baseline value (success rate or mean score)."""
    challenger_mean: float
    """Mean challenger value."""
    alpha: float
    """Level of this test (per cell: the evaluation's alpha / number of cells)."""
    margin: float
    """Equivalence margin of the no_difference decision."""

    @property
    def decided(self) -> bool:
        return self.decision != schema.DECISION_UNDECIDED

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class PairedSequentialTest:
    """Anytime-valid paired test of the mean difference challenger - baseline (see module docstring).

    >>> t = PairedSequentialTest(alpha=0.05, margin=0.1)
    >>> t.update_batch([0, 1, 0], [1, 1, 1])      # baseline values, challenger values
    >>> t.state().decision                        # 'undecided' after 3 pairs
    'undecided'
    """

    def __init__(
        self,
        alpha: float = 0.05,
        margin: float = 0.1,
        *,
        resolution: float = DEFAULT_RESOLUTION,
        bet_fractions: Sequence[float] = DEFAULT_BET_FRACTIONS,
    ) -> None:
        self.alpha = _check_alpha(alpha)
        self.margin = _check_margin(margin)
        if not (0.0 < float(resolution) <= 0.5):
            raise SequentialError(f"resolution must lie in (0, 0.5], got {resolution!r}")
        self._k = _Betting(1, self.alpha, self.margin, float(resolution), bet_fractions)
        self._settings = (float(resolution), tuple(float(f) for f in bet_fractions))
        self._decision = schema.DECISION_UNDECIDED
        self._decided_at: int | None = None
        self._sum_a = 0.0
        self._sum_b = 0.0

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[float, float]], alpha: float = 0.05, margin: float = 0.1, **kw: Any) -> PairedSequentialTest:
        """Replay recorded pairs in their order: the same state as the test that saw them live."""
        t = cls(alpha, margin, **kw)
        t.update_pairs(pairs)
        return t

    @property
    def n(self) -> int:
        return int(self._k.n[0])

    def update(self, baseline_value: float, challenger_value: float) -> str:
        """Add one pair; returns the decision (the test is looked at after every pair)."""
        self.update_batch([baseline_value], [challenger_value])
        return self._decision

    def update_pairs(self, pairs: Iterable[tuple[float, float]]) -> str:
        """Add pairs ``(baseline_value, challenger_value)`` in order."""
        a, b = _as_pairs(pairs)
        return self._feed(a, b)

    def update_batch(self, baseline_values: Sequence[float], challenger_values: Sequence[float]) -> str:
        """Add pairs given as two equally long sequences (the i-th of each were rolled out on one seed)."""
        a = _as_values(baseline_values, "baseline")
        b = _as_values(challenger_values, "challenger")
        if a.size != b.size:
            raise SequentialError(
                f"mismatched pairs: {a.size} baseline values but {b.size} challenger values "
                "(each baseline rollout must be paired with the challenger's rollout on the same seed)"
            )
        return self._feed(a, b)

    def _feed(self, a: np.ndarray, b: np.ndarray) -> str:
        chunk = 256
        for start in range(0, a.size, chunk):
            codes = self._k.update_sequence(b[start : start + chunk] - a[start : start + chunk])
            self._sum_a += float(a[start : start + chunk].sum())
            self._sum_b += float(b[start : start + chunk].sum())
            if self._decided_at is None and codes.any():
                i = int(np.argmax(codes > 0))
                self._decision = _CODES[int(codes[i])]
                self._decided_at = self.n - codes.size + i + 1
        return self._decision

    def state(self) -> SequentialState:
        n = self.n
        low, high = self._k.bounds(0)
        return SequentialState(
            n=n,
            estimate=float(self._sum_b - self._sum_a) / n if n else 0.0,
            ci_low=low,
            ci_high=high,
            decision=self._decision,
            decided_at=self._decided_at,
            baseline_mean=float(self._sum_a) / n if n else 0.0,
            challenger_mean=float(self._sum_b) / n if n else 0.0,
            alpha=self.alpha,
            margin=self.margin,
        )


# --------------------------------------------------------------------------------------------
# many cells: Bonferroni-split tests + the overall interval
# --------------------------------------------------------------------------------------------


def _decide_interval(low: float, high: float, margin: float) -> str:
    if low >= 0.0 and high > 0.0:
        return schema.DECISION_IMPROVED
    if high <= 0.0 and low < 0.0:
        return schema.DECISION_REGRESSED
    if low >= -margin and high <= margin:
        return schema.DECISION_NO_DIFFERENCE
    return schema.DECISION_UNDECIDED


class CellTests:
    """One paired test per cell at alpha / n_cells; all decisions jointly correct w.p. >= 1 - alpha."""

    def __init__(self, cells: Sequence[str], alpha: float = 0.05, margin: float = 0.1, **test_kw: Any) -> None:
        keys = list(cells)
        if not keys:
            raise SequentialError("no cells to compare: give at least one cell key")
        if len(set(keys)) != len(keys):
            dup = sorted({k for k in keys if keys.count(k) > 1})
            raise SequentialError(f"duplicate cell keys: {dup}")
        self.alpha = _check_alpha(alpha)
        self.margin = _check_margin(margin)
        self.cell_alpha = self.alpha / len(keys)
        self.tests = {k: PairedSequentialTest(self.cell_alpha, self.margin, **test_kw) for k in keys}

    def __getitem__(self, cell: str) -> PairedSequentialTest:
        try:
            return self.tests[cell]
        except KeyError:
            raise SequentialError(f"unknown cell {cell!r}; cells: {', '.join(self.tests)}") from None

    def overall(self) -> dict[str, Any]:
        """Equal-weight mean difference over cells, its interval (mean of the cells' bounds) and decision."""
        states = [t.state() for t in self.tests.values()]
        low = float(np.mean([s.ci_low for s in states]))
        high = float(np.mean([s.ci_high for s in states]))
        return {
            "n": int(sum(s.n for s in states)),
            "estimate": float(np.mean([s.estimate for s in states])),
            "ci_low": low,
            "ci_high": high,
            "decision": _decide_interval(low, high, self.margin),
            "alpha": self.alpha,
            "margin": self.margin,
        }


# --------------------------------------------------------------------------------------------
# fixed-n exact McNemar: power and sample size (the test itself: roboloop.stats.exact)
# --------------------------------------------------------------------------------------------


def paired_binary_probs(p_baseline: float, p_challenger: float, coupling: float = 0.0) -> tuple[float, float]:
    """(p01, p10): probability that only the challenger / only the baseline succeeds on a seed.

    ``coupling`` in [0, 1] mixes independent outcomes (0) with perfectly paired ones (1: the
    seeds are ordered by difficulty and each policy succeeds on the easiest ones, as far as
    its rate allows), i.e. how much the shared seed decides both outcomes.
    """
    pa, pb, r = float(p_baseline), float(p_challenger), float(coupling)
    for name, v in (("p_baseline", pa), ("p_challenger", pb), ("coupling", r)):
        if not (0.0 <= v <= 1.0):
            raise SequentialError(f"{name} must lie in [0, 1], got {v!r}")
    p01 = r * max(pb - pa, 0.0) + (1 - r) * (1 - pa) * pb
    p10 = r * max(pa - pb, 0.0) + (1 - r) * pa * (1 - pb)
    return p01, p10


def _mcnemar_conditional_power(max_disc: int, q: float, alpha: float) -> np.ndarray:
    """g[D] = P(exact two-sided McNemar rejects | D discordant pairs), D = 0..max_disc."""
    g = np.zeros(max_disc + 1)
    for d in range(1, max_disc + 1):
        x = np.arange(d + 1)
        tail = np.minimum(stats.binom.cdf(x, d, 0.5), stats.binom.sf(x - 1, d, 0.5))
        reject = np.minimum(1.0, 2.0 * tail) <= alpha
        if reject.any():
            g[d] = stats.binom.pmf(x[reject], d, q).sum()
    return g


def mcnemar_power(n: int, p01: float, p10: float, alpha: float = 0.05) -> float:
    """Exact power of the two-sided exact McNemar test with n pairs (discordant probabilities p01, p10)."""
    alpha = _check_alpha(alpha)
    pd = p01 + p10
    if n <= 0 or pd <= 0:
        return 0.0
    g = _mcnemar_conditional_power(n, p01 / pd, alpha)
    return float(np.dot(stats.binom.pmf(np.arange(n + 1), n, pd), g))


def mcnemar_sample_size(
    p_baseline: float,
    effect: float,
    alpha: float = 0.05,
    power: float = 0.8,
    *,
    coupling: float = 0.0,
    max_n: int = 5000,
) -> int | None:
    """Smallest number of pairs at which the exact McNemar test reaches ``power`` (exact computation).

    The challenger's rate is ``p_baseline + effect`` (capped to [0, 1]); pairing per
    :func:`paired_binary_probs`. None if not reached within ``max_n`` pairs (e.g. effect 0).
    """
    alpha = _check_alpha(alpha)
    if not (0.0 < power < 1.0):
        raise SequentialError(f"power must lie in (0, 1), got {power!r}")
    pb = min(max(p_baseline + effect, 0.0), 1.0)
    p01, p10 = paired_binary_probs(p_baseline, pb, coupling)
    pd = p01 + p10
    if pd <= 0 or p01 == p10:
        return None
    q = p01 / pd
    g_cache = _mcnemar_conditional_power(min(max_n, 256), q, alpha)
    for n in range(1, max_n + 1):
        if n >= g_cache.size:
            g_cache = _mcnemar_conditional_power(min(max_n, 2 * g_cache.size), q, alpha)
        pw = float(np.dot(stats.binom.pmf(np.arange(n + 1), n, pd), g_cache[: n + 1]))
        if pw >= power:
            return n
    return None


# --------------------------------------------------------------------------------------------
# simulation (planner and benchmark) with the same kernel
# --------------------------------------------------------------------------------------------


def _stage_probs(rate_or_probs: float | Sequence[float]) -> np.ndarray:
    """Stage distribution (len(STAGES)) from a success rate (failures at stage 0) or given probabilities."""
    if np.ndim(rate_or_probs) == 0:
        p = float(rate_or_probs)
        if not (0.0 <= p <= 1.0):
            raise SequentialError(f"a success rate must lie in [0, 1], got {rate_or_probs!r}")
        out = np.zeros(len(schema.STAGES))
        out[0], out[-1] = 1 - p, p
        return out
    out = np.asarray(rate_or_probs, dtype=float)
    if out.ndim != 1 or out.size < 2 or out.min() < 0 or abs(out.sum() - 1.0) > 1e-6:
        raise SequentialError(
            f"a stage distribution is a list of probabilities over {list(schema.STAGES)} summing to 1, "
            f"got {list(np.atleast_1d(rate_or_probs))}"
        )
    return out / out.sum()


def improved_stage_probs(probs: Sequence[float], effect: float) -> np.ndarray:
    """The challenger's stage distribution: ``effect`` of the success probability moved from the failures.

    Failures keep their relative stage proportions (every failing stage shrinks by the same
    factor); the success rate rises by ``effect`` (capped at 1).
    """
    p = _stage_probs(probs)
    fail = 1.0 - p[-1]
    gain = min(max(effect, -p[-1]), fail)
    out = p.copy()
    if fail > 0:
        out[:-1] *= (fail - gain) / fail
    out[-1] += gain
    return out


def sample_paired_scores(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    baseline: Sequence[float],
    challenger: Sequence[float],
    coupling: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic paired stage scores (in [0, 1]) for two stage distributions.

    A seed has a difficulty u ~ U(0, 1); a policy reaches stage k if u < P(stage >= k).
    With probability ``coupling`` both policies see the same u (the seed decides), else
    independent ones. Success = score 1.
    """
    pa, pb = _stage_probs(baseline), _stage_probs(challenger)
    u = rng.random(shape)
    v = np.where(rng.random(shape) < coupling, u, rng.random(shape))
    ca = np.cumsum(pa[::-1])[::-1][1:]  # P(stage >= k), k = 1..K-1
    cb = np.cumsum(pb[::-1])[::-1][1:]
    k = len(pa) - 1
    sa = (u[..., None] < ca).sum(-1) / k
    sb = (v[..., None] < cb).sum(-1) / k
    return sa, sb


def simulate_sequential(
    diffs: np.ndarray,
    alpha: float = 0.05,
    margin: float = 0.1,
    *,
    resolution: float | None = None,
    bet_fractions: Sequence[float] = DEFAULT_BET_FRACTIONS,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the test on B independent streams of differences (B, N), looking after every pair.

    Returns (decision codes, pairs to the decision) per stream: codes 0 undecided (count N),
    1 improved, 2 regressed, 3 no_difference. Same kernel as :class:`PairedSequentialTest`;
    by default on the decision points only (same decisions as the test's finer grid, faster).
    """
    d = np.asarray(diffs, dtype=float)
    if d.ndim != 2:
        raise SequentialError("diffs must be a (streams, pairs) array")
    B, N = d.shape
    k = _Betting(B, _check_alpha(alpha), _check_margin(margin), resolution, bet_fractions)
    code = np.zeros(B, dtype=np.int8)
    at = np.full(B, N, dtype=np.int64)
    active = np.ones(B, dtype=bool)
    for t in range(N):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        if idx.size < B:  # update only the running streams (cheaper than masking late in the run)
            sub = _subset(k, idx)
            sub.update(d[idx, t])
            _write_back(k, sub, idx)
        else:
            k.update(d[:, t])
        now = k.decisions()
        new = active & (now > 0)
        code[new] = now[new]
        at[new] = t + 1
        active &= ~new
    return code, at


def _subset(k: _Betting, idx: np.ndarray) -> _Betting:
    sub = object.__new__(_Betting)
    sub.__dict__.update(k.__dict__)
    for name in ("log_up", "log_down", "lo", "hi", "n", "sum_d"):
        setattr(sub, name, getattr(k, name)[idx])
    return sub


def _write_back(k: _Betting, sub: _Betting, idx: np.ndarray) -> None:
    for name in ("log_up", "log_down", "lo", "hi", "n", "sum_d"):
        getattr(k, name)[idx] = getattr(sub, name)


# --------------------------------------------------------------------------------------------
# configuration shared with the evaluate stage
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SequentialConfig(Config):
    """Settings of a sequential (until-decided) comparison."""

    alpha: float = 0.05
    """Familywise error of all decisions together (cells and overall), in (0, 1)."""
    margin: float = 0.1
    """A difference smaller than this is `no_difference`, in (0, 1]."""
    metric: str = schema.METRIC_SUCCESS
    """`success` (binary outcome) or `stage` (furthest stage reached as a score in [0, 1])."""
    round_size: int = 5
    """Pairs per cell per round (cells are interleaved round by round)."""
    max_per_cell: int = 200
    """A cell stops undecided at this many pairs."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_alpha(self.alpha)
        _check_margin(self.margin)
        if self.metric not in schema.SEQUENTIAL_METRICS:
            raise SequentialError(f"metric must be one of {', '.join(schema.SEQUENTIAL_METRICS)}, got {self.metric!r}")
        if not isinstance(self.round_size, int) or self.round_size < 1:
            raise SequentialError(f"round_size must be a positive integer, got {self.round_size!r}")
        if not isinstance(self.max_per_cell, int) or self.max_per_cell < 1:
            raise SequentialError(f"max_per_cell must be a positive integer, got {self.max_per_cell!r}")

    @classmethod
    def unknown_keys_error(cls, unknown: list[str]) -> Exception:
        names = sorted(f.name for f in dataclasses.fields(cls))
        return SequentialError(f"unknown sequential settings {sorted(unknown)}; known: {names}")


# --------------------------------------------------------------------------------------------
# the driver the evaluate stage calls
# --------------------------------------------------------------------------------------------


@dataclass
class CellProgress:
    """Where one cell stands in a sequential evaluation."""

    cell: str
    state: SequentialState
    rounds: int
    """Rounds in which this cell received pairs."""
    stop_round: int | None
    """Round after which the cell stopped (decided or at its maximum); None while running."""
    stopped: str | None = None
    """Why it stopped: 'decided' or 'max_per_cell'; None while running."""

    def to_dict(self) -> dict[str, Any]:
        out = {"cell": self.cell, "rounds": self.rounds, "stop_round": self.stop_round, "stopped": self.stopped}
        out.update(self.state.to_dict())
        return out


class SequentialDriver:
    """Round-by-round controller: which cells need how many more pairs, given what was observed.

    Pull style, so the evaluate stage can run one round's rollouts for all cells in parallel::

        drv = SequentialDriver(cells, cfg, observed=pairs_recorded_so_far)   # resume = replay
        while (req := drv.next_round()):          # {cell: k}
            drv.add_round({cell: run_pairs(cell, k) for cell, k in req.items()})
        drv.result()

    ``observed`` maps a cell to its pairs in the order they were recorded (the pair index
    in the cell is the seed index); replaying them gives the same state the interrupted run
    had, and the evaluation continues the same sequence (no restart, no error inflation).
    """

    def __init__(
        self,
        cells: Sequence[str],
        config: SequentialConfig | None = None,
        *,
        observed: Mapping[str, Sequence[tuple[float, float]]] | None = None,
        **test_kw: Any,
    ) -> None:
        self.config = config or SequentialConfig()
        self.tests = CellTests(cells, self.config.alpha, self.config.margin, **test_kw)
        self.cells = list(self.tests.tests)
        self._pending: dict[str, int] | None = None
        for cell, pairs in (observed or {}).items():
            test = self.tests[cell]
            a, b = _as_pairs(pairs)
            if a.size > self.config.max_per_cell:
                raise SequentialError(
                    f"cell {cell!r} already has {a.size} pairs, more than max_per_cell={self.config.max_per_cell}"
                )
            test._feed(a, b)

    def _rounds(self, cell: str) -> int:
        """Rounds a cell has taken part in: its pairs are rounds of round_size, in order (so replay is exact)."""
        return -(-self.tests[cell].n // self.config.round_size)

    @property
    def round(self) -> int:
        """Rounds started so far (a round cut short by an interruption counts as started)."""
        return max(self._rounds(c) for c in self.cells)

    def _stopped_reason(self, cell: str) -> str | None:
        test = self.tests[cell]
        if test.state().decided:
            return "decided"
        if test.n >= self.config.max_per_cell:
            return "max_per_cell"
        return None

    @property
    def done(self) -> bool:
        return all(self._stopped_reason(c) for c in self.cells)

    @property
    def pending(self) -> dict[str, int]:
        """Pairs per cell that :meth:`next_round` asked for and :meth:`add_round` has not fed yet; {} when none."""
        return dict(self._pending or {})

    def next_round(self) -> dict[str, int]:
        """Pairs each running cell needs this round (cells in their given order); {} when all stopped."""
        if self._pending:
            return dict(self._pending)
        req = {}
        for cell in self.cells:
            if not self._stopped_reason(cell):
                n = self.tests[cell].n  # a round cut short by an interruption is completed first
                req[cell] = min(self.config.round_size - n % self.config.round_size, self.config.max_per_cell - n)
        self._pending = req or None
        return req

    def add_round(self, results: Mapping[str, Sequence[tuple[float, float]]]) -> dict[str, SequentialState]:
        """Feed one round's pairs (exactly the counts :meth:`next_round` asked for)."""
        req = self._pending if self._pending is not None else self.next_round()
        missing = sorted(set(req) - set(results))
        extra = sorted(set(results) - set(req))
        if missing or extra:
            raise SequentialError(f"round results do not match the request: missing cells {missing}, unexpected {extra}")
        parsed = {}
        for cell, pairs in results.items():
            a, b = _as_pairs(pairs)
            if a.size != req[cell]:
                raise SequentialError(f"cell {cell!r}: asked for {req[cell]} pairs, got {a.size}")
            parsed[cell] = (a, b)
        for cell in req:
            self.tests[cell]._feed(*parsed[cell])
        self._pending = None
        return {cell: self.tests[cell].state() for cell in req}

    def progress(self) -> list[CellProgress]:
        out = []
        for c in self.cells:
            why = self._stopped_reason(c)
            out.append(CellProgress(c, self.tests[c].state(), self._rounds(c), self._rounds(c) if why else None, why))
        return out

    def result(self) -> dict[str, Any]:
        """JSON-able summary: per cell (decision, pairs used, stopping round, interval) and overall."""
        return {
            "config": self.config.to_dict(),
            "cell_alpha": self.tests.cell_alpha,
            "rounds": self.round,
            "done": self.done,
            "cells": [p.to_dict() for p in self.progress()],
            "overall": self.tests.overall(),
        }


def run_sequential(
    cells: Sequence[str],
    run_round: Callable[[str, int], Sequence[tuple[float, float]]],
    config: SequentialConfig | None = None,
    *,
    observed: Mapping[str, Sequence[tuple[float, float]]] | None = None,
    on_round: Callable[[int, dict[str, SequentialState]], None] | None = None,
    max_rounds: int | None = None,
    **test_kw: Any,
) -> dict[str, Any]:
    """Run cells interleaved, K pairs per cell per round via ``run_round(cell, k)``, until all stop.

    ``run_round`` returns k pairs ``(baseline_value, challenger_value)`` for the cell's next
    seeds. ``observed`` resumes (see :class:`SequentialDriver`); ``max_rounds`` stops early
    (for an interruption or a budget). Returns :meth:`SequentialDriver.result`.
    """
    drv = SequentialDriver(cells, config, observed=observed, **test_kw)
    done_rounds = 0
    while (max_rounds is None or done_rounds < max_rounds) and (req := drv.next_round()):
        states = drv.add_round({cell: list(run_round(cell, k)) for cell, k in req.items()})
        done_rounds += 1
        if on_round is not None:
            on_round(drv.round, states)
    return drv.result()


# --------------------------------------------------------------------------------------------
# the planner
# --------------------------------------------------------------------------------------------


def stage_distributions(rows: Iterable[Mapping[str, Any]], *, cell_column: str | None = None,
                        stage_column: str | None = None) -> dict[str, list[float]]:
    """Per cell, the observed distribution of the furthest stage reached (input to :func:`plan_eval`).

    ``rows``: rollouts as dicts with the friendly columns ``episode.cell`` and
    ``outcome.stage`` (analyze's rollout table rows). The planner treats the last stage
    as success (a rollout that reached the handover but did not hold it counts as a success
    there: a planning approximation).
    """
    cell_col = cell_column or f"{schema.EPISODE}.{schema.EPISODE_CELL}"
    stage_col = stage_column or f"{schema.OUTCOME}.{schema.OUTCOME_STAGE}"
    counts: dict[str, np.ndarray] = {}
    for i, row in enumerate(rows):
        try:
            cell, stage = row[cell_col], int(row[stage_col])
        except (KeyError, TypeError, ValueError):
            raise SequentialError(f"rollout row {i} lacks {cell_col!r} or an integer {stage_col!r}") from None
        if not (0 <= stage < len(schema.STAGES)):
            raise SequentialError(f"rollout row {i}: stage {stage} outside [0, {len(schema.STAGES) - 1}]")
        counts.setdefault(str(cell), np.zeros(len(schema.STAGES)))[stage] += 1
    return {cell: (c / c.sum()).tolist() for cell, c in counts.items()}


def plan_eval(
    cells: Mapping[str, float | Sequence[float]],
    effect: float = 0.15,
    alpha: float = 0.05,
    power: float = 0.8,
    *,
    metric: str = schema.METRIC_SUCCESS,
    margin: float = 0.1,
    coupling: float = 0.0,
    max_per_cell: int = 400,
    round_size: int = 1,
    n_sim: int = 1000,
    seed: int = 0,
    familywise: bool = True,
) -> list[dict[str, Any]]:
    """Per cell: rollouts a fixed-n exact McNemar test needs, and the sequential test's by simulation.

    ``cells`` maps a cell key to the baseline's success rate or its stage distribution
    (probabilities over ``schema.STAGES``). The challenger is the baseline improved by
    ``effect`` (:func:`improved_stage_probs`). With ``familywise`` both tests run at
    alpha / n_cells per cell (the sequential evaluation's Bonferroni split; Holm in the
    fixed-n ``compare`` spends the same on its smallest p-value). ``coupling``: see
    :func:`paired_binary_probs` (0 = outcomes independent given the seed: the conservative
    planning assumption). ``round_size``: pairs are run in whole rounds, so a decision costs
    its round (capped at ``max_per_cell``). Undecided simulations count as ``max_per_cell``.
    Seeded: the same inputs give the same plan.
    """
    alpha = _check_alpha(alpha)
    if not (0.0 < power < 1.0):
        raise SequentialError(f"power must lie in (0, 1), got {power!r}")
    if metric not in schema.SEQUENTIAL_METRICS:
        raise SequentialError(f"metric must be one of {', '.join(schema.SEQUENTIAL_METRICS)}, got {metric!r}")
    if not cells:
        raise SequentialError("no cells to plan: give each cell's baseline rate or stage distribution")
    if int(round_size) < 1 or int(max_per_cell) < 1 or int(n_sim) < 1:
        raise SequentialError("round_size, max_per_cell and n_sim must be positive integers")
    level = alpha / len(cells) if familywise else alpha
    rng = np.random.default_rng(seed)
    rows = []
    for cell, spec in cells.items():
        base = _stage_probs(spec)
        chal = improved_stage_probs(base, effect)
        fixed_n = mcnemar_sample_size(base[-1], chal[-1] - base[-1], level, power, coupling=coupling, max_n=max_per_cell * 10)
        sa, sb = sample_paired_scores(rng, (n_sim, max_per_cell), base, chal, coupling)
        if metric == schema.METRIC_SUCCESS:
            sa, sb = (sa >= 1.0).astype(float), (sb >= 1.0).astype(float)
        code, at = simulate_sequential(sb - sa, level, margin)
        at = np.minimum(np.ceil(at / round_size) * round_size, max_per_cell)
        rows.append(
            {
                "cell": cell,
                "baseline_rate": float(base[-1]),
                "challenger_rate": float(chal[-1]),
                "alpha_per_cell": level,
                "fixed_n": fixed_n,
                "sequential_mean": float(at.mean()),
                "sequential_p90": float(np.percentile(at, 90)),
                "sequential_decided": float((code > 0).mean()),
                "sequential_improved": float((code == 1).mean()),
                "max_per_cell": max_per_cell,
                "round_size": round_size,
            }
        )
    return rows
