"""Failure kinds and moments (envs/aloha/success.py), their re-judgement as an `outcome` layer (outcomes.py),
failure modes and their representative (analyze.py), each failure's nearest training episode.

Real physics: the scripted demonstrator, perturbed so that it fails in a known way; the
expected kind and moment are computed here from the states the simulator went through
(gripper joint, cube position, contacts), not from the tracker.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from roboloop import schema
from roboloop.analyze import rollouts as analyze
from roboloop.catalog.client import Catalog
from roboloop.collect.run import Observation, ScriptedPolicy
from roboloop.envs.aloha.conditions import SceneConditions
from roboloop.envs.aloha.success import (
    APPROACH_MARGIN,
    CLOSE_REACH,
    HOLD_STEPS,
    KNOCK_DISTANCE,
    MOVE_NOISE,
    REACH_DISTANCE,
)
from roboloop.evaluate.run import EvalConfig, evaluate, parse_grid

R_GRIP, R_SHOULDER, R_WRIST, L_GRIP = 13, 8, 11, 6
R_ARM = slice(7, 13)


class _ClosesAbove:
    """Perturbation of the scripted handover: from step `at` the right arm holds its targets of that step, raised by
    `lift` rad at the shoulder, and its gripper shuts. At step 70 raised 0.1 rad (seed 3) it shuts 6 cm from the
    cube's centre without a finger on it; at step 20 it shuts ~20 cm away."""

    def __init__(self, at: int, lift: float = 0.0) -> None:
        self.at, self.lift, self.held = at, lift, None

    def __call__(self, k, a):
        if k == self.at:
            self.held = a[R_ARM].copy()
            self.held[R_SHOULDER - R_ARM.start] -= self.lift
        if k >= self.at:
            a[R_ARM] = self.held
            a[R_GRIP] = 0.0
        return a


@pytest.fixture(scope="module")
def physics_sim():
    from roboloop.envs.aloha import AlohaSim

    s = AlohaSim(cameras=())
    yield s
    s.close()


def _run(sim, perturb, *, steps=300, seed=3):
    """Scripted handover with `perturb(step, action)`; per-step states after each step, and the verdict."""
    from roboloop.envs.aloha.success import SuccessTracker

    sim.reset(seed, SceneConditions())
    pol = ScriptedPolicy(sim)
    pol.reset()
    tr = SuccessTracker()
    log = {"grip": [], "cmd": [], "xy": [], "z": [], "contacts": [], "reach": []}
    for k in range(steps):
        a = np.array(pol.action(k, Observation(k, k / 50, sim.joint_positions(), sim.cube_pose(), {})), float)
        a = perturb(k, a)
        reward = sim.step(a)
        tr.update(sim, reward, a)
        log["grip"].append(sim.joint_positions()[R_GRIP])
        log["cmd"].append(a[R_GRIP])
        log["xy"].append(sim.cube_pose()[:2].copy())
        log["z"].append(sim.cube_pose()[2])
        log["contacts"].append(sim.cube_contacts())
        log["reach"].append(float(np.linalg.norm(sim.gripper_positions()["right"] - sim.cube_pose()[:3])))
    return tr.result(), {k: np.asarray(v) if k != "contacts" else v for k, v in log.items()}


def _approach_stopped(reach):
    """The first step after which the grasp point never again got more than APPROACH_MARGIN closer to the cube."""
    closer = [k for k in range(len(reach) - 1) if reach[k] - reach[k + 1 :].min() > APPROACH_MARGIN]
    return closer[-1] + 1 if closer else 0


def _robot_touch(c):
    return any(c[k] for k in ("left_left_finger", "left_right_finger", "right_left_finger", "right_right_finger", "other"))


