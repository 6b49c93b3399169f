"""Our scripted bimanual insertion (``policy_id = "scripted-insertion-v1"``).

Both arms work at once (50 Hz steps, 400 per episode):

1. grasp: the right arm above the peg, the left above the socket, each approaching along the
   object's long axis from its own side, pitched down by ``PITCH``, fingers closing across the
   axis; re-aimed at the settled poses (read from the simulator) at ``T_REAIM``, down, close, lift.
2. meet: from the poses actually held (object pose relative to its gripper, read at ``T_LIFT``) each
   gripper moves so that its object's axis lies along world x: the socket at ``MEET``, the peg
   ``STANDOFF`` beyond the socket's +x opening, on the socket's axis.
3. align and insert: re-read both poses (``T_ALIGN``), put the peg on the socket's actual axis,
   re-read once more (``T_INSERT``) and push the peg in along the axis to ``INSERT_DEPTH``; then hold.
   From ``T_ALIGNED`` to the end it servoes: every ``SERVO_EVERY`` steps the peg's measured offset
   from the socket's axis (and, after the push, a shortfall in depth) moves the right gripper's
   target, a bounded integral correction, so its own execution errors do not jam the peg
   (benchmarks/README.md: 40/40 with 0.005 rad joint errors, 19/40 without the servo).

Joint targets come from end-effector tracks (min-jerk, slerp) solved by the transfer cube's damped
least-squares IK (:class:`~roboloop.envs.aloha.demonstrator.ArmIK`), on a scratch ``MjData``.
Every re-plan starts from the current state, so the expert can take over from any state in which
the arms hold the objects (or from the start). Deterministic: same simulator state -> same actions.
"""

from __future__ import annotations

import math

import numpy as np

from roboloop.envs.aloha.demonstrator import ArmIK, GripperTrack, PoseTrack, gripper_rot
from roboloop.envs.aloha.env import GRASP_OFFSET, quat_to_mat

from .env import REST_Z, InsertionSim

__all__ = ["ScriptedInsertion", "MEET", "INSERT_DEPTH"]

MEET = np.array([-0.10, 0.50, 0.20])
"""Where the socket's centre is held for the insertion (world)."""
PITCH = math.radians(90)
"""Grasp approach, down from horizontal: straight down, so the fingers' closing direction (across the
object's axis) is set by the wrist rotation alone, whatever the arm's azimuth."""
FROZEN = (3,)
"""Joints the IK leaves alone: the forearm roll. Near the wrist's singularity it is nearly redundant
with the wrist rotation, and with it free the solutions wandered by 1-2 rad between seeds (the same
grasp reached through different roll/rotate pairs): inconsistent demonstrations to learn from."""
GRASP_ALONG = 0.03
"""Grasp point along the object's axis from its centre, towards the arm holding it (m)."""
GRASP_ABOVE = {"peg": 0.041, "socket": 0.029}
"""Grasp point height above the object's centre (m): the finger tips pass ~7 mm above the table (lower
grasps strike it)."""
STANDOFF = 0.16
"""Peg centre beyond the socket centre before the push (m): the peg's end 4 cm outside the opening."""
INSERT_DEPTH = 0.10
"""Peg centre beyond the socket centre at the end of the push (m): the peg's end at the pin (2 cm in)."""
LIFT = 0.10
"""Straight lift after the grasp (m)."""
SERVO_EVERY = 5
"""From ``T_ALIGNED`` to the end, every this many steps the peg's measured offset from the socket's axis
moves the right gripper's target (an integral correction: execution errors do not persist)."""
SERVO_GAIN = 0.5
"""Fraction of the measured offset corrected at each servo step (0 turns the servo off)."""
SERVO_LIMIT = 0.02
"""Largest correction (m): a peg stuck on the rim must not make the arm push ever harder."""
ARM_QPOS = {"left": slice(0, 6), "right": slice(8, 14)}


