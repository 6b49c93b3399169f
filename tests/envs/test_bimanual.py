"""BimanualSim, the base both ALOHA simulators share: the same checks, step plumbing and state accessors
behave the same in transfer cube and insertion."""

import numpy as np
import pytest

from roboloop import schema
from roboloop.envs.aloha.demonstrator import ArmIK
from roboloop.envs.aloha.env import ARM_LINKS, AlohaSim, BimanualSim
from roboloop.envs.insertion.env import InsertionSim

SIMS = {"transfer_cube": lambda **kw: AlohaSim(**kw), "insertion": lambda **kw: InsertionSim(**kw)}
OBJECTS = {"transfer_cube": {"cube"}, "insertion": {"peg", "socket"}}


@pytest.fixture(scope="module", params=sorted(SIMS))
def physics_sim(request):
    s = SIMS[request.param](cameras=())
    yield request.param, s
    s.close()


@pytest.mark.parametrize("task", sorted(SIMS))
def test_bad_arguments_are_refused_alike(task):
    with pytest.raises(ValueError, match=r"unknown camera\(s\) \['side'\]; valid cameras: "):
        SIMS[task](cameras=("side",))
    max_w, max_h = schema.MAX_CAMERA_SIZE
    with pytest.raises(ValueError, match=f"image size must be within {max_w}x{max_h} .*got {max_w + 1}x10"):
        SIMS[task](cameras=("top",), width=max_w + 1, height=10)


def test_step_plumbing_and_state(physics_sim):
    task, sim = physics_sim
    assert isinstance(sim, BimanualSim)
    fresh = SIMS[task](cameras=())
    with pytest.raises(RuntimeError, match="call reset"):
        fresh.step(np.zeros(14))
    fresh.close()
    sim.reset(3)
    with pytest.raises(ValueError, match="action must have 14 values"):
        sim.step(np.zeros(13))
    with pytest.raises(ValueError, match="non-finite"):
        sim.step(np.full(14, np.nan))
    start = sim.joint_positions()
    for _ in range(5):
        reward = sim.step(start)
    assert sim.step_count == 5 and sim.time == pytest.approx(5 * sim.dt) and 0 <= reward <= 4
    assert len(sim.joint_names) == 14 and sim.joint_velocities().shape == (14,)
    links = sim.link_poses()
    assert set(links) == {f"{arm}/{name}" for arm in ("left", "right") for name in ("base", *ARM_LINKS)}
    assert "table" in sim.static_poses()
    assert set(sim.geometry()) == set(links) | set(sim.static_poses()) | OBJECTS[task]
    # the grasp point agrees with the forward kinematics of the arm's joints on a scratch MjData
    qpos = sim.physics.data.qpos
    for arm, joints in (("left", slice(0, 6)), ("right", slice(8, 14))):
        expected, _ = ArmIK(sim.physics.model.ptr, arm).fk(qpos[joints].copy())
        np.testing.assert_allclose(sim.gripper_positions()[arm], expected, atol=1e-9)
    # contacts by name: the objects rest on the table
    names = {g for pair in sim.contacts() for g in pair}
    assert "table" in names


def test_render_refuses_a_camera_it_was_not_given(physics_sim):
    task, sim = physics_sim
    with pytest.raises(ValueError, match=f"camera 'top' is not enabled for this {type(sim).__name__}; enabled: \\(none\\)"):
        sim.render("top")
    assert sim.render_all() == {}
