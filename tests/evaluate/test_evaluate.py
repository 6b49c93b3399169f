"""Evaluate end to end: real simulator, real in-process catalog, the real recorder; short rollouts.

The scripted demonstrator stands in for a trained policy; `HoldStill` (a trivial policy
defined here) is the second policy of the paired-seed checks.
"""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest

from roboloop import rows, schema
from roboloop.analyze import rollouts as analyze
from roboloop.analyze.compare import compare
from roboloop.analyze.export import export_segment
from roboloop.catalog import index as episode_index
from roboloop.catalog import links
from roboloop.catalog.client import Catalog
from roboloop.collect.run import RecordingSpec
from roboloop.envs.aloha.conditions import REGIONS
from roboloop.evaluate import run as evaluate_run
from roboloop.evaluate.run import (
    EvalConfig,
    EvaluateError,
    evaluate,
    load_config,
    parse_grid,
)
from roboloop.record.episode import provenance, write_layer_properties
from tests.fixtures.policies import HoldStill

pytestmark = pytest.mark.sim

GRID = "region=near,far lighting=normal,dim"
N = 2


def _collect_demos(catalog, dataset: str, episodes: int, *, seed: int, steps: int) -> None:
    """Demonstrations without cameras (either collect signature: keyword arguments or a CollectConfig)."""
    from roboloop.collect import run as c

    spec = RecordingSpec(cameras=())
    if hasattr(c, "CollectConfig"):
        c.collect(catalog, c.CollectConfig(dataset=dataset, episodes=episodes, seed=seed, spec=spec, steps=steps))
    else:
        c.collect(catalog, dataset, episodes, seed=seed, spec=spec, steps=steps)


def _cfg(**kw) -> EvalConfig:
    base = {"dataset": "demo", "grid": parse_grid(GRID), "episodes_per_cell": N, "steps": 30, "cameras": ()}
    base.update(kw)
    return EvalConfig(**base)


def _expected_seed(key: str, index: int) -> int:
    digest = hashlib.sha256(f"{key}#{index}".encode()).digest()
    return 2**30 + int.from_bytes(digest[:8], "big") % 2**30


PROVENANCE = [
    "episode.kind", "episode.eval_id", "episode.policy", "episode.seed", "episode.software_version",
    "episode.run_id", "episode.checkpoint_sha256", "episode.selection", "episode.selection_digest",
    "episode.config_digest", "episode.cell", "episode.index_in_cell",
    "episode.git_commit", "episode.git_dirty", "episode.rerun_sdk_version", "episode.mujoco_version",
    "episode.gym_aloha_version", "episode.torch_version",
    "scene.region", "scene.yaw", "scene.lighting", "scene.table", "scene.distractors",
    "scene.cube_x", "scene.cube_y", "scene.cube_yaw_deg",
    "outcome.success", "outcome.stage", "outcome.stage_name", "outcome.failure_step",
    "outcome.failure_time_s", "outcome.failure_reason",
]