@pytest.mark.sim
def test_every_failure_gets_a_kind_and_the_moment_it_went_wrong(physics_sim):
    res, log = _run(physics_sim, _ClosesAbove(70, lift=0.1))  # the arm stops just above the cube and closes there
    opened = np.flatnonzero(log["grip"] > 0.7)[0]
    shut = opened + np.flatnonzero(log["grip"][opened:] < 0.55)[0]
    assert res.failure_reason == "closed_on_air" and res.failure_step == shut
    c = log["contacts"][shut]
    assert not (c["right_left_finger"] or c["right_right_finger"]) and log["cmd"][shut] == 0.0
    assert log["reach"][shut] <= CLOSE_REACH  # at the cube

    def tilt_wrist(k, a):  # the wrist tilted by 0.2 rad: the gripper comes down on the cube and shoves it
        if k >= 30:
            a[R_WRIST] += 0.2
        return a

    res, log = _run(physics_sim, tilt_wrist)
    moved = np.hypot(*(log["xy"] - log["xy"][0]).T)
    displaced = int(np.flatnonzero(moved > 0.03)[0])
    assert res.failure_reason == "knocked_away" and res.stage == 0
    t = res.failure_step
    assert t < displaced and _robot_touch(log["contacts"][t]) and moved[t] < 0.01  # struck while it still sat in place
    assert not any(_robot_touch(c) for c in log["contacts"][max(0, t - 3) : t])  # the first step of that contact

    def let_go(k, a):  # open the right gripper at 3 s, while it carries the cube to the handover
        if k >= 150:
            a[R_GRIP] = 1.0
        return a

    res, log = _run(physics_sim, let_go)
    fingers = [k for k, c in enumerate(log["contacts"]) if _robot_touch(c) and not c["other"] and not c["table"] and log["z"][k] > 0.05]
    assert res.failure_reason == "dropped" and res.failure_step == fingers[-1]
    assert log["z"][res.failure_step] > 0.05 and log["z"][-1] < 0.05

    def give_up(k, a):  # the right arm touches the cube at ~1.9 s, then lifts away with its gripper open
        if k >= 95:
            a[R_SHOULDER] -= 0.4 * min(1.0, (k - 95) / 20)
            a[R_GRIP] = 1.0
        return a

    res, log = _run(physics_sim, give_up)
    right_touches = [k for k, c in enumerate(log["contacts"]) if c["right_left_finger"] or c["right_right_finger"]]
    assert res.failure_reason == "missed_grasp" and res.failure_step == right_touches[-1] and res.stage == 0

    res, log = _run(physics_sim, lambda k, a: np.where(np.arange(14) == L_GRIP, 1.0, a))  # the left gripper never closes
    assert res.failure_reason == "not_handed_over" and res.stage == 2 and log["z"][-1] > 0.05

    res, log = _run(physics_sim, lambda k, a: a, steps=240)  # a correct handover that runs out of time
    assert res.failure_reason == "timed_out" and res.failure_step == 239 and res.stage == 4

    res, _ = _run(physics_sim, lambda k, a: a)
    assert res.success and res.failure_reason is None and res.failure_step is None


def _finger(c):
    return any(c[k] for k in ("left_left_finger", "left_right_finger", "right_left_finger", "right_right_finger"))


def _bar_bump(k, a):
    """From 0.6 s the right wrist folds up (+1.4 rad) while the shoulder lowers: the back of the open gripper (its
    bar, not a finger) strikes the cube at ~1.4 s and moves it ~1 cm; the grasp point stays ~10 cm away."""
    if k >= 30:
        a[R_WRIST] += 1.4 * min(1.0, (k - 30) / 20)
        a[R_SHOULDER] += 0.5 * min(1.0, (k - 30) / 40)
        a[R_GRIP] = 1.0
    return a


@pytest.mark.sim
def test_a_bump_by_an_arm_link_or_a_moved_cube_means_the_arm_reached_it(physics_sim):
    res, log = _run(physics_sim, _bar_bump, steps=130)  # before the left arm moves
    moved = np.hypot(*(log["xy"] - log["xy"][0]).T)
    links = [k for k, c in enumerate(log["contacts"]) if c["other"]]
    assert links and not any(_finger(c) for c in log["contacts"])  # touched, by no finger
    assert MOVE_NOISE < moved.max() < KNOCK_DISTANCE and moved[: links[0]].max() < 1e-9  # pushed; untouched it sat still
    assert log["reach"].min() > REACH_DISTANCE and log["reach"][-1] > REACH_DISTANCE  # the old rule said never reached
    bump = links[0]
    assert all(b - a <= 3 for a, b in zip(links, links[1:]))  # one contact
    assert res.failure_reason == "missed_grasp" and res.stage == 0
    assert res.failure_step == max(bump, int(np.argmin(log["reach"])))  # the bump came after the closest approach
    assert res.failure_step == bump


