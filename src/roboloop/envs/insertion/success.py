"""Strict success for the bimanual insertion.

gym-aloha's success (reward 4) is the peg *touching* the pin once: a brush counts. Ours requires
the peg inside the socket, both still held, for a window:

**Measured each step** in the socket's frame (its x axis is the tube's axis): ``depth`` = how far
the peg's end is inside the socket, ``SOCKET_HALF_LENGTH + PEG_HALF_LENGTH - |peg centre along the
axis|`` (m; 0 at the opening, 0.02 at the pin, negative outside; either opening counts), ``lateral``
= the peg centre's distance from the axis (m), ``angle`` = between the two long axes (deg).

* **inserted** <=> depth >= ``MIN_DEPTH`` (1 cm, half the 2 cm the pin allows), lateral <= ``MAX_LATERAL``
  (8 mm: the clearance of a 2 cm peg in the 3.6 cm tube) and angle <= ``MAX_ANGLE`` (10 deg).
* **aligned** <=> lateral <= ``MAX_LATERAL``, angle <= ``MAX_ANGLE`` and depth >= ``ALIGN_DEPTH``
  (-5 cm: the peg's end within 5 cm of the opening, on the axis), with both objects lifted.
* an object is **in the grip** of its arm (peg: right, socket: left) from a step both fingers of that
  gripper touch it until both have not touched it together for more than ``GRIP_GAP`` (3) steps (a
  carried peg loses one finger's contact for single steps, 2-3 times a second); it is **held** once in
  the grip for ``HOLD_STEPS`` (10) steps, and **lifted** while held, off the table and more than
  ``LIFT_HEIGHT`` (3 cm) above where it rests (peg centre 0.010 m, socket 0.022 m).

**success** <=> on every one of the last ``WINDOW`` (20) steps the peg is inserted, the peg is in the
right gripper's grip, the socket in the left's, and neither object touches the table.
Measured on the scripted demonstrator's 200 successes (seeds 200000-200199 of benchmarks/README.md):
final depth 1.91-1.94 cm, lateral under 0.05 mm, angle 0.5-0.7 deg (earlier versions of the expert
ended up to 3.6 mm off the axis: still well inside the 8 mm).

**Stages** (partial credit, ``schema.INSERTION_STAGES``, reached in order, a step may advance several):
1 ``peg_grasped`` (the peg held), 2 ``socket_grasped`` (the socket held), 3 ``both_lifted`` (both lifted
on one step), 4 ``aligned``, 5 ``inserted`` (inserted with both lifted).

**Failure kinds and their moment** (the first that applies):

- ``missed_grasp``: an object was never lifted by its arm; moment = the last step its gripper's fingers
  touched it, else the step the gripper's grasp point came closest to it (the earlier of the two objects).
- ``dropped``: an object was lifted, and at the end is not held off the table above the lift height;
  moment = the last step it was lifted (the let-go).
- ``timed_out``: inserted at the end, for fewer than ``WINDOW`` steps; moment = the last step.
- ``pulled_out``: inserted once, not at the end (both still held); moment = the first step after the last
  inserted one.
- ``never_inserted``: aligned but never inserted (jammed against the rim, or the push fell short);
  moment = the first aligned step.
- ``never_aligned``: both lifted, never aligned; moment = the step the peg came nearest the socket's axis
  while both were lifted.

Steps are 0-based: step ``i`` is the state after the ``i``-th ``sim.step``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from roboloop.envs.aloha.env import quat_to_mat
from roboloop.envs.aloha.success import JudgedTracker
from roboloop.schema import FAILURE_KINDS, INSERTION_STAGES

from .env import PEG_HALF_LENGTH, REST_Z, SOCKET_HALF_LENGTH

__all__ = [
    "ALIGN_DEPTH", "CLASSIFIER_VERSION", "GRIP_GAP", "HOLD_STEPS", "INSERTION_FAILURE_KINDS", "InsertionResult",
    "InsertionTracker", "LIFT_HEIGHT", "MAX_ANGLE", "MAX_LATERAL", "MIN_DEPTH", "WINDOW", "fit",
]

WINDOW = 20
MIN_DEPTH = 0.01
MAX_LATERAL = 0.008
MAX_ANGLE = 10.0
ALIGN_DEPTH = -0.05
HOLD_STEPS = 10
GRIP_GAP = 3
LIFT_HEIGHT = 0.03
ARM = {"peg": "right", "socket": "left"}
CLASSIFIER_VERSION = 1
INSERTION_FAILURE_KINDS = {
    k: FAILURE_KINDS[k] for k in ("missed_grasp", "dropped", "timed_out", "pulled_out", "never_inserted", "never_aligned", "unstable")
}
"""The insertion task's failure kinds -> words."""


