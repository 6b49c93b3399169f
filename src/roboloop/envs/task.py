"""The task protocol: what a task gives every stage of the loop.

A **task** is what the robot does, under which conditions, and how it is judged: the ALOHA
transfer cube (:mod:`roboloop.envs.aloha.task`) is the first one. Stages never import a
task's modules; they ask the registry (:func:`roboloop.envs.get_task`) for the task an
episode, a collect or an evaluation cell names (``episode.task``) and use only the members
below. A task object is cheap to build and holds no simulator: :meth:`Task.make_sim`
builds one (in the process that runs episodes).

Members, and who uses them:

* ``name``: the registry key, stored as ``episode.task`` in every episode it records.
* ``vocabulary``: its condition axes, labels, aliases and canonical cell keys
  (:class:`~roboloop.envs.conditions.Vocabulary`): grids, plans, gaps and the collect CLI
  validate a cell with the vocabulary of the cell's task.
* ``conditions_type`` and :meth:`Task.conditions`: the task's conditions object (frozen,
  with ``to_dict``/``from_dict`` round-tripping exactly) and how a cell (axis -> label; axes it
  does not name keep their defaults) becomes one.
* :meth:`Task.start_state` and ``start_columns``: the sampled start state as numbers
  (``scene.*`` properties), a pure function of (seed, conditions); coverage is measured on it.
  :meth:`Task.scene_properties` is the whole ``scene`` group an episode stores.
* :meth:`Task.make_sim`: a simulator (:class:`Sim`) rendering exactly the listed ``cameras``
  (a subset of the task's ``cameras``) at one size; ``episode_steps`` and ``control_hz`` give
  an episode's length and rate.
* :meth:`Task.tracker`: strict success with ordered ``stages`` (partial credit: the
  furthest stage's index) and ``failure_kinds`` (kind -> words), each failure with its moment
  (:class:`Tracker`); ``classifier_version`` is stored with every verdict so newer code can
  re-judge older ones.
* :meth:`Task.expert`: a scripted expert acting from the current state (the default
  demonstrator), or None when the task has none.
* ``corrective_expert(sim)`` (optional, see :func:`corrective_expert`): an expert that can label ANY
  state a policy drives into (``roboloop collect --corrective``): asked at every step, it re-plans from
  the objects' current poses and recovers from a failed grasp. A task without it has no corrective
  collection.
* :meth:`Task.snapshot` and :meth:`Task.writer`: what a policy and the recording see before
  each action (entity path -> values), and the episode writer that records the streams, the
  3D scene and the cameras (:class:`EpisodeWriter`); :meth:`Task.blueprint` the dataset's
  default viewer layout; ``policy_state`` the snapshot paths a state policy reads by default.

The members from ``name`` to :meth:`Task.scene_properties` are the task's *description*
(:class:`TaskSpec`): an analysis that needs nothing else (``roboloop gaps``, plans) asks for it with
:func:`roboloop.envs.get_task_spec`, which for a built-in task imports no simulator or recording code.

Register a task with :func:`roboloop.envs.register_task` or the entry point group
``roboloop.tasks`` (``name = "mypkg.tasks:MyTask"``, a class built without arguments or an
instance).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from roboloop.envs.conditions import Vocabulary

__all__ = ["EpisodeWriter", "Expert", "Outcome", "Sim", "Task", "TaskSpec", "Tracker", "corrective_expert", "has_corrective_expert"]


class Sim(Protocol):
    """A task's simulator, as the episode runner drives it (one episode at a time, deterministic
    in (seed, conditions): the same seed gives bit-identical joints and images)."""

    task: str
    """The name of the task it simulates (``Task.name``)."""
    cameras: tuple[str, ...]
    """The cameras :meth:`render` may render (``()``: physics only)."""
    width: int
    height: int
    max_steps: int
    """Control steps of one episode."""

    def reset(self, seed: int, conditions: Any) -> None:
        """Start an episode: the start state sampled from `conditions` with `seed`."""

    def step(self, action: np.ndarray) -> float:
        """Apply one control step's action; the simulator's own reward."""

    def render(self, camera: str) -> np.ndarray:
        """An RGB frame (height x width x 3, uint8) of `camera`."""

    def joint_positions(self) -> np.ndarray:
        """The robot's joint positions now."""

    def close(self) -> None:
        """Free the simulator (GL context, model)."""


class Outcome(Protocol):
    """What a :class:`Tracker` judged about one episode."""

    success: bool
    """Strict success."""
    stage: int
    """Index into ``Task.stages`` of the furthest stage reached (0: none)."""
    max_reward: float
    """The simulator's highest reward seen."""
    success_step: int | None
    """First step of the final run of steps that made it a success; None if the last step did not."""
    failure_reason: str | None
    """The failure kind (a key of ``Task.failure_kinds``); None on success."""
    failure_step: int | None
    """The moment it went wrong (a control step); None on success."""


class Tracker(Protocol):
    """Judges one episode, fed once per control step after ``sim.step``."""

    def update(self, sim: Sim, reward: float | None = None, action: np.ndarray | None = None) -> None:
        """Observe the state after a step, with the reward the step returned and the action applied."""

    def result(self) -> Outcome:
        """The verdict so far (final after the last step)."""


class Expert(Protocol):
    """A scripted expert: acts from the simulator's current state (it may re-plan at any step)."""

    policy_id: str
    """Stored as ``episode.policy`` (e.g. ``scripted-handover-v1``)."""

    def reset(self) -> None:
        """Called after every ``sim.reset``: plan from the new start state."""

    def action(self, step: int, observation: Any) -> np.ndarray:
        """The action of control step `step` (the runner's observation; an expert may read the sim instead)."""