@pytest.mark.sim
def test_a_gripper_closing_far_from_the_cube_did_not_close_on_air_it_never_reached_it(physics_sim):
    res, log = _run(physics_sim, _ClosesAbove(20), steps=150)  # the right arm stops at 0.4 s, ~20 cm away, and closes
    opened = np.flatnonzero(log["grip"] > 0.7)[0]
    shut = opened + np.flatnonzero(log["grip"][opened:] < 0.55)[0]
    assert log["reach"][shut] > CLOSE_REACH and log["cmd"][shut] == 0.0  # it did close, far from the cube
    assert not any(_robot_touch(c) for c in log["contacts"]) and np.hypot(*(log["xy"] - log["xy"][0]).T).max() < 1e-9
    assert log["reach"].min() > REACH_DISTANCE
    assert res.failure_reason == "never_reached" and res.failure_step == _approach_stopped(log["reach"])


@pytest.mark.sim
def test_a_knock_dates_from_the_first_contact_that_moved_the_cube(physics_sim):
    def bump_then_shove(k, a):  # the bar bump (~1 cm at 1.4 s), then the gripper comes down tilted and shoves it
        f = 1.0 if k < 80 else max(0.0, 1 - (k - 80) / 10)
        if k >= 30:
            a[R_WRIST] += f * 1.4 * min(1.0, (k - 30) / 20) - (1 - f) * 0.2
            a[R_SHOULDER] += f * 0.5 * min(1.0, (k - 30) / 40)
            a[R_GRIP] = 1.0
        return a

    res, log = _run(physics_sim, bump_then_shove, steps=150)
    moved = np.hypot(*(log["xy"] - log["xy"][0]).T)
    touches = [k for k, c in enumerate(log["contacts"]) if _robot_touch(c)]
    first, crossed = touches[0], int(np.flatnonzero(moved > KNOCK_DISTANCE)[0])
    later = [k for k in touches if k > first + 10]  # the second contact, after a pause
    assert log["contacts"][first]["other"] and moved[first - 1] < 1e-9  # the bar's bump, on a cube at rest
    assert MOVE_NOISE < moved[later[0] - 1] < KNOCK_DISTANCE  # the bump moved it ~1 cm; it lay still until the shove
    assert later[0] < crossed and later[0] - first > 30
    assert res.failure_reason == "knocked_away" and res.stage == 0
    assert res.failure_step == first  # not the shove (the old moment) nor the step 3 cm was crossed


def _swing_after_a_squeeze(k, a):
    """The scripted approach until both right fingers first close on the cube (step 106, seed 3); one step later the
    gripper springs open and the waist swings 1 rad in 0.1 s: a single step of two-finger contact, then the arm
    flings the cube metres away, the way the policy's first swings did (v1: c01-i0003, c03-i0028)."""
    if k >= 107:
        a[R_GRIP] = 1.0
        a[R_ARM.start] += 1.0 * min(1.0, (k - 106) / 5)
    return a


@pytest.mark.sim
def test_a_momentary_two_finger_touch_is_no_grasp_a_swing_that_flings_the_cube_knocked_it_away(physics_sim):
    res, log = _run(physics_sim, _swing_after_a_squeeze, steps=150)
    squeezed = [k for k, c in enumerate(log["contacts"]) if c["right_left_finger"] and c["right_right_finger"]]
    moved = np.hypot(*(log["xy"] - log["xy"][0]).T)
    assert squeezed and len(squeezed) < HOLD_STEPS  # both right fingers touched it, for a step: no hold
    assert moved.max() > 1.0 and log["z"][-1] < 0.05  # flung away; it ends low, which version 3 called dropped
    assert res.stage == 1  # the stage (partial credit) still counts the touch as a right grasp
    assert res.failure_reason == "knocked_away"
    # the moment: the first step of the robot contact in progress when the cube first moved more than MOVE_NOISE
    first_moved = int(np.flatnonzero(moved > MOVE_NOISE)[0])
    touches = [k for k in range(first_moved + 1) if _robot_touch(log["contacts"][k])]
    start = touches[-1]
    while start - 1 in touches or any(start - g in touches for g in (2, 3)):
        start = max(k for k in touches if k < start)
    t = res.failure_step
    assert t == start and t < squeezed[0] and moved[t] < MOVE_NOISE


