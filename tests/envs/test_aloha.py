"""Tests for roboloop.envs.aloha: conditions, the AlohaSim wrapper, success metric and the
scripted demonstrator. Kept short: few steps, tiny images, physics-only episodes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from roboloop.envs.aloha.conditions import LIGHTINGS, REGIONS, SceneConditions

pytestmark = pytest.mark.sim


@pytest.fixture(scope="module")
def sim():
    from roboloop.envs.aloha import AlohaSim

    s = AlohaSim(cameras=("top",), width=64, height=48)
    yield s
    s.close()


@pytest.fixture(scope="module")
def physics_sim():
    from roboloop.envs.aloha import AlohaSim

    s = AlohaSim(cameras=())
    yield s
    s.close()


# ---------------------------------------------------------------- conditions
def test_conditions_dict_round_trip():
    for c in [
        SceneConditions(),
        SceneConditions.from_names(region="right", lighting="dim", table="wood", distractors="few", yaw="small"),
        SceneConditions.from_names(x=(0.05, 0.15), y=(0.45, 0.55)),
        SceneConditions.from_names(region="0,0.1,0.4,0.5"),
    ]:
        d = c.to_dict()
        assert all(isinstance(v, (str, float, int, bool, list)) for v in d.values())
        assert SceneConditions.from_dict(json.loads(json.dumps(d))) == c
        assert SceneConditions.from_dict({k: [v] for k, v in d.items()}) == c  # list-valued catalog columns
    assert SceneConditions.from_names(x=(0.05, 0.15)).region == "custom"
    assert SceneConditions.from_names(region="near").region_bounds == REGIONS["left"]
    assert "right" in SceneConditions.from_names(region="right").region_label


def test_bad_preset_names_list_valid_ones():
    with pytest.raises(ValueError) as e:
        SceneConditions.from_names(region="middle")
    msg = str(e.value)
    assert "'middle'" in msg and all(name in msg for name in REGIONS)
    with pytest.raises(ValueError) as e:
        SceneConditions.from_names(lighting="disco")
    assert "'disco'" in str(e.value) and all(name in str(e.value) for name in LIGHTINGS)
    with pytest.raises(ValueError, match="x_min"):
        SceneConditions.from_dict({"x_min": 0.3, "x_max": 0.1})


# ---------------------------------------------------------------- env
def _rollout(s, seed, cond, n=50):
    s.reset(seed, cond)
    home = s.joint_positions()
    traj = []
    for t in range(n):
        a = home.copy()
        a[7] = 0.3 * np.sin(t / 10)  # right waist
        a[8] = -0.96 + 0.2 * np.sin(t / 7)  # right shoulder
        s.step(a)
        traj.append(s.joint_positions())
    return np.array(traj), s.cube_pose()


def test_determinism(physics_sim):
    cond = SceneConditions.from_names(region="wide", yaw="any")
    a, cube_a = _rollout(physics_sim, 3, cond)
    b, cube_b = _rollout(physics_sim, 3, cond)
    assert np.array_equal(a, b) and np.array_equal(cube_a, cube_b)
    physics_sim.reset(4, cond)
    other = physics_sim.cube_start_pose
    physics_sim.reset(3, cond)
    assert not np.allclose(other[:2], physics_sim.cube_start_pose[:2])


def test_images_deterministic(sim):
    cond = SceneConditions()
    sim.reset(1, cond)
    img1 = sim.render("top")
    sim.reset(1, cond)
    img2 = sim.render("top")
    assert img1.shape == (48, 64, 3) and img1.dtype == np.uint8
    assert np.array_equal(img1, img2)
    with pytest.raises(ValueError, match="top"):
        sim.render("angle")


@pytest.mark.parametrize("region", sorted(REGIONS))
def test_cube_starts_in_region(physics_sim, region):
    cond = SceneConditions.from_names(region=region)
    for seed in range(8):
        physics_sim.reset(seed, cond)
        x, y = physics_sim.cube_pose()[:2]
        assert cond.contains(x, y), (region, seed, x, y)


def test_dim_lighting_darkens_image(sim):
    means = {}
    for name in ("normal", "dim", "bright"):
        sim.reset(0, SceneConditions.from_names(lighting=name))
        means[name] = sim.render("top").astype(float).mean()
    # dim must be clearly darker (measured: ~42 normal vs ~22 dim at 320x240)
    assert means["dim"] < 0.75 * means["normal"], means
    assert means["bright"] > means["normal"], means


def test_state_accessors(physics_sim):
    physics_sim.reset(0, SceneConditions.from_names(distractors="many"))
    assert len(physics_sim.joint_names) == 14 and physics_sim.joint_positions().shape == (14,)
    assert physics_sim.cube_pose().shape == (7,)
    poses = physics_sim.link_poses()
    geo = physics_sim.geometry()
    assert "left/gripper_link" in poses and "right/left_finger_link" in poses
    assert set(poses) <= set(geo) and "cube" in geo and "distractor_3" in geo
    assert "distractor_0" in physics_sim.static_poses()
    # distractors have no joints: the cube is still the last 7 qpos values
    assert physics_sim.physics.data.qpos.shape == (23,)
    physics_sim.reset(0, SceneConditions())  # back to no distractors
    assert "distractor_0" not in physics_sim.static_poses()


def test_reward_matches_gym_aloha(physics_sim):
    """Our contact-set reward equals gym-aloha's TransferCubeTask.get_reward."""
    from roboloop.envs.aloha.demonstrator import ScriptedHandover

    s = physics_sim
    s.reset(5, SceneConditions())
    demo = ScriptedHandover(s)
    seen = set()
    for t in range(s.max_steps):
        r = s.step(demo.action(t))
        if t % 5 == 0:
            assert r == s._task.get_reward(s.physics), t
            seen.add(r)
    assert {0.0, 2.0, 4.0} <= seen