def test_paired_seeds_provenance_index_and_disjoint_from_demos(catalog):
    _collect_demos(catalog, "demo", 2, seed=0, steps=10)
    ra = evaluate(catalog, _cfg(eval_id="ev-scripted"))
    rb = evaluate(catalog, _cfg(eval_id="ev-still", policy="hold-still"), policy_factory=HoldStill)
    assert ra.n == rb.n == 4 * N and ra.status == rb.status == "finished"

    table = catalog.segment_table("demo_evals")
    assert table.num_rows == 8 * N
    for col in PROVENANCE:
        assert col in table.column_names, col
        assert None not in table.column(col).to_pylist(), col
    got = table.to_pylist()
    assert {r["episode.kind"] for r in got} == {"rollout"}
    assert {r["episode.policy"] for r in got} == {"scripted-handover-v1", "hold-still-v0"}
    assert {r["episode.run_id"] for r in got} == {"none"}

    # identical seeds per (cell, index) across the two policies, equal to the rule computed here
    seeds = {}
    for r in got:
        seeds.setdefault(r["episode.eval_id"], {})[(r["episode.cell"], r["episode.index_in_cell"])] = r["episode.seed"]
    assert seeds["ev-scripted"] == seeds["ev-still"]
    assert all(seed == _expected_seed(cell, i) for (cell, i), seed in seeds["ev-scripted"].items())
    assert {c for c, _ in seeds["ev-scripted"]} == {
        "lighting=normal,region=left", "lighting=dim,region=left", "lighting=normal,region=right", "lighting=dim,region=right"
    }
    # canonical labels and the start state agree with the cell
    for r in got:
        cell = dict(kv.split("=") for kv in r["episode.cell"].split(","))
        assert r["scene.region"] == cell["region"] and r["scene.lighting"] == cell["lighting"]
        x0, x1, y0, y1 = REGIONS[cell["region"]]
        assert x0 <= r["scene.cube_x"] <= x1 and y0 <= r["scene.cube_y"] <= y1
        assert r["scene.yaw"] == "none" and r["scene.cube_yaw_deg"] == pytest.approx(0.0)
    # the hold-still policy never reaches the cube (the moment: where its approach stopped)
    still = [r for r in got if r["episode.eval_id"] == "ev-still"]
    assert {(r["outcome.stage_name"], r["outcome.failure_reason"]) for r in still} == {("none", "never_reached")}
    assert all(0 <= r["outcome.failure_time_s"] < 0.6 for r in still)

    # evaluation seeds never replay a demonstration scene (checked through the catalog)
    demo_seeds = set(catalog.sql('SELECT "episode.seed" AS s FROM demo').column("s").to_pylist())
    eval_seeds = set(catalog.sql('SELECT "episode.seed" AS s FROM demo_evals').column("s").to_pylist())
    assert demo_seeds == {0, 1} and not demo_seeds & eval_seeds
    assert max(demo_seeds) < schema.DEMO_SEED_LIMIT <= min(eval_seeds)

    # one row per evaluation
    evals = {r["eval_id"]: r for r in rows.read_rows(catalog.workspace, schema.EVALS_TABLE)}
    assert set(evals) == {"ev-scripted", "ev-still"}
    row = evals["ev-scripted"]
    assert row["status"] == "finished" and row["finished"] == 4 * N and row["episodes_per_cell"] == N
    assert row["grid"] == {"lighting": ["normal", "dim"], "region": ["left", "right"]} and row["policy"] == "scripted"
    assert row["cells"] == ra.cells and row["wall_s"] > 0 and row["created_at"] and row["seed_rule"]
    assert row["dataset"] == "demo" and row["evals_dataset"] == "demo_evals"
    assert load_config(catalog.workspace, "ev-scripted") == _cfg(eval_id="ev-scripted")
    with pytest.raises(EvaluateError, match="--resume"):
        evaluate(catalog, _cfg(eval_id="ev-scripted"))

    # the index holds the same base properties as the catalog, and success_by agrees on both
    index = {r["segment_id"]: r for r in episode_index.read(catalog.workspace, "demo_evals")}
    for r in got:
        for col in PROVENANCE:
            assert index[r["segment_id"]][col] == pytest.approx(r[col]) if isinstance(r[col], float) else index[r["segment_id"]][col] == r[col]
    fast = analyze.indexed_rollout_table(catalog.workspace, "demo_evals", ["ev-scripted"], "scene.lighting = 'dim'")
    slow = analyze.rollout_table(catalog, "demo_evals", ["ev-scripted"], "scene.lighting = 'dim'")
    assert fast.num_rows == slow.num_rows == 2 * N
    by = ["scene.region", "scene.lighting"]
    assert analyze.success_by(fast, by) == analyze.success_by(slow, by)
    # provenance is on every rollout, and results split by it (`success --by episode.git_commit,...`)
    prov = provenance()
    assert all(r[f"episode.{k}"] == v for r in got for k, v in prov.items())
    split = analyze.success_by(fast, ["episode.git_commit", "episode.torch_version"])
    assert [(g["episode.git_commit"], g["episode.torch_version"], g["n"]) for g in split] == [
        (prov["git_commit"], prov["torch_version"], 2 * N)]
    cmp = {r["group"]: r for r in compare(
        analyze.rollout_table(catalog, "demo_evals", ["ev-still"]), analyze.rollout_table(catalog, "demo_evals", ["ev-scripted"]))}
    assert cmp["overall"]["test"] == "mcnemar" and cmp["overall"]["n_pairs"] == 4 * N


