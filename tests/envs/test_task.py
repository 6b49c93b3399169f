"""The task protocol and registry (envs/task.py, envs/__init__.py), transfer cube as its first
implementation, `task` as an axis of evaluation grids and plan items, and `roboloop tasks`."""

import hashlib
import inspect
import json
import math
from importlib.metadata import EntryPoint

import pytest
from typer.testing import CliRunner

from roboloop import schema
from roboloop.analyze.rollouts import success_by
from roboloop.collect.plan import Plan, PlanError, PlanItem
from roboloop.collect.plan_run import execute_plan
from roboloop.collect.run import CollectConfig, EpisodeJob, RecordingSpec, collect, make_sim, run_episode
from roboloop.envs import (
    DEFAULT_TASK,
    Task,
    TaskLoadError,
    TaskRegistrationError,
    TaskSpec,
    UnknownTaskError,
    describe_task,
    get_task,
    get_task_spec,
    register_task,
    tasks,
    unregister_task,
)
from roboloop.envs.aloha.conditions import AXES, REGIONS, SceneConditions
from roboloop.envs.aloha.task import TransferCube
from roboloop.envs.conditions import Axis, Vocabulary
from roboloop.errors import RoboloopError
from roboloop.evaluate.run import EvalConfig, GridError, cell_key, evaluate, parse_grid

TWIN = "cube_twin"


class CubeTwin(TransferCube):
    """A second task for routing tests: the transfer cube under another name (its simulator says so: a built-in
    task's `make_sim` names the task it was asked of, subclasses included)."""


class NoYaw(TransferCube):
    """A task whose vocabulary lacks the yaw axis."""

    vocabulary = Vocabulary((Axis("region", tuple(REGIONS), {"near": "left", "far": "right"}),))


@pytest.fixture
def twin():
    task = register_task(CubeTwin(name=TWIN))
    yield task
    unregister_task(TWIN)


def test_registry_lists_and_finds_tasks():
    cube = get_task("transfer_cube")
    assert get_task(None) is cube and DEFAULT_TASK == "transfer_cube"
    assert "transfer_cube" in tasks() and isinstance(cube, Task)
    with pytest.raises(UnknownTaskError, match=r"unknown task 'peg'; tasks: .*transfer_cube"):
        get_task("peg")
    with pytest.raises(ValueError, match="is not a task: it lacks"):
        register_task(object())


def test_unknown_task_says_how_to_add_one_of_your_own(tmp_path):
    """A task is named, not given by import path; the error says how a package adds one (printed intact: the
    TOML table in it is not taken for console markup)."""
    with pytest.raises(UnknownTaskError, match=r"unknown task 'stack_blocks'; tasks: .*transfer_cube.*"
                       r"a task of your own: .*roboloop.tasks.*stack_blocks = \"pkg.mod:attr\".*register_task"):
        get_task("stack_blocks")
    from roboloop.cli import app

    res = CliRunner().invoke(app, ["--workspace", str(tmp_path), "collect", "-d", "sb", "-n", "1",
                                   "--task", "mypkg.tasks:StackBlocks"], env={"COLUMNS": "400"})
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert "error: unknown task 'mypkg.tasks:StackBlocks': a task is given by its name" in res.output
    assert '[project.entry-points."roboloop.tasks"] (`your_task = "mypkg.tasks:StackBlocks"`)' in res.output


class HalfTask:
    """An installed "task" with only a name: what a package half-way through writing its task provides."""

    name = "half"
    description = "only a name"


