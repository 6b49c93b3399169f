"""Our scripted bimanual handover for TransferCube (``policy_id = "scripted-handover-v1"``).

Plan (50 Hz steps, 300 per episode):

1. right arm: move above the cube (approach pitched down, azimuth matched to the
   cube's yaw so the fingers close on two faces), descend, close, lift and carry the
   cube to the handover point ``MEET`` with the gripper horizontal, pointing at the
   left arm. The right grasp is re-aimed at the cube's settled position (it is dropped
   from z = 0.05 at reset and settles near 0.02) before the descent.
2. left arm: waits, moves to a pre-handover pose facing the right gripper, rolled by
   90 degrees so its fingers close on the cube's top and bottom faces (the right
   fingers hold the side faces, so the two grasps never compete), then is **re-aimed
   at the cube's actual position** (read from the simulator) and closes.
3. right arm opens and backs away; the left arm holds the cube off the table until the end.

Each step's 14 joint targets come from end-effector waypoints (position + orientation,
min-jerk interpolation in time, slerp for rotation) solved with damped-least-squares
inverse kinematics on MuJoCo Jacobians, on a scratch ``MjData`` (the simulator's state
is never touched). Deterministic: same simulator state -> same actions.

Usage::

    sim.reset(seed, conditions)
    demo = ScriptedHandover(sim)   # or demo.reset() after every sim.reset
    for t in range(sim.max_steps):
        sim.step(demo.action(t))
"""

from __future__ import annotations

import math

import numpy as np

from .env import CUBE_HALF_SIZE, GRASP_OFFSET, AlohaSim, quat_to_mat

__all__ = ["ACTION_SLICES", "ARM_QPOS", "CorrectiveHandover", "ScriptedHandover", "TrackingExpert", "ArmIK", "GripperTrack", "PoseTrack", "gripper_rot", "mat2quat", "rot_from_axes"]

MEET = np.array([0.0, 0.5, 0.22])  # where the cube is handed over (world)
# Finger geometry (gripper_link frame, x = along the fingers): the inner faces span
# x in [0.064, 0.154] and taper from +-3 cm (z) at the base to +-0.5 cm at the tip.
PITCH = math.radians(40)  # right-arm grasp approach, down from horizontal (35-45 work; 50 fails)
GRASP_DEPTH = 0.12  # cube centre along the gripper x axis when picking from the table (0.115-0.13 work)
# Handover: the right gripper (horizontal, pointing -x) squeezes the cube's y faces;
# the left gripper comes from -x rolled by 90 degrees and squeezes the top/bottom
# faces, so the two pairs of fingers never compete for the same faces.
HOLD_DEPTH_L = 0.115
AZIMUTH_BLEND = 0.0  # 0: approach square to the cube's faces; 1: along the base-to-cube direction


def rot_from_axes(approach: np.ndarray, closing: np.ndarray) -> np.ndarray:
    x = approach / np.linalg.norm(approach)
    y = closing - x * (closing @ x)
    y /= np.linalg.norm(y)
    return np.column_stack([x, y, np.cross(x, y)])


def gripper_rot(azimuth: float, pitch: float) -> np.ndarray:
    """Gripper frame: x = approach (azimuth in the xy plane, pitched down), y = closing
    direction (horizontal, perpendicular to the approach)."""
    x = np.array([math.cos(azimuth) * math.cos(pitch), math.sin(azimuth) * math.cos(pitch), -math.sin(pitch)])
    y = np.array([-math.sin(azimuth), math.cos(azimuth), 0.0])
    return rot_from_axes(x, y)


# left gripper at the handover: pointing +x, fingers closing along world z
_LEFT_HANDOVER_ROT = rot_from_axes(np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0]))


def mat2quat(R: np.ndarray) -> np.ndarray:
    import mujoco

    q = np.zeros(4)
    mujoco.mju_mat2Quat(q, np.ascontiguousarray(R).reshape(-1))
    return q


def _slerp(q0: np.ndarray, q1: np.ndarray, s: float) -> np.ndarray:
    d = float(q0 @ q1)
    if d < 0:
        q1, d = -q1, -d
    if d > 0.9995:
        q = q0 + s * (q1 - q0)
        return q / np.linalg.norm(q)
    th = math.acos(d)
    return (math.sin((1 - s) * th) * q0 + math.sin(s * th) * q1) / math.sin(th)


