"""Check that two roboloop source trees simulate both ALOHA tasks bit for bit the same.

Records, with the roboloop on ``PYTHONPATH``: a transfer-cube demonstration (scripted handover, seed 7,
default conditions), another with two distractors (seed 11), an insertion expert episode (seed 5), and
one episode of each task holding the start pose (a failure),
each with physics and the ``top`` camera at 96x72 on every step: joint positions and velocities,
actions, rewards, images, grasp points, link, static and object poses, contacts, geometry and the
success tracker's result; plus 200 sampled start states of each task. ``--compare`` then compares two
such files array by array (dtype, shape and every value).

    git -C /work/main archive <rev> src | tar -x -C /tmp/before
    (cd /tmp/before && PYTHONPATH=src MUJOCO_GL=egl $OLDPWD/.venv/bin/python $OLDPWD/benchmarks/check_bimanual_identical.py /tmp/a.npz)
    PYTHONPATH=src MUJOCO_GL=egl .venv/bin/python benchmarks/check_bimanual_identical.py /tmp/b.npz
    .venv/bin/python benchmarks/check_bimanual_identical.py --compare /tmp/a.npz /tmp/b.npz
"""

import dataclasses
import sys

import numpy as np


class Still:
    """A policy that holds the start pose: an episode that fails (the trackers' failure kinds and moments)."""

    def __init__(self, sim) -> None:
        self.q = sim.joint_positions()

    def action(self, step: int) -> np.ndarray:
        return self.q


FIELDS = ("q", "qd", "reward", "action", "img", "grip", "links", "obj", "contacts")


def _episode(arrays, tag, sim, conditions, seed, expert_cls, tracker, objects) -> None:
    sim.reset(seed, conditions)
    expert = expert_cls(sim)
    rec = {k: [] for k in FIELDS}
    for step in range(sim.max_steps):
        action = expert.action(step)
        reward = sim.step(action)
        tracker.update(sim, reward, action)
        grips = sim.gripper_positions()
        rec["q"].append(sim.joint_positions())
        rec["qd"].append(sim.joint_velocities())
        rec["reward"].append(reward)
        rec["action"].append(action)
        rec["img"].append(sim.render("top"))
        rec["grip"].append(np.concatenate([grips["left"], grips["right"]]))
        rec["links"].append(np.concatenate([np.concatenate(v) for v in sim.link_poses().values()]))
        rec["obj"].append(objects(sim))
        rec["contacts"].append(repr(sim.contacts()))
    for k, v in rec.items():
        arrays[f"{tag}/{k}"] = np.array(v)
    arrays[f"{tag}/static"] = np.concatenate([np.concatenate(v) for v in sim.static_poses().values()])
    arrays[f"{tag}/geometry"] = np.array(repr(sim.geometry()))
    arrays[f"{tag}/result"] = np.array(repr(dataclasses.asdict(tracker.result())))
    arrays[f"{tag}/names"] = np.array(sim.joint_names)


def record(out: str) -> int:
    from roboloop.envs.aloha.conditions import SceneConditions
    from roboloop.envs.aloha.conditions import start_state as cube_start_state
    from roboloop.envs.aloha.demonstrator import ScriptedHandover
    from roboloop.envs.aloha.env import AlohaSim, sample_cube_pose
    from roboloop.envs.aloha.success import SuccessTracker
    from roboloop.envs.insertion.conditions import InsertionConditions
    from roboloop.envs.insertion.conditions import start_state as insertion_start_state
    from roboloop.envs.insertion.demonstrator import ScriptedInsertion
    from roboloop.envs.insertion.env import InsertionSim, sample_poses
    from roboloop.envs.insertion.success import InsertionTracker

    arrays: dict[str, np.ndarray] = {}
    with AlohaSim(cameras=("top",), width=96, height=72) as sim:
        _episode(arrays, "tc", sim, SceneConditions(), 7, ScriptedHandover, SuccessTracker(), lambda s: s.cube_pose())
        _episode(arrays, "tc_still", sim, SceneConditions(), 3, Still, SuccessTracker(), lambda s: s.cube_pose())
        two = dataclasses.replace(SceneConditions(), distractors=2)
        _episode(arrays, "tc_d2", sim, two, 11, ScriptedHandover, SuccessTracker(), lambda s: s.cube_pose())
    with InsertionSim(cameras=("top",), width=96, height=72) as sim:
        _episode(arrays, "ins", sim, InsertionConditions(), 5, ScriptedInsertion, InsertionTracker(),
                 lambda s: np.concatenate([s.peg_pose(), s.socket_pose()]))
        _episode(arrays, "ins_still", sim, InsertionConditions(), 4, Still, InsertionTracker(),
                 lambda s: np.concatenate([s.peg_pose(), s.socket_pose()]))
    cube, insertion = SceneConditions.from_names(yaw="any"), InsertionConditions(yaw="large")
    arrays["tc/start_states"] = np.array([list(cube_start_state(sample_cube_pose(s, cube)).values()) for s in range(200)])
    arrays["ins/start_states"] = np.array([list(insertion_start_state(*sample_poses(s, insertion)).values()) for s in range(200)])
    np.savez(out, **arrays)
    print(f"saved {out}: {len(arrays)} arrays")
    return 0


def compare(a: str, b: str) -> int:
    A, B = np.load(a), np.load(b)
    if sorted(A.files) != sorted(B.files):
        print(f"different arrays: {sorted(set(A.files) ^ set(B.files))}")
        return 1
    bad = [k for k in A.files if not (A[k].dtype == B[k].dtype and A[k].shape == B[k].shape and np.array_equal(A[k], B[k]))]
    for k in sorted(A.files):
        print(f"{k:16s} {str(A[k].shape):22s} {'DIFFERENT' if k in bad else 'identical'}")
    for tag in ("tc", "tc_still", "ins", "ins_still"):
        print(f"{tag}: {A[f'{tag}/result']}")
    print(f"DIFFERENT: {bad}" if bad else "ALL IDENTICAL")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(compare(sys.argv[2], sys.argv[3]) if sys.argv[1] == "--compare" else record(sys.argv[1]))