def test_an_installed_task_that_is_not_a_task_is_named_with_what_it_lacks(monkeypatch):
    """An entry point to an object without the protocol's members is a TaskLoadError naming them, for every command
    that loads the registry (`roboloop tasks` included), not an AttributeError from deep inside one."""
    import roboloop.envs as envs
    from roboloop.cli import app

    ep = EntryPoint(name="half", value=f"{__name__}:HalfTask", group=envs.ENTRY_POINT_GROUP)
    monkeypatch.setattr(envs, "_entry_points", lambda: {"half": ep})
    monkeypatch.delitem(envs._REGISTERED, "half", raising=False)
    lacks = [m for m in ("vocabulary", "conditions_type", "make_sim", "tracker") if not hasattr(HalfTask, m)]
    with pytest.raises(TaskLoadError, match=rf"task 'half' \({__name__}:HalfTask, entry point group roboloop.tasks\) "
                                            r"is not a task: it lacks .*Writing a task") as err:
        get_task("half")
    assert all(f" {m}," in str(err.value) for m in lacks) and "description" not in str(err.value)
    res = CliRunner().invoke(app, ["tasks"], env={"COLUMNS": "400"})
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert "error: task 'half'" in res.output and "is not a task: it lacks" in res.output
    with pytest.raises(TaskRegistrationError, match="is not a task: it lacks") as err:
        register_task(HalfTask())
    assert isinstance(err.value, RoboloopError) and isinstance(err.value, ValueError)


def test_an_installed_task_named_like_a_builtin_is_named_in_a_warning_and_the_builtin_stays(monkeypatch, caplog):
    """It used to be shadowed silently: the package's author never learnt why their task did not run."""
    import roboloop.envs as envs

    ep = EntryPoint(name="transfer_cube", value=f"{__name__}:HalfTask", group=envs.ENTRY_POINT_GROUP)
    other = EntryPoint(name="half", value=f"{__name__}:HalfTask", group=envs.ENTRY_POINT_GROUP)
    monkeypatch.setattr(envs, "entry_points", lambda group: [ep, other] if group == envs.ENTRY_POINT_GROUP else [])
    envs._entry_points.cache_clear()
    try:
        with caplog.at_level("WARNING", logger="roboloop.envs"):
            found = envs._entry_points()
        assert list(found) == ["half"]
        (msg,) = [r.getMessage() for r in caplog.records]
        assert f"installed task 'transfer_cube' ({__name__}:HalfTask" in msg and "not used" in msg and "another name" in msg
        assert get_task("transfer_cube").name == "transfer_cube" and not isinstance(get_task("transfer_cube"), HalfTask)
    finally:
        envs._entry_points.cache_clear()


def test_a_subclass_of_a_builtin_task_runs_under_its_own_name():
    """Subclassing the reference task is the short way to a variant: its simulator carries the subclass's name
    (collect looks the task up by it), for transfer cube and insertion alike."""
    from roboloop.envs.insertion.task import InsertionTask

    class PegTwin(InsertionTask):
        name = "peg_twin"

    for task in (CubeTwin(name="cube_alias"), PegTwin(), get_task("transfer_cube")):
        sim = task.make_sim()
        try:
            assert sim.task == task.name
        finally:
            sim.close()


def test_register_and_unregister(twin):
    assert get_task(TWIN) is twin and TWIN in tasks()
    with pytest.raises(ValueError, match="registered already"):
        register_task(CubeTwin(name=TWIN))
    unregister_task(TWIN)
    with pytest.raises(UnknownTaskError):
        get_task(TWIN)


def test_a_task_description_is_the_task_without_its_running_code(twin):
    """`get_task_spec` (what gaps and plans read, without the recording code): a built-in task's description has every
    descriptive member of the task, equal, and gives the same conditions, start states and scene properties."""
    for name in ("transfer_cube", "insertion"):
        spec, task = get_task_spec(name), get_task(name)
        assert isinstance(spec, TaskSpec) and not isinstance(spec, Task) and isinstance(task, TaskSpec)
        for member in inspect.get_annotations(TaskSpec):
            assert getattr(spec, member) == getattr(task, member), (name, member)
        cond = task.conditions({"lighting": "dim"})
        assert spec.conditions({"lighting": "dim"}) == cond and spec.conditions_from_dict(cond.to_dict()) == cond
        assert spec.start_state(11, cond) == task.start_state(11, cond)
        assert spec.scene_properties(cond, 11) == task.scene_properties(cond, 11)
    assert get_task_spec(TWIN) is twin and get_task_spec(None) is get_task_spec(DEFAULT_TASK)
    with pytest.raises(UnknownTaskError, match="unknown task 'peg'"):
        get_task_spec("peg")
    replaced = register_task(CubeTwin(), replace=True)  # a task registered in a built-in's name is its own description
    try:
        assert get_task_spec("transfer_cube") is replaced
    finally:
        unregister_task("transfer_cube")
    assert isinstance(get_task_spec("transfer_cube"), TaskSpec) and not isinstance(get_task_spec("transfer_cube"), Task)