# ---------------------------------------------------------------- success metric
def _contacts(ll=False, lr=False, rl=False, rr=False, table=False):
    return dict(left_left_finger=ll, left_right_finger=lr, right_left_finger=rl, right_right_finger=rr,
                table=table, other=False)


def test_success_tracker_definition():
    from roboloop.envs.aloha.success import SuccessTracker

    held = _contacts(ll=True, lr=True)
    tr = SuccessTracker()
    for _ in range(100):
        tr.observe(0.02, _contacts(table=True), 0)
    for _ in range(30):
        tr.observe(0.1, _contacts(rl=True, rr=True), 2)
    for _ in range(40):
        tr.observe(0.2, held, 4)
    r = tr.result()
    assert r.success and r.success_step == 130 and r.max_reward == 4 and r.failure_step is None

    # one left finger only (gym-aloha would call this a success) -> failure
    tr = SuccessTracker()
    for _ in range(10):
        tr.observe(0.1, _contacts(rl=True, rr=True), 2)
    for _ in range(40):
        tr.observe(0.2, _contacts(ll=True), 4)
    assert not tr.success and tr.result().failure_reason == "not_handed_over"

    # held, then dropped at step 60: failure_step = last finger contact
    tr = SuccessTracker()
    for _ in range(60):
        tr.observe(0.2, held, 4)
    tr.observe(0.1, _contacts(), 0)
    for _ in range(30):
        tr.observe(0.02, _contacts(table=True), 0)
    r = tr.result()
    assert not r.success and r.failure_reason == "dropped" and r.failure_step == 59

    # right gripper still touching during the last 20 steps -> failure
    tr = SuccessTracker()
    for _ in range(40):
        tr.observe(0.2, held, 4)
    for _ in range(5):
        tr.observe(0.2, _contacts(ll=True, lr=True, rl=True), 4)
    assert not tr.success and tr.failure_step == 44


# ---------------------------------------------------------------- demonstrator
@pytest.mark.parametrize("seed,names", [(0, dict()), (7, dict(region="wide", yaw="any", distractors="many"))])
def test_scripted_handover_strict_success(physics_sim, seed, names):
    from roboloop.envs.aloha.demonstrator import ScriptedHandover
    from roboloop.envs.aloha.success import SuccessTracker

    s = physics_sim
    s.reset(seed, SceneConditions.from_names(**names))
    demo = ScriptedHandover(s)
    assert demo.policy_id == "scripted-handover-v1"
    tr = SuccessTracker()
    actions = []
    for t in range(s.max_steps):
        a = demo.action(t)
        actions.append(a)
        tr.update(s, s.step(a))
    r = tr.result()
    assert r.success, r
    assert r.final_cube_z > 0.05 and r.success_step <= s.max_steps - 20
    # deterministic: the same seed replays the same actions
    s.reset(seed, SceneConditions.from_names(**names))
    demo.reset()
    for t in range(60):
        assert np.array_equal(demo.action(t), actions[t])
        s.step(actions[t])


def test_preset_names_mean_their_values():
    assert SceneConditions(lighting="dim") == SceneConditions.from_names(lighting="dim")
    assert SceneConditions(region="far").region_bounds == REGIONS["right"]
    assert SceneConditions.from_names(lighting="dim").replace(lighting="normal") == SceneConditions()
    with pytest.raises(ValueError, match="custom"):
        SceneConditions(region="right", x_min=0.05)
    assert SceneConditions(region="custom", x_min=0.05).region_label.startswith("custom")