def _stops_then_drifts(k, a):
    """The right arm holds its targets of step 20 (~20 cm from the cube, open) and, from 1 s, its shoulder drifts
    away by 0.002 rad a step: stopped short at ~0.5 s, the distance creeps up ~8 cm over the next 2.8 s (episodes end
    at 3.8 s, before the left arm comes for the cube)."""
    if k == 20:
        _stops_then_drifts.held = a[R_ARM].copy()
    if k >= 20:
        a[R_ARM] = _stops_then_drifts.held
        a[R_SHOULDER] -= 0.002 * max(0, k - 50)
        a[R_GRIP] = 1.0
    return a


@pytest.mark.sim
def test_a_never_reached_moment_is_where_the_approach_stopped_not_where_a_slow_drift_ended(physics_sim):
    res, log = _run(physics_sim, _stops_then_drifts, steps=190)
    reach = log["reach"]
    assert not any(_robot_touch(c) for c in log["contacts"]) and reach.min() > REACH_DISTANCE
    stopped = _approach_stopped(reach)
    assert res.failure_reason == "never_reached" and res.failure_step == stopped
    assert stopped <= 50 and reach[-1] - reach[stopped] > 0.02  # before the drift, which carried it 2+ cm further
    rested = 1 + max(k for k, d in enumerate(reach) if abs(d - reach[-1]) > 0.01)  # version 3: within 1 cm of the end
    assert rested > stopped + 100


# --- re-judging old rollouts: an outcome layer ----------------------------------------------------------

class ClosesEarly:
    """The scripted demonstrator whose right gripper shuts at 0.4 s, ~20 cm from the cube (module level: picklable):
    in episodes shorter than its approach (~1.9 s) it never reaches the cube, and its close is not one on air."""

    policy_id = "scripted-closes-early"

    def __init__(self, sim) -> None:
        self.inner = ScriptedPolicy(sim)

    def reset(self) -> None:
        self.inner.reset()

    def action(self, step, observation):
        a = np.array(self.inner.action(step, observation), float)
        if step >= 20:
            a[R_GRIP] = 0.0
        return a


