"""The glue of gaps and the report over a real catalog: an evaluation row, a run record, demos and rollouts.

Needs `roboloop.train.run_info` (train branch) and `roboloop.analyze.rollouts` (evaluate branch): skipped
until they are merged. Episodes are synthetic recordings carrying the agreed properties.
"""

from __future__ import annotations

import json

import pytest

from roboloop import rows, schema


def _write(ws, catalog, synthetic_episode, dataset, sid, props):
    _, path = synthetic_episode(ws, dataset, sid, duration_s=0.2, properties=props)
    catalog.register_files(dataset, [path])


@pytest.fixture
def evaluated(ws, catalog, synthetic_episode):
    """4 demos at yaw 0; an evaluation with cells yaw=none (covered, succeeds) and yaw=any (far, fails)."""
    demos = []
    for i, (x, y) in enumerate([(0.05, 0.5), (0.06, 0.45), (0.15, 0.55), (0.1, 0.5)]):
        sid = f"aloha-s{i:06d}-aaaaaa"
        demos.append(sid)
        _write(ws, catalog, synthetic_episode, "aloha", sid, {
            "episode": {"kind": "demo", "seed": i},
            "scene": {"cube_x": x, "cube_y": y, "cube_yaw_deg": 0.0, "yaw": "none", "region": "default", "lighting": "normal"},
            "outcome": {"success": True},
        })
    cells = {"yaw=none": (0.0, True), "yaw=any": (30.0, False)}
    for cell, (yaw, ok) in cells.items():
        for j, (x, y) in enumerate([(0.05, 0.5), (0.06, 0.45), (0.15, 0.55), (0.1, 0.5)]):
            sid = f"aloha_evals-{cell.replace('=', '-')}-{j}"
            _write(ws, catalog, synthetic_episode, "aloha_evals", sid, {
                "episode": {"kind": "rollout", "seed": schema.EVAL_SEED_BASE + 10 * j + (yaw > 0), "eval_id": "ev1", "run_id": "run-1",
                            "cell": cell, "index_in_cell": j, "policy": "run-1"},
                "scene": {"cube_x": x + 0.001, "cube_y": y, "cube_yaw_deg": yaw * (-1) ** j, "yaw": cell.split("=")[1]},
                "outcome": {"success": ok, "failure_time_s": -1.0 if ok else 2.5 + j, "failure_reason": "none" if ok else "never_touched",
                            "stage": 4 if ok else 0, "stage_name": "handover" if ok else "none"},
            })
    rows.write_row(ws, schema.EVALS_TABLE, "ev1", {
        "eval_id": "ev1", "dataset": "aloha", "evals_dataset": "aloha_evals", "policy": "run-1", "run_id": "run-1",
        "grid": {"yaw": ["none", "any"]}, "episodes_per_cell": 4, "cells": list(cells), "created_at": "2026-11-23T14:00:00+00:00",
        "status": "finished",
    })
    run_dir = ws.run_dir("run-1")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.json").write_text(json.dumps({
        "run_id": "run-1", "dataset": "aloha", "selection": "v1", "selection_digest": "", "config_digest": "x",
        "checkpoint_sha256": "y", "policy": "mlp", "cameras": [], "camera_size": None, "train_ids": demos, "status": "finished",
    }))
    return demos


def test_gaps_glue_finds_the_gap(catalog, evaluated):
    pytest.importorskip("roboloop.train")
    from roboloop.analyze.gaps import COVERAGE_GAP, FINE, gaps

    rep = gaps(catalog, "ev1")
    assert (rep.run_id, rep.dataset, rep.evals_dataset, rep.n_train) == ("run-1", "aloha", "aloha_evals", 4)
    assert [(c.cell, c.verdict) for c in rep.cells] == [("yaw=any", COVERAGE_GAP), ("yaw=none", FINE)]
    assert rep.cells[1].covered == 4 and rep.cells[0].covered == 0
    _gaps_from_the_index_equal_gaps_from_the_catalog(catalog.workspace, catalog)


