"""Strict success for the TransferCube handover.

gym-aloha's success (reward 4) is *one* left-gripper finger touching the cube while
the cube does not touch the table: a brush of a finger at the right moment counts.
Ours requires a real, stable handover:

**success** <=> the episode has at least ``window`` (20) steps, the cube's final
height is above ``min_height`` (0.05 m; a resting cube sits near 0.02), and on
**every one of the last ``window`` steps** the cube touches **both** left-gripper
fingers, **neither** right-gripper finger, and **not** the table.

Reported by :class:`SuccessTracker` (fed once per control step, after ``sim.step``):

* ``success`` (bool)
* ``success_step``: the first step of the final uninterrupted run of "held" steps
  (held = both left fingers, no right finger, no table) — for a success, the step
  from which the condition held continuously to the end; ``None`` if the last step
  is not held.
* ``max_reward``: the highest gym-aloha reward (0-4) seen.
* ``failure_reason`` (the failure *kind*, ``schema.FAILURE_KINDS``) and ``failure_step`` (the
  moment it went wrong): every failure gets both. The first of these events decides
  (fed by :meth:`SuccessTracker.update`, which reads the grippers and the cube position):

  A gripper **held** the cube once both fingers of one gripper touched it for ``HOLD_STEPS`` (10)
  consecutive steps (a real grasp in the v1 successes lasted 37-170 steps; an arm swinging through the
  cube touches it with both right fingers for 1-3 steps, which is no grasp); it **lifted** it if, while
  such a hold was in progress, the cube was off the table above ``min_height``.

  - ``knocked_away``: before any hold, the cube moved more than ``KNOCK_DISTANCE``
    (3 cm, horizontally) from where it settled. Moment: the first contact that started moving
    it: when the cube first moved more than ``MOVE_NOISE`` (5 mm) from where it settled, the
    first step of the robot contact in progress (a robot link or finger touching the cube,
    gaps up to ``CONTACT_GAP`` steps) or of the cube's motion in progress (moving more than
    ``MOVE_STEP``, 0.5 mm, per step), whichever began first (not the step 3 cm was crossed).
  - ``closed_on_air``: before any hold, the right gripper closed past the width of
    the cube (normalized position below ``GRIPPER_ON_CUBE`` 0.55; on the cube it stops at
    0.6-0.73) after having opened (above ``GRIPPER_OPEN`` 0.7), commanded to close (a gripper
    pressed shut against the table while commanded open did not close), with neither right
    finger on the cube, **at the cube**: its grasp point within ``CLOSE_REACH`` (8 cm) of the
    cube's centre (a successful close begins at 1.5-2.1 cm; a right finger touches the cube
    from up to 7.2 cm). Moment: the step it closed so. A close farther away is not an attempt
    at the cube: it is judged by what follows (``never_reached`` if the arm never got there).

  When neither happened:

  - ``never_reached``: the arm never got to the cube: no robot geom (finger or any other link)
    ever touched it, it never moved more than ``MOVE_NOISE`` (5 mm) from where it settled (an
    untouched cube stays put to 1e-18 m; an arm's approach nudges it up to 3.5 mm), and the
    right grasp point never came within ``REACH_DISTANCE`` (4 cm) of the cube's centre (a grasp
    gets within 0.7-2 cm). Moment: the step its approach stopped: the first step after which the grasp
    point never again got more than ``APPROACH_MARGIN`` (1.5 cm) closer to the cube (an arm that drifts
    for seconds after stopping is dated from the stop, not from when the drift ended; one that only
    moved away is dated 0).
  - ``missed_grasp``: the arm got to the cube (a robot geom touched it, it moved more than
    ``MOVE_NOISE``, or the grasp point came within ``REACH_DISTANCE``) but no gripper ever held
    and lifted it (a momentary squeeze, or a hold that never lifted it, is a missed grasp), and the
    gripper ends away from it (beyond
    ``REACH_DISTANCE``). Moment: where it gave up on the cube: the last right-finger contact; else
    the closest approach or the first step of the latest touch by another robot link (a bump, gaps
    up to ``CONTACT_GAP``), whichever came later;
  - the cube ends low (final z <= min_height): ``dropped`` when a gripper had held it and
    lifted it and it got away: moment = the last step a finger touched it off the table (the
    let-go); if both right fingers still hold it at the end, or nothing ever lifted it while the
    gripper is still at the cube, the episode ran out of time: ``timed_out`` (moment = the last step);
  - the cube ends high but not held as required: ``not_handed_over``; moment = the step
    the left gripper first squeezed it (the handover began), else the step the left
    gripper closed without it, else the last step on which the hold failed;
  - the cube ends held, but for fewer than ``window`` steps: ``timed_out`` (the handover
    came too late; moment = the last step).

  Old recordings carry the kinds of the first classifier (``never_touched``, ``not_lifted``):
  still readable, re-judged by ``roboloop reoutcome``, as are verdicts of version 2 (a bump by
  an arm link or a pushed cube could be ``never_reached``, a close anywhere ``closed_on_air``,
  a knock dated from the contact in progress when 3 cm was crossed), and of version 3 (a single step of both
  right fingers on the cube was a grasp, so a first swing that knocked the cube away was ``dropped``; a
  never-reached moment was when the arm came to rest, within 1 cm of its final distance, seconds late for
  an arm that drifted): ``CLASSIFIER_VERSION`` 4.

Furthest stage reached (partial credit, ``schema.STAGES``; ``stage`` is the index):

* 0 ``none``: nothing below happened.
* 1 ``right_grasp``: on some step the cube touched **both** right-gripper fingers.
* 2 ``lift``: on a step at or after the right grasp, a right-gripper finger touched the
  cube, the cube did not touch the table, and it was higher than ``min_height``.
* 3 ``left_grasp``: on a step at or after the lift, the cube touched **both**
  left-gripper fingers and not the table.
* 4 ``handover``: on a step at or after the left grasp, the cube was *held* (both left
  fingers, no right finger, not the table) higher than ``min_height``: the right gripper
  had let go. A success always reached it; holding it to the end is what success adds.

Stages are reached in order (a step may advance several at once); ``stage_step`` is the
step on which the furthest stage was first reached.

Failure kinds in words: ``schema.FAILURE_KINDS`` (``closed_on_air`` *closed on air*,
``knocked_away`` *knocked away*, ``dropped``, ``not_handed_over`` *never handed over*,
``timed_out`` *timed out*, ``never_reached`` *never reached the cube*, ``missed_grasp``
*missed the grasp*). ``CLASSIFIER_VERSION`` is written as ``outcome.classifier``.

Steps are 0-based: step ``i`` is the state after the ``i``-th call to ``sim.step``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from roboloop.schema import FAILURE_KINDS, STAGES

__all__ = [
    "JudgedTracker",
    "SuccessTracker", "SuccessResult", "WINDOW", "MIN_HEIGHT", "STAGES", "FAILURE_KINDS",
    "KNOCK_DISTANCE", "GRIPPER_ON_CUBE", "GRIPPER_OPEN", "REACH_DISTANCE", "CLOSE_REACH", "MOVE_NOISE", "MOVE_STEP",
    "APPROACH_MARGIN", "HOLD_STEPS",
    "CLASSIFIER_VERSION",
]

WINDOW = 20
MIN_HEIGHT = 0.05
KNOCK_DISTANCE = 0.03
"""Horizontal cube travel (m) before any grasp that counts as knocked away (the approach nudges it a few mm)."""
GRIPPER_ON_CUBE = 0.55
"""Normalized gripper position below which the fingers are closer than the cube is wide (on the cube: 0.6-0.73)."""
GRIPPER_OPEN = 0.7
"""A gripper counts as opened above this (fully open: 0.97); a close is a fall from open to below GRIPPER_ON_CUBE."""
REACH_DISTANCE = 0.04
"""Closest approach (m, right grasp point to cube centre) that counts as reaching the cube (grasps: 0.7-2 cm)."""
CLOSE_REACH = 0.08
"""A close counts as closing on air only with the grasp point this near (m) the cube's centre: measured on the 61
successes of the v1 evaluation, a close on the cube begins at 1.5-2.1 cm and squeezes at 1.3-2.7 cm, and a right
finger touched the cube with the grasp point up to 7.2 cm away (over all 120 rollouts); 8 cm = that + a margin."""
MOVE_NOISE = 0.005
"""Horizontal cube travel (m) from where it settled that only a touch explains: an untouched cube stayed within
1e-18 m over 38 whole rollouts; an arm's approach nudges it up to 3.5 mm just before its contact shows."""
MOVE_STEP = 0.0005
"""Horizontal cube travel (m) in one control step that counts as the cube moving (a shove moves it 2-7 mm a step)."""
APPROACH_MARGIN = 0.015
"""Never reached: the approach stopped at the first step after which the grasp point never again got more than this
(m) closer to the cube (measured on the 10 scrubbed v1 rollouts: 1.5 cm puts the moment 0.3 s from a person's on
average, 1 cm 0.3 s, 0.5 cm 0.7 s; arms drift 1-4 cm for seconds after stopping)."""
HOLD_STEPS = 10
"""Consecutive steps with both fingers of one gripper on the cube that make a hold (a real grasp): in the 61
successes of the v1 evaluation the right grasp lasted 37-170 steps; an arm's swing through the cube touches it
with both fingers for 1-3 steps."""
CONTACT_GAP = 3
"""Steps without contact that still belong to one contact (the push that knocked the cube away)."""
CLASSIFIER_VERSION = 4
"""Version of the failure classifier (`outcome.classifier`); recordings without it were judged by version 1.
3: a touch by any robot link or a moved cube means it was reached; closed on air only at the cube; a knock's
moment is the first contact that moved it. 4: a grasp is a hold (both fingers of one gripper for HOLD_STEPS steps),
dropped needs a hold that lifted the cube, a never-reached arm's moment is where its approach stopped."""
RIGHT_GRIPPER, LEFT_GRIPPER = 13, 6
"""Indices of the grippers in the 14 joint positions."""


