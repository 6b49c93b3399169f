"""The insertion task: conditions, determinism, the scripted demonstrator, strict success and its
failure kinds, and a recorded episode read back through the catalog. Physics-only episodes; one tiny camera."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from roboloop import schema
from roboloop.catalog.client import Catalog
from roboloop.envs.aloha.recording import RecordingSpec
from roboloop.envs.insertion import InsertionConditions, InsertionSim, InsertionTracker, ScriptedInsertion, demonstrator
from roboloop.envs.insertion.task import INSERTION
from roboloop.record.episode import EpisodeRecorder

pytestmark = pytest.mark.sim


@pytest.fixture(scope="module")
def sim():
    s = InsertionSim(cameras=())
    yield s
    s.close()


def _yaw_deg(pose) -> float:
    return float(Rotation.from_quat(np.r_[pose[4:7], pose[3]]).as_euler("zyx", degrees=True)[0])


def _peg_in_socket_frame(peg, socket) -> np.ndarray:
    """The peg centre in the socket's frame (scipy rotations, xyzw)."""
    r = Rotation.from_quat(np.r_[socket[4:7], socket[3]])
    return r.inv().apply(np.asarray(peg[:3]) - np.asarray(socket[:3]))


def _episode(sim, seed, cond, policy=None, steps=None):
    """Run one episode; (tracker, per-step record of contacts/poses)."""
    sim.reset(seed, cond)
    demo = ScriptedInsertion(sim)
    act = policy(demo) if policy else demo.action
    tracker = InsertionTracker()
    log = []
    for k in range(steps or sim.max_steps):
        a = act(k)
        tracker.update(sim, sim.step(a), a)
        log.append((sim.object_contacts(), sim.peg_pose(), sim.socket_pose()))
    return tracker, log


# ---------------------------------------------------------------- conditions
def test_vocabulary_labels_aliases_and_cell_keys():
    axes = INSERTION.vocabulary
    assert axes.names == ("peg_region", "socket_region", "yaw", "lighting", "table")
    assert axes.cell_key({"yaw": "SMALL", "peg_region": "inner"}) == "peg_region=near,yaw=small"
    c = INSERTION.conditions({"peg_region": "outer", "lighting": "dim"})
    assert (c.peg_region, c.socket_region, c.lighting) == ("far", "default", "dim")
    assert InsertionConditions.from_dict(c.to_dict()) == c
    assert InsertionConditions.from_dict({k: [v] for k, v in c.to_dict().items()}) == c  # catalog list columns
    with pytest.raises(ValueError, match="'middle'.*default"):
        InsertionConditions.from_names(peg_region="middle")
    with pytest.raises(ValueError, match="unknown condition axis 'region'"):
        InsertionConditions.from_names(region="near")


# the module docstring's table: label -> (peg x, socket x, y)
REGION_TABLE = {
    "default": ((0.10, 0.20), (-0.20, -0.10), (0.40, 0.60)),
    "near": ((0.10, 0.15), (-0.15, -0.10), (0.40, 0.60)),
    "far": ((0.15, 0.20), (-0.20, -0.15), (0.40, 0.60)),
    "front": ((0.10, 0.20), (-0.20, -0.10), (0.40, 0.50)),
    "back": ((0.10, 0.20), (-0.20, -0.10), (0.50, 0.60)),
    "wide": ((0.05, 0.25), (-0.25, -0.05), (0.35, 0.65)),
}


@pytest.mark.parametrize("region", sorted(REGION_TABLE))
def test_conditions_place_peg_and_socket(sim, region):
    (px, sx, y) = REGION_TABLE[region]
    cond = InsertionConditions.from_names(peg_region=region, socket_region=region, yaw="large")
    pegs, sockets = [], []
    for seed in range(12):
        sim.reset(seed, cond)
        assert np.array_equal(sim.peg_pose(), sim.peg_start_pose) and np.array_equal(sim.socket_pose(), sim.socket_start_pose)
        pegs.append(sim.peg_pose())
        sockets.append(sim.socket_pose())
        start = INSERTION.start_state(seed, cond)
        assert start["peg_x"] == pytest.approx(pegs[-1][0]) and start["socket_yaw_deg"] == pytest.approx(_yaw_deg(sockets[-1]))
    for poses, xr in ((pegs, px), (sockets, sx)):
        xs, ys = np.array([p[0] for p in poses]), np.array([p[1] for p in poses])
        assert xr[0] <= xs.min() and xs.max() <= xr[1] and y[0] <= ys.min() and ys.max() <= y[1]
        assert xs.max() - xs.min() > 0.3 * (xr[1] - xr[0])  # spread over the region, not one point
        yaws = [_yaw_deg(p) for p in poses]
        assert all(-30.0 <= v <= 30.0 for v in yaws) and max(yaws) - min(yaws) > 10.0
    sim.reset(0, InsertionConditions())
    assert _yaw_deg(sim.peg_pose()) == 0.0 and _yaw_deg(sim.socket_pose()) == 0.0


