"""The default state inputs come from the task: transfer cube's mlp reads what it always read (config, features
and digest unchanged), insertion's reads joints + peg + socket poses; a run records its task and `roboloop eval`
evaluates it on that task; a selection spanning tasks trains one multi-task policy."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from roboloop import schema
from roboloop.catalog.client import Catalog
from roboloop.cli import app
from roboloop.envs import get_task
from roboloop.train import list_runs, load_policy, run_info
from roboloop.train.config import TrainConfig
from roboloop.train.protocol import feature_specs
from roboloop.train.tasks import registered_task, state_for_tasks
from roboloop.workspace import Workspace


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(dataset="d", selection="s", **kw)


def test_each_task_names_the_state_its_snapshot_records():
    assert get_task("transfer_cube").policy_state == ("/robot/joint_positions", "/state/cube_pose")
    assert get_task("insertion").policy_state == ("/robot/joint_positions", "/state/peg_pose", "/state/socket_pose")


def test_transfer_cube_keeps_the_policys_own_default_exactly():
    cfg = _cfg()
    out = state_for_tasks(cfg, ("transfer_cube",))
    assert out == cfg and out.state is None and out.digest() == cfg.digest()
    assert [(s.name, s.shape) for s in feature_specs(out)] == [(s.name, s.shape) for s in feature_specs(cfg)]
    assert [s.path for s in feature_specs(out) if s.kind == "state"] == ["/robot/joint_positions", "/state/cube_pose"]


def test_insertion_reads_its_own_objects_and_the_choice_is_stored_in_the_config():
    out = state_for_tasks(_cfg(), ("insertion",))
    assert out.state == ("/robot/joint_positions", "/state/peg_pose", "/state/socket_pose")
    assert TrainConfig.from_json(out.to_json()) == out  # deploy, --like and --resume read the same paths
    assert state_for_tasks(out, ("insertion",)) == out


def test_what_stays_as_given():
    given = _cfg(state=("/robot/joint_positions",))
    assert state_for_tasks(given, ("insertion",)) == given  # --state wins
    vision = _cfg(policy="vision")  # its default (joints) is recorded by both tasks
    assert state_for_tasks(vision, ("insertion",)) == vision
    assert state_for_tasks(vision, ("insertion", "transfer_cube")).tasks == ("insertion", "transfer_cube")
    free_text = _cfg()  # episodes imported with a task in words: nothing known about their streams
    assert state_for_tasks(free_text, ("pick up the cube",)) == free_text
    assert registered_task(("insertion",)) == "insertion"
    assert registered_task(("insertion", "transfer_cube")) is None and registered_task(("pick up the cube",)) is None


def test_tasks_with_different_default_inputs_make_a_multi_task_run():
    out = state_for_tasks(_cfg(), ("insertion", "transfer_cube"))  # tests/train/test_multitask.py has the rest
    assert out.tasks == ("insertion", "transfer_cube") and set(out.state) == {
        "/robot/joint_positions", "/state/cube_pose", "/state/peg_pose", "/state/socket_pose"}


def test_transfer_cube_lists_only_its_own_failure_kinds():
    tc, ins = get_task("transfer_cube"), get_task("insertion")
    assert set(tc.failure_kinds) == {"closed_on_air", "knocked_away", "dropped", "not_handed_over", "timed_out",
                                     "never_reached", "missed_grasp", "unstable"}
    assert {"never_aligned", "never_inserted", "pulled_out"} <= set(ins.failure_kinds) - set(tc.failure_kinds)
    assert all(tc.failure_kinds[k] == schema.FAILURE_KINDS[k] for k in tc.failure_kinds)


def _run(ws, *args: str) -> str:
    res = CliRunner().invoke(app, ["--workspace", str(ws), *args], env={"ROBOLOOP_CATALOG": "", "COLUMNS": "200"})
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res.stdout


@pytest.mark.sim
def test_insertion_trains_and_evaluates_on_its_task_through_the_cli(tmp_path):
    ws = tmp_path / "ws"
    steps = 30
    _run(ws, "collect", "-d", "ins", "--task", "insertion", "-n", "2", "--steps", str(steps), "--cameras", "", "--workers", "1")
    _run(ws, "curate", "-d", "ins", "--name", "all", "--holdout", "0")
    config = tmp_path / "train.toml"
    config.write_text(f'dataset = "ins"\nselection = "all"\nchunk = 5\nepisode_steps = {steps}\nbatch_size = 32\nsamples = 1\n'
                      '\n[model]\nhidden = 16\nlayers = 1\n')
    _run(ws, "train", "--config", str(config), "--epochs", "20")  # a policy that roughly follows the demos
    (run,) = list_runs(Workspace(ws))
    info = run_info(Workspace(ws), run["run_id"])
    assert info["task"] == "insertion" and info["tasks"] == ["insertion"]
    paths = ["/robot/joint_positions", "/state/peg_pose", "/state/socket_pose"]
    assert info["config"]["state"] == paths
    features = json.loads((Workspace(ws).run_dir(run["run_id"]) / "features.json").read_text())
    assert [(f["path"], f["shape"][-1]) for f in features if f["kind"] == "state"] == list(zip(paths, (14, 7, 7), strict=True))
    assert load_policy(Workspace(ws), run["run_id"]).cfg.state == tuple(paths)

    # no --task: the run's task; the grid's axes are insertion's (socket_region is not a transfer-cube axis).
    # 10 steps: a policy from 2 x 30 steps drifts off its data within ~20 steps and the simulator goes unstable
    _run(ws, "eval", "--run", run["run_id"], "--grid", "socket_region=near,far", "-n", "1", "--steps", "10",
         "--cameras", "", "--workers", "1", "--name", "ins-eval")
    with Catalog(Workspace(ws), url="") as cat:
        rows = [r for r in cat.segment_table("ins_evals").to_pylist() if r.get("episode.eval_id") == "ins-eval"]
    assert len(rows) == 2
    assert {r["episode.task"] for r in rows} == {"insertion"} and {r["episode.policy"] for r in rows} == {run["run_id"]}
    assert {r["outcome.stage_name"] for r in rows} <= set(schema.INSERTION_STAGES)
