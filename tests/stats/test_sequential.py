"""Anytime-valid paired comparison: validity, power, replay, fixed-n McNemar, planner, driver, bad input."""

from __future__ import annotations

import functools
import json
import math
import zlib

import numpy as np
import pytest
from scipy import stats

from roboloop import schema
from roboloop.errors import RoboloopError
from roboloop.stats import sequential as sq
from roboloop.stats.exact import mcnemar_exact


def _mc_bound(alpha: float, n: int) -> float:
    """alpha plus 3 binomial standard errors: the most a valid test's error rate may show in n runs."""
    return alpha + 3 * math.sqrt(alpha * (1 - alpha) / n)


# ---------------------------------------------------------------------------------- validity


@pytest.mark.parametrize(
    "stages,coupling",
    [
        ([0.3, 0, 0, 0, 0.7], 0.0),  # binary success 0.7, outcomes independent given the seed
        ([0.12, 0.08, 0.05, 0.05, 0.7], 0.3),  # partial credit, v1-like stage spread, partly paired
    ],
)
def test_type_one_error_looking_after_every_pair(stages, coupling):
    """A policy against itself: the fraction of streams ever declaring a difference stays <= alpha."""
    rng = np.random.default_rng(123)
    n_streams, n_pairs, alpha = 600, 250, 0.1
    a, b = sq.sample_paired_scores(rng, (n_streams, n_pairs), stages, stages, coupling)
    code, _ = sq.simulate_sequential(b - a, alpha, 0.1)
    false_rate = np.isin(code, [1, 2]).mean()
    assert false_rate <= _mc_bound(alpha, n_streams), false_rate
    # not vacuous: the same test on the same kind of streams finds a 25-point improvement
    a, b = sq.sample_paired_scores(rng, (200, n_pairs), stages, sq.improved_stage_probs(stages, 0.25), coupling)
    code, _ = sq.simulate_sequential(b - a, alpha, 0.1)
    assert (code == 1).mean() > 0.8


def test_confidence_sequence_covers_true_difference():
    rng = np.random.default_rng(7)
    base = [0.4, 0, 0, 0, 0.6]
    chal = sq.improved_stage_probs(base, 0.15)
    a, b = sq.sample_paired_scores(rng, (120, 100), base, chal, 0.0)
    true_diff = chal[-1] - base[-1]
    missed = 0
    for k in range(a.shape[0]):
        t = sq.PairedSequentialTest(0.1, 0.1, resolution=0.05)  # bounds are outward-rounded to this grid
        t.update_batch(a[k], b[k])
        s = t.state()
        missed += not (s.ci_low <= true_diff <= s.ci_high)
    assert missed / a.shape[0] <= _mc_bound(0.1, a.shape[0])


# ---------------------------------------------------------------------------------- power


def test_large_effect_decided_in_few_pairs_and_rounds():
    t = sq.PairedSequentialTest(0.05, 0.1)
    for _ in range(30):
        t.update(0.0, 1.0)  # baseline fails, challenger succeeds on every seed
    s = t.state()
    assert s.decision == schema.DECISION_IMPROVED
    # independent expectation: mean_j (1 + f_j)^n >= 2/alpha first holds at this n
    f = np.asarray(sq.DEFAULT_BET_FRACTIONS)
    expected = next(n for n in range(1, 100) if np.mean((1 + f) ** n) >= 2 / 0.05)
    assert s.decided_at == expected <= 10
    assert s.ci_low >= 0.0 and s.estimate == 1.0

    res = sq.run_sequential(["x=a", "x=b"], lambda cell, k: [(0.0, 1.0)] * k if cell == "x=a" else [(1.0, 0.0)] * k,
                            sq.SequentialConfig(alpha=0.05, round_size=5, max_per_cell=100))
    cells = {c["cell"]: c for c in res["cells"]}
    assert cells["x=a"]["decision"] == schema.DECISION_IMPROVED
    assert cells["x=b"]["decision"] == schema.DECISION_REGRESSED
    assert cells["x=a"]["stop_round"] <= 3 and cells["x=a"]["n"] <= 15
    assert res["done"] and res["overall"]["decision"] == schema.DECISION_UNDECIDED  # +1 and -1 cancel