def _dist(a: tuple[float, float], b: tuple[float, float]) -> float:
    return ((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) ** 0.5


@dataclass(frozen=True)
class SuccessResult:
    success: bool
    success_step: int | None
    max_reward: float
    failure_step: int | None
    failure_reason: str | None  # None on success
    final_cube_z: float
    steps: int
    stage: int = 0  # index into STAGES of the furthest stage reached
    stage_step: int | None = None  # step on which it was first reached

    @property
    def stage_name(self) -> str:
        return STAGES[self.stage]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class JudgedTracker:
    """What the success trackers share: ``failure_reason`` and ``failure_step`` from the tracker's own
    ``_judge()`` (``(failure kind, step)``, or None while the episode has not failed)."""

    def _judge(self) -> tuple[str, int] | None:
        raise NotImplementedError

    @property
    def failure_reason(self) -> str | None:
        judged = self._judge()
        return None if judged is None else judged[0]

    @property
    def failure_step(self) -> int | None:
        judged = self._judge()
        return None if judged is None else judged[1]


class SuccessTracker(JudgedTracker):
    """Feed one observation per control step; read ``success`` etc. at any time.

    ``tracker.update(sim, reward)`` reads the cube height and contacts from an
    :class:`~roboloop.envs.aloha.AlohaSim`; ``tracker.observe(cube_z, contacts, reward)``
    takes them directly (``contacts`` as returned by ``AlohaSim.cube_contacts()``).
    """

    def __init__(self, window: int = WINDOW, min_height: float = MIN_HEIGHT) -> None:
        self.window = int(window)
        self.min_height = float(min_height)
        self.reset()

    def reset(self) -> None:
        self.steps = 0
        self.max_reward = 0.0
        self._run_start: int | None = None  # start of the current run of held steps
        self._last_not_held: int | None = None
        self._last_finger_touch: int | None = None
        self._grip_run: dict[str, int | None] = {"right": None, "left": None}  # start of both fingers' current contact
        self._held = False  # a gripper has held the cube (both fingers for HOLD_STEPS consecutive steps)
        self._lifted = False  # held and lifted: a hold in progress had the cube off the table above min_height
        self._last_high_touch: int | None = None  # last step a finger touched the cube off the table
        self._cube_z = float("nan")
        self.stage = 0
        self.stage_step: int | None = None
        self._left_grasp_step: int | None = None
        # failure kinds (see the module docstring)
        self._start_xy: tuple[float, float] | None = None
        self._contact_run: int | None = None  # first step of the current robot contact (gaps <= CONTACT_GAP)
        self._last_contact: int | None = None
        self._last_link_touch: int | None = None  # last step a robot link other than a finger touched the cube
        self._link_run: int | None = None  # first step of the latest such contact (gaps <= CONTACT_GAP)
        self._robot_touched = False  # any robot geom (finger or other link) ever touched the cube
        self._prev_xy: tuple[float, float] | None = None
        self._motion_run: int | None = None  # first step of the cube's current motion (gaps <= CONTACT_GAP)
        self._last_motion: int | None = None
        self._moved = False  # the cube ever moved more than MOVE_NOISE from where it settled
        self._disturbed: int | None = None  # before any grasp: start of the contact / motion that first moved it
        self._knocked: int | None = None
        self._closed_on_air: int | None = None
        self._right_open = False  # the right gripper has been open (above GRIPPER_ON_CUBE) since it last closed
        self._left_open = False
        self._left_closed_empty: int | None = None
        self._last_right_squeeze: int | None = None
        self._reach: list[float] = []  # right grasp point to cube centre (m), per step
        self._last_right_touch: int | None = None

    def update(self, sim, reward: float | None = None, action=None) -> None:
        """Record the state after the latest ``sim.step`` (reward: its return value; action: the
        14 joint targets it was given, so that a gripper pressed shut by a collision while
        commanded open is not taken for a close)."""
        pose = sim.cube_pose()
        q = sim.joint_positions()
        reach = float(((sim.gripper_positions()["right"] - pose[:3]) ** 2).sum() ** 0.5)
        self.observe(
            float(pose[2]), sim.cube_contacts(), reward if reward is not None else sim.reward(),
            cube_xy=(float(pose[0]), float(pose[1])), grippers=(float(q[RIGHT_GRIPPER]), float(q[LEFT_GRIPPER])),
            reach=reach,
            commands=None if action is None else (float(action[RIGHT_GRIPPER]), float(action[LEFT_GRIPPER])),
        )

    def observe(
        self,
        cube_z: float,
        contacts: Mapping[str, bool],
        reward: float = 0.0,
        *,
        cube_xy: tuple[float, float] | None = None,
        grippers: tuple[float, float] | None = None,
        reach: float | None = None,
        commands: tuple[float, float] | None = None,
    ) -> None:
        """One control step: cube height, what it touches, the reward; with `cube_xy` (m),
        `grippers` (right, left; 0 closed .. 1 open) and `reach` (m, right grasp point to the
        cube) also the knocked-away / closed-on-air / never-reached events (without `reach` a close
        counts as at the cube); `commands` (right,
        left gripper targets) confirm that a gripper falling shut was commanded to close."""
        step = self.steps
        left = contacts["left_left_finger"] and contacts["left_right_finger"]
        right = contacts["right_left_finger"] or contacts["right_right_finger"]
        any_finger = (
            contacts["left_left_finger"] or contacts["left_right_finger"] or right
        )
        held = left and not right and not contacts["table"]
        if held:
            if self._run_start is None:
                self._run_start = step
        else:
            self._run_start = None
            self._last_not_held = step
        high_off_table = not contacts["table"] and cube_z > self.min_height
        for side in ("right", "left"):
            if contacts[f"{side}_left_finger"] and contacts[f"{side}_right_finger"]:
                if self._grip_run[side] is None:
                    self._grip_run[side] = step
                if step - self._grip_run[side] + 1 >= HOLD_STEPS:
                    self._held = True
                    if high_off_table:
                        self._lifted = True
            else:
                self._grip_run[side] = None
        if any_finger:
            self._last_finger_touch = step
            if high_off_table:
                self._last_high_touch = step
        if right:
            self._last_right_touch = step
        squeezed = contacts["right_left_finger"] and contacts["right_right_finger"]
        if squeezed:
            self._last_right_squeeze = step
        self.max_reward = max(self.max_reward, float(reward))
        self._cube_z = float(cube_z)
        self._advance_stage(step, cube_z, contacts, left, right, held)
        self._watch_events(step, contacts, any_finger, right, left, cube_xy, grippers, commands, reach)
        if reach is not None:
            self._reach.append(float(reach))
        self.steps += 1

    def _watch_events(self, step, contacts, any_finger, right, left, cube_xy, grippers, commands, reach=None) -> None:
        before_grasp = not self._held  # no gripper has held it yet (a swing's momentary squeeze is no grasp)
        self._watch_contacts(step, contacts, any_finger)
        if cube_xy is not None:
            self._watch_cube(step, cube_xy, before_grasp)
        if grippers is not None:
            self._watch_grippers(step, right, left, grippers, commands, reach, before_grasp)

    def _watch_contacts(self, step, contacts, any_finger) -> None:
        """Runs of robot contact with the cube (any link, and links other than the fingers)."""
        robot = any_finger or contacts.get("other", False)
        if contacts.get("other", False):
            if self._link_run is None or self._last_link_touch is None or step - self._last_link_touch > CONTACT_GAP:
                self._link_run = step
            self._last_link_touch = step
        if robot:
            self._robot_touched = True
            if self._contact_run is None or self._last_contact is None or step - self._last_contact > CONTACT_GAP:
                self._contact_run = step
            self._last_contact = step

    def _watch_cube(self, step, cube_xy, before_grasp: bool) -> None:
        """The cube's motion: runs of movement, moved at all, disturbed and knocked before any grasp."""
        if self._start_xy is None:
            self._start_xy = cube_xy
        if self._prev_xy is not None and _dist(cube_xy, self._prev_xy) > MOVE_STEP:
            if self._motion_run is None or self._last_motion is None or step - self._last_motion > CONTACT_GAP:
                self._motion_run = step
            self._last_motion = step
        self._prev_xy = cube_xy
        moved = _dist(cube_xy, self._start_xy)
        if moved > MOVE_NOISE:
            self._moved = True
            if before_grasp and self._disturbed is None:
                # the first contact that started moving it: the touch or the motion in progress, whichever began first
                starts = [run for run, last in ((self._contact_run, self._last_contact), (self._motion_run, self._last_motion))
                          if run is not None and last is not None and step - last <= CONTACT_GAP]
                self._disturbed = min(starts) if starts else step
        if before_grasp and self._knocked is None and moved > KNOCK_DISTANCE:
            self._knocked = self._disturbed if self._disturbed is not None else step

    def _watch_grippers(self, step, right, left, grippers, commands, reach, before_grasp: bool) -> None:
        """Grippers closing on nothing: the right one at the cube before any grasp, the left one from stage 2 on."""
        g_right, g_left = grippers
        c_right, c_left = commands if commands is not None else (0.0, 0.0)
        if g_right > GRIPPER_OPEN:
            self._right_open = True
        elif self._right_open and g_right < GRIPPER_ON_CUBE and c_right < GRIPPER_ON_CUBE:
            self._right_open = False
            at_cube = reach is None or reach <= CLOSE_REACH  # closing far from the cube is not an attempt at it
            if before_grasp and not right and at_cube and self._closed_on_air is None:
                self._closed_on_air = step
        if g_left > GRIPPER_OPEN:
            self._left_open = True
        elif self._left_open and g_left < GRIPPER_ON_CUBE and c_left < GRIPPER_ON_CUBE:
            self._left_open = False
            if not left and self._left_closed_empty is None and self.stage >= 2:
                self._left_closed_empty = step

    def _advance_stage(self, step: int, cube_z: float, contacts: Mapping[str, bool], left: bool, right: bool, held: bool) -> None:
        high = cube_z > self.min_height
        reached = (
            contacts["right_left_finger"] and contacts["right_right_finger"],  # right_grasp
            right and not contacts["table"] and high,  # lift
            left and not contacts["table"],  # left_grasp
            held and high,  # handover
        )
        start = self.stage
        while self.stage < len(reached) and reached[self.stage]:
            self.stage += 1
        if self.stage != start:
            self.stage_step = step
            if start < 3 <= self.stage:
                self._left_grasp_step = step

    # ---------------------------------------------------------------- verdict
    @property
    def success_step(self) -> int | None:
        return self._run_start

    @property
    def success(self) -> bool:
        return (
            self.steps >= self.window
            and self._run_start is not None
            and self.steps - self._run_start >= self.window
            and self._cube_z > self.min_height
        )

    def _judge(self) -> tuple[str, int] | None:
        """(kind, step) of a failure, None on success (module docstring)."""
        if self.success:
            return None
        last = max(self.steps - 1, 0)
        early = [(step, kind) for kind, step in (("knocked_away", self._knocked), ("closed_on_air", self._closed_on_air))
                 if step is not None]
        if early:
            step, kind = min(early)
            return kind, step
        reached = self._robot_touched or self._moved  # touched by any robot link, or pushed: the arm got there
        if not reached and len(self._reach) == self.steps and self._reach:
            closest = min(self._reach)
            if closest > REACH_DISTANCE:
                # where the approach stopped: after the last step from which it still got APPROACH_MARGIN closer
                approaching, nearest = None, float("inf")
                for k in range(len(self._reach) - 1, -1, -1):
                    if approaching is None and self._reach[k] - nearest > APPROACH_MARGIN:
                        approaching = k
                    nearest = min(nearest, self._reach[k])
                return "never_reached", min(approaching + 1, last) if approaching is not None else 0
        grasped = self._lifted  # a gripper held it and lifted it
        if not grasped and self._reach and len(self._reach) == self.steps and self._reach[-1] > REACH_DISTANCE:
            # it got to the cube (touched it, or came within reach) but never took hold, and left
            if self._last_right_touch is not None:
                return "missed_grasp", self._last_right_touch
            closest = min(range(len(self._reach)), key=self._reach.__getitem__)
            return "missed_grasp", max(closest, self._link_run) if self._link_run is not None else closest
        if not self._cube_z > self.min_height:
            if self._lifted:
                still_held = self._last_right_squeeze == last
                if not still_held:
                    let_go = self._last_high_touch
                    return "dropped", let_go if let_go is not None else last
            return "timed_out", last
        if self._run_start is not None:  # held at the end, not long enough
            return "timed_out", last
        if self.stage >= 3 and self._left_grasp_step is not None:
            return "not_handed_over", self._left_grasp_step
        if self._left_closed_empty is not None:
            return "not_handed_over", self._left_closed_empty
        return "not_handed_over", self._last_not_held if self._last_not_held is not None else last

    def result(self) -> SuccessResult:
        return SuccessResult(
            success=self.success,
            success_step=self.success_step,
            max_reward=self.max_reward,
            failure_step=self.failure_step,
            failure_reason=self.failure_reason,
            final_cube_z=self._cube_z,
            steps=self.steps,
            stage=self.stage,
            stage_step=self.stage_step,
        )