def test_lighting_and_table_do_not_change_the_start(sim):
    a = INSERTION.start_state(7, InsertionConditions())
    b = INSERTION.start_state(7, InsertionConditions.from_names(lighting="dim", table="blue"))
    assert a == b


def test_task_members_agree_with_its_modules():
    task = INSERTION
    assert task.name == "insertion" and task.stages == schema.INSERTION_STAGES and task.stages[0] == "none"
    assert set(task.failure_kinds) == {"missed_grasp", "dropped", "never_aligned", "never_inserted", "pulled_out", "timed_out", "unstable"}
    assert all(schema.FAILURE_KINDS[k] == words for k, words in task.failure_kinds.items())
    assert task.episode_steps == InsertionSim.max_steps == 400 and task.control_hz == 50
    props = task.scene_properties(task.conditions({"peg_region": "wide"}), 4)
    assert {c.split(".", 1)[1] for c in task.start_columns} <= set(props)
    assert task.conditions_from_dict({**props, "unrelated": 1}) == task.conditions({"peg_region": "wide"})
    assert set(task.appearance_axes) < set(task.vocabulary.names) and "top" in task.cameras


# ---------------------------------------------------------------- simulator
def test_lighting_and_table_change_the_image_only():
    with InsertionSim(cameras=("top",), width=64, height=48) as cam:
        images = {}
        for names in ({}, {"lighting": "dim"}, {"table": "blue"}):
            cam.reset(3, InsertionConditions.from_names(**names))
            home = cam.joint_positions()
            for _ in range(5):
                cam.step(home)
            images[tuple(names.values())] = (cam.render("top").astype(float), cam.peg_pose(), cam.socket_pose())
    normal, dim, blue = images[()], images[("dim",)], images[("blue",)]
    assert dim[0].mean() < 0.7 * normal[0].mean()
    assert blue[0][..., 2].mean() > normal[0][..., 2].mean() + 10
    for other in (dim, blue):
        assert np.array_equal(other[1], normal[1]) and np.array_equal(other[2], normal[2])


def test_same_seed_same_trajectory(sim):
    cond = InsertionConditions.from_names(peg_region="wide", yaw="small")

    def run(s, seed):
        s.reset(seed, cond)
        demo = ScriptedInsertion(s)
        out = []
        for k in range(140):
            s.step(demo.action(k))
            out.append(np.r_[s.joint_positions(), s.peg_pose(), s.socket_pose()])
        return np.array(out)

    other = InsertionSim(cameras=())
    a, b = run(sim, 5), run(other, 5)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, run(sim, 6))


# ---------------------------------------------------------------- demonstrator and success
@pytest.mark.parametrize("seed, names", [
    (900_001, {}),
    (900_002, {"peg_region": "wide", "socket_region": "wide", "yaw": "large"}),
    (900_003, {"peg_region": "far", "socket_region": "near", "yaw": "small", "lighting": "dim"}),
])
def test_scripted_insertion_succeeds(sim, seed, names):
    tracker, log = _episode(sim, seed, InsertionConditions.from_names(**names))
    res = tracker.result()
    assert res.success and res.failure_reason is None and res.stage_name == "inserted", res
    for contacts, peg, socket in log[-20:]:  # the window, checked independently
        d = _peg_in_socket_frame(peg, socket)
        assert 0.12 - abs(d[0]) >= 0.01 and math.hypot(d[1], d[2]) <= 0.008
        assert contacts["peg_right_left_finger"] and contacts["peg_right_right_finger"]
        assert contacts["socket_left_left_finger"] and contacts["socket_left_right_finger"]
        assert not contacts["peg_table"] and not contacts["socket_table"]
    assert res.final_depth == pytest.approx(0.12 - abs(_peg_in_socket_frame(log[-1][1], log[-1][2])[0]))


def test_expert_replans_from_where_the_objects_are(sim):
    """Objects moved after the expert planned (5 cm each): it re-reads their poses before the descent."""
    def moved(demo):
        def act(k):
            if k == 10:
                q = sim.physics.data.qpos
                q[16:18] += [0.03, -0.04]  # the peg's x, y (the 7 values after the 16 arm joints)
                q[23:25] += [-0.03, 0.04]  # the socket's
                sim.physics.forward()
            return demo.action(k)
        return act

    tracker, log = _episode(sim, 900_030, InsertionConditions(), moved)
    start_peg = sim.peg_start_pose
    assert tracker.result().success
    assert abs(log[20][1][1] - start_peg[1] + 0.04) < 0.005  # the peg really was elsewhere when grasped