def _rot_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation taking unit vector `a` to unit vector `b`."""
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    v, c = np.cross(a, b), float(a @ b)
    if c < -0.999999:
        raise ValueError("opposite axes")
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


def _axis(pose: np.ndarray) -> np.ndarray:
    """The object's long axis (its body x) in the world."""
    return quat_to_mat(pose[3:])[:, 0]


def _yaw(pose: np.ndarray) -> float:
    ax = _axis(pose)
    return math.atan2(ax[1], ax[0])


class ScriptedInsertion:
    """Scripted peg-in-socket for :class:`~roboloop.envs.insertion.InsertionSim`.

    ``ScriptedInsertion(sim)`` (or ``.reset()``) right after ``sim.reset``; ``.action(step)`` with
    step = 0, 1, 2, ... in order -> 14 absolute joint targets (gripper 0 closed .. 1 open). It is a
    collect ``Policy`` as it is (``policy_id``, ``reset()``, ``action(step, observation)``).
    """

    policy_id = "scripted-insertion-v1"

    T_OPEN = 30
    T_REAIM = 35
    T_PRE = 55
    T_DOWN = 85
    T_CLOSE = 100
    T_LIFT = 125
    T_MEET = 190
    T_ALIGN = 200
    T_ALIGNED = 225
    T_INSERT = 235
    T_IN = 285

    def __init__(self, sim: InsertionSim) -> None:
        self.sim = sim
        self.reset()

    def reset(self) -> None:
        """Re-plan from the simulator's current state (after ``sim.reset``)."""
        sim = self.sim
        model = sim.physics.model.ptr
        self._ik = {"left": ArmIK(model, "left"), "right": ArmIK(model, "right")}
        q = sim.physics.data.qpos
        self._q = {arm: q[sl].copy() for arm, sl in ARM_QPOS.items()}
        self._tracks: dict[str, PoseTrack] = {}
        self._last_target: dict[str, tuple[bytes, bytes]] = {}
        for arm in ("left", "right"):
            p, R = self._ik[arm].fk(self._q[arm])
            self._tracks[arm] = PoseTrack(p, R)
        self._grip = {arm: GripperTrack(float(sim.joint_positions()[6 if arm == "left" else 13])) for arm in ("left", "right")}
        for g in self._grip.values():
            g.add(self.T_OPEN, 1.0)
            g.hold_until(self.T_DOWN)
            g.add(self.T_CLOSE, 0.0)
        self._offset = np.zeros(3)  # the servo's correction of the right gripper's target (world, m)
        self._plan_grasps(0)

    # ---------------------------------------------------------------- planning
    def _objects(self) -> dict[str, tuple[str, np.ndarray]]:
        return {"right": ("peg", self.sim.peg_pose()), "left": ("socket", self.sim.socket_pose())}

    def _plan_grasps(self, step: int) -> None:
        for arm, (obj, pose) in self._objects().items():
            toward = 1.0 if arm == "right" else -1.0  # the object's end nearer its arm (+x for the right arm)
            yaw = _yaw(pose)
            axis = np.array([math.cos(yaw), math.sin(yaw), 0.0])  # pointing to that end
            if axis[0] * toward < 0:
                axis = -axis
            c = pose[:3].copy()
            if step == 0:
                c[2] = REST_Z[obj]  # dropped from 5 cm at reset: plan for where it will rest
            grasp = c + axis * GRASP_ALONG + np.array([0.0, 0.0, GRASP_ABOVE[obj]])
            az = math.atan2(-axis[1], -axis[0])  # approach pointing along the axis, towards the centre
            R = gripper_rot(az, PITCH)
            pre = grasp + np.array([0.0, 0.0, 0.08])
            tr = self._tracks[arm]
            if step:
                tr.truncate(step)
            tr.add(self.T_PRE, pre, R)
            tr.add(self.T_DOWN, grasp, R)
            tr.hold_until(self.T_CLOSE)
            tr.add(self.T_LIFT, grasp + np.array([0.0, 0.0, LIFT]), R)

    def _held(self, arm: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(object position, object rotation, grasp point, gripper rotation) now."""
        _, pose = self._objects()[arm]
        p, R = self._ik[arm].fk(self.sim.physics.data.qpos[ARM_QPOS[arm]].copy())
        return pose[:3].copy(), quat_to_mat(pose[3:]), p, R

    def _move_object(self, arm: str, step: int, t_end: int, centre: np.ndarray, axis: np.ndarray) -> None:
        """Track the gripper so that its object's centre reaches `centre` with its axis along `axis` at `t_end`."""
        c, Ro, g, Rg = self._held(arm)
        ax = Ro[:, 0]
        if ax @ axis < 0:
            ax = -ax
        Rm = _rot_between(ax, axis)
        tr = self._tracks[arm]
        tr.truncate(step)
        correction = self._offset if arm == "right" else 0.0  # already added to the right arm's targets
        tr.add(t_end, centre + Rm @ (g - c) - correction, Rm @ Rg)

    def _plan_meet(self, step: int) -> None:
        x = np.array([1.0, 0.0, 0.0])
        self._move_object("left", step, self.T_MEET, MEET, x)
        self._move_object("right", step, self.T_MEET, MEET + x * STANDOFF, x)

    def _plan_peg(self, step: int, t_end: int, depth: float) -> None:
        socket = self.sim.socket_pose()
        axis = _axis(socket)
        if axis[0] < 0:
            axis = -axis
        self._move_object("right", step, t_end, socket[:3] + axis * depth, axis)

    def _servo(self, step: int) -> None:
        """Move the right gripper's target against the peg's measured offset from the socket's axis and,
        once the push should be over, against a shortfall in depth (never pulling back)."""
        peg, socket = self.sim.peg_pose(), self.sim.socket_pose()
        Rs = quat_to_mat(socket[3:])
        d = Rs.T @ (peg[:3] - socket[:3])
        error = Rs[:, 1] * d[1] + Rs[:, 2] * d[2]
        short = abs(d[0]) - INSERT_DEPTH
        if step >= self.T_IN and short > 0.002:
            error = error + Rs[:, 0] * math.copysign(short, d[0])
        offset = self._offset - SERVO_GAIN * error
        norm = float(np.linalg.norm(offset))
        self._offset = offset if norm <= SERVO_LIMIT else offset * (SERVO_LIMIT / norm)  # no wind-up against the rim

    # ---------------------------------------------------------------- acting
    def action(self, step: int, observation: object = None) -> np.ndarray:
        """The 14 joint targets for control step ``step`` (0-based). ``observation`` (the collect
        ``Policy`` protocol's) is not needed: the expert reads the simulator."""
        if step == self.T_REAIM:
            self._plan_grasps(step)
        elif step == self.T_LIFT:
            self._plan_meet(step)
        elif step == self.T_ALIGN:
            self._plan_peg(step, self.T_ALIGNED, STANDOFF)
        elif step == self.T_INSERT:
            self._plan_peg(step, self.T_IN, INSERT_DEPTH)
        if step >= self.T_ALIGNED and step % SERVO_EVERY == 0:
            self._servo(step)
        out = np.empty(14)
        for arm, sl, gi in (("left", slice(0, 6), 6), ("right", slice(7, 13), 13)):
            pos, quat = self._tracks[arm].at(step)
            if arm == "right":
                pos = pos + self._offset
            key = (pos.tobytes(), quat.tobytes())
            if key != self._last_target.get(arm):
                self._q[arm] = self._ik[arm].solve(self._q[arm], pos, quat_to_mat(quat), GRASP_OFFSET, frozen=FROZEN)
                self._last_target[arm] = key
            out[sl] = self._q[arm]
            out[gi] = self._grip[arm].at(step)
        return out