def test_identical_outcomes_decide_no_difference():
    t = sq.PairedSequentialTest(0.05, 0.1)
    for _ in range(200):
        t.update(1.0, 1.0)
    f = np.asarray(sq.DEFAULT_BET_FRACTIONS)
    # with d = 0, the K- process at m = +margin grows by (1 + f * margin / (1 - margin)) per pair
    expected = next(n for n in range(1, 1000) if np.mean((1 + f * 0.1 / 0.9) ** n) >= 2 / 0.05)
    assert t.state().decision == schema.DECISION_NO_DIFFERENCE
    assert t.state().decided_at == expected
    assert -0.1 <= t.state().ci_low and t.state().ci_high <= 0.1


def test_simulation_kernel_decides_like_the_test_object():
    rng = np.random.default_rng(3)
    a, b = sq.sample_paired_scores(rng, (24, 80), [0.1, 0.1, 0.1, 0.0, 0.7], [0.05, 0.05, 0.0, 0.0, 0.9], 0.5)
    code, at = sq.simulate_sequential(b - a, 0.05, 0.1)
    names = {0: schema.DECISION_UNDECIDED, 1: schema.DECISION_IMPROVED, 2: schema.DECISION_REGRESSED,
             3: schema.DECISION_NO_DIFFERENCE}
    for k in range(a.shape[0]):
        s = sq.PairedSequentialTest.from_pairs(zip(a[k], b[k]), 0.05, 0.1).state()
        assert s.decision == names[int(code[k])]
        assert (s.decided_at or 80) == at[k]
    assert (code == 1).sum() >= 12  # the effect is detected in most streams


# ---------------------------------------------------------------------------------- replay / resume


def _stream(seed: int):
    """A deterministic per-cell source of pairs: the i-th pair of a cell is a function of (cell, i)."""

    def run_round(cell: str, k: int, _pos={}):  # noqa: B006 - position per cell, local to this source
        start = _pos.get(cell, 0)
        _pos[cell] = start + k
        out = []
        for i in range(start, start + k):
            r = np.random.default_rng([seed, zlib.crc32(cell.encode()), i])
            base = float(r.random() < 0.6)
            chal = float(r.random() < (0.95 if cell.endswith("gap") else 0.6))
            out.append((base, chal))
        return out

    return run_round


def test_resume_replays_to_the_same_state_and_continues_the_sequence():
    cells = ["yaw=gap", "yaw=none", "yaw=small"]
    cfg = sq.SequentialConfig(alpha=0.05, margin=0.2, round_size=4, max_per_cell=60)
    full = sq.run_sequential(cells, _stream(1), cfg)

    observed: dict[str, list] = {c: [] for c in cells}
    src = _stream(1)

    def recording(cell, k):
        pairs = src(cell, k)
        observed[cell].extend(pairs)
        return pairs

    part = sq.run_sequential(cells, recording, cfg, max_rounds=2)
    assert not part["done"]
    # an interruption mid-round: the last cell recorded only 1 of its pairs of round 3
    extra = src("yaw=small", 1)
    observed["yaw=small"].extend(extra)

    replay = sq.SequentialDriver(cells, cfg, observed=observed)
    for c in cells:
        live = sq.PairedSequentialTest.from_pairs(observed[c], cfg.alpha / len(cells), cfg.margin)
        assert replay.tests[c].state() == live.state()
    assert replay.next_round()["yaw=small"] == 3  # completes the interrupted round first

    resumed = sq.run_sequential(cells, src, cfg, observed=observed)
    assert resumed == full
    assert json.loads(json.dumps(full)) == full  # the evals row stores it as is
    assert any(c["decision"] == schema.DECISION_IMPROVED and c["cell"] == "yaw=gap" for c in full["cells"])


