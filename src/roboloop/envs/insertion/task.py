"""The insertion task as a task object (the protocol ``roboloop.envs.task.Task``): what every stage
needs to collect, evaluate and analyze insertion episodes without importing this package's modules.
Every member delegates to the module that defines it.

``INSERTION`` is the instance a registry lists under the name ``insertion``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from roboloop import schema
from roboloop.envs.aloha.env import CAMERAS
from roboloop.envs.aloha.recording import default_blueprint

from .conditions import AXES, START_COLUMNS, InsertionConditions, start_state
from .demonstrator import ScriptedInsertion
from .env import InsertionSim, sample_poses
from .recording import InsertionEpisodeWriter, outcome_markdown
from .success import CLASSIFIER_VERSION, INSERTION_FAILURE_KINDS, InsertionResult, InsertionTracker

__all__ = ["INSERTION", "InsertionTask"]


class InsertionTask:
    """Bimanual peg-in-socket (gym-aloha ``AlohaInsertion-v0``) on the task protocol."""

    name = "insertion"
    description = "ALOHA bimanual: the right arm's peg goes into the socket the left arm holds, both lifted off the table"
    vocabulary = AXES
    appearance_axes: tuple[str, ...] = ("lighting", "table")
    conditions_type = InsertionConditions
    start_columns: tuple[str, ...] = START_COLUMNS
    cameras: tuple[str, ...] = tuple(CAMERAS)
    stages: tuple[str, ...] = schema.INSERTION_STAGES
    failure_kinds: Mapping[str, str] = INSERTION_FAILURE_KINDS
    classifier_version: int = CLASSIFIER_VERSION
    episode_steps: int = InsertionSim.max_steps
    control_hz: int = InsertionSim.control_hz
    policy_state: tuple[str, ...] = (schema.JOINT_POSITIONS, schema.PEG_POSE, schema.SOCKET_POSE)

    def __repr__(self) -> str:
        return f"InsertionTask(name={self.name!r})"

    def conditions(self, cell: Mapping[str, Any] | None = None) -> InsertionConditions:
        """A cell (axis -> label; axes it leaves out keep their defaults) -> the conditions."""
        return InsertionConditions.from_cell(cell or {})

    def conditions_from_dict(self, values: Mapping[str, Any]) -> InsertionConditions:
        """Conditions back from stored ``scene`` properties (other keys ignored)."""
        return InsertionConditions.from_dict(values)

    def start_state(self, seed: int, conditions: InsertionConditions) -> dict[str, float]:
        """The sampled peg and socket poses of (seed, conditions) as ``scene`` numbers (without simulating)."""
        return start_state(*sample_poses(seed, conditions))

    def scene_properties(self, conditions: InsertionConditions, seed: int | None = None) -> dict[str, Any]:
        """The ``scene`` group: every condition label and what it means, plus (with a seed) the start state."""
        props = conditions.to_dict()
        if seed is not None:
            props.update(self.start_state(seed, conditions))
        return props

    def make_sim(self, cameras: Sequence[str] = (), width: int = 320, height: int = 240) -> InsertionSim:
        return InsertionSim(cameras=cameras, width=width, height=height)

    def tracker(self) -> InsertionTracker:
        return InsertionTracker()

    def outcome_properties(self, outcome: InsertionResult) -> dict[str, Any]:
        """The task's own ``outcome`` properties: the peg's final depth and lateral offset in the socket (m)."""
        return {schema.OUTCOME_FINAL_DEPTH: float(outcome.final_depth), schema.OUTCOME_FINAL_LATERAL: float(outcome.final_lateral)}

    def expert(self, sim: InsertionSim) -> ScriptedInsertion:
        """The scripted insertion; it re-plans from the sim at every ``reset()`` (call it after ``sim.reset``)."""
        return ScriptedInsertion(sim)

    def snapshot(self, sim: InsertionSim) -> dict[str, np.ndarray]:
        """The state before an action: joint positions and both object poses, by entity path."""
        return {schema.JOINT_POSITIONS: sim.joint_positions(), **sim.state()}

    def writer(self, recorder, spec, sim: InsertionSim) -> InsertionEpisodeWriter:
        return InsertionEpisodeWriter(recorder, spec, sim)

    def blueprint(self, cameras: Sequence[str]):
        """Transfer cube's layout: 3D scene and cameras on top, joints and text below."""
        return default_blueprint(cameras)

    def markdown(self, properties: Mapping[str, Mapping[str, Any]]) -> str:
        return outcome_markdown(properties)


INSERTION = InsertionTask()
"""The insertion task (registered as ``insertion``)."""
