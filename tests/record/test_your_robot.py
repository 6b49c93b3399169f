"""`examples/your_robot.py` end to end on a temporary workspace with the real catalog: a made-up 6-joint robot with
its own 64x48 camera at 20 Hz is recorded through `roboloop.record`, curated with `roboloop curate`, streamed with
`EpisodeStream` and trained with `roboloop train --state/--action`.

The training step needs `TrainConfig.state` / `--state` / `--action` (issue 21.1 + 22.3, another branch): its
assertions run as soon as `TrainConfig` has a `state` field, and are skipped before (see TRAIN_ANY_ROBOT).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from roboloop import curate, schema
from roboloop.catalog.client import Catalog
from roboloop.catalog.verify import verify
from roboloop.train.config import TrainConfig
from roboloop.workspace import Workspace

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "your_robot.py"
TRAIN_ANY_ROBOT = "state" in {f.name for f in dataclasses.fields(TrainConfig)}
"""Training on a robot that is not ALOHA (`roboloop train --state PATH --action PATH`) is available."""
EPISODES, SECONDS = 8, 2.0


def load_example():
    spec = importlib.util.spec_from_file_location("your_robot_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    example = load_example()
    ws = tmp_path_factory.mktemp("your_robot") / "ws"
    args = ["--workspace", str(ws), "--episodes", str(EPISODES), "--seconds", str(SECONDS), "--epochs", "2"]
    result = example.main(args + ([] if TRAIN_ANY_ROBOT else ["--no-train"]))
    return example, Workspace(ws), result


def test_recorded_curated_and_streamed(ran):
    example, ws, result = ran
    steps = int(SECONDS * example.HZ)
    with Catalog(ws, url="") as cat:
        rows = {r["segment_id"]: r for r in cat.segment_table(example.DATASET).to_pylist()}
        assert len(rows) == EPISODES
        assert {r["episode.operator"] for r in rows.values()} == {"alice", "bob"}
        assert {r["scene.lighting"] for r in rows.values()} == {"normal", "dim", "bright"}
        aborted = [s for s, r in rows.items() if r["episode.aborted"]]
        assert len(aborted) == 1 and rows[aborted[0]]["episode.abort_reason"] == "EStop: operator pressed the e-stop"
        assert rows[aborted[0]]["time_end"].total_seconds() == pytest.approx((steps // 2) / example.HZ)

        # the operator's verdict, recomputed from the recorded data: a slipped grasp shows as a weak gripper force
        data = cat.dataset(example.DATASET).filter_contents(["/robot/gripper_force"]).reader(index="time").to_arrow_table()
        force: dict[str, float] = {}
        for sid, v in zip(data.column("rerun_segment_id").to_pylist(), data.column("/robot/gripper_force:Scalars:scalars").to_pylist()):
            if v is not None:
                force[sid] = max(force.get(sid, 0.0), float(v[0]))
        held = {s for s in rows if s not in aborted and force[s] > 2.0}
        assert 0 < len(held) < EPISODES - 1  # some grasps slipped

        sel = curate.load(cat, "v1")
        assert set(sel.train_ids) | set(sel.holdout_ids) == held
        assert not set(sel.train_ids) & set(sel.holdout_ids) and sel.train_ids

    # one epoch at 20 Hz over the train episodes: one sample per recorded control step
    assert result["stream"]["samples"] == (steps * len(sel.train_ids),)
    assert result["stream"]["state"] == (6,) and result["stream"]["force"] == (1,)
    assert result["stream"]["action"] == (5, 6) and result["stream"]["wrist"] == (3, example.H, example.W)

    # `roboloop verify`'s check: every file decodes and matches its checksum
    report = verify(ws, example.DATASET)
    assert report.ok and report.checked == EPISODES + 1 and not report.no_checksum  # the episodes and the blueprint


@pytest.mark.skipif(not TRAIN_ANY_ROBOT, reason="needs `roboloop train --state/--action` (TrainConfig.state, issue 22.3)")
def test_trained_on_its_own_state_and_action(ran):
    example, ws, result = ran
    with Catalog(ws, url="") as cat:
        runs = cat.segment_table(schema.runs_dataset(example.DATASET)).to_pylist()
    assert len(runs) == 1 and runs[0]["run.status"] == schema.RUN_STATUS_FINISHED
    assert runs[0]["run.selection"] == "v1" and np.isfinite(runs[0]["run.final_holdout_loss"])