def _v1_outcome(res, n_steps, dt, task="transfer_cube"):
    """What the first classifier wrote: no moment for a cube never touched, no classifier version."""
    return {
        schema.OUTCOME_SUCCESS: bool(res.success), schema.OUTCOME_MAX_REWARD: float(res.max_reward),
        schema.OUTCOME_SUCCESS_STEP: -1, schema.OUTCOME_STEPS: int(n_steps), schema.OUTCOME_DURATION_S: n_steps * dt,
        schema.OUTCOME_FAILURE_STEP: -1, schema.OUTCOME_FAILURE_REASON: "never_touched",
        schema.OUTCOME_FINAL_CUBE_Z: float(res.final_cube_z), schema.OUTCOME_STAGE: int(res.stage),
        schema.OUTCOME_STAGE_NAME: schema.STAGES[res.stage], schema.OUTCOME_FAILURE_TIME_S: -1.0,
    }


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.sim
def test_reoutcome_rejudges_old_rollouts_into_an_outcome_layer_every_reader_prefers(catalog, monkeypatch):
    from roboloop.collect import run as collect
    from roboloop.refine.outcomes import reoutcome

    ws = catalog.workspace
    cfg = EvalConfig(dataset="demo", grid=parse_grid("region=near"), episodes_per_cell=2, steps=40, cameras=())
    with monkeypatch.context() as m:  # an old recorder: recorded before failure kinds had moments
        m.setattr(collect, "outcome_properties", _v1_outcome)
        evaluate(catalog, EvalConfig(**{**cfg.to_dict(), "eval_id": "old", "grid": cfg.grid}), policy_factory=ClosesEarly)
    # the same policy on the same (cell, index) seeds, judged at record time by the current code
    fresh = evaluate(catalog, EvalConfig(**{**cfg.to_dict(), "eval_id": "new", "grid": cfg.grid}), policy_factory=ClosesEarly)
    expected = {(r.outcome[schema.OUTCOME_FAILURE_REASON], r.outcome[schema.OUTCOME_FAILURE_TIME_S]) for r in fresh.results}
    assert {k for k, _ in expected} == {"never_reached"} and all(t > 0 for _, t in expected)

    old = analyze.failures(analyze.load_rollouts(ws, "demo_evals", ["old"]))
    assert {r["outcome.failure_reason"] for r in old} == {"never_touched"} and {r["at_s"] for r in old} == {0.0}
    base = {r["segment_id"]: _sha(ws.segment_path("demo_evals", schema.BASE_LAYER, r["segment_id"])) for r in old}

    rep = reoutcome(catalog, "demo_evals", eval_ids=["old"])
    assert sorted(rep.judged) == sorted(base) and sorted(rep.changed) == sorted(base) and not rep.skipped
    # the base recordings are untouched; the judgement is a new file in the outcome layer
    assert {s: _sha(ws.segment_path("demo_evals", schema.BASE_LAYER, s)) for s in base} == base
    assert all(ws.segment_versions("demo_evals", schema.OUTCOME_LAYER, s) for s in base)

    def judged(rows):
        return {(r["outcome.failure_reason"], r["outcome.failure_time_s"]) for r in rows if r["episode.eval_id"] == "old"}

    # the rollout index (success / failures without a catalog), the live catalog, and a catalog restored from disk
    assert judged(analyze.load_rollouts(ws, "demo_evals", ["old"]).to_pylist()) == expected
    assert judged(catalog.segment_table("demo_evals").to_pylist()) == expected
    with Catalog(type(ws)(ws.root), url="") as again:
        assert judged(again.segment_table("demo_evals").to_pylist()) == expected
    assert {r["at_s"] for r in analyze.failures(analyze.load_rollouts(ws, "demo_evals", ["old"]))} == {t for _, t in expected}
    # judged by the current classifier now: nothing left to do without --all
    assert not reoutcome(catalog, "demo_evals").judged
    # an index row still holding the old judgement (a run killed between the layer files and the index) is redone
    from roboloop import rows
    from roboloop.catalog import index as episode_index

    stale_id = sorted(base)[0]
    stale = next(r for r in episode_index.read(ws, "demo_evals") if r["segment_id"] == stale_id)
    rows.write_row(ws, schema.rollout_index_table("demo_evals"), stale_id,
                   {k: v for k, v in stale.items() if k != "outcome.classifier"} | {"outcome.failure_reason": "never_touched"})
    assert list(reoutcome(catalog, "demo_evals").judged) == [stale_id]
    assert judged(analyze.load_rollouts(ws, "demo_evals", ["old"]).to_pylist()) == expected

    # the outcome text in the viewer names the kind, the moment and the cell: at record time, and once re-judged
    def text(sid):
        t = catalog.dataset("demo_evals").filter_segments([sid]).filter_contents([schema.OUTCOME_TEXT]).reader(index=None)
        return t.to_arrow_table().column(f"{schema.OUTCOME_TEXT}:TextDocument:text").to_pylist()[0][0]

    for sid, t in [(r.segment_id, r.outcome[schema.OUTCOME_FAILURE_TIME_S]) for r in fresh.results] + [
            (s, rep.judged[s][schema.OUTCOME_FAILURE_TIME_S]) for s in base]:
        md = text(sid)
        assert "never reached the cube" in md and f"at **{t:.2f} s**" in md and "region=left" in md, md


@pytest.mark.sim
def test_a_replay_that_diverges_from_the_recording_is_not_rejudged(physics_sim):
    from roboloop.refine.outcomes import ReplayMismatch, judge_replay

    sim = physics_sim
    sim.reset(5, SceneConditions())
    pol = ScriptedPolicy(sim)
    pol.reset()
    targets, positions, cube = [], [], []
    for k in range(40):
        positions.append(sim.joint_positions().copy())
        cube.append(sim.cube_pose().copy())
        a = np.asarray(pol.action(k, Observation(k, k / 50, positions[-1], cube[-1], {})), float)
        targets.append(a)
        sim.step(a)
    targets, positions, cube = map(np.asarray, (targets, positions, cube))
    judge_replay(sim, 5, SceneConditions(), targets, positions, cube)  # the same motion: replays exactly
    with pytest.raises(ReplayMismatch, match="cube pose differs .* at step 0"):
        judge_replay(sim, 6, SceneConditions(), targets, positions, cube)  # another scene: the cube is elsewhere
    moved = positions.copy()
    moved[20, 3] += 1e-3  # a recording whose arm went elsewhere than these actions take it
    with pytest.raises(ReplayMismatch, match="joint positions differ .* by 0.001 at step 20"):
        judge_replay(sim, 5, SceneConditions(), targets, moved, cube)