class EpisodeWriter(Protocol):
    """Turns what the runner observes into one episode's streams (inside an ``EpisodeRecorder``)."""

    def observe_scene(self, step: int, sim: Sim) -> None:
        """Record the 3D scene (robot links, objects) at `step`, before the action; called on ``spec.scene_step(step)``."""

    def observe(self, step: int, state: Mapping[str, np.ndarray], action: np.ndarray, reward: float,
                images: Mapping[str, np.ndarray]) -> None:
        """Record step `step`: the state before acting (:meth:`Task.snapshot`), the action, the reward
        the step returned, and the camera frames rendered before acting (empty off camera steps)."""

    def finish(self, properties: Mapping[str, Mapping[str, Any]]) -> None:
        """Write the episode's property groups and close its streams (before the recorder closes)."""


@runtime_checkable
class TaskSpec(Protocol):
    """What a task is, described: its names, condition axes, start states, cameras, stages and failure kinds; nothing
    that simulates, acts or records. An analysis that needs only these (`roboloop gaps`, plans) asks the registry for
    the description (:func:`roboloop.envs.get_task_spec`): a built-in task's loads none of its recording code."""

    name: str
    """Registry key and ``episode.task``."""
    description: str
    """One line for ``roboloop tasks``."""
    vocabulary: Vocabulary
    """Condition axes with labels, aliases and cell keys."""
    appearance_axes: tuple[str, ...]
    """Axes that change what a camera sees but not the start state (coverage matches them as labels)."""
    conditions_type: type
    """The conditions class: frozen, default-constructible, ``to_dict``/``from_dict`` exact (a collect config
    stores it), a ``label`` property (readable, for the CLI) and optionally a ``from_names(**labels)``
    classmethod (``roboloop collect --region ...`` uses it when present, else :meth:`conditions`)."""
    start_columns: tuple[str, ...]
    """Friendly columns (``scene.<name>``) of the start state, in :meth:`start_state` order; the first three
    are the x, y (m) and yaw (deg) of the object coverage is measured on (``roboloop gaps``)."""
    cameras: tuple[str, ...]
    """Cameras the task can render."""
    stages: tuple[str, ...]
    """Ordered stages for partial credit (index 0 means none reached)."""
    failure_kinds: Mapping[str, str]
    """Failure kind -> the kind in words."""
    classifier_version: int
    """Version of the success judgement (``outcome.classifier``)."""
    episode_steps: int
    """Control steps per episode."""
    control_hz: int
    """Control rate (Hz)."""
    policy_state: tuple[str, ...]
    """The entity paths (keys of :meth:`snapshot`) a state-based policy reads by default, in order:
    ``roboloop train`` without ``--state`` feeds the policy these when its own ``default_state``
    names a path the task does not have (transfer cube: joints + cube pose; insertion: joints +
    peg pose + socket pose)."""

    def conditions(self, cell: Mapping[str, Any] | None = None) -> Any:
        """The conditions of a cell (axis -> label, checked by the vocabulary; ValueError naming the axis)."""

    def conditions_from_dict(self, values: Mapping[str, Any]) -> Any:
        """Conditions back from stored ``scene`` properties (unknown keys ignored)."""

    def start_state(self, seed: int, conditions: Any) -> dict[str, float]:
        """The start state the simulator samples for (seed, conditions), as named numbers."""

    def scene_properties(self, conditions: Any, seed: int) -> dict[str, Any]:
        """The ``scene`` property group of an episode: every condition (canonical labels) and the start state."""


@runtime_checkable
class Task(TaskSpec, Protocol):
    """A task (module docstring): everything a stage needs to collect, evaluate and analyze it (its description,
    :class:`TaskSpec`, and what runs and records it)."""

    def make_sim(self, cameras: Sequence[str] = (), width: int = 320, height: int = 240) -> Sim:
        """A simulator rendering exactly `cameras` at width x height (no camera: physics only)."""

    def tracker(self) -> Tracker:
        """A fresh success tracker for one episode."""

    def outcome_properties(self, outcome: Outcome) -> dict[str, Any]:
        """Task-specific ``outcome`` properties (e.g. ``final_cube_z``) beyond the common ones."""

    def expert(self, sim: Sim) -> Expert | None:
        """The scripted expert driving `sim`, or None."""

    def snapshot(self, sim: Sim) -> dict[str, np.ndarray]:
        """The state before an action, by entity path (joint positions, object poses)."""

    def writer(self, recorder: Any, spec: Any, sim: Sim) -> EpisodeWriter:
        """The writer of one episode recorded with `spec` from `sim`."""

    def blueprint(self, cameras: Sequence[str]) -> Any:
        """The default viewer blueprint of a dataset recorded with `cameras`."""

    def markdown(self, properties: Mapping[str, Mapping[str, Any]]) -> str:
        """The outcome note (markdown) stored with an episode, from its property groups."""


def corrective_expert(task: Any, sim: Sim) -> Expert | None:
    """The task's corrective expert for `sim` (its optional ``corrective_expert(sim)`` member), or None.

    A corrective expert has the :class:`Expert` members and is asked for its action at EVERY control step
    (also while a policy is in control), so it must act from the simulator's current state: the step
    index only keeps its schedule. Transfer cube's is :class:`~roboloop.envs.aloha.demonstrator.CorrectiveHandover`.
    """
    return task.corrective_expert(sim) if has_corrective_expert(task) else None


def has_corrective_expert(task: Any) -> bool:
    """Whether `task` has the optional corrective expert (a callable ``corrective_expert`` member)."""
    return callable(getattr(task, "corrective_expert", None))
