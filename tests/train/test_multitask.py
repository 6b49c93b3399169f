"""Multi-task training: one selection over transfer cube and insertion episodes trains one policy whose inputs
are the union of the tasks' state paths (zeros where a task lacks one) and a one-hot of the episode's task;
deployment encodes an observation of either task exactly as training encoded its episodes, and `eval` with a
`task` grid axis runs each cell on its own task."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from roboloop import schema
from roboloop.catalog.client import Catalog
from roboloop.cli import app
from roboloop.collect.run import Observation
from roboloop.envs import get_task
from roboloop.stream import EpisodeStream
from roboloop.train import list_runs, load_policy, run_info
from roboloop.train.config import TrainConfig
from roboloop.train.features import encode_batch, stream_fields
from roboloop.train.protocol import feature_specs
from roboloop.train.tasks import segment_tasks, state_for_tasks
from roboloop.workspace import Workspace

TASKS = ("insertion", "transfer_cube")
UNION = ("/robot/joint_positions", "/state/cube_pose", "/state/peg_pose", "/state/socket_pose")


def _run(ws, *args: str) -> str:
    res = CliRunner().invoke(app, ["--workspace", str(ws), *args], env={"ROBOLOOP_CATALOG": "", "COLUMNS": "200"})
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res.stdout


def test_a_selection_spanning_tasks_reads_the_union_and_the_task():
    cfg = state_for_tasks(TrainConfig(dataset="d", selection="s"), TASKS)
    # union in task order, first seen first: insertion's paths, then transfer cube's cube pose
    assert cfg.tasks == TASKS and cfg.state == ("/robot/joint_positions", "/state/peg_pose", "/state/socket_pose", "/state/cube_pose")
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    specs = feature_specs(cfg)
    assert [(s.name, s.kind) for s in specs][-2:] == [("task", "task"), ("action", "action")]
    assert all(s.optional for s in specs if s.kind == "state")
    assert next(s for s in specs if s.kind == "task").labels == TASKS
    one = TrainConfig(dataset="d", selection="s")
    assert one.digest() == state_for_tasks(one, ("transfer_cube",)).digest() and "tasks" not in one.flat()
    assert not any(s.kind == "task" or s.optional for s in feature_specs(one))


@pytest.mark.sim
def test_one_policy_trains_on_two_tasks_and_deploys_on_each(tmp_path):
    ws = tmp_path / "ws"
    steps = 20
    for task in TASKS:  # both tasks into ONE dataset (a selection is over one dataset)
        _run(ws, "collect", "-d", "mt", "--task", task, "-n", "2", "--steps", str(steps), "--cameras", "", "--workers", "1")
    _run(ws, "curate", "-d", "mt", "--name", "all", "--holdout", "0")
    config = tmp_path / "train.toml"
    config.write_text(f'dataset = "mt"\nselection = "all"\nchunk = 5\nepisode_steps = {steps}\nbatch_size = 32\nsamples = 1\n'
                      '\n[model]\nhidden = 16\nlayers = 1\n')
    _run(ws, "train", "--config", str(config), "--epochs", "2")
    w = Workspace(ws)
    (run,) = list_runs(w)
    info = run_info(w, run["run_id"])
    assert info["task"] is None and info["tasks"] == list(TASKS)
    features = json.loads((w.run_dir(run["run_id"]) / "features.json").read_text())
    widths = {"/robot/joint_positions": 14, "/state/cube_pose": 7, "/state/peg_pose": 7, "/state/socket_pose": 7}
    assert sorted((f["path"], f["shape"][-1]) for f in features if f["kind"] == "state") == sorted(widths.items())
    (task_feature,) = [f for f in features if f["kind"] == "task"]
    assert task_feature["labels"] == list(TASKS) and task_feature["shape"] == [2]

    # a multi-task recipe on one task's episodes: the other task's paths have no width to read; a clear error
    _run(ws, "curate", "-d", "mt", "--name", "tc", "--where", "episode.task = 'transfer_cube'", "--holdout", "0")
    res = CliRunner().invoke(app, ["--workspace", str(ws), "train", "--like", run["run_id"], "--selection", "tc"],
                             env={"ROBOLOOP_CATALOG": "", "COLUMNS": "200"})
    assert res.exit_code != 0 and "records /state/peg_pose, /state/socket_pose" in " ".join(res.output.split())

    # deployment encodes an observation of each task (the paths its simulator's snapshot has) like training
    policy = load_policy(w, run["run_id"])
    specs = policy.encoder.specs + [s for s in feature_specs(policy.cfg) if s.kind == "action"]
    specs = [next(p for p in policy.model.specs if p.name == s.name) for s in specs]
    with Catalog(w, url="") as cat:
        segs = sorted(cat.segment_table("mt").column("segment_id").to_pylist())
        stream = EpisodeStream(cat, ("mt", segs), fields=stream_fields(specs), rate_hz=policy.cfg.rate_hz, batch_size=4096,
                               shuffle=False, rank=0, world_size=1)
        batch = next(iter(stream))
        seg_tasks = segment_tasks(cat, "mt", stream.segment_ids)
    enc = encode_batch(specs, batch, policy.cfg, seg_tasks)
    for task in TASKS:
        sim = get_task(task).make_sim()
        try:
            sim.reset(0, get_task(task).conditions())
            snapshot_paths = set(get_task(task).snapshot(sim))
        finally:
            sim.close()
        assert snapshot_paths <= set(UNION)
        row = next(i for i, e in enumerate(batch["episode_index"].tolist()) if seg_tasks[e] == task and batch["frame_index"][i] == 3)
        state = {p: batch[s.name][row].numpy().astype(np.float64) for s in specs if s.kind == "state" for p in [s.path]
                 if p in snapshot_paths}
        policy.reset()
        policy.encoder.task = task
        got = policy.encoder.encode(Observation(3, float(batch["timestamp"][row]), state=state))
        for s in specs:
            if s.kind != "action":
                torch.testing.assert_close(got[s.name][0], enc[s.name][row], rtol=0, atol=0)
        expected_hot = torch.zeros(2)
        expected_hot[TASKS.index(task)] = 1.0
        assert torch.equal(got["task"][0], expected_hot)
        for s in specs:  # a path the task does not record reads zeros
            if s.kind == "state" and s.path not in snapshot_paths:
                assert not got[s.name].any()

    # one evaluation over a task axis: each cell on its task, deployed through the simulator's task
    _run(ws, "eval", "--run", run["run_id"], "--grid", "task=transfer_cube,insertion", "-n", "1", "--steps", "8",
         "--cameras", "", "--workers", "1", "--name", "mt-eval")
    with Catalog(w, url="") as cat:
        rows = [r for r in cat.segment_table("mt_evals").to_pylist() if r.get("episode.eval_id") == "mt-eval"]
    assert sorted(r["episode.task"] for r in rows) == sorted(TASKS)
    stages = {r["episode.task"]: r["outcome.stage_name"] for r in rows}
    assert stages["insertion"] in schema.INSERTION_STAGES