def _smooth(s: float) -> float:
    s = min(max(s, 0.0), 1.0)
    return s * s * s * (10 - 15 * s + 6 * s * s)  # min-jerk


class PoseTrack:
    """Piecewise end-effector target: list of (t_start, t_end, pos, rot) segments."""

    def __init__(self, pos: np.ndarray, rot: np.ndarray) -> None:
        self.keys: list[tuple[int, np.ndarray, np.ndarray]] = [(0, pos.copy(), mat2quat(rot))]

    def add(self, t: int, pos: np.ndarray, rot: np.ndarray) -> None:
        """Arrive at (pos, rot) at step t, starting from the previous key's pose at its time."""
        self.keys.append((t, pos.copy(), mat2quat(rot)))

    def hold_until(self, t: int) -> None:
        _, p, q = self.keys[-1]
        self.keys.append((t, p.copy(), q.copy()))

    def truncate(self, t: int) -> None:
        """Drop keys after step t, pinning the current target at t."""
        p, q = self.at(t)
        self.keys = [k for k in self.keys if k[0] <= t] + [(t, p, q)]

    def at(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        keys = self.keys
        if t <= keys[0][0]:
            return keys[0][1], keys[0][2]
        for (t0, p0, q0), (t1, p1, q1) in zip(keys, keys[1:]):
            if t <= t1:
                s = _smooth((t - t0) / max(t1 - t0, 1))
                return p0 + s * (p1 - p0), _slerp(q0, q1, s)
        return keys[-1][1], keys[-1][2]


class GripperTrack:
    """Piecewise-linear gripper command (0 closed .. 1 open)."""

    def __init__(self, value: float) -> None:
        self.keys = [(0, value)]

    def add(self, t: int, value: float) -> None:
        self.keys.append((t, value))

    def hold_until(self, t: int) -> None:
        self.keys.append((t, self.keys[-1][1]))

    def at(self, t: int) -> float:
        keys = self.keys
        for (t0, v0), (t1, v1) in zip(keys, keys[1:]):
            if t <= t1:
                return v0 + (v1 - v0) * min(max((t - t0) / max(t1 - t0, 1), 0.0), 1.0)
        return keys[-1][1] if t >= keys[0][0] else keys[0][1]


class ArmIK:
    """Damped least squares IK for one arm's 6 joints, at the grasp point of its gripper."""

    def __init__(self, model, arm: str) -> None:
        import mujoco

        self.mj = mujoco
        self.model = model
        self.data = mujoco.MjData(model)
        off = 0 if arm == "left" else 8
        self.qadr = np.arange(off, off + 6)
        self.body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, f"vx300s_{arm}/gripper_link")
        self.lo = model.jnt_range[off : off + 6, 0].copy()
        self.hi = model.jnt_range[off : off + 6, 1].copy()
        self.jacp = np.zeros((3, model.nv))
        self.jacr = np.zeros((3, model.nv))

    def fk(self, q: np.ndarray, point_offset: np.ndarray = GRASP_OFFSET) -> tuple[np.ndarray, np.ndarray]:
        d = self.data
        d.qpos[self.qadr] = q
        self.mj.mj_kinematics(self.model, d)
        R = d.xmat[self.body].reshape(3, 3).copy()
        return d.xpos[self.body] + R @ point_offset, R

    def solve(self, q: np.ndarray, pos: np.ndarray, R_t: np.ndarray, offset: np.ndarray, iters: int = 8,
              rot_weight: float = 0.3, damping: float = 0.03, frozen: tuple[int, ...] = ()) -> np.ndarray:
        """Joint positions (6) near `q` putting the point `offset` (gripper_link frame) at `pos` with
        rotation `R_t`; the joints listed in `frozen` (0-5) keep their values."""
        mj, m, d = self.mj, self.model, self.data
        q = q.copy()
        for _ in range(iters):
            p, R = self.fk(q, offset)
            ep = pos - p
            Rerr = R_t @ R.T
            qe = mat2quat(Rerr)
            if qe[0] < 0:
                qe = -qe
            v = qe[1:]
            n = np.linalg.norm(v)
            er = (2 * math.atan2(n, qe[0]) / n) * v if n > 1e-12 else np.zeros(3)
            if np.linalg.norm(ep) < 1e-5 and np.linalg.norm(er) < 1e-4:
                break
            mj.mj_comPos(m, d)
            mj.mj_jac(m, d, self.jacp, self.jacr, p, self.body)
            J = np.vstack([self.jacp[:, self.qadr], rot_weight * self.jacr[:, self.qadr]])
            if frozen:
                J[:, list(frozen)] = 0.0
            e = np.concatenate([ep, rot_weight * er])
            dq = J.T @ np.linalg.solve(J @ J.T + damping**2 * np.eye(6), e)
            q = np.clip(q + dq, self.lo, self.hi)
        return q


