"""Outcomes judged by a person (refine/labels.py, `roboloop label`) on the real catalog.

Rollouts are written by the real recorder (`EpisodeRecorder`, through the synthetic-episode
fixture) and registered the way evaluate does: simulated ones carry `outcome.*`, hardware ones
carry none. Expectations are computed here from the outcomes the test planted and the labels
it gave, not read back from the code under test.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from roboloop import rows, schema
from roboloop.analyze import rollouts as analyze
from roboloop.analyze.compare import compare
from roboloop.analyze.gaps import UNLABELLED, gap_report
from roboloop.catalog import index as episode_index
from roboloop.catalog.client import Catalog
from roboloop.cli import app
from roboloop.refine.labels import LabelError, apply_labels, label, label_history, read_labels_csv
from roboloop.refine.outcomes import reoutcome
from roboloop.report.data import build_report_data
from roboloop.report.render import render_report

EVALS = "bot_evals"
HZ = 50
DURATION = 1.0
CELLS = {"sim-0": "region=a", "sim-1": "region=a", "sim-2": "region=a", "sim-3": "region=a",
         "hw-0": "region=a", "hw-1": "region=a", "hw-2": "region=b"}
SIM_OK = {"sim-0": True, "sim-1": False, "sim-2": False, "sim-3": True}
"""What the simulator judged; the hw-* rollouts have no outcome (recorded on hardware)."""


def _properties(sid: str) -> dict:
    episode = {schema.EPISODE_KIND: schema.KIND_ROLLOUT, schema.EPISODE_EVAL_ID: "ev1", schema.EPISODE_CELL: CELLS[sid],
               schema.EPISODE_INDEX_IN_CELL: int(sid.split("-")[1]), schema.EPISODE_SEED: 2**30 + int(sid.split("-")[1]),
               schema.EPISODE_CONTROL_HZ: HZ, schema.EPISODE_POLICY: "p"}
    props = {schema.EPISODE: episode, schema.SCENE: {"region": CELLS[sid].split("=")[1]}}
    if sid in SIM_OK:
        ok = SIM_OK[sid]
        props[schema.OUTCOME] = {schema.OUTCOME_SUCCESS: ok, schema.OUTCOME_DURATION_S: DURATION,
                                 schema.OUTCOME_STAGE: 4 if ok else 1, schema.OUTCOME_FAILURE_REASON: "none" if ok else "dropped",
                                 schema.OUTCOME_FAILURE_TIME_S: -1.0 if ok else 0.4}
    return props


@pytest.fixture
def rollouts(ws, catalog, synthetic_episode):
    """Seven rollouts of `EVALS`, registered and indexed as evaluate does."""
    paths = []
    for i, sid in enumerate(CELLS):
        props = _properties(sid)
        if sid.startswith("hw-"):
            props[schema.EPISODE][schema.EPISODE_INDEX_IN_CELL] = 10 + i  # a pair of its own
        _, path = synthetic_episode(ws, EVALS, sid, duration_s=DURATION, scalar_streams={schema.JOINT_POSITIONS: (HZ, 14)},
                                    properties=props, seed=i)
        paths.append((sid, path, props))
    catalog.register_files(EVALS, [p for _, p, _ in paths])
    for sid, _, props in paths:
        episode_index.write_row(ws, EVALS, sid, props)
    return catalog


def _expected(truth: dict[str, bool | None]) -> dict[str, tuple[int, int, int]]:
    """cell -> (n, successes, unlabelled), computed from the planted/labelled outcomes."""
    out: dict[str, list[int]] = {}
    for sid, ok in truth.items():
        c = out.setdefault(CELLS[sid], [0, 0, 0])
        if ok is None:
            c[2] += 1
        else:
            c[0] += 1
            c[1] += ok
    return {k: tuple(v) for k, v in out.items()}


def _table(groups) -> dict[str, tuple[int, int, int]]:
    return {g[analyze.CELL]: (g["n"], g["successes"], g["unlabelled"]) for g in groups}


def _both_paths(ws, catalog):
    """success by cell from the rollout index and from the catalog's segment table (every layer)."""
    from_index = analyze.success_by(analyze.indexed_rollout_table(ws, EVALS, catalog=catalog), [analyze.CELL])
    from_catalog = analyze.success_by(analyze.rollout_table(catalog, EVALS), [analyze.CELL])
    return from_index, from_catalog