def test_driver_rejects_wrong_round_results():
    drv = sq.SequentialDriver(["a=1", "a=2"], sq.SequentialConfig(round_size=3, max_per_cell=9))
    req = drv.next_round()
    assert req == {"a=1": 3, "a=2": 3}
    with pytest.raises(sq.SequentialError, match="asked for 3 pairs, got 2"):
        drv.add_round({"a=1": [(0, 1)] * 2, "a=2": [(0, 1)] * 3})
    with pytest.raises(sq.SequentialError, match="missing cells"):
        drv.add_round({"a=1": [(0, 1)] * 3})
    drv.add_round({"a=1": [(0, 1)] * 3, "a=2": [(1, 1)] * 3})
    assert drv.round == 1
    with pytest.raises(sq.SequentialError, match="more than max_per_cell"):
        sq.SequentialDriver(["a=1"], sq.SequentialConfig(max_per_cell=2), observed={"a=1": [(0, 0)] * 3})
    with pytest.raises(sq.SequentialError, match="unknown cell"):
        sq.SequentialDriver(["a=1"], observed={"a=9": [(0, 0)]})


def test_max_per_cell_stops_undecided():
    res = sq.run_sequential(["c=1"], lambda cell, k: [(0.0, 1.0), (1.0, 0.0)] * (k // 2) + [(0.0, 0.0)] * (k % 2),
                            sq.SequentialConfig(round_size=4, max_per_cell=10, margin=0.05))
    (c,) = res["cells"]
    assert c["n"] == 10 and c["decision"] == schema.DECISION_UNDECIDED and c["stopped"] == "max_per_cell"
    assert c["rounds"] == 3 and c["stop_round"] == 3  # 4 + 4 + 2


# ---------------------------------------------------------------------------------- fixed-n McNemar


def test_mcnemar_exact_p_reference_values():
    # two-sided exact: 2 * P(X <= min | n, 1/2)
    assert mcnemar_exact(10, 2) == pytest.approx(2 * (1 + 12 + 66) / 4096)
    assert mcnemar_exact(3, 3) == pytest.approx(1.0)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 7) == pytest.approx(2 / 2**7)


@functools.cache
def _binomtest_rejects(k: int, n: int) -> bool:
    return stats.binomtest(k, n, 0.5).pvalue <= 0.05


def test_mcnemar_sample_size_by_brute_force_enumeration():
    p01, p10 = sq.paired_binary_probs(0.6, 0.9, 0.5)
    n = sq.mcnemar_sample_size(0.6, 0.3, 0.05, 0.8, coupling=0.5)

    def brute_power(n: int) -> float:
        """Enumerate every (n01, n10) table: multinomial probability x (scipy's exact binomial test rejects)."""
        x = np.array([(i, j, n - i - j) for i in range(n + 1) for j in range(n + 1 - i) if i + j > 0])
        prob = stats.multinomial.pmf(x, n, [p01, p10, 1 - p01 - p10])
        reject = np.array([_binomtest_rejects(int(i), int(i + j)) for i, j, _ in x])
        return float(prob[reject].sum())

    assert brute_power(n) >= 0.8 > brute_power(n - 1)
    assert sq.mcnemar_power(n, p01, p10) == pytest.approx(brute_power(n), abs=1e-9)
    # perfectly paired seeds leave fewer discordant pairs to look at: fewer pairs needed
    assert sq.mcnemar_sample_size(0.6, 0.3, coupling=1.0) < n < sq.mcnemar_sample_size(0.6, 0.3, coupling=0.0)


# ---------------------------------------------------------------------------------- planner


def test_plan_eval_is_seeded_and_consistent():
    cells = {"yaw=none": 0.9, "yaw=any": [0.5, 0.2, 0.1, 0.0, 0.2]}
    plan = sq.plan_eval(cells, effect=0.3, alpha=0.05, n_sim=150, max_per_cell=150, seed=4)
    assert plan == sq.plan_eval(cells, effect=0.3, alpha=0.05, n_sim=150, max_per_cell=150, seed=4)
    by = {r["cell"]: r for r in plan}
    assert by["yaw=any"]["challenger_rate"] == pytest.approx(0.5)
    assert by["yaw=none"]["challenger_rate"] == pytest.approx(1.0)
    assert by["yaw=any"]["fixed_n"] == sq.mcnemar_sample_size(0.2, 0.3, 0.025, 0.8)
    for r in plan:
        assert r["alpha_per_cell"] == pytest.approx(0.025)
        assert 0 < r["sequential_mean"] <= r["sequential_p90"] <= 150
        assert r["sequential_improved"] > 0.8


