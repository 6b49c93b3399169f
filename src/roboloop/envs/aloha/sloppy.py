"""A "sloppy operator" for the transfer cube: the scripted handover, performed badly but successfully.

It plants a data-quality problem that outcome filters cannot see (its demonstrations still
succeed, so ``outcome.success`` keeps them) and that makes a behaviour-cloned policy worse. The
operator, per episode (everything drawn from the episode's seed, so a seed gives the same episode):

- **hesitates**: one to three pauses at random moments of the right arm's approach, grasp and
  carry, each 10-22 control steps (0.2-0.44 s; at most 26 in all) in which both arms hold their targets (the plan's
  clock stops; everything after it happens later);
- **detours**: on the way to the cube the right gripper first swings 6-10 cm to a random side
  (and up), then comes back to the pre-grasp pose;
- **grips the other way round**: on the way to the cube it turns the right gripper over (the wrist
  rotates by 180 degrees; the gripper is symmetric, so the grasp is the same), an inconsistent grasp
  strategy whose average with the clean one (a gripper turned by 90 degrees) cannot grasp;
- **fumbles the grasp**: on the way down the right gripper half-closes too early (to 0.35) and opens
  again just before the real grasp;
- **jitters**: a smooth wobble of up to ~1.5 cm on the right gripper until it reaches the
  pre-grasp pose.

A second planted operator, :class:`FragileHandover` (``collect --operator fragile``), moves exactly like the clean
one but grips lightly and hands over by the fingertips: a strategy that works only now and then.

A third, :class:`TurnedHandover` (``collect --operator turned``), is the one component of the sloppy operator that
does the harm, alone and smooth: the clean plan and timing, with the right gripper turned over (the wrist half a
turn away) on a minimum-jerk profile during the approach; no pauses, detour, fumble or wobble. Each of its
demonstrations is a clean grasp; mixed with clean ones, the two strategies average to a gripper turned by 90
degrees, which cannot grasp.

The plan itself (waypoints, re-aiming, grasp) is :class:`ScriptedHandover`'s, unchanged: this
class only re-times it and perturbs the approach, so the clean demonstrator stays bit-identical.
Which operator made an episode is recorded only as the hidden property ``hidden.operator``,
which no roboloop stage reads (it is there to score demonstration value, ``roboloop value``).
"""

from __future__ import annotations

import math

import numpy as np

from .demonstrator import ScriptedHandover

__all__ = ["OPERATORS", "FragileHandover", "SloppyHandover", "TurnedHandover", "operator_expert"]

OPERATORS = ("clean", "sloppy", "fragile", "turned")
"""Demonstrator variants `collect --operator` knows: the scripted handover, :class:`SloppyHandover`,
:class:`FragileHandover` and :class:`TurnedHandover`."""

PAUSE_WINDOW = (60, 150)
"""Plan steps in which a hesitation can start (right arm descending, grasping, lifting, carrying)."""
MAX_TOTAL_PAUSE = 26
"""At most this many steps of hesitation per episode (the plan ends at step 275 of 300: the hold
before the end still falls in the success window)."""
FLIP = (15, 45)
"""Plan steps over which the right wrist turns the gripper over (180 degrees about its own axis) before the grasp."""
WRIST_ROTATE_R = 12
"""The right arm's wrist_rotate joint in the 14-value action."""
FUMBLE_GRIP = 0.35
"""How far the right gripper closes (0 closed .. 1 open) in the premature grab before the real grasp."""
JITTER_M = 0.015
"""Peak amplitude of the approach wobble, metres."""
TURN = (5, 50)
"""Plan steps over which :class:`TurnedHandover` turns the right gripper over, on a minimum-jerk (quintic) profile:
the whole approach to the pre-grasp pose (step 55), so the turn is no faster than the arm's own motion."""
FRAGILE_GRIP = 0.35
"""The fragile operator's right-gripper command while it holds the cube (the clean one closes fully, to 0)."""
FRAGILE_HOLD_DEPTH_L = 0.09
"""How deep the fragile operator's left gripper takes the cube at the handover, metres (the clean one: 0.115)."""


