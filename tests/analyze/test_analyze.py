"""Analyze (pure functions) and the evaluate grid/config: no simulator, no catalog.

Reference numbers are published values or computed by hand from the definitions:
- Wilson intervals: Newcombe (1998), "Two-sided confidence intervals for the single
  proportion", Stat Med 17:857, Table I, method 3 (score).
- Newcombe hybrid score interval for a difference of independent proportions:
  Newcombe (1998), Stat Med 17:873, Table II, 56/70 - 48/80, method 10.
- Exact McNemar: two-sided binomial test of the discordant pairs, by hand.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pytest

from roboloop import schema
from roboloop.analyze import compare as compare_module
from roboloop.analyze import rollouts as analyze
from roboloop.analyze.compare import compare
from roboloop.evaluate.run import (
    EvalConfig,
    GridError,
    cell_conditions,
    cell_key,
    cell_seed,
    parse_grid,
)
from roboloop.predicate import UnknownColumnError
from roboloop.stats.exact import mcnemar_exact
from roboloop.stats.intervals import wilson
from roboloop.stats.multiplicity import holm

SUCCESS, STAGE, CELL, SEED = analyze.SUCCESS, analyze.STAGE, analyze.CELL, analyze.SEED


# --- success_by against an independent computation -------------------------------------------------

def _random_rows(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    regions = ["left", "right", "wide"]
    lights = ["normal", "dim"]
    out = []
    for i in range(n):
        region, light = regions[rng.integers(3)], lights[rng.integers(2)]
        p = {"left": 0.9, "right": 0.5, "wide": 0.2}[region] * (0.7 if light == "dim" else 1.0)
        ok = bool(rng.random() < p)
        out.append({
            "segment_id": f"s{i}", "scene.region": region, "scene.lighting": light, "episode.policy": "p",
            SUCCESS: ok, STAGE: 4 if ok else int(rng.integers(0, 4)), CELL: f"lighting={light},region={region}",
            SEED: int(rng.integers(0, 1000)),
        })
    return out


def test_success_by_matches_independent_grouping():
    rows = _random_rows(500)
    expect = defaultdict(lambda: [0, 0, 0])
    for r in rows:
        g = expect[(r["scene.region"], r["scene.lighting"])]
        g[0] += 1
        g[1] += r[SUCCESS]
        g[2] += r[STAGE]
    got = analyze.success_by(rows, ["scene.region", "scene.lighting"])
    assert [(g["scene.region"], g["scene.lighting"]) for g in got] == sorted(expect)
    for g in got:
        n, k, stage_sum = expect[(g["scene.region"], g["scene.lighting"])]
        assert (g["n"], g["successes"]) == (n, k)
        assert g["rate"] == pytest.approx(k / n) and g["mean_stage"] == pytest.approx(stage_sum / n)
        assert (g["ci_low"], g["ci_high"]) == pytest.approx(wilson(k, n))
        assert g["small"] == (n < analyze.SMALL_N)
    # the same from a pyarrow Table; one key; no key = overall
    assert analyze.success_by(pa.Table.from_pylist(rows), ["scene.region", "scene.lighting"]) == got
    one = analyze.success_by(rows, ["scene.region"])
    assert sum(g["n"] for g in one) == 500 and [g["scene.region"] for g in one] == ["left", "right", "wide"]
    (overall,) = analyze.success_by(rows, [])
    assert overall["successes"] == sum(r[SUCCESS] for r in rows)
    assert analyze.success_by(pa.Table.from_pylist(rows), []) == [overall]
    # nested key values (lists) group on the Python path, same numbers
    nested = [{**r, "scene.table_rgba": [0.2, 0.2, 0.2, 1.0] if r["scene.lighting"] == "dim" else [0.7] * 4} for r in rows]
    by_rgba = analyze.success_by(pa.Table.from_pylist(nested), ["scene.table_rgba"])
    assert [g["n"] for g in by_rgba] == [g["n"] for g in analyze.success_by(rows, ["scene.lighting"])]


def test_success_by_small_groups_nulls_and_unknown_columns():
    rows = [{SUCCESS: True, "k": "a"}, {SUCCESS: None, "k": "a"}, {SUCCESS: False, "k": None}]
    got = analyze.success_by(rows, ["k"])
    assert [(g["k"], g["n"], g["small"], g["mean_stage"]) for g in got] == [("a", 1, True, None), (None, 1, True, None)]
    # the Arrow path (groups by hash codes, `catalog.index.group_codes`) keys a null like the row-by-row path
    assert analyze.success_by(pa.Table.from_pylist(rows), ["k"]) == got
    empty = pa.Table.from_pylist(rows).slice(0, 0)
    assert analyze.success_by(empty, ["k"]) == [] and [g["n"] for g in analyze.success_by(empty, [])] == [0]
    with pytest.raises(UnknownColumnError, match="scene.nope"):
        analyze.success_by(rows, ["scene.nope"])


def test_success_by_counts_labelled_and_unlabelled_apart_on_both_paths():
    rows = _random_rows(300, seed=4)
    rng = np.random.default_rng(5)
    for r in rows:
        u = rng.random()
        r[analyze.SOURCE] = None  # every row has the key: pa.Table.from_pylist takes its columns from the first row
        if u < 0.2:
            r[SUCCESS] = None  # recorded on hardware, not labelled: no outcome
            r[STAGE] = None
        elif u < 0.35:
            r[analyze.SOURCE] = schema.OUTCOME_SOURCE_LABEL
    rows += [{**rows[0], "scene.region": "moon", SUCCESS: None, STAGE: None, analyze.SOURCE: None}] * 3  # a group with no outcome at all
    expect = defaultdict(lambda: [0, 0, 0, 0])  # n, successes, labelled, unlabelled
    for r in rows:
        g = expect[r["scene.region"]]
        if r[SUCCESS] is None:
            g[3] += 1
            continue
        g[0] += 1
        g[1] += r[SUCCESS]
        g[2] += r.get(analyze.SOURCE) == schema.OUTCOME_SOURCE_LABEL
    got = analyze.success_by(rows, ["scene.region"])
    assert {g["scene.region"]: [g["n"], g["successes"], g["labelled"], g["unlabelled"]] for g in got} == dict(expect)
    assert analyze.success_by(pa.Table.from_pylist(rows), ["scene.region"]) == got
    moon = next(g for g in got if g["scene.region"] == "moon")
    assert moon["n"] == 0 and moon["rate"] is None and moon["ci_high"] is None
    for g in got:
        if g["n"]:
            assert g["rate"] == pytest.approx(g["successes"] / g["n"])  # unlabelled rows are not in the denominator
    # failures never lists an unlabelled rollout
    listed = {f["segment_id"] for f in analyze.failures([{**r, "segment_id": f"s{i}"} for i, r in enumerate(rows)])}
    assert listed == {f"s{i}" for i, r in enumerate(rows) if r[SUCCESS] is False}


# --- compare -----------------------------------------------------------------------------------------


def _compare_sides(seed: int) -> tuple[list[dict], list[dict]]:
    """Two evaluations on shared and own (cell, seed) pairs: repeats (the first counts), unlabelled and labelled outcomes."""
    rng = np.random.default_rng(seed)
    sides = []
    for side in range(2):
        out = []
        for i in range(400):
            region = ["left", "right", "wide"][rng.integers(3)]
            cell = f"region={region}"
            pair_seed = int(rng.integers(0, 60)) if rng.random() < 0.8 else 1000 * (side + 1) + i  # mostly shared
            ok = None if rng.random() < 0.1 else bool(rng.random() < (0.4 + 0.3 * side))
            out.append({"segment_id": f"{side}-{i}", "scene.region": region, "scene.lighting": ["dim", "normal"][pair_seed % 2],  # one scene per pair
                        CELL: cell, SEED: pair_seed, SUCCESS: ok,
                        analyze.SOURCE: schema.OUTCOME_SOURCE_LABEL if ok is not None and rng.random() < 0.2 else None})
        sides.append(out)
    return sides[0], sides[1]


@pytest.mark.parametrize("by", [[CELL], ["scene.region", "scene.lighting"]])
def test_compare_counts_with_arrow_equal_a_count_row_by_row(by, monkeypatch):
    rows_a, rows_b = _compare_sides(7)
    # independent count: per group, the first outcome of each (cell, seed) pair, then the pairs both sides have
    def first(rows):
        out = defaultdict(dict)
        for r in rows:
            if r[SUCCESS] is not None:
                out[tuple(r[b] for b in by)].setdefault((r[CELL], r[SEED]), r[SUCCESS])
        return out
    fa, fb = first(rows_a), first(rows_b)
    expect = {}
    for g in sorted(fa.keys() | fb.keys()):
        a, b = fa.get(g, {}), fb.get(g, {})
        shared = a.keys() & b.keys()
        expect[g] = (len(a), sum(a.values()), len(b), sum(b.values()), len(shared),
                     sum(a[p] and not b[p] for p in shared), sum(b[p] and not a[p] for p in shared))
    assert any(v[4] for v in expect.values()) and any(v[4] < min(v[0], v[2]) for v in expect.values())
    by_rows = compare(rows_a, rows_b, by)
    monkeypatch.setattr(compare_module, "_compare_counts", lambda *a: pytest.fail("the Arrow path fell back to rows"))
    by_arrow = compare(pa.Table.from_pylist(rows_a), pa.Table.from_pylist(rows_b), by)
    assert json.dumps(by_arrow, default=str) == json.dumps(by_rows, default=str)  # NaN-safe, every field and the order
    got = {tuple(r[b] for b in by): (r["n_a"], r["successes_a"], r["n_b"], r["successes_b"], r["n_pairs"],
                                     r["discordant_a"] or 0, r["discordant_b"] or 0) for r in by_arrow[:-1]}
    assert {g: v if v[4] * 2 >= min(v[0], v[2]) else (*v[:5], 0, 0) for g, v in expect.items()} == got
    overall = by_arrow[-1]
    assert overall["unlabelled_a"] == sum(r[SUCCESS] is None for r in rows_a)
    assert overall["labelled_b"] == sum(r[analyze.SOURCE] is not None for r in rows_b)


def test_compare_with_arrow_on_one_group_or_an_empty_side_equals_rows(monkeypatch):
    """No grouping (`by` empty) and an evaluation without rollouts: the Arrow count (it raised a TypeError there before
    it counted with hash codes and numpy) gives what the row-by-row count gives."""
    rows_a, rows_b = _compare_sides(3)
    table_a, table_b = pa.Table.from_pylist(rows_a), pa.Table.from_pylist(rows_b)
    empty = table_a.slice(0, 0)
    expected = {by: [compare(ra, rb, list(by)) for ra, rb in ((rows_a, rows_b), ([], rows_b), (rows_a, []))]
                for by in ((), (CELL,))}
    monkeypatch.setattr(compare_module, "_compare_counts", lambda *a: pytest.fail("the Arrow path fell back to rows"))
    for by, rows_results in expected.items():
        for (ta, tb), want in zip(((table_a, table_b), (empty, table_b), (table_a, empty)), rows_results):
            assert json.dumps(compare(ta, tb, list(by)), default=str) == json.dumps(want, default=str), (by, ta.num_rows, tb.num_rows)


def _paired(cell: str, both: int, only_a: int, only_b: int, neither: int, start: int = 0):
    a, b = [], []
    outcomes = [(1, 1)] * both + [(1, 0)] * only_a + [(0, 1)] * only_b + [(0, 0)] * neither
    for i, (sa, sb) in enumerate(outcomes):
        base = {CELL: cell, SEED: start + i, "segment_id": f"{cell}-{i}"}
        a.append({**base, SUCCESS: bool(sa)})
        b.append({**base, SUCCESS: bool(sb)})
    return a, b


def test_compare_paired_mcnemar_holm_and_verdicts():
    a1, b1 = _paired("region=left", 10, 0, 0, 2)  # no change
    a2, b2 = _paired("region=right", 2, 0, 10, 8)  # B better: 10 vs 0 discordant
    a3, b3 = _paired("region=wide", 1, 1, 1, 1)  # 4 pairs: too few
    out = compare(a1 + a2 + a3, b1 + b2 + b3)
    by_group = {r["group"]: r for r in out}
    assert list(by_group) == ["region=left", "region=right", "region=wide", "overall"]
    right = by_group["region=right"]
    assert right["test"] == "mcnemar" and right["n_pairs"] == 20
    assert right["diff"] == pytest.approx(0.5) and right["diff_low"] > 0
    assert right["p"] == pytest.approx(2 * 0.5**10)
    ps = [by_group[g]["p"] for g in ("region=left", "region=right", "region=wide")]
    assert [by_group[g]["p_holm"] for g in ("region=left", "region=right", "region=wide")] == pytest.approx(holm(ps))
    assert right["verdict"] == "improved"
    assert by_group["region=left"]["verdict"] == "no change" and by_group["region=left"]["p"] == 1.0
    assert by_group["region=wide"]["verdict"] == "too few episodes"
    overall = by_group["overall"]
    assert overall["n_pairs"] == 36 and overall["discordant_b"] == 11 and overall["discordant_a"] == 1
    assert overall["p"] == pytest.approx(mcnemar_exact(11, 1))
    # swapping A and B flips the sign and the verdict
    back = {r["group"]: r for r in compare(b1 + b2, a1 + a2)}
    assert back["region=right"]["verdict"] == "regressed" and back["region=right"]["diff"] == pytest.approx(-0.5)


def test_compare_unpaired_uses_fisher():
    from scipy.stats import fisher_exact

    a = [{CELL: "c", SEED: i, SUCCESS: i < 5} for i in range(20)]
    b = [{CELL: "c", SEED: 100 + i, SUCCESS: i < 17} for i in range(20)]
    row = compare(a, b)[0]
    assert row["test"] == "fisher" and row["n_pairs"] == 0
    assert row["p"] == pytest.approx(fisher_exact([[17, 3], [5, 15]]).pvalue)
    assert row["diff"] == pytest.approx(0.6) and row["verdict"] == "improved"


# --- failures ------------------------------------------------------------------------------------------

def test_failures_lists_failed_rollouts_with_time_and_links():
    rows = [
        {"segment_id": "ok-1", SUCCESS: True, CELL: "region=left", SEED: 1},
        {"segment_id": "bad-2", SUCCESS: False, CELL: "region=left", SEED: 2, "outcome.failure_reason": "dropped",
         "outcome.failure_time_s": 3.5, "scene.region": "left"},
        {"segment_id": "bad-1", SUCCESS: False, CELL: "region=left", SEED: 0, "outcome.failure_reason": "never_touched",
         "outcome.failure_time_s": -1.0},
    ]
    calls = []
    out = analyze.failures(rows, dataset="x_evals", url_for=lambda s, t: calls.append((s, t)) or f"url://{s}@{t}")
    assert [r["segment_id"] for r in out] == ["bad-1", "bad-2"]
    assert out[1]["at_s"] == 3.5 and out[1]["failure_kind"] == "dropped" and out[1]["scene.region"] == "left"
    assert out[0]["at_s"] == 0.0 and out[0]["failure_kind"] == "missed grasp (never touched)"
    assert out[1]["open"] == "roboloop open bad-2 --at 3.5 --dataset x_evals"
    assert calls == [("bad-1", 0.0), ("bad-2", 3.5)] and out[1]["url"] == "url://bad-2@3.5"


# --- grid, cells, seeds, config ---------------------------------------------------------------------------

def test_grid_parsing_aliases_and_errors(tmp_path):
    g = parse_grid("yaw=none,any region=near,far lighting=normal,dim")
    assert g.to_dict() == {"lighting": ["normal", "dim"], "region": ["left", "right"], "yaw": ["none", "any"]}
    assert len(g.cells()) == 8 and g.keys()[0] == "lighting=normal,region=left,yaw=none"
    toml = tmp_path / "grid.toml"
    toml.write_text('[grid]\nregion = ["near", "far"]\nlighting = "normal,dim"\nyaw = ["none", "any"]\n')
    assert parse_grid(str(toml)) == g
    with pytest.raises(GridError, match="valid axes: region, yaw, lighting, table, distractors"):
        parse_grid("colour=red")
    with pytest.raises(GridError, match=r"valid lighting labels: bright, dim, normal"):
        parse_grid("lighting=dark")
    with pytest.raises(GridError, match="twice"):
        parse_grid("region=near,left")
    with pytest.raises(GridError, match="axis=label"):
        parse_grid("region")
    assert parse_grid("distractors=2,0").to_dict() == {"distractors": ["few", "none"]}


def test_cell_key_and_seed_are_pure_and_canonical():
    assert cell_key({"yaw": "any", "region": "near"}) == "region=left,yaw=any"
    key = "lighting=dim,region=left"
    digest = hashlib.sha256(b"lighting=dim,region=left#3").digest()
    assert cell_seed(key, 3) == 2**30 + int.from_bytes(digest[:8], "big") % 2**30
    assert cell_seed(cell_key({"region": "near", "lighting": "dim"}), 3) == cell_seed(key, 3)
    seeds = {cell_seed(key, i) for i in range(1000)}
    assert len(seeds) == 1000
    assert all(schema.EVAL_SEED_BASE <= s < schema.EVAL_SEED_BASE + schema.EVAL_SEED_SPAN for s in seeds)
    assert all(s >= schema.DEMO_SEED_LIMIT for s in seeds)
    c = cell_conditions({"region": "far", "lighting": "dim", "yaw": "any"})
    assert (c.region, c.lighting, c.yaw_min, c.yaw_max) == ("right", "dim", -45.0, 45.0)


def test_eval_config_round_trip_and_validation():
    cfg = EvalConfig(dataset="d", policy="run-abc", grid=parse_grid("region=near,far"), episodes_per_cell=3,
                     eval_id="e1", cameras=("top", "angle"), camera_size=(96, 72), steps=50)
    d = cfg.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert EvalConfig.from_dict(json.loads(json.dumps(d))) == cfg
    assert EvalConfig.from_json(cfg.to_json()) == cfg
    assert EvalConfig.from_dict(EvalConfig().to_dict()) == EvalConfig()
    for bad in ({"episodes_per_cell": 0}, {"cameras": ("nope",)}, {"camera_size": (33, 24)}, {"workers": 0},
                {"steps": 0}, {"eval_id": "bad id"}, {"camera_hz": 7}):
        with pytest.raises(ValueError):
            EvalConfig(**bad)
    with pytest.raises(ValueError, match="unknown EvalConfig keys"):
        EvalConfig.from_dict({**d, "episodes": 3})


def test_stages_from_contacts():
    from roboloop.envs.aloha.success import SuccessTracker

    def c(ll=False, lr=False, rl=False, rr=False, table=False):
        return {"left_left_finger": ll, "left_right_finger": lr, "right_left_finger": rl, "right_right_finger": rr,
                    "table": table, "other": False}

    tr = SuccessTracker()
    for _ in range(10):
        tr.observe(0.02, c(table=True))
    assert tr.result().stage == 0 and tr.result().stage_name == "none"
    tr.observe(0.02, c(rl=True, rr=True, table=True))  # step 10: right grasp on the table
    assert (tr.stage, tr.stage_step) == (1, 10)
    tr.observe(0.03, c(rl=True, rr=True))  # off the table but not high enough: no lift yet
    assert tr.stage == 1
    tr.observe(0.08, c(rl=True, rr=True))  # step 12: lifted
    assert (tr.stage, tr.stage_step) == (2, 12)
    tr.observe(0.08, c(ll=True, lr=True, rl=True, rr=True))  # step 13: both grippers
    assert tr.stage == 3
    tr.observe(0.08, c(ll=True, lr=True))  # step 14: right let go -> handover
    assert (tr.stage, tr.stage_step) == (4, 14)
    for _ in range(9):  # steps 15-23: the left gripper holds it up (a hold: both fingers for HOLD_STEPS steps) ...
        tr.observe(0.08, c(ll=True, lr=True))
    tr.observe(0.02, c(table=True))  # ... and lets it fall
    r = tr.result()
    assert r.stage == 4 and not r.success and r.failure_reason == "dropped"
    assert math.isclose(r.failure_step, 23)
    assert schema.STAGES[r.stage] == "handover"


# --- the rollout index: snapshot + row files -----------------------------------------------------------

def test_index_snapshot_merges_with_newer_rows_and_tombstones(tmp_path, monkeypatch):
    from roboloop import rows
    from roboloop.catalog import index as episode_index
    from roboloop.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    base = ws.layer_dir("d_evals", schema.BASE_LAYER)
    base.mkdir(parents=True)

    def add(i: int, ok: bool) -> None:
        (base / f"s{i}.rrd").touch()  # only the names matter to the index
        episode_index.write_row(ws, "d_evals", f"s{i}", {"episode": {"seed": i}, "outcome": {"success": ok},
                                                          "signals": {"ignored": 1}})

    for i in range(5):
        add(i, i % 2 == 0)
    monkeypatch.setattr(episode_index, "COMPACT_AFTER", 3)
    t = episode_index.load_table(ws, "d_evals")  # parses 5 files > 3: writes the snapshot
    snap = ws.table_dir(schema.rollout_index_table("d_evals")) / episode_index.SNAPSHOT_FILE
    assert snap.is_file() and sorted(t.column("segment_id").to_pylist()) == [f"s{i}" for i in range(5)]
    assert "signals.ignored" not in t.column_names
    # after the snapshot: a new rollout, a re-written row, a deleted file
    add(5, True)
    episode_index.write_row(ws, "d_evals", "s1", {"episode": {"seed": 1}, "outcome": {"success": True}})
    (base / "s3.rrd").unlink()
    got = {r["segment_id"]: r for r in episode_index.load(ws, "d_evals")}
    assert sorted(got) == ["s0", "s1", "s2", "s4", "s5"]
    assert got["s1"]["outcome.success"] is True and got["s5"]["episode.seed"] == 5
    assert got == {r["segment_id"]: r for r in episode_index.read(ws, "d_evals")}
    assert rows.read_row(ws, schema.rollout_index_table("d_evals"), "s3") is None  # tombstoned
    # a broken snapshot is only a cache
    snap.write_bytes(b"garbage")
    assert {r["segment_id"] for r in episode_index.load(ws, "d_evals")} == set(got)


def test_index_fast_path_trusts_a_snapshot_only_while_both_folders_are_unchanged(tmp_path, monkeypatch):
    import os
    import time

    from roboloop import rows
    from roboloop.catalog import index as episode_index
    from roboloop.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    base = ws.layer_dir("d_evals", schema.BASE_LAYER)
    base.mkdir(parents=True)
    for i in range(3):
        (base / f"s{i}.rrd").touch()
        episode_index.write_row(ws, "d_evals", f"s{i}", {"outcome": {"success": True}})
    old = time.time() - 10
    folders = (base, rows.rows_dir(ws, schema.rollout_index_table("d_evals")))

    def age(t: float) -> None:  # make the folders look quiet (changed more than 1 s ago)
        for d in folders:
            os.utime(d, (t, t))

    age(old)
    assert episode_index.load_table(ws, "d_evals").num_rows == 3  # full path; records the quiet folder state
    real_merge = episode_index._merge

    def no_listing(*a):
        raise AssertionError("the folders were listed")

    monkeypatch.setattr(episode_index, "_merge", no_listing)
    assert episode_index.load_table(ws, "d_evals").num_rows == 3  # fast path: no listing
    (base / "s3.rrd").touch()  # a new rollout changes the base folder
    episode_index.write_row(ws, "d_evals", "s3", {"outcome": {"success": False}})
    age(old + 5)
    with pytest.raises(AssertionError, match="listed"):
        episode_index.load_table(ws, "d_evals")
    monkeypatch.setattr(episode_index, "_merge", real_merge)
    t = episode_index.load_table(ws, "d_evals")
    assert sorted(t.column("segment_id").to_pylist()) == ["s0", "s1", "s2", "s3"]


def test_plots_bars_for_one_key_heatmap_for_two(tmp_path):
    from PIL import Image

    from roboloop.report.plots import plot_success

    rows = _random_rows(120)
    one = plot_success(analyze.success_by(rows, ["scene.region"]), ["scene.region"], tmp_path / "bars.png")
    two = plot_success(analyze.success_by(rows, ["scene.region", "scene.lighting"]), ["scene.region", "scene.lighting"],
                       tmp_path / "heat.png")
    for path in (one, two):
        with Image.open(path) as im:
            assert im.format == "PNG" and im.width > 300 and im.height > 200
    with pytest.raises(ValueError, match="one key"):
        plot_success([], ["a", "b", "c"], tmp_path / "x.png")