def test_index_rebuilds_missing_rows_from_the_catalog(catalog):
    evaluate(catalog, _cfg(eval_id="ev1", grid=parse_grid("region=near"), steps=10))
    ws = catalog.workspace
    table = schema.rollout_index_table("demo_evals")
    victim = min(r[rows.KEY_FIELD] for r in rows.read_rows(ws, table))
    rows.delete_row(ws, table, victim)  # as if the process died between registration and the index write
    with pytest.raises(episode_index.StaleIndexError):
        episode_index.load(ws, "demo_evals")
    rebuilt = episode_index.load(ws, "demo_evals", catalog)
    assert victim in {r["segment_id"] for r in rebuilt} and len(rebuilt) == N
    assert len(episode_index.load(ws, "demo_evals")) == N  # written back: fresh now


def test_resume_runs_only_the_missing_pairs(catalog):
    cfg = _cfg(eval_id="ev-r", grid=parse_grid("region=near,far"), episodes_per_cell=3, steps=10)
    seen = []

    def stop_after_four(result):
        seen.append(result)
        if len(seen) == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate(catalog, cfg, on_result=stop_after_four)
    row = rows.read_row(catalog.workspace, schema.EVALS_TABLE, "ev-r")
    assert row["status"] == "interrupted" and row["finished"] == 4
    first = {(r.properties["episode"]["cell"], r.properties["episode"]["index_in_cell"]) for r in seen}

    with pytest.raises(EvaluateError, match="different config"):
        evaluate(catalog, _cfg(eval_id="ev-r", grid=parse_grid("region=near,far"), episodes_per_cell=3, steps=11), resume=True)
    with pytest.raises(EvaluateError, match="fewer episodes per cell"):
        evaluate(catalog, _cfg(eval_id="ev-r", grid=parse_grid("region=near,far"), episodes_per_cell=2, steps=10), resume=True)
    report = evaluate(catalog, load_config(catalog.workspace, "ev-r"), resume=True)
    second = {(r.properties["episode"]["cell"], r.properties["episode"]["index_in_cell"]) for r in report.results}
    assert report.skipped == 4 and len(report.results) == 2 and not first & second
    table = catalog.segment_table("demo_evals").to_pylist()
    pairs = [(r["episode.cell"], r["episode.index_in_cell"]) for r in table if r["episode.eval_id"] == "ev-r"]
    assert sorted(pairs) == sorted(first | second) and len(pairs) == 6
    row = rows.read_row(catalog.workspace, schema.EVALS_TABLE, "ev-r")
    assert row["status"] == "finished" and row["finished"] == 6
    assert evaluate(catalog, load_config(catalog.workspace, "ev-r"), resume=True).results == []


def _entity_rows(cat: Catalog, dataset: str, segment: str) -> dict[str, int]:
    ds = cat.dataset(dataset)
    out = {}
    for entity in ds.segment_store(segment).schema().entity_paths():
        t = ds.filter_segments([segment]).filter_contents([entity]).reader(index=schema.TIMELINE).to_arrow_table()
        out[entity] = t.num_rows
    return out