def test_transfer_cube_members():
    cube = get_task("transfer_cube")
    assert cube.vocabulary is AXES and cube.stages == schema.STAGES and cube.episode_steps == 300
    assert cube.conditions({"region": "near", "yaw": "any"}) == SceneConditions.from_names(region="left", yaw="any")
    assert cube.conditions() == SceneConditions()
    with pytest.raises(ValueError, match="valid region labels"):
        cube.conditions({"region": "moon"})
    c = SceneConditions.from_names(region="right", yaw="any", lighting="dim")
    assert cube.conditions_from_dict({**c.to_dict(), "cube_x": 1.0, "yaw": "any"}) == c
    # the start state is the pose the simulator places the cube at on reset (read from its qpos)
    sim = cube.make_sim(())
    try:
        for seed in (3, 4):
            sim.reset(seed, c)
            x, y, _, qw, _, _, qz = sim.cube_pose()
            state = cube.start_state(seed, c)
            assert state == {"cube_x": x, "cube_y": y, "cube_yaw_deg": pytest.approx(math.degrees(2 * math.atan2(qz, qw)))}
            assert cube.scene_properties(c, seed) == {**c.to_dict(), "region_label": c.region_label, "yaw": "any", **state}
            snap = cube.snapshot(sim)
            assert (snap[schema.JOINT_POSITIONS] == sim.joint_positions()).all() and (snap[schema.CUBE_POSE] == sim.cube_pose()).all()
    finally:
        sim.close()


def test_grid_task_axis_keys_and_validation(twin):
    plain = parse_grid("region=near,far")
    assert plain.keys() == ["region=left", "region=right"]  # a grid without `task` keeps its keys
    g = parse_grid(f"task=transfer_cube,{TWIN} region=near")
    assert g.keys() == ["region=left,task=transfer_cube", f"region=left,task={TWIN}"]  # labels in grid order
    assert g.tasks == ("transfer_cube", TWIN)
    assert cell_key({"task": TWIN.upper(), "region": "near"}) == f"region=left,task={TWIN}"
    with pytest.raises(GridError, match="unknown task label 'peg'; valid task labels: .*transfer_cube"):
        parse_grid("task=peg region=near")
    register_task(NoYaw(name="no_yaw"))
    try:
        with pytest.raises(GridError, match="unknown grid axis 'yaw'.*of task 'no_yaw'"):
            parse_grid("task=transfer_cube,no_yaw yaw=any")
        assert parse_grid("task=transfer_cube,no_yaw region=far").keys() == ["region=right,task=transfer_cube", "region=right,task=no_yaw"]
        with pytest.raises(GridError, match="unknown grid axis 'yaw'"):
            EvalConfig(task="no_yaw", grid=parse_grid("yaw=any"))
        cfg = EvalConfig(task="no_yaw", grid=parse_grid("region=near", task="no_yaw"))
        assert EvalConfig.from_dict(cfg.to_dict()) == cfg
    finally:
        unregister_task("no_yaw")


def test_plan_item_targets_a_task(twin):
    item = PlanItem({"task": TWIN, "region": "near"}, 2)
    assert item.task == TWIN and item.key == f"region=left,task={TWIN}"
    assert item.scene_conditions() == SceneConditions.from_names(region="left")
    assert PlanItem({"region": "near"}, 1).task == DEFAULT_TASK and "task" not in PlanItem({"region": "near"}, 1).conditions
    with pytest.raises(PlanError, match="unknown task 'peg'"):
        PlanItem({"task": "peg"}, 1)


def test_plan_collects_each_item_on_its_task(catalog, twin):
    plan = Plan("two-tasks", "pt", items=(PlanItem({"region": "near"}, 1), PlanItem({"task": TWIN, "region": "far"}, 1)))
    run = execute_plan(catalog, plan, spec=RecordingSpec(cameras=()), steps=10)
    rows = {r["segment_id"]: r for r in catalog.segment_table("pt").to_pylist()}
    assert {k: [rows[s]["episode.task"] for s in ids] for k, ids in run.collected.items()} == {
        "region=left": ["transfer_cube"], f"region=right,task={TWIN}": [TWIN]}
    # a job of one task never runs on another task's simulator
    sim = make_sim(RecordingSpec(cameras=()))
    try:
        with pytest.raises(ValueError, match=f"runs task '{TWIN}', the simulator simulates 'transfer_cube'"):
            run_episode(sim, None, EpisodeJob(1, SceneConditions(), "pt-s000001-abcdef", task=TWIN),
                        workspace=catalog.workspace, dataset="pt", spec=RecordingSpec(cameras=()))
    finally:
        sim.close()


