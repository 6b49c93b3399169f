"""Collect: recorded ALOHA episodes read back through a real in-process catalog.

Real simulator, real catalog, no mocks; short episodes (30 steps) and tiny images.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from roboloop import schema
from roboloop.catalog.client import Catalog
from roboloop.collect.run import (
    CollectConfig,
    EpisodeJob,
    Observation,
    RecordingSpec,
    collect,
    make_sim,
    plan_jobs,
    run_episode,
)
from roboloop.envs.aloha import SceneConditions
from roboloop.record.episode import provenance
from roboloop.video import decode_samples

pytestmark = pytest.mark.sim

STEPS = 30
SPEC = RecordingSpec(cameras=("top",), width=64, height=48, camera_hz=25, scene_hz=10)


def _rows(cat: Catalog, dataset: str, segment: str, entity: str) -> pa.Table:
    ds = cat.dataset(dataset)
    return ds.filter_segments([segment]).filter_contents([entity]).reader(index=schema.TIMELINE).to_arrow_table()


def _times_s(table: pa.Table) -> np.ndarray:
    return np.array([t.total_seconds() for t in table.column(schema.TIMELINE).to_pylist()])


def _assert_rate(times: np.ndarray, hz: float, n: int) -> None:
    assert len(times) == n
    assert times[0] == pytest.approx(0.0)
    np.testing.assert_allclose(np.diff(times), 1.0 / hz, atol=1e-6)


class HoldStill:
    """A stand-in for a trained policy: `reset()` + `action(step, observation)`."""

    policy_id = "hold-still-v0"

    def __init__(self, sim=None, fail_at: int | None = None, exc: type[BaseException] = RuntimeError) -> None:
        self.fail_at, self.exc, self.resets = fail_at, exc, 0

    def reset(self) -> None:
        self.resets += 1

    def action(self, step: int, observation: Observation) -> np.ndarray:
        if step == self.fail_at:
            raise self.exc("policy crashed mid-episode")
        assert observation.joint_positions.shape == (14,) and observation.cube_pose.shape == (7,)
        return observation.joint_positions


@pytest.fixture
def recorded(catalog):
    cfg = CollectConfig(
        dataset="demo", episodes=1, conditions=SceneConditions.from_names(region="right", lighting="dim"), seed=7, spec=SPEC, steps=STEPS
    )
    report = collect(catalog, cfg)
    return report


def test_stream_rates_read_back_through_catalog(catalog, recorded):
    sid = recorded.results[0].segment_id
    assert sid.startswith("demo-s000007-")
    for entity, width in (
        (schema.JOINT_POSITIONS, 14),
        (schema.JOINT_TARGETS, 14),
        (schema.REWARD, 1),
        (schema.CUBE_POSE, 7),
    ):
        t = _rows(catalog, "demo", sid, entity)
        _assert_rate(_times_s(t), schema.CONTROL_HZ, STEPS)
        values = t.column(f"{entity}:{schema.SCALARS_COMPONENT}").to_pylist()
        assert all(len(v) == width for v in values)
    # the first cube pose is the seeded start pose, inside the requested region
    cube0 = _rows(catalog, "demo", sid, schema.CUBE_POSE).column(f"{schema.CUBE_POSE}:{schema.SCALARS_COMPONENT}")[0].as_py()
    assert 0.1 <= cube0[0] <= 0.2 and 0.4 <= cube0[1] <= 0.6
    cam = _rows(catalog, "demo", sid, schema.camera_path("top"))
    _assert_rate(_times_s(cam), 25, STEPS // 2)
    assert cam.column(f"{schema.camera_path('top')}:VideoStream:is_keyframe")[0].as_py() in (True, [True])
    for entity in (schema.CUBE_3D, schema.link_path("left/gripper_link"), schema.link_path("right/base")):
        scene = _rows(catalog, "demo", sid, entity)
        _assert_rate(_times_s(scene), 10, STEPS // 5)
        assert f"{entity}:Transform3D:translation" in scene.column_names
        assert f"{entity}:Boxes3D:half_sizes" in scene.column_names


def test_properties_in_segment_table(catalog, recorded):
    table = catalog.segment_table("demo")
    assert table.num_rows == 1
    row = table.to_pylist()[0]
    assert row["episode.kind"] == schema.KIND_DEMO
    assert row["episode.seed"] == 7
    assert row["episode.task"] == "transfer_cube"
    assert row["episode.policy"] == "scripted-handover-v1"
    for name, value in provenance().items():  # commit, dirty flag, versions: what this process runs
        assert row[f"episode.{name}"] == value, name
    assert row["episode.git_commit"] != "" and row["episode.torch_version"]
    assert row["episode.camera_hz"] == 25 and row["episode.scene_hz"] == 10 and row["episode.camera_size"] == "64x48"
    assert row["scene.region"] == "right" and row["scene.lighting"] == "dim"
    assert row["scene.region_label"].startswith("right (x 0.1..0.2")
    for name in SceneConditions().to_dict():
        assert f"scene.{name}" in row
    assert row["outcome.steps"] == STEPS
    assert row["outcome.duration_s"] == pytest.approx(STEPS / 50)
    assert row["outcome.success"] is False  # 30 steps cannot reach the handover
    assert row["outcome.success_step"] == -1
    assert 0 <= row["outcome.max_reward"] <= 4
    assert isinstance(row["outcome.failure_step"], int)
    assert row["outcome.failure_reason"] != "none"


def test_video_decodes_to_recorded_size(catalog, recorded):
    sid = recorded.results[0].segment_id
    cam = _rows(catalog, "demo", sid, schema.camera_path("top"))
    cells = cam.column(f"{schema.camera_path('top')}:{schema.VIDEO_SAMPLE_COMPONENT}").to_pylist()
    samples = [bytes(cell[0]) for cell in cells]  # one sample (a list of bytes) per row
    frames = list(decode_samples(samples))
    assert len(frames) == STEPS // 2
    assert all(f.shape == (48, 64, 3) for f in frames)
    assert max(f.mean() for f in frames) > 5  # a rendered scene, not black frames


def test_blueprint_registered_and_survives_restart(ws, catalog, recorded):
    assert recorded.blueprint == ws.blueprint_path("demo") and recorded.blueprint.is_file()
    assert catalog.dataset("demo").default_blueprint() is not None
    catalog.close()
    with Catalog(ws, url="") as again:
        assert "demo" in again.report.blueprints
        assert again.dataset("demo").default_blueprint() is not None
        assert again.segment_table("demo").num_rows == 1


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_interrupted_episode_leaves_nothing(ws, catalog, exc):
    # directly through the runner
    sim = make_sim(SPEC)
    try:
        job = plan_jobs("demo", 1, seed=3)[0]
        with pytest.raises(exc):
            run_episode(sim, HoldStill(fail_at=12, exc=exc), job, workspace=ws, dataset="demo", spec=SPEC, steps=STEPS)
        assert not ws.segment_path("demo", schema.BASE_LAYER, job.segment_id).exists()
    finally:
        sim.close()
    # and through collect: the first episode finishes and is registered, the second is lost
    calls = {"n": 0}

    def on_step_factory(sim):
        policy = HoldStill(sim)
        inner = policy.action

        def action(step, obs):
            if step == 0:
                calls["n"] += 1
            if calls["n"] == 2 and step == 12:
                raise exc("interrupted")
            return inner(step, obs)

        policy.action = action
        return policy

    with pytest.raises(exc):
        collect(catalog, CollectConfig(dataset="demo", episodes=2, seed=10, spec=SPEC, steps=STEPS), policy_factory=on_step_factory)
    files = ws.segment_files("demo", schema.BASE_LAYER)
    assert len(files) == 1 and "-s000010-" in files[0].name
    assert ws.stale_temp_files() == []
    table = catalog.segment_table("demo")
    assert table.column("segment_id").to_pylist() == [files[0].stem]


def test_plugged_in_policy_recorded_as_rollout(ws, catalog):
    cfg = CollectConfig(dataset="demo_evals", episodes=1, seed=5, spec=SPEC, steps=STEPS, kind=schema.KIND_ROLLOUT)
    report = collect(catalog, cfg, policy_factory=HoldStill)
    row = catalog.segment_table("demo_evals").to_pylist()[0]
    assert row["episode.kind"] == "rollout" and row["episode.policy"] == "hold-still-v0"
    assert row["segment_id"] == report.results[0].segment_id
    targets = _rows(catalog, "demo_evals", row["segment_id"], schema.JOINT_TARGETS)
    positions = _rows(catalog, "demo_evals", row["segment_id"], schema.JOINT_POSITIONS)
    np.testing.assert_allclose(
        np.array(targets.column(f"{schema.JOINT_TARGETS}:{schema.SCALARS_COMPONENT}").to_pylist()),
        np.array(positions.column(f"{schema.JOINT_POSITIONS}:{schema.SCALARS_COMPONENT}").to_pylist()),
    )


def test_seeds_and_segment_ids():
    conds = [SceneConditions.from_names(region="left"), SceneConditions.from_names(region="right")]
    jobs = plan_jobs("demo", 4, seed=100, conditions=conds)
    assert [j.seed for j in jobs] == [100, 101, 102, 103]
    assert [j.conditions.region for j in jobs] == ["left", "right", "left", "right"]
    assert len({j.segment_id for j in jobs + plan_jobs("demo", 4, seed=100)}) == 8
    assert all(isinstance(j, EpisodeJob) for j in jobs)


def test_recording_spec_rejects_bad_rates():
    with pytest.raises(ValueError, match="must divide"):
        RecordingSpec(camera_hz=30)
    with pytest.raises(ValueError, match="even"):
        RecordingSpec(width=63)


def test_collect_cli_end_to_end(tmp_path, monkeypatch):
    from roboloop.cli import app

    monkeypatch.delenv("ROBOLOOP_CATALOG", raising=False)
    wsdir = tmp_path / "cli-ws"
    runner = CliRunner()
    args = ["--workspace", str(wsdir), "collect", "--dataset", "clidemo", "--episodes", "2", "--steps", "20",
            "--camera-size", "64x48", "--lighting", "bright", "--seed", "40", "--workers", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "registered 2 episode(s)" in result.output
    from roboloop.workspace import Workspace

    with Catalog(Workspace(wsdir), url="") as cat:
        table = cat.segment_table("clidemo")
        assert sorted(table.column("episode.seed").to_pylist()) == [40, 41]
        assert set(table.column("scene.lighting").to_pylist()) == {"bright"}
        assert cat.dataset("clidemo").default_blueprint() is not None

    # --config FILE: the file's values, with the options given on the command line on top
    cfg_file = CollectConfig(
        dataset="fromfile", episodes=5, seed=70, conditions=SceneConditions.from_names(lighting="dim", table="wood"),
        spec=RecordingSpec(cameras=(), width=64, height=48), steps=10,
    ).save(tmp_path / "collect.toml")
    result = runner.invoke(app, ["--workspace", str(wsdir), "collect", "--config", str(cfg_file), "--episodes", "1", "--seed", "80"])
    assert result.exit_code == 0, result.output
    with Catalog(Workspace(wsdir), url="") as cat:
        row = cat.segment_table("fromfile").to_pylist()
        assert [(r["episode.seed"], r["scene.lighting"], r["scene.table"], r["outcome.steps"]) for r in row] == [(80, "dim", "wood", 10)]

    bad = runner.invoke(app, ["--workspace", str(wsdir), "collect", "--dataset", "clidemo", "--lighting", "foggy"])
    assert bad.exit_code == 1
    assert "foggy" in bad.output and "dim" in bad.output and "bright" in bad.output