def test_failure_url_and_export_read_back_with_every_stream(catalog, tmp_path):
    cfg = _cfg(eval_id="ev-x", grid=parse_grid("region=near"), episodes_per_cell=1, steps=90,
               cameras=("top",), camera_size=(64, 48), camera_hz=25)
    report = evaluate(catalog, cfg)
    (res,) = report.results
    sid = res.segment_id
    # a derived layer, so the export must merge layers
    ws = catalog.workspace
    layer = write_layer_properties(ws.segment_path("demo_evals", schema.SIGNALS_LAYER, sid), sid,
                                   {schema.SIGNALS: {"probe": 7.5}})
    catalog.register_files("demo_evals", [layer], layer=schema.SIGNALS_LAYER)

    rows_ = analyze.rollout_table(catalog, "demo_evals", ["ev-x"])
    (fail,) = analyze.failures(rows_, dataset="demo_evals",
                               url_for=lambda s, t: links.segment_url(catalog, "demo_evals", s, t))
    assert fail["segment_id"] == sid and fail["outcome.failure_reason"] == "timed_out"  # 90 steps: cut short mid-grasp
    t = res.outcome["failure_time_s"]
    assert t > 0 and fail["at_s"] == pytest.approx(t)
    assert fail["outcome.failure_time_s"] == pytest.approx(res.outcome["failure_step"] / 50)
    entry = catalog.dataset("demo_evals").id
    assert f"/dataset/{entry}?" in fail["url"] and f"segment_id={sid}" in fail["url"]
    cursor = re.search(r"#when=time@\+([0-9.]+)s$", fail["url"])
    assert cursor and float(cursor.group(1)) == pytest.approx(t)
    assert fail["open"] == f"roboloop open {sid} --at {t:g} --dataset demo_evals"

    path = export_segment(catalog, "demo_evals", sid, tmp_path / "out" / f"{sid}.rrd")
    from rerun.chunk import RrdReader

    reader = RrdReader(path)
    assert [r.recording_id for r in reader.recordings()] == [sid] and len(reader.blueprints()) == 1
    # the exported file, on its own (fresh catalog, no workspace data), holds every stream and every layer's properties
    with Catalog(type(ws)(tmp_path / "other"), url="") as other:
        other.register_files("exported", [path])
        original = _entity_rows(catalog, "demo_evals", sid)
        assert schema.camera_path("top") in original and schema.JOINT_POSITIONS in original
        assert _entity_rows(other, "exported", sid) == original
        props = other.segment_table("exported").to_pylist()[0]
        assert props["signals.probe"] == 7.5 and props["episode.eval_id"] == "ev-x"
        assert props["outcome.failure_time_s"] == pytest.approx(t)
        a = catalog.dataset("demo_evals").filter_segments([sid]).filter_contents([schema.JOINT_POSITIONS]).reader(index=schema.TIMELINE).to_arrow_table()
        b = other.dataset("exported").filter_segments([sid]).filter_contents([schema.JOINT_POSITIONS]).reader(index=schema.TIMELINE).to_arrow_table()
        col = next(c for c in a.column_names if c.endswith(schema.SCALARS_COMPONENT))
        np.testing.assert_array_equal(np.asarray(a.column(col).to_pylist()), np.asarray(b.column(col).to_pylist()))


class _FakeRunPolicy:
    """What `roboloop.train.PolicyFactory(...)(sim)` returns per INTERFACES.md (stand-in: holds still)."""

    def __init__(self, run_id: str) -> None:
        self.policy_id = run_id
        self.frames = 0

    def reset(self) -> None:
        pass

    def action(self, step, observation):
        if step % 2 == 0:  # camera steps at 25 Hz: the policy's own camera must be there, at its size
            assert observation.images["left_wrist"].shape == (48, 64, 3)
            self.frames += 1
        return observation.joint_positions


class _FakePolicyFactory:
    def __init__(self, workspace_root: str, run_id: str) -> None:
        self.run_id = run_id

    def __call__(self, sim):
        return _FakeRunPolicy(self.run_id)