def fit(peg_pose: np.ndarray, socket_pose: np.ndarray) -> tuple[float, float, float]:
    """(depth m, lateral m, angle deg) of the peg in the socket (module docstring)."""
    Rs = quat_to_mat(socket_pose[3:])
    d = Rs.T @ (np.asarray(peg_pose[:3]) - np.asarray(socket_pose[:3]))
    depth = SOCKET_HALF_LENGTH + PEG_HALF_LENGTH - abs(float(d[0]))
    lateral = float(math.hypot(d[1], d[2]))
    cos = abs(float(quat_to_mat(peg_pose[3:])[:, 0] @ Rs[:, 0]))
    return depth, lateral, math.degrees(math.acos(min(cos, 1.0)))


@dataclass(frozen=True)
class InsertionResult:
    success: bool
    success_step: int | None
    max_reward: float
    failure_step: int | None
    failure_reason: str | None
    final_depth: float
    final_lateral: float
    steps: int
    stage: int = 0
    stage_step: int | None = None

    @property
    def stage_name(self) -> str:
        return INSERTION_STAGES[self.stage]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Object:
    """What one object went through: holds, lifts, touches, the gripper's closest approach."""

    def __init__(self) -> None:
        self.run: int | None = None  # first step of the current grip (two-finger contact, gaps <= GRIP_GAP)
        self.last_both: int | None = None  # last step both fingers touched it
        self.held = self.lifted_now = self.lifted_ever = False
        self.last_lifted: int | None = None
        self.last_touch: int | None = None
        self.closest = (math.inf, 0)

    def observe(self, step: int, fingers: tuple[bool, bool], table: bool, z: float, rest: float, reach: float | None) -> None:
        if fingers[0] and fingers[1]:
            self.run = step if self.run is None else self.run
            self.last_both = step
        elif self.last_both is None or step - self.last_both > GRIP_GAP:
            self.run = None
        self.held = self.run is not None and step - self.run + 1 >= HOLD_STEPS
        self.lifted_now = self.held and not table and z > rest + LIFT_HEIGHT
        if self.lifted_now:
            self.lifted_ever, self.last_lifted = True, step
        if fingers[0] or fingers[1]:
            self.last_touch = step
        if reach is not None and reach < self.closest[0]:
            self.closest = (reach, step)