# --- modes and representatives ---------------------------------------------------------------------------

def _fail(sid, cell, kind, t, seed):
    return {"segment_id": sid, analyze.SUCCESS: False, analyze.CELL: cell, analyze.SEED: seed, analyze.EVAL_ID: "v1",
            "outcome.failure_reason": kind, "outcome.failure_time_s": t}


def test_failure_modes_count_kinds_per_cell_and_pick_the_largest_modes_median_case():
    rows = [
        _fail("a1", "yaw=any", "knocked_away", 0.02, 1),  # the earliest failure: what the demo used to show
        _fail("a2", "yaw=any", "never_reached", 0.9, 2),
        _fail("a3", "yaw=any", "never_reached", 0.6, 3),
        _fail("a4", "yaw=any", "never_reached", 3.9, 4),
        _fail("a5", "yaw=any", "closed_on_air", 0.5, 5),
        _fail("b1", "yaw=none", "dropped", 2.0, 6),
        {"segment_id": "ok", analyze.SUCCESS: True, analyze.CELL: "yaw=any", analyze.SEED: 7, analyze.EVAL_ID: "v1"},
    ]
    fails = analyze.failures(rows, dataset="x_evals")
    modes = analyze.failure_modes(fails)
    got = [(m["cell"], m["kind"], m["count"], m["segment_id"]) for m in modes]
    assert got == [
        ("yaw=any", "never_reached", 3, "a2"),  # moments 0.6, 0.9, 3.9: the median case
        ("yaw=any", "closed_on_air", 1, "a5"),
        ("yaw=any", "knocked_away", 1, "a1"),
        ("yaw=none", "dropped", 1, "b1"),
    ]
    assert modes[0]["share"] == pytest.approx(3 / 5) and modes[0]["open"] == "roboloop open a2 --at 0.9 --dataset x_evals"
    rep = analyze.representative_failure(fails, "yaw=any")
    assert rep["segment_id"] == "a2" and rep["mode_count"] == 3 and rep["cell_failures"] == 5
    assert rep["failure_kind"] == "never reached the cube" and rep["at_s"] == 0.9


# --- each failure next to its nearest training episode ------------------------------------------------------

@pytest.mark.sim
def test_failures_list_the_nearest_training_episode_and_open_shows_both(tmp_path):
    import json
    import math

    from typer.testing import CliRunner

    from roboloop import rows
    from roboloop.cli import app
    from roboloop.cli.evaluate_cmds import register
    from roboloop.collect.run import CollectConfig, RecordingSpec, collect
    from roboloop.workspace import Workspace

    register(app)
    ws = Workspace(tmp_path / "ws")
    with Catalog(ws, url="") as cat:
        collect(cat, CollectConfig(dataset="demo", episodes=3, seed=0, steps=30, spec=RecordingSpec(cameras=())))
        evaluate(cat, EvalConfig(dataset="demo", grid=parse_grid("region=near"), episodes_per_cell=2, steps=30,
                                 cameras=(), eval_id="ev"), policy_factory=ClosesEarly)
        demos = cat.segment_table("demo").to_pylist()
        rollouts = cat.segment_table("demo_evals").to_pylist()
    # a run record: the policy of "ev" was trained on these three demonstrations
    (ws.run_dir("run-x")).mkdir(parents=True)
    (ws.run_dir("run-x") / "run.json").write_text(json.dumps(
        {"run_id": "run-x", "dataset": "demo", "train_ids": [d["segment_id"] for d in demos], "cameras": []}))
    rows.write_row(ws, schema.EVALS_TABLE, "ev", {**rows.read_row(ws, schema.EVALS_TABLE, "ev"), "run_id": "run-x"})

    def nearest(r):  # scaled start-state distance (analyze_gaps: 2 cm, 3 deg) by brute force
        d = {x["segment_id"]: math.hypot((r["scene.cube_x"] - x["scene.cube_x"]) / 0.02, (r["scene.cube_y"] - x["scene.cube_y"]) / 0.02,
                                         (r["scene.cube_yaw_deg"] - x["scene.cube_yaw_deg"]) / 3.0) for x in demos}
        best = min(d, key=d.get)
        return best, d[best]

    def run(*args):
        res = CliRunner().invoke(app, ["--workspace", str(ws.root), *args], env={"ROBOLOOP_CATALOG": "", "COLUMNS": "200"})
        assert res.exit_code == 0, res.output + repr(res.exception)
        return res.stdout

    got = [json.loads(line) for line in run("failures", "-d", "demo_evals", "--format", "json").splitlines()]
    assert len(got) == 2
    for f in got:
        r = next(x for x in rollouts if x["segment_id"] == f["segment_id"])
        best, dist = nearest(r)
        assert f["nearest_train_id"] == best and f["nearest_distance"] == pytest.approx(dist) and f["nearest_dataset"] == "demo"
    modes = [json.loads(line) for line in run("failures", "-d", "demo_evals", "--modes", "--format", "json").splitlines()]
    assert [(m["cell"], m["kind"], m["count"]) for m in modes] == [("region=left", "never_reached", 2)]
    assert "failure mode(s)" in run("failures", "-d", "demo_evals")

    f = got[0]
    out = run("open", f["segment_id"], "--at", str(f["at_s"]), "--with-nearest", "--print")
    # only this command's embedded catalog could serve a URL (dead on exit): it names the nearest episode and the command
    assert f"nearest training episode: {f['nearest_train_id']} in demo" in out
    assert not [line for line in out.splitlines() if line.startswith("rerun+http")]
    assert f"roboloop open {f['segment_id']} --at {f['at_s']:g} --with-nearest" in out