ARM_QPOS = {"left": slice(0, 6), "right": slice(8, 14)}
"""Each arm's six joints (waist .. wrist_rotate) in ``qpos`` of the bimanual ALOHA models."""
ACTION_SLICES = (("left", slice(0, 6), 6), ("right", slice(7, 13), 13))
"""(arm, its six joints in the 14-value action, its gripper's index)."""


class TrackingExpert:
    """What the scripted experts share (:class:`ScriptedHandover`, ``ScriptedInsertion``): each arm
    follows an end-effector :class:`PoseTrack` (grasp point, world frame) and a :class:`GripperTrack`;
    the joint targets of a step are the arm's IK solution for its track's pose there.

    ``Expert(sim)`` plans from the simulator's current state (it calls ``reset()``); a subclass's
    ``reset`` calls :meth:`_start_tracks` then sets ``self._grip`` and plans.
    """

    def __init__(self, sim) -> None:
        self.sim = sim
        self.reset()

    def reset(self) -> None:
        raise NotImplementedError

    def _start_tracks(self) -> None:
        """IK solvers for both arms, their current joints, and pose tracks starting at their current grasp points."""
        model = self.sim.physics.model.ptr
        self._ik = {"left": ArmIK(model, "left"), "right": ArmIK(model, "right")}
        q = self.sim.physics.data.qpos
        self._q = {arm: q[sl].copy() for arm, sl in ARM_QPOS.items()}
        self._tracks: dict[str, PoseTrack] = {}
        self._last_target: dict[str, tuple[bytes, bytes]] = {}
        for arm in ("left", "right"):
            p, R = self._ik[arm].fk(self._q[arm])
            self._tracks[arm] = PoseTrack(p, R)

    def _joint_targets(self, step: int, *, right_offset: np.ndarray | None = None, frozen: tuple[int, ...] = ()) -> np.ndarray:
        """The 14 joint targets of ``step``: each arm's IK solution for its track's pose (``right_offset``
        added to the right arm's position; joints ``frozen`` left alone) and its gripper track's value.
        A pose equal to the arm's previous one reuses the previous solution (holding still)."""
        out = np.empty(14)
        for arm, sl, gi in ACTION_SLICES:
            pos, quat = self._tracks[arm].at(step)
            if arm == "right" and right_offset is not None:
                pos = pos + right_offset
            key = (pos.tobytes(), quat.tobytes())
            if key != self._last_target.get(arm):
                self._q[arm] = self._ik[arm].solve(self._q[arm], pos, quat_to_mat(quat), GRASP_OFFSET, frozen=frozen)
                self._last_target[arm] = key
            out[sl] = self._q[arm]
            out[gi] = self._grip[arm].at(step)
        return out