class InsertionTracker(JudgedTracker):
    """Feed once per control step (``update(sim, reward, action)`` after ``sim.step``); ``result()``."""

    def __init__(self, window: int = WINDOW) -> None:
        self.window = int(window)
        self.reset()

    def reset(self) -> None:
        self.steps = 0
        self.max_reward = 0.0
        self.stage = 0
        self.stage_step: int | None = None
        self._obj = {"peg": _Object(), "socket": _Object()}
        self._good_run: int | None = None  # first step of the current run of good (success-condition) steps
        self._inserted_now = False
        self._last_inserted: int | None = None
        self._first_aligned: int | None = None
        self._nearest_axis = (math.inf, None)
        self._depth = self._lateral = math.nan

    def update(self, sim, reward: float | None = None, action=None) -> None:
        """Record the state after the latest ``sim.step`` (``action`` is not needed here)."""
        grips = sim.gripper_positions()
        peg, socket = sim.peg_pose(), sim.socket_pose()
        reach = {
            "peg": float(np.linalg.norm(grips["right"] - peg[:3])),
            "socket": float(np.linalg.norm(grips["left"] - socket[:3])),
        }
        self.observe(peg, socket, sim.object_contacts(), reward if reward is not None else sim.reward(), reach=reach)

    def observe(self, peg_pose, socket_pose, contacts, reward: float = 0.0, *, reach=None) -> None:
        """One control step: the two poses (xyz + wxyz), ``InsertionSim.object_contacts()``, the reward,
        and optionally each gripper's grasp point distance to its object (``{"peg": m, "socket": m}``)."""
        step = self.steps
        poses = {"peg": np.asarray(peg_pose, float), "socket": np.asarray(socket_pose, float)}
        for name, o in self._obj.items():
            arm = ARM[name]
            fingers = (contacts[f"{name}_{arm}_left_finger"], contacts[f"{name}_{arm}_right_finger"])
            o.observe(step, fingers, contacts[f"{name}_table"], float(poses[name][2]), REST_Z[name],
                      None if reach is None else reach[name])
        depth, lateral, angle = fit(poses["peg"], poses["socket"])
        self._depth, self._lateral = depth, lateral
        on_axis = lateral <= MAX_LATERAL and angle <= MAX_ANGLE
        inserted = on_axis and depth >= MIN_DEPTH
        both_lifted = self._obj["peg"].lifted_now and self._obj["socket"].lifted_now
        aligned = both_lifted and on_axis and depth >= ALIGN_DEPTH
        if inserted:
            self._last_inserted = step
        self._inserted_now = inserted
        if aligned and self._first_aligned is None:
            self._first_aligned = step
        if both_lifted and lateral < self._nearest_axis[0]:
            self._nearest_axis = (lateral, step)
        held_both = self._obj["peg"].run is not None and self._obj["socket"].run is not None
        good = inserted and held_both and not contacts["peg_table"] and not contacts["socket_table"]
        self._good_run = (step if self._good_run is None else self._good_run) if good else None
        reached = (self._obj["peg"].held, self._obj["socket"].held, both_lifted, aligned, inserted and both_lifted)
        start = self.stage
        while self.stage < len(reached) and reached[self.stage]:
            self.stage += 1
        if self.stage != start:
            self.stage_step = step
        self.max_reward = max(self.max_reward, float(reward))
        self.steps += 1

    # ---------------------------------------------------------------- verdict
    @property
    def success_step(self) -> int | None:
        return self._good_run

    @property
    def success(self) -> bool:
        return self._good_run is not None and self.steps - self._good_run >= self.window

    def _judge(self) -> tuple[str, int] | None:
        if self.success:
            return None
        last = max(self.steps - 1, 0)
        missed = []
        for o in self._obj.values():
            if not o.lifted_ever:
                missed.append(o.last_touch if o.last_touch is not None else o.closest[1])
        if missed:
            return "missed_grasp", min(missed)
        dropped = [o.last_lifted for o in self._obj.values() if not o.lifted_now]
        if dropped:
            return "dropped", min(dropped)
        if self._inserted_now:
            return "timed_out", last
        if self._last_inserted is not None:
            return "pulled_out", min(self._last_inserted + 1, last)
        if self._first_aligned is not None:
            return "never_inserted", self._first_aligned
        return "never_aligned", self._nearest_axis[1] if self._nearest_axis[1] is not None else last

    def result(self) -> InsertionResult:
        judged = self._judge()
        return InsertionResult(
            success=self.success, success_step=self.success_step, max_reward=self.max_reward,
            failure_step=None if judged is None else judged[1], failure_reason=None if judged is None else judged[0],
            final_depth=float(self._depth), final_lateral=float(self._lateral), steps=self.steps,
            stage=self.stage, stage_step=self.stage_step,
        )