def test_a_training_run_brings_its_provenance_and_cameras(catalog, monkeypatch):
    """evaluate's side of the train interface (INTERFACES.md): run_info + PolicyFactory, stubbed where evaluate uses them."""
    info = {"run_id": "run-v1", "dataset": "demo", "selection": "v1", "selection_digest": "sd1", "config_digest": "cd1",
            "checkpoint_sha256": "ab" * 32, "policy": "vision", "cameras": ["left_wrist"], "camera_size": [64, 48],
            "camera_hz": 25, "train_ids": [], "status": "finished"}
    def run_info(workspace, run_id):
        if run_id != "run-v1":
            raise FileNotFoundError(f"runs/{run_id}/run.json")
        return dict(info)

    monkeypatch.setattr(evaluate_run, "run_info", run_info)
    monkeypatch.setattr(evaluate_run, "PolicyFactory", _FakePolicyFactory)

    with pytest.raises(EvaluateError, match="trained on dataset 'demo'"):
        evaluate(catalog, _cfg(dataset="other", policy="run-v1", grid=parse_grid("region=near"), episodes_per_cell=1, steps=4))
    with pytest.raises(EvaluateError, match="no training run 'run-v9'"):
        evaluate(catalog, _cfg(policy="run-v9", grid=parse_grid("region=near"), episodes_per_cell=1, steps=4))
    # asked for 10 Hz frames, the run still gets its own 25 Hz (the fake policy asserts a frame every 2nd step)
    report = evaluate(catalog, _cfg(policy="run-v1", eval_id="ev-run", grid=parse_grid("region=near"), episodes_per_cell=1,
                                    steps=4, cameras=("top",), camera_size=(160, 120), camera_hz=10))
    (r,) = catalog.segment_table("demo_evals").to_pylist()
    assert (r["episode.policy"], r["episode.run_id"], r["episode.checkpoint_sha256"]) == ("run-v1", "run-v1", "ab" * 32)
    assert (r["episode.selection"], r["episode.selection_digest"], r["episode.config_digest"]) == ("v1", "sd1", "cd1")
    assert r["episode.cameras"] == "top,left_wrist" and r["episode.camera_size"] == "64x48" and r["episode.camera_hz"] == 25
    row = rows.read_row(catalog.workspace, schema.EVALS_TABLE, "ev-run")
    assert row["run_id"] == "run-v1" and row["cameras"] == ["top", "left_wrist"] and report.n == 1


def test_a_policy_without_cameras_records_at_the_asked_rate_and_a_challenger_inherits_it(catalog):
    """`camera_hz` is the rate of the recorded frames for a policy that reads none; `eval --against` records like its baseline."""
    from roboloop.evaluate.until_decided import challenger_config

    evaluate(catalog, _cfg(eval_id="ev-10hz", grid=parse_grid("region=near"), episodes_per_cell=1, steps=10,
                           cameras=("top",), camera_size=(64, 48), camera_hz=10))
    (r,) = catalog.segment_table("demo_evals").to_pylist()
    assert r["episode.camera_hz"] == 10 and r["episode.cameras"] == "top"
    ds = catalog.dataset("demo_evals")
    cam = ds.filter_segments([r["segment_id"]]).filter_contents([schema.camera_path("top")]).reader(index=schema.TIMELINE).to_arrow_table()
    times = [t.total_seconds() for t in cam.column(schema.TIMELINE).to_pylist()]
    assert times == pytest.approx([0.0, 0.1])  # 10 control steps at 50 Hz: frames at steps 0 and 5
    cfg = challenger_config(catalog.workspace, "ev-10hz")
    assert (cfg.camera_hz, cfg.cameras, cfg.camera_size) == (10, ("top",), (64, 48))
    assert challenger_config(catalog.workspace, "ev-10hz", camera_hz=25).camera_hz == 25


def test_an_unknown_run_is_named_once_with_the_runs_there(tmp_path):
    """The message listed the workspace's runs twice (the workspace's own error nested in eval's)."""
    from roboloop.evaluate.run import resolve_policy
    from roboloop.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    for run_id in ("run-a", "run-b"):
        ws.run_dir(run_id).mkdir(parents=True)
        (ws.run_dir(run_id) / schema.RUN_INFO_FILE).write_text(json.dumps({"run_id": run_id, "status": "finished"}))
    with pytest.raises(EvaluateError) as err:
        resolve_policy(ws, "run-z")
    msg = str(err.value)
    assert msg.startswith("no training run 'run-z' in ") and msg.count("run-a") == 1 and msg.count("run-b") == 1, msg
    assert msg.endswith("runs: run-a, run-b; or use --policy scripted"), msg