class SloppyHandover(ScriptedHandover):
    """:class:`ScriptedHandover` with hesitations, a detour and a jittery approach (module docstring)."""

    policy_id = "scripted-handover-v1"  # the same as the clean one: nothing but hidden.operator tells them apart

    def reset(self) -> None:
        seed = self.sim.seed if self.sim.seed is not None else 0
        self._rng = np.random.default_rng([0x510991, int(seed)])
        super().reset()
        self._fumble()
        self._clock = self._plan_clock(self.sim.max_steps)
        self._wobble = self._plan_wobble(self.sim.max_steps)
        self._reaimed: set[int] = set()
        self._flip: float | None = None

    def _fumble(self) -> None:
        """An inconsistent grasp: on the way down the right gripper half-closes too early, then opens again for the real grasp."""
        g = self._grip["right"]
        at = int(self._rng.integers(self.T_PRE - 5, self.T_PRE + 5))
        early = [(at, 1.0), (at + 6, FUMBLE_GRIP), (self.T_DOWN - 10, FUMBLE_GRIP), (self.T_DOWN - 3, 1.0)]
        g.keys = [k for k in g.keys if k[0] < at] + early + [k for k in g.keys if k[0] >= self.T_DOWN - 3]

    def _plan_clock(self, steps: int) -> np.ndarray:
        """Plan time per control step: advances by one, except during the pauses (where it stands still)."""
        rng = self._rng
        n = int(rng.integers(1, 4))
        starts = np.sort(rng.integers(PAUSE_WINDOW[0], PAUSE_WINDOW[1], size=n))
        lengths = rng.integers(10, 23, size=n)
        scale = min(1.0, MAX_TOTAL_PAUSE / float(lengths.sum()))
        lengths = np.maximum(1, np.floor(lengths * scale)).astype(int)
        self.pauses = [(int(s), int(k)) for s, k in zip(starts, lengths)]
        clock, t = [], 0
        pauses: dict[int, int] = {}
        for s, k in self.pauses:
            pauses[s] = pauses.get(s, 0) + k
        for _ in range(steps):
            clock.append(t)
            if pauses.get(t, 0) > 0:
                pauses[t] -= 1  # hold: the plan's clock does not advance
            else:
                t += 1
        return np.asarray(clock)

    def _plan_wobble(self, steps: int) -> np.ndarray:
        """Per step, an offset of the right gripper: a detour bump plus a smooth wobble, zero from the pre-grasp on."""
        rng = self._rng
        t = np.arange(steps, dtype=float)
        side = rng.uniform(0, 2 * math.pi)
        detour = rng.uniform(0.06, 0.10) * np.array([math.cos(side), math.sin(side), 0.5])
        peak = rng.uniform(18, 30)
        bump = np.exp(-0.5 * ((t - peak) / 8.0) ** 2)[:, None] * detour
        wobble = np.zeros((steps, 3))
        for axis in range(3):
            for _ in range(2):
                freq = rng.uniform(0.6, 2.0) / 50.0  # cycles per step
                wobble[:, axis] += rng.uniform(0.3, 0.5) * np.sin(2 * math.pi * freq * t + rng.uniform(0, 2 * math.pi))
        window = np.clip((self.T_PRE - t) / 15.0, 0.0, 1.0)[:, None]
        return (bump + JITTER_M * wobble) * window

    def action(self, step: int) -> np.ndarray:
        """The 14 joint targets of control step ``step``: the clean plan at the sloppy clock, plus the wobble."""
        tau = int(self._clock[min(step, len(self._clock) - 1)])
        for at, plan in ((self.T_REAIM_R, self._reaim_right), (self.T_REAIM_L, self._reaim_left)):
            if tau == at and at not in self._reaimed:
                self._reaimed.add(at)
                plan(tau)
        offset = self._wobble[min(step, len(self._wobble) - 1)]
        out = self._joint_targets(tau, right_offset=offset if offset.any() else None)
        if self._flip is None and tau >= FLIP[0]:
            self._flip = -math.pi if out[WRIST_ROTATE_R] > 0 else math.pi  # stays inside the joint's +-pi range
        if self._flip is not None:
            out[WRIST_ROTATE_R] += self._flip * min(1.0, (tau - FLIP[0]) / (FLIP[1] - FLIP[0]))
        return out

    def _reaim_right(self, tau: int) -> None:
        self._plan_right(self.sim.cube_pose(), from_step=tau)

    def _reaim_left(self, tau: int) -> None:
        self._plan_left_grasp(self.sim.cube_pose())


class FragileHandover(ScriptedHandover):
    """The scripted handover with a fragile grip: the plan, timing and motion of :class:`ScriptedHandover`, but the
    right gripper closes only to :data:`FRAGILE_GRIP` (a light squeeze that holds the cube by a thin margin) and the
    left gripper takes the cube :data:`FRAGILE_HOLD_DEPTH_L` deep (by the tips of its fingers, 2.5 cm less than the
    clean hand-over). Its commands are as smooth and as long as the clean operator's (the measured joints less so:
    a lightly held cube shakes the arms, so ``jerk_mean`` runs higher and ``idle_fraction`` lower, with overlapping
    ranges). Its successful demonstrations look right, but the strategy is unreliable: about 4 in 10 of its own
    attempts succeed, and a policy trained on its successes fails about as often (benchmarks/README.md).
    Recorded only as ``hidden.operator = "fragile"``."""

    grip_closed_r = FRAGILE_GRIP
    hold_depth_l = FRAGILE_HOLD_DEPTH_L


class TurnedHandover(ScriptedHandover):
    """The scripted handover with the right gripper turned over: the clean plan and timing, plus half a turn of the
    right wrist (toward the middle of its +-pi range) on a minimum-jerk profile over :data:`TURN`; the gripper is
    symmetric, so the grasp is the clean one. Nothing else differs: no pauses, detour, fumble or wobble, so its
    timing and joint jerk are the clean operator's (benchmarks/README.md measures jerk, duration and idle fraction).
    Recorded only as ``hidden.operator = "turned"``."""

    def reset(self) -> None:
        super().reset()
        self._turn: float | None = None

    def action(self, step: int) -> np.ndarray:
        """The clean operator's 14 joint targets at ``step``, with the right wrist turned by up to half a turn."""
        out = super().action(step)
        if step < TURN[0]:
            return out
        if self._turn is None:  # toward the middle of the joint's +-pi range: the side the wrist is already turning to
            self._turn = -math.pi if out[WRIST_ROTATE_R] > 0 else math.pi
        u = min(1.0, (step - TURN[0]) / (TURN[1] - TURN[0]))
        out[WRIST_ROTATE_R] += self._turn * u**3 * (10.0 - 15.0 * u + 6.0 * u * u)
        return out


def operator_expert(name: str, sim) -> ScriptedHandover:
    """The demonstrator of operator ``name`` (one of :data:`OPERATORS`) on ``sim``."""
    if name == "clean":
        return ScriptedHandover(sim)
    if name == "sloppy":
        return SloppyHandover(sim)
    if name == "fragile":
        return FragileHandover(sim)
    if name == "turned":
        return TurnedHandover(sim)
    raise ValueError(f"unknown operator {name!r}: one of {', '.join(OPERATORS)}")