# ---------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("alpha", [0, 1, -0.1, 1.5, float("nan"), "x"])
def test_alpha_outside_unit_interval_is_refused(alpha):
    with pytest.raises(sq.SequentialError, match="alpha must"):
        sq.PairedSequentialTest(alpha=alpha)
    with pytest.raises(sq.SequentialError, match="alpha must"):
        sq.SequentialConfig(alpha=alpha)


@pytest.mark.parametrize("margin", [0, -0.1, 1.01, 2])
def test_margin_outside_range_is_refused(margin):
    with pytest.raises(sq.SequentialError, match=r"margin must lie in \(0, 1\]"):
        sq.PairedSequentialTest(margin=margin)
    with pytest.raises(sq.SequentialError, match="margin must"):
        sq.CellTests(["a=1"], margin=margin)


def test_bad_pairs_are_refused_and_change_nothing():
    t = sq.PairedSequentialTest()
    with pytest.raises(sq.SequentialError, match="mismatched pairs: 3 baseline values but 2"):
        t.update_batch([0, 1, 1], [1, 1])
    with pytest.raises(sq.SequentialError, match=r"scores in \[0, 1\]"):
        t.update(0.5, 1.5)
    with pytest.raises(sq.SequentialError, match="must be a pair"):
        t.update_pairs([(0, 1), (1, 0, 1)])
    assert t.n == 0
    err = sq.SequentialError("x")
    assert isinstance(err, RoboloopError) and isinstance(err, ValueError)


def test_config_round_trip_and_validation():
    cfg = sq.SequentialConfig(alpha=0.01, margin=0.05, metric=schema.METRIC_STAGE, round_size=3, max_per_cell=90)
    assert sq.SequentialConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(sq.SequentialError, match="metric must be one of"):
        sq.SequentialConfig(metric="reward")
    with pytest.raises(sq.SequentialError, match="unknown sequential settings"):
        sq.SequentialConfig.from_dict({"alpha": 0.1, "beta": 2})
    with pytest.raises(sq.SequentialError, match="round_size"):
        sq.SequentialConfig(round_size=0)
    assert sq.stage_score(2) == 0.5 and sq.stage_score(len(schema.STAGES) - 1) == 1.0
    with pytest.raises(sq.SequentialError, match="stage index"):
        sq.stage_score(7)


def test_stage_distributions_from_rollout_rows_feed_the_planner():
    rows = [{"episode.cell": "yaw=any", "outcome.stage": s} for s in (0, 0, 1, 4, 4, 4, 4, 4)]
    rows += [{"episode.cell": "yaw=none", "outcome.stage": 4} for _ in range(5)]
    dist = sq.stage_distributions(rows)
    assert dist["yaw=any"] == pytest.approx([0.25, 0.125, 0, 0, 0.625])
    assert dist["yaw=none"] == pytest.approx([0, 0, 0, 0, 1.0])
    plan = sq.plan_eval(dist, effect=0.3, n_sim=100, max_per_cell=120, round_size=5, metric=schema.METRIC_STAGE)
    by = {r["cell"]: r for r in plan}
    assert by["yaw=none"]["fixed_n"] is None  # nothing to improve: no fixed-n size exists
    assert by["yaw=none"]["sequential_improved"] == 0.0
    # identical outcomes: every simulation reaches no_difference at the same pair, charged a whole round
    f = np.asarray(sq.DEFAULT_BET_FRACTIONS)
    n_eq = next(n for n in range(1, 1000) if np.mean((1 + f * 0.1 / 0.9) ** n) >= 2 / 0.025)
    assert by["yaw=none"]["sequential_mean"] == 5 * math.ceil(n_eq / 5)
    assert by["yaw=any"]["sequential_improved"] > 0.5
    with pytest.raises(sq.SequentialError, match="lacks"):
        sq.stage_distributions([{"episode.cell": "a=1"}])