def test_report_glue_writes_a_complete_file(catalog, evaluated, tmp_path):
    pytest.importorskip("roboloop.train")
    pytest.importorskip("roboloop.analyze.rollouts")
    from roboloop.report.render import SECTIONS, write_report

    out = write_report(catalog, ["ev1"], tmp_path / "r.html", export_failures=True)
    text = out.read_text()
    for sid in SECTIONS:
        assert f'id="{sid}"' in text
    # one failure mode (4 x never_touched, moments 2.5..5.5 s): its representative is the median case
    assert "roboloop open aloha_evals-yaw-any-1 --at 3.5" in text and "4 of 4 failures" in text
    assert (tmp_path / "r_files" / "aloha_evals-yaw-any-1.rrd").is_file()
    assert 'href="r_files/aloha_evals-yaw-any-1.rrd"' in text
    _report_from_the_index_equals_the_report_from_the_catalog(catalog, tmp_path)


def _gaps_from_the_index_equal_gaps_from_the_catalog(ws, catalog):
    """`roboloop gaps` reads the rollouts from the index and restores only the demonstrations: same report."""
    from typer.testing import CliRunner

    from roboloop.analyze.gaps import gaps
    from roboloop.analyze.rollouts import indexed_rollout_table
    from roboloop.catalog.client import Catalog
    from roboloop.catalog.index import load_table
    from roboloop.cli import app

    load_table(ws, "aloha_evals", catalog)  # the index rows evaluate writes (here rebuilt from the catalog)
    expected = gaps(catalog, "ev1").to_dict()
    assert [list(c["failed_ids"]) for c in expected["cells"]] == [[f"aloha_evals-yaw-any-{j}" for j in range(4)], []]
    with Catalog(ws, url="", datasets=["aloha"]) as partial:
        assert partial.dataset_names() == ["aloha"]
        rep = gaps(partial, "ev1", rollout_table=lambda ds: indexed_rollout_table(ws, ds))
    assert rep.to_dict() == expected
    res = CliRunner().invoke(app, ["--workspace", str(ws.root), "--catalog", "", "gaps", "--eval", "ev1", "--format", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == json.loads(json.dumps(expected, default=str))


def _report_from_the_index_equals_the_report_from_the_catalog(catalog, tmp_path):
    """`roboloop report` restores no evaluation dataset: rollouts from the index, only the failures it shows registered."""
    import dataclasses

    from typer.testing import CliRunner

    from roboloop.catalog.client import Catalog
    from roboloop.catalog.index import load_table
    from roboloop.cli import app
    from roboloop.report.data import build_report_data, report_datasets

    ws = catalog.workspace
    load_table(ws, "aloha_evals", catalog)  # the index rows evaluate writes (here rebuilt from the catalog)
    expected = dataclasses.asdict(build_report_data(catalog, ["ev1"], export_dir=tmp_path / "a", report_dir=tmp_path))
    assert report_datasets(ws, ["ev1"]) == ["aloha"]
    with Catalog(ws, url="", datasets=report_datasets(ws, ["ev1"])) as partial:
        got = dataclasses.asdict(build_report_data(partial, ["ev1"], export_dir=tmp_path / "b", report_dir=tmp_path))
        shown = [f["segment_id"] for sec in got["evals"] for f in sec["failures"]]
        assert shown == ["aloha_evals-yaw-any-1"]  # registered for its export, and nothing else of the evaluation
        assert sorted(partial.segment_table("aloha_evals").column("segment_id").to_pylist()) == shown
    for d in (expected, got):
        d.pop("created_at")
        for sec in d["evals"]:
            for f in sec["failures"]:
                f["rrd"] = f["rrd"].split("/")[-1]
    assert got == expected
    assert (tmp_path / "b" / "aloha_evals-yaw-any-1.rrd").is_file()
    res = CliRunner().invoke(app, ["--workspace", str(ws.root), "--catalog", "", "report", "--eval", "ev1", "-o", str(tmp_path / "c.html")])
    assert res.exit_code == 0, res.output
    assert "roboloop open aloha_evals-yaw-any-1 --at 3.5" in (tmp_path / "c.html").read_text()