def test_label_overrides_sim_counts_unlabelled_apart_and_relabel_keeps_history(ws, rollouts):
    catalog = rollouts
    truth: dict[str, bool | None] = {sid: SIM_OK.get(sid) for sid in CELLS}
    for groups in _both_paths(ws, catalog):
        assert _table(groups) == _expected(truth)
        b = next(g for g in groups if g[analyze.CELL] == "region=b")
        assert b["rate"] is None and b["ci_low"] is None  # only unlabelled: no rate, never 0%
    # a person: hw-0 failed (a kind in words) at 0.5 s, sim-1 (a simulator failure) actually succeeded
    label(catalog, EVALS, ["hw-0"], success=False, at_s=0.5, kind="Knocked away", note="bumped the bin", by="alice")
    label(catalog, EVALS, ["sim-1"], success=True, by="bob")
    truth.update({"hw-0": False, "sim-1": True})
    for groups in _both_paths(ws, catalog):
        assert _table(groups) == _expected(truth)
        a = next(g for g in groups if g[analyze.CELL] == "region=a")
        assert a["labelled"] == 2 and a["rate"] == pytest.approx(3 / 5)
    row = {r["segment_id"]: r for r in catalog.segment_table(EVALS).to_pylist()}["hw-0"]
    assert row["outcome.failure_reason"] == "knocked_away" and row["outcome.failure_time_s"] == 0.5
    assert row["outcome.failure_step"] == round(0.5 * HZ) and row["outcome.labelled_by"] == "alice"
    assert row["outcome.source"] == schema.OUTCOME_SOURCE_LABEL and row["outcome.note"] == "bumped the bin"
    assert row["outcome.free_kind"] is False and row["outcome.labelled_at"].endswith("+00:00")
    # failures: the labelled failure is listed (judged by alice), the unlabelled rollout is not; the simulator's stays
    fails = {f["segment_id"]: f for f in analyze.failures(analyze.rollout_table(catalog, EVALS))}
    assert set(fails) == {s for s, ok in truth.items() if ok is False}
    assert fails["hw-0"]["judged"] == "label by alice" and fails["sim-2"]["judged"] == "simulator"
    assert fails["hw-0"]["at_s"] == 0.5 and fails["hw-0"]["failure_kind"] == schema.FAILURE_KINDS["knocked_away"]
    assert analyze.outcome_sources(analyze.rollout_table(catalog, EVALS)) == {"n": 7, "labelled": 2, "unlabelled": 2}
    # relabel: a new version, both in the history, the newest in effect (also after a restart, whose gc drops the old file)
    label(catalog, EVALS, ["hw-0"], success=True, by="carol", note="re-watched: it recovered")
    truth["hw-0"] = True
    assert sorted(p.name for p in ws.layer_dir(EVALS, schema.OUTCOME_LAYER).glob("hw-0*.rrd")) == ["hw-0.1.rrd", "hw-0.rrd"]
    catalog.close()
    with Catalog(ws, url="") as again:
        assert not (ws.layer_dir(EVALS, schema.OUTCOME_LAYER) / "hw-0.rrd").exists()  # superseded, collected
        row = {r["segment_id"]: r for r in again.segment_table(EVALS).to_pylist()}["hw-0"]
        assert row["outcome.success"] is True and row["outcome.labelled_by"] == "carol"
        assert row["outcome.failure_reason"] == "none" and row["outcome.failure_time_s"] == -1.0
        for groups in _both_paths(ws, again):
            assert _table(groups) == _expected(truth)
        # the newest label of each segment is a catalog table too (the row table `<dataset>_labels`)
        published = {r["segment_id"]: r for r in again.sql(f"SELECT * FROM {schema.labels_table(EVALS)}").to_pylist()}
        assert {k: v["labelled_by"] for k, v in published.items()} == {"hw-0": "carol", "sim-1": "bob"}
        # a person's label is not re-judged by the simulator's replay
        rep = reoutcome(again, EVALS, segment_ids=["sim-1"], all_segments=True)
        assert "sim-1" in rep.skipped and "labelled by bob" in rep.skipped["sim-1"]
    hist = label_history(ws, EVALS, "hw-0")
    assert [(h["success"], h["labelled_by"], h["kind"], h["at_s"]) for h in hist] == [
        (False, "alice", "knocked_away", 0.5), (True, "carol", None, None)]
    assert [h["previous"] for h in hist] == [schema.OUTCOME_UNLABELLED, "failure (label)"]
    assert label_history(ws, EVALS, "sim-0") == []


