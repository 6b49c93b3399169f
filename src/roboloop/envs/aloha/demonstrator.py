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

__all__ = ["ScriptedHandover", "ArmIK", "GripperTrack", "PoseTrack", "gripper_rot", "mat2quat", "rot_from_axes"]

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


class ScriptedHandover:
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

    def __init__(self, sim: AlohaSim) -> None:
        self.sim = sim
        self.reset()

    def reset(self) -> None:
        """Re-plan from the simulator's current state (after ``sim.reset``)."""
        sim = self.sim
        model = sim.physics.model.ptr
        self._ik = {"left": ArmIK(model, "left"), "right": ArmIK(model, "right")}
        q = sim.physics.data.qpos
        self._q = {"left": q[0:6].copy(), "right": q[8:14].copy()}
        self._tracks: dict[str, PoseTrack] = {}
        self._last_target: dict[str, tuple[bytes, bytes]] = {}
        for arm in ("left", "right"):
            p, R = self._ik[arm].fk(self._q[arm])
            self._tracks[arm] = PoseTrack(p, R)
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
        grasp_pt = c + approach * (GRASP_DEPTH - GRASP_OFFSET[0])  # grasp point (GRASP_OFFSET) target
        pre_pt = grasp_pt - approach * 0.08
        if from_step:
            tr.truncate(from_step)
            tr.add(max(self.T_PRE, from_step + 5), pre_pt, R_grasp)
        else:
            tr.add(self.T_PRE, pre_pt, R_grasp)
            g.hold_until(self.T_DOWN)
            g.add(self.T_CLOSE, 0.0)
        tr.add(self.T_DOWN, grasp_pt, R_grasp)
        tr.hold_until(self.T_CLOSE)
        # lift straight up first, then carry to the handover point, gripper horizontal
        tr.add(self.T_CLOSE + 15, grasp_pt + np.array([0, 0, 0.08]), R_grasp)
        R_meet = gripper_rot(math.pi, 0.0)
        meet_pt = MEET + R_meet[:, 0] * (GRASP_OFFSET[0] - GRASP_DEPTH)
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
        target = MEET - R[:, 0] * (HOLD_DEPTH_L - GRASP_OFFSET[0]) - np.array([0.08, 0, 0])
        tr.add(self.T_L_PRE, target, R)
        tr.hold_until(self.T_REAIM_L)
        g.hold_until(self.T_L_IN)

    def _plan_left_grasp(self, cube: np.ndarray) -> None:
        tr, g = self._tracks["left"], self._grip["left"]
        tr.truncate(self.T_REAIM_L)
        R = _LEFT_HANDOVER_ROT
        c = cube[:3]
        grasp_pt = c - R[:, 0] * (HOLD_DEPTH_L - GRASP_OFFSET[0])
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
        out = np.empty(14)
        for arm, sl, gi in (("left", slice(0, 6), 6), ("right", slice(7, 13), 13)):
            pos, quat = self._tracks[arm].at(step)
            key = (pos.tobytes(), quat.tobytes())
            if key != self._last_target.get(arm):  # holding still: reuse the last solution
                q = self._ik[arm].solve(self._q[arm], pos, quat_to_mat(quat), GRASP_OFFSET)
                self._q[arm] = q
                self._last_target[arm] = key
            q = self._q[arm]
            out[sl] = q
            out[gi] = self._grip[arm].at(step)
        return out