def test_worker_processes_run_a_task_registered_at_runtime(catalog, twin):
    """Spawned workers know only built-in and installed tasks: collect hands them the task object."""
    cfg = CollectConfig(dataset="wk", episodes=2, workers=2, task=TWIN, steps=5, spec=RecordingSpec(cameras=()))
    report = collect(catalog, cfg)
    assert len(report.results) == 2
    assert [r["episode.task"] for r in catalog.segment_table("wk").to_pylist()] == [TWIN, TWIN]


def test_eval_runs_each_cell_on_its_task(catalog, twin):
    """An end-to-end evaluation over a `task` axis: each rollout runs and records its cell's task, on the
    seed its cell key gives (paired across tasks only through the key), and success splits by task."""
    cfg = EvalConfig(dataset="tk", policy="scripted", grid=parse_grid(f"task=transfer_cube,{TWIN} region=near"),
                     episodes_per_cell=1, cameras=(), steps=20, eval_id="ev-tasks")
    report = evaluate(catalog, cfg)
    assert report.n == 2
    rows = catalog.segment_table("tk_evals").to_pylist()
    by_cell = {r["episode.cell"]: r for r in rows}
    assert set(by_cell) == {f"region=left,task={TWIN}", "region=left,task=transfer_cube"}
    for key, r in by_cell.items():
        task = key.rsplit("task=", 1)[1]
        assert r["episode.task"] == task
        digest = hashlib.sha256(f"{key}#0".encode()).digest()
        assert r["episode.seed"] == schema.EVAL_SEED_BASE + int.from_bytes(digest[:8], "big") % schema.EVAL_SEED_SPAN
        assert r["scene.region"] == "left" and r["outcome.steps"] == 20
    groups = success_by(rows, ["episode.task"])
    assert sorted(g["episode.task"] for g in groups) == sorted([TWIN, "transfer_cube"]) and all(g["n"] == 1 for g in groups)


def test_tasks_command_lists_axes_and_labels():
    from roboloop.cli import app

    res = CliRunner().invoke(app, ["tasks", "--json"])
    assert res.exit_code == 0, res.output
    listed = {d["name"]: d for d in map(json.loads, res.output.strip().splitlines())}
    cube = listed["transfer_cube"]
    assert cube == describe_task(get_task("transfer_cube"))
    assert [a["axis"] for a in cube["axes"]] == list(AXES.names)
    assert next(a for a in cube["axes"] if a["axis"] == "region")["aliases"] == {"near": "left", "far": "right"}
    assert cube["stages"] == list(schema.STAGES) and "never_reached" in cube["failure_kinds"]
    text = CliRunner().invoke(app, ["tasks"], env={"COLUMNS": "200"}).output
    assert "transfer_cube" in text and "default, left, right, front, back, wide" in text and "near = left" in text


def test_stage_metric_counts_the_tasks_stages():
    from roboloop.evaluate.until_decided import metric_value

    assert metric_value({"stage": 2}, "stage") == 2 / (len(schema.STAGES) - 1)
    assert metric_value({"stage": 5}, "stage", n_stages=6) == 1.0  # a task with five stages after `none`


def test_failure_words_hold_every_tasks_kinds():
    from roboloop.envs import failure_words

    class Peg(TransferCube):
        pass

    register_task(Peg(name="peg_t", failure_kinds={"peg_slipped": "the peg slipped"}))
    try:
        words = failure_words()
        assert words["peg_slipped"] == "the peg slipped" and words["never_touched"] == schema.FAILURE_KINDS["never_touched"]
        assert all(words[k] == v for k, v in schema.FAILURE_KINDS.items())
    finally:
        unregister_task("peg_t")
