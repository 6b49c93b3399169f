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
* ``failure_step`` (failures only, best effort, "when it went wrong"):

  - cube ends low (final z <= min_height): the **last step any gripper finger touched
    the cube** — the drop / the end of the last attempt (``failure_reason`` "dropped"
    if the cube had been lifted off the table by a gripper before, else "not_lifted");
  - no finger ever touched the cube: ``None`` (``failure_reason`` "never_touched");
  - cube ends high but not held as required (right gripper still on it, one left
    finger only, ...): the **last step on which the hold condition failed**
    (``failure_reason`` "not_handed_over").

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

Failure reasons, and the issue's words for them: ``never_touched`` and ``not_lifted``
are a *missed grasp*; ``dropped`` is *dropped*; ``not_handed_over`` is *never handed
over* (``schema.FAILURE_KINDS``).

Steps are 0-based: step ``i`` is the state after the ``i``-th call to ``sim.step``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from roboloop.schema import FAILURE_KINDS, STAGES

__all__ = ["SuccessTracker", "SuccessResult", "WINDOW", "MIN_HEIGHT", "STAGES", "FAILURE_KINDS"]

WINDOW = 20
MIN_HEIGHT = 0.05


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


class SuccessTracker:
    """Feed one observation per control step; read ``success`` etc. at any time.

    ``tracker.update(sim, reward)`` reads the cube height and contacts from an
    :class:`~roboloop.sim.AlohaSim`; ``tracker.observe(cube_z, contacts, reward)``
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
        self._lifted = False
        self._cube_z = float("nan")
        self.stage = 0
        self.stage_step: int | None = None

    def update(self, sim, reward: float | None = None) -> None:
        """Record the state after the latest ``sim.step`` (reward: its return value)."""
        self.observe(float(sim.cube_pose()[2]), sim.cube_contacts(), reward if reward is not None else sim.reward())

    def observe(self, cube_z: float, contacts: Mapping[str, bool], reward: float = 0.0) -> None:
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
        if any_finger:
            self._last_finger_touch = step
            if not contacts["table"] and cube_z > self.min_height:
                self._lifted = True
        self.max_reward = max(self.max_reward, float(reward))
        self._cube_z = float(cube_z)
        self._advance_stage(step, cube_z, contacts, left, right, held)
        self.steps += 1

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

    @property
    def failure_reason(self) -> str | None:
        if self.success:
            return None
        if self._last_finger_touch is None:
            return "never_touched"
        if not self._cube_z > self.min_height:
            return "dropped" if self._lifted else "not_lifted"
        return "not_handed_over"

    @property
    def failure_step(self) -> int | None:
        reason = self.failure_reason
        if reason is None or reason == "never_touched":
            return None
        if reason in ("dropped", "not_lifted"):
            return self._last_finger_touch
        return self._last_not_held if self._last_not_held is not None else self.steps - 1

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
