"""The reduced demo end to end: real simulator, recorder, catalog, training, evaluation, analysis, report.

Success itself is not asserted (it needs real counts; the closing note reports it). What is
asserted: every artifact exists and agrees with the catalog, and a re-run reuses them.
"""

from __future__ import annotations

import pytest

from roboloop import curate, rows, schema
from roboloop.catalog.client import Catalog
from roboloop.demo import PLAN_NAME, QUERY, V1, V2, DemoConfig, run_demo

pytestmark = [pytest.mark.sim, pytest.mark.slow]


def _ids(table, column, value):
    return [s for s, v in zip(table.column("segment_id").to_pylist(), table.column(column).to_pylist()) if v == value]


def test_reduced_demo_builds_every_artifact_and_reruns_incrementally(ws):
    cfg = DemoConfig(demos=4, episodes_per_cell=2, plan_budget=2, epochs=2, workers=1, camera_size=(64, 48), round_size=1)
    lines: list[str] = []
    with Catalog(ws, url="") as cat:
        out = run_demo(cat, cfg, say=lines.append)
        ds, runs_ds, evals_ds = cfg.dataset, schema.runs_dataset(cfg.dataset), schema.evals_dataset(cfg.dataset)

        # demonstrations: the covered corner plus what the plan added where the gap was found
        demos = cat.segment_table(ds)
        assert demos.num_rows == 4 + out.plan_collected
        assert out.plan_collected >= 1
        # the plan aimed at cells the gap report called coverage gaps (found from the data, not told)
        gap_cells = {g["cell"] for g in out.gaps if g["verdict"] == "coverage_gap"}
        plan_row = rows.read_row(ws, schema.PLANS_TABLE, PLAN_NAME)
        planned = {seg for ids in plan_row["collected"].values() for seg in ids}
        assert len(planned) == out.plan_collected
        cond = {s: f"lighting={li},yaw={y}" for s, li, y in zip(demos.column("segment_id").to_pylist(),
                                                                  demos.column("scene.lighting").to_pylist(),
                                                                  demos.column("scene.yaw").to_pylist())}
        assert {cond[s] for s in planned} <= gap_cells
        assert sum(1 for s, c in cond.items() if s not in planned and c.endswith("yaw=none")) == 4

        # selections: v2 is the same query re-run, larger
        s1, s2 = curate.load(cat, V1), curate.load(cat, V2)
        assert s1.where == s2.where == QUERY
        assert set(s1.segment_ids) < set(s2.segment_ids)

        # runs: two segments of <ds>_runs with their selection as provenance
        runs = cat.segment_table(runs_ds)
        assert sorted(runs.column("segment_id").to_pylist()) == sorted(out.runs.values())
        by_run = dict(zip(runs.column("segment_id").to_pylist(), runs.column("run.selection").to_pylist()))
        assert by_run == {out.runs["v1"]: V1, out.runs["v2"]: V2}

        # rollouts: every rollout of both evaluations, with provenance, on identical (cell, seed) pairs
        ev = cat.segment_table(evals_ds)
        cells = 4
        for label in ("v1", "v2"):
            ids = _ids(ev, "episode.eval_id", out.evals[label])
            assert len(ids) == cells * cfg.episodes_per_cell
        for col in ("episode.run_id", "episode.checkpoint_sha256", "episode.selection", "episode.cell", "episode.seed",
                    "scene.cube_yaw_deg", "outcome.stage"):
            assert col in ev.column_names and None not in ev.column(col).to_pylist(), col
        pairs = {label: sorted((c, s) for e, c, s in zip(ev.column("episode.eval_id").to_pylist(), ev.column("episode.cell").to_pylist(),
                                                          ev.column("episode.seed").to_pylist()) if e == out.evals[label])
                 for label in ("v1", "v2")}
        assert pairs["v1"] == pairs["v2"]

        # the evaluation rows, the plan row, the gaps and the report
        for label in ("v1", "v2"):
            assert rows.read_row(ws, schema.EVALS_TABLE, out.evals[label])["status"] == "finished"
        assert rows.read_row(ws, schema.PLANS_TABLE, PLAN_NAME) is not None
        assert out.gaps and out.gaps[0]["verdict"] in ("coverage_gap", "policy_or_data_quality", "fine")
        html = out.report.read_text()
        assert out.evals["v1"] in html and out.evals["v2"] in html and "<img" in html
        assert any("roboloop open" in line for line in lines) or out.worst_failure is None

    with Catalog(ws, url="") as cat:  # a restart restores everything; a re-run reuses it
        again = run_demo(cat, cfg, say=lines.append)
        assert again.collected == 0 and again.plan_collected == 0
        assert again.runs == out.runs and again.evals == out.evals