# --- the report: failure modes with a thumbnail at the moment ----------------------------------------------

@pytest.mark.sim
def test_report_shows_each_failure_mode_with_the_camera_frame_at_its_moment(catalog):
    import base64
    import io

    from PIL import Image

    from roboloop.envs import get_task
    from roboloop.envs.aloha import AlohaSim
    from roboloop.report.data import build_report_data
    from roboloop.report.render import render_report

    cfg = EvalConfig(dataset="demo", grid=parse_grid("region=near"), episodes_per_cell=2, steps=40, cameras=("top",),
                     camera_size=(64, 48), eval_id="ev")
    rep = evaluate(catalog, cfg, policy_factory=ClosesEarly)
    data = build_report_data(catalog, ["ev"])
    (f,) = data.evals[0].failures  # one mode (never reached, both rollouts), one representative
    assert (f["kind"], f["count"], f["cell_failures"]) == ("never_reached", 2, 2)
    res = next(r for r in rep.results if r.segment_id == f["segment_id"])
    step = res.outcome[schema.OUTCOME_FAILURE_STEP]
    assert f["time_s"] == pytest.approx(step / 50) and f["command"] == f"roboloop open {f['segment_id']} --at {step / 50:g}"
    thumb = np.asarray(Image.open(io.BytesIO(base64.b64decode(f["thumbnail"]))).convert("RGB"), dtype=np.float64)

    # what the top camera saw then: the last 25 Hz frame at or before the moment, rendered again by replaying the
    # rollout's recorded actions (frames are taken before acting, on even steps)
    row = next(r for r in catalog.segment_table("demo_evals").to_pylist() if r["segment_id"] == f["segment_id"])
    targets = catalog.dataset("demo_evals").filter_segments([f["segment_id"]]).filter_contents([schema.JOINT_TARGETS]) \
        .reader(index=schema.TIMELINE).to_arrow_table().sort_by(schema.TIMELINE)
    actions = np.asarray(targets.column(f"{schema.JOINT_TARGETS}:{schema.SCALARS_COMPONENT}").to_pylist())
    frame_step = step - step % 2
    with AlohaSim(cameras=("top",), width=64, height=48) as sim:
        scene = {k.split(".", 1)[1]: v for k, v in row.items() if k.startswith("scene.") and v is not None}
        sim.reset(row["episode.seed"], get_task("transfer_cube").conditions_from_dict(scene))
        for a in actions[:frame_step]:
            sim.step(a)
        then = sim.render("top").astype(np.float64)
        sim.step(actions[frame_step])
        sim.step(actions[frame_step + 1])
        later = sim.render("top").astype(np.float64)
    err = np.abs(thumb - then).mean()
    assert thumb.shape == then.shape and err < 6 and err < np.abs(thumb - later).mean()  # H.264 costs a few grey levels
    html = render_report(data)
    assert "Failure modes of failing cells" in html and f["thumbnail"] in html and "2 of 2 failures: never reached the cube" in html