def test_csv_batch_is_all_or_nothing_and_free_text_kinds(ws, rollouts, tmp_path):
    catalog = rollouts
    bad = tmp_path / "bad.csv"
    bad.write_text("segment,success,at,kind,note,by\n"
                   "hw-0,no,0.3,dropped,,dana\n"
                   "hw-1,maybe,,,,\n"
                   "hw-2,failure,soon,,,\n")
    with pytest.raises(LabelError) as err:
        read_labels_csv(bad)
    msg = str(err.value)
    assert "row 2 (line 3), column 'success'" in msg and "row 3 (line 4), column 'at'" in msg and "row 1" not in msg
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("segment,success,at\nhw-0,no,0.3\nnope,yes,\nhw-1,no,9.5\n")
    with pytest.raises(LabelError) as err:
        apply_labels(catalog, EVALS, read_labels_csv(unknown))
    msg = str(err.value)
    assert "row 2 (line 3): no segment 'nope' in bot_evals" in msg
    assert "row 3 (line 4): column 'at' of hw-1: 9.5 s is after the episode's end (0.98 s)" in msg  # its last sample
    # nothing was written by either file: no layer file, no history row, no index change
    assert not ws.layer_dir(EVALS, schema.OUTCOME_LAYER).exists()
    assert not rows.rows_dir(ws, schema.labels_table(EVALS)).exists()
    assert _table(analyze.success_by(analyze.indexed_rollout_table(ws, EVALS), [analyze.CELL])) == _expected(
        {sid: SIM_OK.get(sid) for sid in CELLS})
    good = tmp_path / "good.csv"
    good.write_text("segment,success,at,kind,note,by\n"
                    "hw-0,no,0.3,cable snagged,gripper cable,dana\n"
                    "hw-1,yes,,,,\n"
                    "hw-2,0,,missed_grasp,,\n"
                    "sim-0,false,,,,eve\n")
    rep = apply_labels(catalog, EVALS, read_labels_csv(good))
    assert rep.previous == {"hw-0": None, "hw-1": None, "hw-2": None, "sim-0": True}
    assert rep.was == {"hw-0": "unlabelled", "hw-1": "unlabelled", "hw-2": "unlabelled", "sim-0": "success (simulator)"}
    truth = {sid: SIM_OK.get(sid) for sid in CELLS} | {"hw-0": False, "hw-1": True, "hw-2": False, "sim-0": False}
    assert _table(analyze.success_by(analyze.indexed_rollout_table(ws, EVALS), [analyze.CELL])) == _expected(truth)
    seg = {r["segment_id"]: r for r in catalog.segment_table(EVALS).to_pylist()}
    assert seg["hw-0"]["outcome.failure_reason"] == "cable snagged" and seg["hw-0"]["outcome.free_kind"] is True
    assert seg["hw-2"]["outcome.failure_reason"] == "missed_grasp" and seg["hw-2"]["outcome.free_kind"] is False
    assert seg["sim-0"]["outcome.failure_reason"] == "unspecified" and seg["sim-0"]["outcome.stage"] == 4  # the sim's stage stays
    assert seg["hw-1"]["outcome.labelled_by"]  # the OS user by default