class ScriptedHandover(TrackingExpert):
    """Scripted right-to-left cube handover for :class:`~roboloop.envs.aloha.AlohaSim`.

    ``ScriptedHandover(sim)`` plans from the simulator's current state (call it, or
    ``.reset()``, right after ``sim.reset``); ``.action(step) -> np.ndarray[14]``
    (absolute joint targets, gripper 0 closed .. 1 open) must be called with
    step = 0, 1, 2, ... in order (it re-reads the cube pose at fixed steps).
    """

    policy_id = "scripted-handover-v1"

    # timeline (control steps)
    T_PRE = 55  # right above the cube
    T_REAIM_R = 45  # re-read the settled cube pose
    T_DOWN = 85  # right at grasp pose
    T_CLOSE = 100  # right closed
    T_MEET = 155  # right at handover point
    T_L_PRE = 165  # left at pre-handover pose
    T_REAIM_L = 170  # re-read the cube pose held by the right gripper
    T_L_IN = 195  # left at grasp pose
    T_L_CLOSE = 210  # left closed
    T_R_OPEN = 225  # right open
    T_R_AWAY = 255  # right retreated
    T_L_HOLD = 275  # left moved slightly away and up

    # grasp geometry (a variant operator may grasp differently: envs/aloha/sloppy.py)
    grasp_depth = GRASP_DEPTH
    """Cube centre along the right gripper's x axis when picking it from the table, metres."""
    hold_depth_l = HOLD_DEPTH_L
    """Cube centre along the left gripper's x axis when taking it at the handover, metres."""
    grip_closed_r = 0.0
    """The right gripper's command when it holds the cube (0 = fully closed: the firmest grip)."""

    sim: AlohaSim

    def reset(self) -> None:
        """Re-plan from the simulator's current state (after ``sim.reset``)."""
        sim = self.sim
        self._start_tracks()
        self._grip = {"left": GripperTrack(1.0), "right": GripperTrack(1.0)}
        self._plan_right(sim.cube_pose())
        self._plan_left_wait()

    # ---------------------------------------------------------------- planning
    @staticmethod
    def _cube_yaw(pose: np.ndarray) -> float:
        w, x, y, z = pose[3:]
        yaw = math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
        # the cube is symmetric under quarter turns: reduce to [-45, 45] degrees
        return (yaw + math.pi / 4) % (math.pi / 2) - math.pi / 4

    def _grasp_azimuth(self, c: np.ndarray, yaw: float) -> float:
        """Approach azimuth for the right-arm grasp: of the four azimuths aligned with the
        cube's faces, the one nearest the natural direction from the arm base to the cube,
        moved towards that natural direction by AZIMUTH_BLEND."""
        base = self.sim.physics.named.data.xpos["vx300s_right"]
        natural = math.atan2(c[1] - base[1], c[0] - base[0])
        aligned = math.pi + yaw
        diff = (aligned - natural + math.pi / 4) % (math.pi / 2) - math.pi / 4
        return natural + (1.0 - AZIMUTH_BLEND) * diff

    def _plan_right(self, cube: np.ndarray, from_step: int = 0) -> None:
        tr, g = self._tracks["right"], self._grip["right"]
        c = cube[:3].copy()
        c[2] = CUBE_HALF_SIZE  # where it rests once settled
        az = self._grasp_azimuth(c, self._cube_yaw(cube))
        R_grasp = gripper_rot(az, PITCH)
        approach = R_grasp[:, 0]
        grasp_pt = c + approach * (self.grasp_depth - GRASP_OFFSET[0])  # grasp point (GRASP_OFFSET) target
        pre_pt = grasp_pt - approach * 0.08
        if from_step:
            tr.truncate(from_step)
            tr.add(max(self.T_PRE, from_step + 5), pre_pt, R_grasp)
        else:
            tr.add(self.T_PRE, pre_pt, R_grasp)
            g.hold_until(self.T_DOWN)
            g.add(self.T_CLOSE, self.grip_closed_r)
        tr.add(self.T_DOWN, grasp_pt, R_grasp)
        tr.hold_until(self.T_CLOSE)
        # lift straight up first, then carry to the handover point, gripper horizontal
        tr.add(self.T_CLOSE + 15, grasp_pt + np.array([0, 0, 0.08]), R_grasp)
        R_meet = gripper_rot(math.pi, 0.0)
        meet_pt = MEET + R_meet[:, 0] * (GRASP_OFFSET[0] - self.grasp_depth)
        tr.add(self.T_MEET, meet_pt, R_meet)
        tr.hold_until(self.T_R_OPEN)
        away = meet_pt + np.array([0.12, 0.0, 0.03])
        tr.add(self.T_R_AWAY, away, R_meet)
        if not from_step:
            g.hold_until(self.T_L_CLOSE)
            g.add(self.T_R_OPEN, 1.0)

    def _plan_left_wait(self) -> None:
        tr, g = self._tracks["left"], self._grip["left"]
        tr.hold_until(self.T_MEET - 45)
        R = _LEFT_HANDOVER_ROT
        target = MEET - R[:, 0] * (self.hold_depth_l - GRASP_OFFSET[0]) - np.array([0.08, 0, 0])
        tr.add(self.T_L_PRE, target, R)
        tr.hold_until(self.T_REAIM_L)
        g.hold_until(self.T_L_IN)

    def _plan_left_grasp(self, cube: np.ndarray) -> None:
        tr, g = self._tracks["left"], self._grip["left"]
        tr.truncate(self.T_REAIM_L)
        R = _LEFT_HANDOVER_ROT
        c = cube[:3]
        grasp_pt = c - R[:, 0] * (self.hold_depth_l - GRASP_OFFSET[0])
        tr.add(self.T_L_IN, grasp_pt, R)
        tr.hold_until(self.T_R_OPEN)
        tr.add(self.T_L_HOLD, grasp_pt + np.array([-0.03, 0.0, 0.03]), R)
        g.add(self.T_L_CLOSE, 0.0)

    # ---------------------------------------------------------------- acting
    def action(self, step: int) -> np.ndarray:
        """The 14 joint targets for control step ``step`` (0-based)."""
        if step == self.T_REAIM_R:
            self._plan_right(self.sim.cube_pose(), from_step=step)
        if step == self.T_REAIM_L:
            self._plan_left_grasp(self.sim.cube_pose())
        return self._joint_targets(step)