def test_expert_corrects_its_own_execution_error(sim, monkeypatch):
    """A bias on the right shoulder (0.015 rad, ~7 mm at the gripper): the push servoes on the measured peg-socket offset."""
    def biased(k, a):
        a[8] += 0.015

    cond = InsertionConditions()
    tracker, _ = _episode(sim, 900_040, cond, lambda d: _with(d, biased))
    assert tracker.result().success
    monkeypatch.setattr(demonstrator, "SERVO_GAIN", 0.0)  # without the correction the same bias fails
    tracker, log = _episode(sim, 900_040, cond, lambda d: _with(d, biased))
    assert not tracker.result().success


def _with(demo, change):
    def act(k):
        a = demo.action(k)
        change(k, a)
        return a
    return act


def test_right_gripper_never_closing_is_a_missed_grasp(sim):
    def never_close(k, a):
        a[13] = 1.0

    tracker, log = _episode(sim, 900_010, InsertionConditions(), lambda d: _with(d, never_close))
    res = tracker.result()
    assert not res.success and res.failure_reason == "missed_grasp"
    touches = [k for k, (c, _, _) in enumerate(log) if c["peg_right_left_finger"] or c["peg_right_right_finger"]]
    # the moment is where the open gripper last touched the peg (or came nearest): at the peg, before the meeting
    assert ScriptedInsertion.T_PRE <= res.failure_step <= ScriptedInsertion.T_MEET
    if touches:
        assert res.failure_step == touches[-1]
    assert res.stage_name == "socket_grasped" or res.stage == 0  # the socket was held; the peg never was


def test_peg_released_while_carried_is_dropped(sim):
    release = ScriptedInsertion.T_LIFT + 20

    def open_right(k, a):
        if k >= release:
            a[13] = 1.0

    tracker, log = _episode(sim, 900_011, InsertionConditions(), lambda d: _with(d, open_right))
    res = tracker.result()
    assert not res.success and res.failure_reason == "dropped"
    assert release <= res.failure_step <= release + 15  # the let-go
    assert log[-1][1][2] < 0.03  # the peg ends on the table (rests at z 0.01)
    assert res.stage_name == "both_lifted"


def test_peg_stopped_at_the_opening_is_never_inserted(sim):
    held = {}

    def freeze_right(k, a):  # the right arm stops where it aligned the peg, 4 cm before the opening
        if k == ScriptedInsertion.T_INSERT:
            held["q"] = a[7:13].copy()
        if k >= ScriptedInsertion.T_INSERT:
            a[7:13] = held["q"]

    tracker, log = _episode(sim, 900_012, InsertionConditions(), lambda d: _with(d, freeze_right))
    res = tracker.result()
    assert not res.success and res.failure_reason == "never_inserted" and res.stage_name == "aligned"
    depths = [0.12 - abs(_peg_in_socket_frame(p, s)[0]) for _, p, s in log]
    assert max(depths) < 0.0  # never inside
    assert ScriptedInsertion.T_LIFT < res.failure_step <= ScriptedInsertion.T_INSERT


def test_peg_never_brought_to_the_socket_is_never_aligned(sim):
    held = {}

    def freeze_right(k, a):  # the right arm stays where it lifted the peg
        if k == ScriptedInsertion.T_LIFT:
            held["q"] = a[7:13].copy()
        if k >= ScriptedInsertion.T_LIFT:
            a[7:13] = held["q"]

    tracker, log = _episode(sim, 900_014, InsertionConditions(), lambda d: _with(d, freeze_right))
    res = tracker.result()
    assert not res.success and res.failure_reason == "never_aligned" and res.stage_name == "both_lifted"
    laterals = [float(np.hypot(*_peg_in_socket_frame(p, s)[1:])) for _, p, s in log]
    assert min(laterals) > 0.008
    # the moment: where the peg came nearest the socket's axis while both were up (both are from T_LIFT on)
    assert ScriptedInsertion.T_DOWN < res.failure_step and laterals[res.failure_step] <= min(laterals[ScriptedInsertion.T_LIFT:])