def test_label_errors_name_the_problem_and_write_nothing(ws, rollouts):
    catalog = rollouts
    with pytest.raises(LabelError, match=r"no segment 'nope' in bot_evals(.|\n)*segments of bot_evals look like: hw-0"):
        label(catalog, EVALS, ["hw-0", "nope"], success=False)
    with pytest.raises(LabelError, match="labelled a success: a failure moment"):
        label(catalog, EVALS, ["hw-0"], success=True, at_s=0.2)
    with pytest.raises(LabelError, match="labelled twice"):
        label(catalog, EVALS, ["hw-0", "hw-0"], success=True)
    with pytest.raises(LabelError, match="no dataset 'ghost'"):
        label(catalog, "ghost", ["hw-0"], success=True)
    with pytest.raises(LabelError, match="no segment 'nope'"):
        label_history(ws, EVALS, "nope")
    assert not ws.layer_dir(EVALS, schema.OUTCOME_LAYER).exists()


def test_gaps_compare_and_failures_keep_unlabelled_apart(ws, rollouts):
    catalog = rollouts
    table = analyze.rollout_table(catalog, EVALS).to_pylist()
    starts = {"scene.cube_x": 0.05, "scene.cube_y": 0.5, "scene.cube_yaw_deg": 0.0}
    rep = {c.cell: c for c in gap_report([{**r, **starts} for r in table], [{"segment_id": "demo", **starts}]).cells}
    a_truth = [SIM_OK[s] for s in CELLS if CELLS[s] == "region=a" and s in SIM_OK]
    assert (rep["region=a"].n, rep["region=a"].successes, rep["region=a"].unlabelled) == (len(a_truth), sum(a_truth), 2)
    assert rep["region=a"].covered == 6  # coverage counts every rollout's start state
    assert rep["region=b"].verdict == UNLABELLED and rep["region=b"].failed_ids == () and not rep["region=b"].fails
    # compare: the unlabelled rollouts are in neither side's n and are counted apart
    out = compare(table, table)
    cell_a, overall = out[0], out[-1]
    assert [r["group"] for r in out] == ["region=a", "overall"]  # region=b has no outcome to compare
    assert (cell_a["n_a"], cell_a["unlabelled_a"], cell_a["labelled_b"]) == (len(a_truth), 2, 0)
    assert overall["unlabelled_b"] == 3 and overall["n_b"] == len(SIM_OK)


def test_report_counts_labels_and_unlabelled_rollouts(ws, rollouts):
    catalog = rollouts
    rows.write_row(ws, schema.EVALS_TABLE, "ev1", {"eval_id": "ev1", "dataset": "bot", "evals_dataset": EVALS,
                                                   "policy": "p", "run_id": ""})
    label(catalog, EVALS, ["sim-2"], success=True, by="gil")
    data = build_report_data(catalog, ["ev1"])
    cells = {c["cell"]: c for c in data.evals[0].cells}
    truth = {sid: SIM_OK.get(sid) for sid in CELLS} | {"sim-2": True}
    assert {k: (c["n"], c["successes"], c.get("unlabelled", 0)) for k, c in cells.items()} == _expected(truth)
    assert cells["region=a"]["labelled"] == 1 and cells["region=b"]["failing"] is False  # no outcome: not failing
    assert any("1 outcome(s) are a person's label" in n and "3 rollouts are unlabelled" in n for n in data.notes)
    html = render_report(data)
    assert "<th>unlabelled</th>" in html and "3 rollouts are unlabelled" in html


