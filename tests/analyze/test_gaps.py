"""Coverage gaps: distances, per-cell coverage, classification and ranking on synthetic rows.

The synthetic "world" decides success from the true start states (a policy that only works
near its training data), independently of the coverage code under test.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pyarrow as pa
import pytest

from roboloop.analyze import gaps as ag
from roboloop.analyze.gaps import COVERAGE_GAP, FINE, QUALITY, GapConfig, GapError


def _train_row(i, x, y, yaw, region="default", yaw_label="none"):
    return {
        "segment_id": f"demo-{i:03d}",
        "scene.cube_x": x,
        "scene.cube_y": y,
        "scene.cube_yaw_deg": yaw,
        "scene.region": region,
        "scene.yaw": yaw_label,
        "scene.lighting": "normal",
    }


def _rollout(i, cell, x, y, yaw, success):
    return {
        "segment_id": f"ro-{i:04d}",
        "episode.cell": cell,
        "episode.seed": 2**30 + i,
        "scene.cube_x": x,
        "scene.cube_y": y,
        "scene.cube_yaw_deg": yaw,
        "outcome.success": bool(success),
    }


REGION_X = {"left": (0.0, 0.1), "right": (0.1, 0.2)}
YAW = {"none": (0.0, 0.0), "any": (-45.0, 45.0)}


def _training(rng):
    """60 demos at yaw 0 over the whole default region + 40 at yaw +-45 in the left half only."""
    rows = [_train_row(i, rng.uniform(0, 0.2), rng.uniform(0.4, 0.6), 0.0) for i in range(60)]
    rows += [
        _train_row(60 + i, rng.uniform(0, 0.1), rng.uniform(0.4, 0.6), rng.uniform(-45, 45), "left", "any")
        for i in range(40)
    ]
    return rows


def _evaluation(rng, truth, per_cell=30):
    rows, i = [], 0
    for region in ("left", "right"):
        for yaw in ("none", "any"):
            for lighting in ("dim", "normal"):
                cell = f"lighting={lighting},region={region},yaw={yaw}"
                for _ in range(per_cell):
                    x = rng.uniform(*REGION_X[region])
                    y = rng.uniform(0.4, 0.6)
                    a = rng.uniform(*YAW[yaw])
                    rows.append(_rollout(i, cell, x, y, a, truth(region, yaw, lighting, x, y, a, rng)))
                    i += 1
    return rows


def _planted_truth(region, yaw, lighting, x, y, a, rng):
    # The policy has seen yaw only in the left half: in the right half it fails beyond ~2 degrees.
    # Lighting changes nothing (a state policy).
    if region == "right" and abs(a) >= 2.0:
        return False
    return rng.random() > 0.03


def test_distances_by_hand():
    train = np.array([[0.05, 0.50, 0.0], [0.15, 0.50, 44.0], [0.10, 0.45, 0.0]])
    roll = np.array([[0.05, 0.51, 0.0], [0.15, 0.50, -44.0], [0.05, 0.50, 6.0], [0.10, 0.465, 1.8]])
    nearest, index, counts = ag.coverage_distances(roll, train, GapConfig())
    # 1 cm in y = 0.5; -44 vs 44 deg is 2 deg apart modulo the cube's 90 deg symmetry -> 2/3;
    # 6 deg of yaw = 2 units; 1.5 cm and 1.8 deg together -> sqrt(0.75^2 + 0.6^2)
    assert nearest == pytest.approx([0.5, 2 / 3, 2.0, math.sqrt(0.75**2 + 0.6**2)])
    assert index.tolist() == [0, 1, 0, 2]
    assert counts.tolist() == [1, 1, 0, 1]
    raw, _, raw_counts = ag.coverage_distances(roll, train, GapConfig(yaw_period_deg=0))
    # without the symmetry the nearest start of (0.15, 0.50, -44) is (0.10, 0.45, 0): 2.5, 2.5 and 44/3 units
    assert raw[1] == pytest.approx(math.sqrt(2.5**2 + 2.5**2 + (44 / 3) ** 2))
    assert raw_counts.tolist() == [1, 0, 0, 1]
    _, _, wide_counts = ag.coverage_distances(roll, train, GapConfig(tolerance=2.0))
    assert wide_counts.tolist() == [1, 1, 1, 1]
    # a missing start state is infinitely far
    n2, i2, c2 = ag.coverage_distances(np.array([[np.nan, 0.5, 0.0]]), train)
    assert math.isinf(n2[0]) and i2[0] == -1 and c2[0] == 0


def test_match_labels_separates_appearance():
    train = np.array([[0.05, 0.5, 0.0]])
    roll = np.array([[0.05, 0.5, 0.0], [0.05, 0.5, 0.0]])
    cfg = GapConfig(match_labels=("lighting",))
    _, _, counts = ag.coverage_distances(
        roll, train, cfg, rollout_labels=[{"lighting": "normal"}, {"lighting": "dim"}], train_labels=[{"lighting": "normal"}]
    )
    assert counts.tolist() == [1, 0]


def _covered_by_hand(rollouts, training, cell, pos=0.02, yaw=3.0):
    """Independent covered count: plain loops and math, yaw modulo 90."""
    n = 0
    for r in rollouts:
        if r["episode.cell"] != cell:
            continue
        for t in training:
            dyaw = abs(r["scene.cube_yaw_deg"] - t["scene.cube_yaw_deg"]) % 90
            dyaw = min(dyaw, 90 - dyaw)
            d = math.hypot((r["scene.cube_x"] - t["scene.cube_x"]) / pos, (r["scene.cube_y"] - t["scene.cube_y"]) / pos, dyaw / yaw)
            if d <= 1.0:
                n += 1
                break
    return n


def test_planted_gap_found_and_ranked_first_lighting_is_control():
    rng = np.random.default_rng(7)
    training = _training(rng)
    rollouts = _evaluation(rng, _planted_truth)
    report = ag.gap_report(rollouts, training, eval_id="ev1", dataset="aloha", evals_dataset="aloha_evals")
    verdict = {c.cell: c.verdict for c in report.cells}
    gap_cells = {"lighting=dim,region=right,yaw=any", "lighting=normal,region=right,yaw=any"}
    assert {c.cell for c in report.cells[:2]} == gap_cells  # found, not told
    assert [c.rank for c in report.cells] == list(range(1, 9))
    assert {k for k, v in verdict.items() if v == COVERAGE_GAP} == gap_cells
    assert all(v == FINE for k, v in verdict.items() if k not in gap_cells)
    # the control axis: every (region, yaw) gets the same verdict under both lightings
    for region in ("left", "right"):
        for yaw in ("none", "any"):
            assert verdict[f"lighting=dim,region={region},yaw={yaw}"] == verdict[f"lighting=normal,region={region},yaw={yaw}"]
    # coverage numbers against an independent count
    for c in report.cells:
        assert c.covered == _covered_by_hand(rollouts, training, c.cell)
        assert c.covered_fraction == pytest.approx(c.covered / c.n)
        assert c.n == 30
        assert c.successes == sum(r["outcome.success"] for r in rollouts if r["episode.cell"] == c.cell)
    top = report.cells[0]
    assert top.fails and top.ci_high < 0.8 and top.covered_fraction < 0.5
    assert top.uncovered_failures > 0 and len(top.failed_ids) == top.n - top.successes
    assert "collect demonstrations" in top.advice
    # containment would say the left/any cell has 40 training episodes in it, right/any none
    by = {c.cell: c for c in report.cells}
    assert by["lighting=normal,region=left,yaw=any"].train_in_cell_by_label == 40
    assert by["lighting=normal,region=right,yaw=any"].train_in_cell_by_label == 0
    assert by["lighting=normal,region=right,yaw=none"].train_in_cell_by_label == 0  # region "default" != "right"


def test_covered_but_failing_cell_is_a_quality_problem():
    rng = np.random.default_rng(11)
    training = _training(rng)

    def truth(region, yaw, lighting, x, y, a, rng):
        if region == "left" and yaw == "none" and lighting == "normal":
            return rng.random() < 0.3  # bad demonstrations there: fails although covered
        return _planted_truth(region, yaw, lighting, x, y, a, rng)

    rollouts = _evaluation(rng, truth)
    report = ag.gap_report(rollouts, training, eval_id="ev2", dataset="aloha", evals_dataset="aloha_evals")
    by = {c.cell: c for c in report.cells}
    bad = by["lighting=normal,region=left,yaw=none"]
    assert bad.verdict == QUALITY
    assert bad.fails and bad.covered_fraction >= 0.5
    assert by["lighting=dim,region=left,yaw=none"].verdict == FINE
    # gaps rank before quality problems, quality before fine
    order = [c.verdict for c in report.cells]
    assert order == sorted(order, key=lambda v: {COVERAGE_GAP: 0, QUALITY: 1, FINE: 2}[v])
    assert report.cells[2].cell == bad.cell
    train_ids = {t["segment_id"] for t in training}
    assert bad.near_train_ids and set(bad.near_train_ids) <= train_ids
    assert "roboloop failures --dataset aloha_evals --eval ev2" in bad.advice
    assert "episode.cell = 'lighting=normal,region=left,yaw=none'" in bad.advice


def test_fail_rule_wilson_or_rate():
    training = [_train_row(0, 0.05, 0.5, 0.0)]

    def cell(k, n, name):
        return [_rollout(j, name, 0.05, 0.5, 0.0, j < k) for j in range(n)]

    rows = cell(24, 30, "yaw=a") + cell(18, 30, "yaw=b") + cell(1, 2, "yaw=c") + cell(0, 2, "yaw=d")
    for j, r in enumerate(rows):
        r["segment_id"] = f"r{j}"
    rep = {c.cell: c for c in ag.gap_report(rows, training).cells}
    assert not rep["yaw=a"].fails  # 24/30: upper bound 0.90 >= 0.8
    assert rep["yaw=b"].fails  # 18/30: upper bound 0.75 < 0.8
    assert rep["yaw=b"].ci_high == pytest.approx(0.7543, abs=1e-3)
    assert not rep["yaw=c"].fails  # 1/2: too few to say (upper bound 0.91, rate 0.5)
    assert rep["yaw=d"].fails  # 0/2: rate below 0.5
    assert rep["yaw=b"].verdict == QUALITY  # every rollout sits on a training start


def test_coverage_table_and_errors():
    training = [_train_row(0, 0.05, 0.5, 0.0), _train_row(1, 0.06, 0.5, 0.0), _train_row(2, 0.15, 0.5, 0.0)]
    rollouts = [
        _rollout(0, "yaw=none", 0.055, 0.5, 0.0, True),
        _rollout(1, "yaw=none", 0.15, 0.5, 0.0, False),
        _rollout(2, "yaw=any", 0.05, 0.5, 30.0, False),
    ]
    cov = {c["cell"]: c for c in ag.coverage(rollouts, training)}
    assert cov["yaw=none"]["covered"] == 2 and cov["yaw=none"]["train_near"] == 3
    assert cov["yaw=none"]["near_train_ids"] == ["demo-002"]
    assert cov["yaw=any"]["covered"] == 0 and cov["yaw=any"]["median_distance"] == pytest.approx(10.0)
    assert not any(k.startswith("_") for c in cov.values() for k in c)
    with pytest.raises(GapError, match="start state"):
        ag.coverage(rollouts, [{"segment_id": "x"}])
    with pytest.raises(GapError, match="episode.cell"):
        ag.coverage([{"segment_id": "r", "scene.cube_x": 0.0}], training)


def test_config_round_trip_and_validation():
    cfg = GapConfig(yaw_scale_deg=4, match_labels=("lighting",))
    assert GapConfig.from_dict(cfg.to_dict()) == cfg
    assert GapConfig.for_policy({"cameras": ["top"]}).match_labels == ("lighting", "table", "distractors")
    assert GapConfig.for_policy({"cameras": []}).match_labels == ()
    with pytest.raises(GapError, match="yaw_scale_deg"):
        GapConfig(yaw_scale_deg=0)
    with pytest.raises(GapError, match="valid axes"):
        GapConfig(match_labels=("colour",))
    with pytest.raises(GapError, match="unknown GapConfig keys"):
        GapConfig.from_dict({"tolerence": 1})


def test_cell_keys_round_trip():
    assert ag.parse_cell_key("lighting=dim,yaw=any") == {"lighting": "dim", "yaw": "any"}
    assert ag.cell_key({"yaw": "any", "lighting": "dim"}) == "lighting=dim,yaw=any"
    with pytest.raises(GapError):
        ag.parse_cell_key("lighting")


def test_split_budget():
    assert ag.split_budget([3, 1], 10) == [7, 3]
    assert ag.split_budget([5, 0], 4) == [3, 1]
    assert ag.split_budget([1, 1, 1], 2) == [1, 1, 0]
    assert ag.split_budget([2, 2], 0) == [0, 0]
    assert sum(ag.split_budget([7, 3, 1], 23)) == 23
    with pytest.raises(GapError):
        ag.split_budget([1], -1)


def test_make_plan_aims_at_gaps_and_suggests_inspection():
    _, report = _quality_world()
    p = ag.make_plan(report, budget=20)
    assert p.dataset == "aloha" and p.source_eval == "ev2" and p.name == "plan-ev2"
    assert p.total == 20
    assert [dict(it.conditions) for it in p.items] == [c.conditions for c in report.gap_cells]
    assert {it.key for it in p.items} == {"lighting=dim,region=right,yaw=any", "lighting=normal,region=right,yaw=any"}
    needs = [c.uncovered_failures for c in report.gap_cells]
    assert [it.count for it in p.items] == ag.split_budget(needs, 20)
    assert [s["cell"] for s in p.suggestions] == ["lighting=normal,region=left,yaw=none"]
    assert p.suggestions[0]["action"] == "inspect"
    # a budget smaller than the gap cells goes to the worst ones first
    small = ag.make_plan(report, budget=1)
    assert [it.key for it in small.items] == [report.cells[0].cell]
    with pytest.raises(GapError, match="dataset"):
        ag.make_plan(ag.gap_report([], []), budget=3)


def _quality_world():
    """The test world above plus a covered-yet-failing cell (left, yaw none, normal light: 30% success)."""
    rng = np.random.default_rng(11)
    training = _training(rng)

    def truth(region, yaw, lighting, x, y, a, rng):
        if region == "left" and yaw == "none" and lighting == "normal":
            return rng.random() < 0.3
        return _planted_truth(region, yaw, lighting, x, y, a, rng)

    rollouts = _evaluation(rng, truth)
    report = ag.gap_report(rollouts, training, eval_id="ev2", run_id="run-1", dataset="aloha", evals_dataset="aloha_evals")
    return rollouts, report


def test_corrective_episodes_go_to_every_failing_cell_by_failures():
    rollouts, report = _quality_world()
    failures: dict[str, int] = {}
    for r in rollouts:
        failures[r["episode.cell"]] = failures.get(r["episode.cell"], 0) + (not r["outcome.success"])
    failing = {c.cell for c in report.cells if c.verdict in (COVERAGE_GAP, QUALITY)}
    assert failing == {"lighting=dim,region=right,yaw=any", "lighting=normal,region=right,yaw=any", "lighting=normal,region=left,yaw=none"}
    p = ag.make_plan(report, budget=20, corrective=40)
    demos = [it for it in p.items if not it.corrective]
    extra = [it for it in p.items if it.corrective]
    assert demos == list(ag.make_plan(report, budget=20).items)  # the demonstrations are the plan without corrective
    assert {it.key for it in extra} == failing  # the covered-yet-failing cell too, not only the gaps
    assert sum(it.count for it in extra) == 40 and p.total == 60
    assert all(it.run == "run-1" and it.mode == "dagger" for it in extra)
    # proportional to failures: the exact shares, each rounded one way or the other
    total = sum(failures[c] for c in failing)
    for it in extra:
        share = 40 * failures[it.key] / total
        assert math.floor(share) - 1 <= it.count <= math.ceil(share) + 1, (it.key, it.count, share)
    quality = next(it for it in extra if it.key == "lighting=normal,region=left,yaw=none")
    assert "covered yet failing" in quality.reason
    assert "corrective" in p.reason and "split by failures" in p.reason


def test_a_plan_without_corrective_episodes_is_unchanged():
    _, report = _quality_world()
    plain, zero = ag.make_plan(report, budget=20), ag.make_plan(report, budget=20, corrective=0, run="other")
    assert (plain.items, plain.reason, plain.suggestions) == (zero.items, zero.reason, zero.suggestions)
    assert not any(it.corrective for it in plain.items)
    assert ag.make_plan(report, budget=20, corrective=5, run="run-9").items[-1].run == "run-9"
    with pytest.raises(GapError, match=">= 0"):
        ag.make_plan(report, budget=20, corrective=-1)


def test_corrective_needs_a_run_and_a_task_with_an_expert():
    _, report = _quality_world()
    with pytest.raises(GapError, match="run"):
        ag.corrective_items(dataclasses.replace(report, run_id=""), "", 10)
    cell = report.cells[0]
    insertion = dataclasses.replace(report, cells=[dataclasses.replace(cell, conditions={"task": "insertion"})])
    with pytest.raises(GapError, match="corrective expert"):
        ag.corrective_items(insertion, "run-1", 10)


def test_fill_start_states_from_seed_and_conditions():
    from roboloop.envs.aloha.conditions import SceneConditions
    from roboloop.envs.aloha.env import sample_cube_pose

    cond = SceneConditions.from_names(region="right", yaw="any")
    row = {f"scene.{k}": v for k, v in cond.to_dict().items()} | {"episode.seed": 123}
    assert ag.fill_start_states([row]) == 1
    pose = sample_cube_pose(123, cond)
    assert row["scene.cube_x"] == pytest.approx(pose[0]) and row["scene.cube_y"] == pytest.approx(pose[1])
    assert math.radians(row["scene.cube_yaw_deg"]) == pytest.approx(2 * math.atan2(pose[6], pose[3]))
    assert -45 <= row["scene.cube_yaw_deg"] <= 45


def _table(rows):
    """Dict rows as a pyarrow Table (a key a row lacks is null there), as `roboloop gaps` reads them from the index."""
    keys = dict.fromkeys(k for r in rows for k in r)
    return pa.table({k: [r.get(k) for r in rows] for k in keys})


def test_arrow_tables_give_the_report_of_the_same_rows_as_dicts():
    """`gaps` hands `gap_report` Arrow tables (read column by column, numpy, no row dicts): the report is the one of
    the same rows as dicts, with unlabelled and person-labelled outcomes, training episodes stored before yaw labels
    (their label derived from the yaw range) and appearance labels matched as for a camera policy."""
    rollouts, _ = _quality_world()
    training = _training(np.random.default_rng(11))  # the world's training episodes (its generator's first draws)
    for i, r in enumerate(rollouts):
        r["scene.lighting"] = r["episode.cell"].split(",")[0].split("=")[1]
        if i % 7 == 0:
            r["outcome.success"] = None
        elif i % 11 == 0:
            r["outcome.source"] = "label"
    for t, (lo, hi) in zip(training[::20], [(0.0, 0.0), (-45.0, 45.0), (-3.0, 3.0)] * 2):
        del t["scene.yaw"]
        t.update({"scene.yaw_min": lo, "scene.yaw_max": hi})
    for cfg in (GapConfig(), GapConfig(match_labels=("lighting",))):
        from_dicts = ag.gap_report(rollouts, training, cfg, eval_id="ev", dataset="aloha")
        assert ag.gap_report(_table(rollouts), _table(training), cfg, eval_id="ev", dataset="aloha").to_dict() == from_dicts.to_dict()
    assert sum(c.unlabelled for c in from_dicts.cells) == sum(r["outcome.success"] is None for r in rollouts)
    assert sum(c.labelled for c in from_dicts.cells) == sum(
        r.get("outcome.source") == "label" and r["outcome.success"] is not None for r in rollouts)
    assert sum(len(c.failed_ids) for c in from_dicts.cells) == sum(r["outcome.success"] is False for r in rollouts)


def test_start_states_of_a_table_are_filled_like_dict_rows():
    rows = [_rollout(i, "yaw=none", 0.05, 0.5, 0.0, True) for i in range(6)]
    for r in rows[1::2]:
        r["scene.cube_x"] = None
    rows[5]["episode.seed"] = None  # no seed: stays missing
    filled = ag.with_start_states(_table(rows))
    ag.fill_start_states(rows)
    assert filled.column("scene.cube_x").to_pylist() == [r["scene.cube_x"] for r in rows]
    assert filled.column("scene.cube_y").to_pylist() == [r["scene.cube_y"] for r in rows]
    assert rows[1]["scene.cube_x"] != 0.05 and rows[5]["scene.cube_x"] is None
    complete = _table(rows[:1])
    assert ag.with_start_states(complete) is complete


def test_gaps_reads_one_evaluation_and_counts_a_repeated_rollout_once(tmp_path):
    """The glue on index-like tables (what `roboloop gaps` hands it): only the evaluation's rollouts, a repeated
    (eval id, cell, index) pair once (the smallest segment id), in segment id order."""
    from roboloop import rows, schema
    from roboloop.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    rows.write_row(ws, schema.EVALS_TABLE, "ev", {"eval_id": "ev", "dataset": "demo", "evals_dataset": "demo_evals",
                                                  "run_id": "run-1", "policy": "run-1"})
    training = _training(np.random.default_rng(3))
    ws.run_dir("run-1").mkdir(parents=True)
    (ws.run_dir("run-1") / "run.json").write_text(json.dumps(
        {"run_id": "run-1", "dataset": "demo", "cameras": [], "train_ids": [t["segment_id"] for t in training]}))
    rollouts = _evaluation(np.random.default_rng(4), _planted_truth, per_cell=6)
    for i, r in enumerate(rollouts):
        r.update({"episode.eval_id": "ev", "episode.index_in_cell": i % 6})
    repeat = {**rollouts[7], "segment_id": "ro-9999", "outcome.success": not rollouts[7]["outcome.success"]}
    other = {**rollouts[3], "segment_id": "ro-0000a", "episode.eval_id": "other", "scene.cube_x": 0.3}
    table = _table(rollouts[::-1] + [repeat, other])
    rep = ag.gaps(None, "ev", workspace=ws, segment_table={"demo": _table(training)}.__getitem__, rollout_table=lambda _d: table)
    assert rep.to_dict() == ag.gap_report(rollouts, training, eval_id="ev", run_id="run-1", dataset="demo",
                                          evals_dataset="demo_evals").to_dict()