class CorrectiveHandover(ScriptedHandover):
    """The scripted handover made able to act from ANY state (the corrective expert, ``Task.corrective_expert``).

    :class:`ScriptedHandover` is a plan made at reset that re-reads the cube at two fixed steps; a
    policy (or a person) driving the robot can leave it behind. This expert is asked for its action
    at every step and watches the simulator's state while it plans:

    - **the cube moved**: before the descent, a cube more than ``REPLAN_M`` (5 mm) or
      ``REPLAN_DEG`` (5 deg, modulo the cube's quarter-turn symmetry) from the pose the right grasp
      aims at is re-planned from its current pose (during the descent, where the fingers nudge the
      cube by up to ~8 mm, only beyond ``KNOCKED_M``, 2 cm); the arms go to the new pre-grasp pose
      within ``LEAD`` steps (a gripper lower than ``SAFE_Z`` first rises there for ``RISE`` steps, so it
      never sweeps through the cube) and the rest of the schedule moves later accordingly;
    - **the grasp failed**: from ``T_CLOSE + 15`` (the lift) until the right gripper opens, a cube
      back on the table (z below ``ON_TABLE_Z``) and away from the right grasp point (more than
      ``NEAR_M``, 4 cm: a policy may lift later than the schedule) means the grasp missed or the cube dropped: the
      right gripper opens and re-approaches the cube where it lies, with the later phases compressed
      into the time left (at most ``MAX_SHIFT`` steps later than the original schedule; a re-plan
      that would need more is not made: it keeps its plan);
    - **the arm is off the plan**: its actions are absolute joint targets on the plan's end-effector
      tracks, so a pushed arm is driven back onto them.

    Without any of these it makes exactly the calls :class:`ScriptedHandover` makes: a demonstration
    by this expert is bit-identical to the scripted one (``tests/envs``). ``action(step)`` must be
    called at every step, in order (it keeps the schedule).
    """

    policy_id = "corrective-handover-v1"

    REPLAN_M = 0.005
    REPLAN_DEG = 5.0
    KNOCKED_M = 0.02
    LEAD = 25
    RISE = 10
    SAFE_Z = 0.12
    ON_TABLE_Z = 0.03
    NEAR_M = 0.04
    """A cube centre this close to the right grasp point is in (or entering) the right gripper: it is not "moved"
    and a grasp is not "failed" (a policy may lift later than the schedule)."""
    MAX_SHIFT = 95
    END = 280
    """The last key of a shifted schedule (the left arm's final lift) is placed no later than this step."""

    _TIMES = ("T_PRE", "T_REAIM_R", "T_DOWN", "T_CLOSE", "T_MEET", "T_L_PRE", "T_REAIM_L", "T_L_IN", "T_L_CLOSE",
              "T_R_OPEN", "T_R_AWAY", "T_L_HOLD")

    def reset(self) -> None:
        for name in self._TIMES:  # back to the class schedule
            self.__dict__.pop(name, None)
        self.shift = 0
        self.replans: list[tuple[int, str]] = []
        super().reset()
        self._aimed = self.sim.cube_pose()

    # ---------------------------------------------------------------- the schedule
    def _shift_schedule(self, d: int) -> None:
        """Move the schedule `d` steps later: the approach keys by `d`, the keys from the descent on compressed
        (by the same start shift) so the last one stays at or before `END`."""
        base = ScriptedHandover
        f = min(1.0, (self.END - (base.T_DOWN + d)) / (base.T_L_HOLD - base.T_DOWN))
        for name in self._TIMES:
            t = getattr(base, name)
            value = t + d if t <= base.T_DOWN else base.T_DOWN + d + round((t - base.T_DOWN) * f)
            setattr(self, name, int(value))
        self.shift = d

    @staticmethod
    def _moved(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
        """(xy distance in m, yaw difference in degrees modulo a quarter turn) between two cube poses."""
        dyaw = (ScriptedHandover._cube_yaw(a) - ScriptedHandover._cube_yaw(b) + math.pi / 4) % (math.pi / 2) - math.pi / 4
        return float(np.linalg.norm(a[:2] - b[:2])), abs(math.degrees(dyaw))

    def _needed_shift(self, step: int) -> int:
        """The schedule shift a re-plan at `step` needs (a low gripper first rises for RISE steps)."""
        rise = self.RISE if self._tracks["right"].at(step)[0][2] < self.SAFE_Z else 0
        return max(self.shift, step + rise + self.LEAD - ScriptedHandover.T_PRE)

    def _replan(self, step: int, cube: np.ndarray, why: str) -> None:
        """Re-plan both arms and grippers from `step`: a low gripper rises to SAFE_Z first (so it never sweeps
        through the cube), then the pre-grasp over `cube` within LEAD steps, the rest of the schedule shifted."""
        tr = self._tracks["right"]
        pos, quat = tr.at(step)
        start = step
        if pos[2] < self.SAFE_Z:
            tr.truncate(step)
            tr.add(step + self.RISE, np.array([pos[0], pos[1], self.SAFE_Z]), quat_to_mat(quat))
            start = step + self.RISE
        self._shift_schedule(self._needed_shift(step))
        right_now = self._grip["right"].at(step)
        self._plan_right(cube, from_step=start)
        g = GripperTrack(right_now)
        g.add(step, right_now)
        g.add(step + 5, 1.0)
        g.hold_until(self.T_DOWN)
        g.add(self.T_CLOSE, 0.0)
        g.hold_until(self.T_L_CLOSE)
        g.add(self.T_R_OPEN, 1.0)
        self._grip["right"] = g
        self._tracks["left"].truncate(step)
        self._grip["left"] = GripperTrack(1.0)
        self._plan_left_wait()
        self._aimed = cube
        self.replans.append((step, why))

    # ---------------------------------------------------------------- acting
    def action(self, step: int, observation=None) -> np.ndarray:
        """The 14 joint targets the expert takes at ``step`` from the simulator's current state."""
        cube = self.sim.cube_pose()
        near_right = float(np.linalg.norm(cube[:3] - self.sim.gripper_positions()["right"])) < self.NEAR_M
        if step == self.T_REAIM_R:  # the scripted re-aim at the settled cube
            self._plan_right(cube, from_step=step)
            self._aimed = cube
        elif step < self.T_DOWN and not near_right:  # a cube in (or entering) the right gripper moves with it
            dist, dyaw = self._moved(cube, self._aimed)
            limit = self.REPLAN_M if step < self.T_PRE else self.KNOCKED_M
            moved = dist > limit or (step < self.T_PRE and dyaw > self.REPLAN_DEG)
            if moved and self._needed_shift(step) <= self.MAX_SHIFT:
                self._replan(step, cube, "cube moved")
        elif self.T_CLOSE + 15 <= step < self.T_R_OPEN and cube[2] < self.ON_TABLE_Z and not near_right:
            if self._needed_shift(step) <= self.MAX_SHIFT:
                self._replan(step, cube, "grasp failed")
        if step == self.T_REAIM_L:
            self._plan_left_grasp(cube)
        return self._joint_targets(step)
