"""The corrective expert (CorrectiveHandover): the scripted handover's actions when nothing goes off-plan, a
recovery where the time-indexed plan fails (the cube moved by hand mid-approach, a missed grasp)."""

from __future__ import annotations

import numpy as np
import pytest

from roboloop.envs import get_task
from roboloop.envs.aloha.demonstrator import CorrectiveHandover, ScriptedHandover
from roboloop.envs.insertion.task import INSERTION
from roboloop.envs.task import corrective_expert

pytestmark = pytest.mark.sim

TASK = get_task("transfer_cube")


@pytest.fixture(scope="module")
def sim():
    s = TASK.make_sim()
    yield s
    s.close()


def _run(sim, planner, seed, conditions, disturb=None):
    """Actions and verdict of one episode driven by `planner`; `disturb(step)` may move things before a step."""
    sim.reset(seed, conditions)
    expert, tracker, actions = planner(sim), TASK.tracker(), []
    for t in range(sim.max_steps):
        if disturb is not None:
            disturb(t)
        a = expert.action(t)
        actions.append(a)
        tracker.update(sim, sim.step(a), a)
    return np.array(actions), tracker.result(), expert


def test_without_disturbance_it_acts_exactly_as_the_scripted_handover(sim):
    cond = TASK.conditions({"yaw": "any"})
    scripted, ok_s, _ = _run(sim, ScriptedHandover, 8, cond)
    corrective, ok_c, expert = _run(sim, CorrectiveHandover, 8, cond)
    assert np.array_equal(scripted, corrective)  # bit-identical: demonstrations by either are the same episode
    assert ok_s.success and ok_c.success and expert.replans == []


def _move_cube(sim, at: int, dx: float, dy: float):
    def disturb(t: int) -> None:
        if t == at:  # "moved by hand": teleport the cube's free joint, as a person would pick it up and put it down
            q = sim.physics.data.qpos
            q[-7] += dx
            q[-6] += dy
            q[-5] = 0.02  # resting on the table
            sim.physics.forward()
    return disturb


def test_cube_moved_mid_approach_the_time_indexed_plan_fails_the_corrective_expert_recovers(sim):
    cond = TASK.conditions()
    disturb = _move_cube(sim, 60, -0.03, 0.03)  # after the scripted re-aim (step 45), before the descent ends
    _, scripted, _ = _run(sim, ScriptedHandover, 2, cond, disturb)
    _, corrective, expert = _run(sim, CorrectiveHandover, 2, cond, _move_cube(sim, 60, -0.03, 0.03))
    assert not scripted.success  # it descends where the cube was
    assert corrective.success, corrective
    assert expert.replans[0] == (60, "cube moved") and expert.shift > 0


def test_a_missed_grasp_is_grasped_again(sim):
    """The cube is pulled out from between the closing fingers (step 96): the lift leaves it on the table, the
    time-indexed plan carries an empty gripper to the handover; the expert sees the cube still on the table after the
    lift, opens, rises and re-approaches it, with the rest of the schedule compressed into the time left."""
    cond = TASK.conditions()
    _, scripted, _ = _run(sim, ScriptedHandover, 5, cond, _move_cube(sim, 96, 0.0, 0.06))
    _, corrective, expert = _run(sim, CorrectiveHandover, 5, cond, _move_cube(sim, 96, 0.0, 0.06))
    assert not scripted.success
    assert expert.replans == [(ScriptedHandover.T_CLOSE + 15, "grasp failed")]
    assert corrective.success, (corrective, expert.replans)


def test_the_task_protocol_exposes_it(sim):
    assert corrective_expert(TASK, sim).policy_id == CorrectiveHandover.policy_id
    assert corrective_expert(INSERTION, None) is None  # insertion has none: its command says so


def test_a_policy_running_late_is_labelled_not_re_planned(sim):
    """A driver that follows the scripted plan 12 steps late (a slow policy) grasps and lifts later than the schedule:
    the expert, labelling every step, must not take the late lift for a failed grasp (it re-approached before)."""
    cond = TASK.conditions()
    plan, ok, _ = _run(sim, ScriptedHandover, 4, cond)
    sim.reset(4, cond)
    expert, tracker = CorrectiveHandover(sim), TASK.tracker()
    for t in range(sim.max_steps):
        expert.action(t)  # the label (not executed)
        a = plan[max(0, t - 12)]
        tracker.update(sim, sim.step(a), a)
    assert ok.success and tracker.result().success
    assert expert.replans == []