def test_peg_pulled_back_out_is_pulled_out(sim):
    held = {}
    back = ScriptedInsertion.T_IN + 30

    def pull_back(k, a):  # after the insertion, the right arm goes back (in 40 steps) to where it stood before the push
        if k == ScriptedInsertion.T_INSERT:
            held["q"] = a[7:13].copy()
        if k == back:
            held["in"] = a[7:13].copy()
        if k >= back:
            s = min(1.0, (k - back) / 40)
            a[7:13] = (1 - s) * held["in"] + s * held["q"]

    tracker, log = _episode(sim, 900_015, InsertionConditions(), lambda d: _with(d, pull_back))
    res = tracker.result()

    def inserted(p, s):
        d = _peg_in_socket_frame(p, s)
        axes = [Rotation.from_quat(np.r_[q[4:7], q[3]]).apply([1.0, 0.0, 0.0]) for q in (p, s)]
        angle = math.degrees(math.acos(min(1.0, abs(float(axes[0] @ axes[1])))))
        return 0.12 - abs(d[0]) >= 0.01 and math.hypot(d[1], d[2]) <= 0.008 and angle <= 10.0

    flags = [inserted(p, s) for _, p, s in log]
    last_in = max(k for k, f in enumerate(flags) if f)
    assert not res.success and res.failure_reason == "pulled_out" and res.stage_name == "inserted"
    assert res.failure_step == last_in + 1 and back <= res.failure_step < back + 40 and not flags[-1]


def test_an_insertion_shorter_than_the_window_is_not_a_success(sim):
    # stop the episode 5 steps after the peg first went in: inserted, but not held for the window
    tracker, log = _episode(sim, 900_013, InsertionConditions())
    first_in = next(k for k, (_, p, s) in enumerate(log) if 0.12 - abs(_peg_in_socket_frame(p, s)[0]) >= 0.01)
    short, _ = _episode(sim, 900_013, InsertionConditions(), steps=first_in + 5)
    res = short.result()
    assert tracker.success and not res.success
    assert res.failure_reason == "timed_out" and res.failure_step == first_in + 4 and res.stage_name == "inserted"


# ---------------------------------------------------------------- recording
def test_recorded_episode_reads_back(ws):
    """One episode run the way the episode runner drives a task (snapshot, writer, expert, tracker), read back."""
    task = INSERTION
    spec = RecordingSpec(cameras=("top",), width=96, height=72)
    sim = task.make_sim(spec.cameras, spec.width, spec.height)
    expert = task.expert(sim)  # built before the first reset, as the runner does
    cond = task.conditions({"yaw": "small", "table": "wood"})
    seed, steps, sid = 900_020, 40, "ins-1"
    sim.reset(seed, cond)
    expert.reset()
    tracker = task.tracker()
    path = ws.segment_path("ins", schema.BASE_LAYER, sid)
    pegs = []
    with EpisodeRecorder(path, sid) as rec:
        writer = task.writer(rec, spec, sim)
        for k in range(steps):
            state = task.snapshot(sim)
            pegs.append(state[schema.PEG_POSE])
            images = {c: sim.render(c) for c in spec.cameras} if spec.camera_step(k) else {}
            if spec.scene_step(k):
                writer.observe_scene(k, sim)
            action = expert.action(k, state)
            reward = sim.step(action)
            tracker.update(sim, reward, action)
            writer.observe(k, state, action, reward, images)
        res = tracker.result()
        writer.finish({
            schema.EPISODE: {schema.EPISODE_TASK: task.name, schema.EPISODE_SEED: seed},
            schema.SCENE: task.scene_properties(cond, seed),
            schema.OUTCOME: {schema.OUTCOME_SUCCESS: res.success, schema.OUTCOME_FAILURE_REASON: res.failure_reason,
                             schema.OUTCOME_STAGE_NAME: res.stage_name, **task.outcome_properties(res)},
        })
    sim.close()
    with Catalog(ws, url="") as cat:
        cat.register_files("ins", [path])
        ds = cat.dataset("ins")

        def read(entity):
            return ds.filter_segments([sid]).filter_contents([entity]).reader(index=schema.TIMELINE).to_arrow_table()

        peg = read(schema.PEG_POSE)
        col = next(c for c in peg.column_names if c.startswith(schema.PEG_POSE))
        got = np.array([np.asarray(v) for v in peg[col].to_pylist()])
        assert got.shape == (steps, 7) and np.allclose(got, np.array(pegs))
        assert read(schema.SOCKET_POSE).num_rows == steps
        assert read(schema.camera_path("top")).num_rows == steps // spec.camera_every
        assert read(schema.PEG_3D).num_rows == steps // spec.scene_every
        props = cat.segment_table("ins").to_pylist()[0]
        assert props["scene.peg_region"] == "default" and props["scene.table"] == "wood" and props["scene.yaw"] == "small"
        assert props["scene.peg_x"] == pytest.approx(pegs[0][0]) and props["scene.socket_yaw_deg"] != 0.0
        assert props["outcome.failure_reason"] == "missed_grasp"  # 40 steps: nothing grasped yet
        assert props["episode.task"] == "insertion"
        assert props["outcome.final_depth"] == pytest.approx(0.12 - abs(_peg_in_socket_frame(sim.peg_pose(), sim.socket_pose())[0]))