def test_cli_label_success_failures_and_history(ws, rollouts):
    rollouts.close()  # the commands start their own catalog over the workspace

    def run(*args):
        return CliRunner().invoke(app, ["--workspace", str(ws.root), *args], env={"ROBOLOOP_CATALOG": "", "COLUMNS": "250"})

    res = run("label", "hw-0", "hw-2", "--dataset", EVALS, "--failure", "--at", "0.25", "--kind", "dropped", "--by", "fay")
    assert res.exit_code == 0, res.output
    assert "2 outcome(s) labelled" in res.output and schema.OUTCOME_UNLABELLED in res.output  # what they were
    res = run("success", "--dataset", EVALS, "--format", "json")
    got = {r[analyze.CELL]: r for r in map(json.loads, res.output.splitlines())}
    truth = {sid: SIM_OK.get(sid) for sid in CELLS} | {"hw-0": False, "hw-2": False}
    assert {k: (v["n"], v["successes"], v["unlabelled"], v["labelled"]) for k, v in got.items()} == {
        k: (*v, sum(1 for s in ("hw-0", "hw-2") if CELLS[s] == k)) for k, v in _expected(truth).items()}
    res = run("failures", "--dataset", EVALS, "--no-nearest", "--format", "json")
    listed = {r["segment_id"]: r for r in map(json.loads, res.output.splitlines())}
    assert set(listed) == {s for s, ok in truth.items() if ok is False}
    assert listed["hw-0"]["judged"] == "label by fay" and listed["hw-0"]["at_s"] == 0.25
    res = run("label", "hw-0", "--dataset", EVALS, "--success")
    assert res.exit_code == 0, res.output
    res = run("label", "--history", "hw-0", "--dataset", EVALS, "--format", "json")
    hist = [json.loads(x) for x in res.output.splitlines()]
    assert [h["success"] for h in hist] == [False, True] and hist[0]["labelled_by"] == "fay"
    res = run("label", "nope", "--dataset", EVALS, "--success")
    assert res.exit_code == 1 and "no segment 'nope' in bot_evals" in res.output and "Traceback" not in res.output


def test_outcome_note_says_what_the_counts_are():
    rows_ = [{analyze.SUCCESS: True, analyze.SOURCE: "label"}, {analyze.SUCCESS: None}, {analyze.SUCCESS: False}]
    counts = analyze.outcome_sources(rows_)
    assert counts == {"n": 3, "labelled": 1, "unlabelled": 1}
    note = analyze.outcome_note(counts)
    assert "1 outcome(s) are a person's label" in note and "1 rollouts are unlabelled" in note
    assert analyze.outcome_note({"labelled": 0, "unlabelled": 0}) is None


def test_cli_csv_reports_bad_rows_and_unknown_segments_at_once_and_names_the_right_dataset(ws, rollouts, tmp_path,
                                                                                             synthetic_episode):
    _, path = synthetic_episode(ws, "bot", "demo-7", duration_s=0.2)
    rollouts.register_files("bot", [path])
    rollouts.close()
    bad = tmp_path / "bad.csv"
    bad.write_text("segment,success,at,kind,note,by\nhw-0,maybe,,,,\nnope,true,,,,\ndemo-7,false,,,,\n")

    def run(*args):
        return CliRunner().invoke(app, ["--workspace", str(ws.root), *args], env={"ROBOLOOP_CATALOG": "", "COLUMNS": "250"})

    res = run("label", "--dataset", EVALS, "--csv", str(bad))
    out = " ".join(res.output.split())
    assert res.exit_code == 1 and "3 bad label(s), nothing written" in out, res.output
    assert "bad.csv row 1 (line 2), column 'success': 'maybe' is not one of" in out
    assert "bad.csv row 2 (line 3): no segment 'nope' in bot_evals" in out
    assert "bad.csv row 3 (line 4): no segment 'demo-7' in bot_evals (it is in bot: pass --dataset bot)" in out
    res = run("label", "demo-7", "--dataset", EVALS, "--failure")
    assert res.exit_code == 1 and "no segment 'demo-7' in bot_evals (it is in bot: pass --dataset bot)" in " ".join(res.output.split())
    assert not ws.layer_dir(EVALS, schema.OUTCOME_LAYER).exists()
