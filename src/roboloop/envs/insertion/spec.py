"""The insertion task as described (its :class:`~roboloop.envs.task.TaskSpec`): names, condition axes, start
states, cameras, stages and failure kinds, without the code that simulates, demonstrates or records it.

:func:`roboloop.envs.get_task_spec` gives it to analyses (`roboloop gaps`, plans), which then load no recording
code; :class:`~roboloop.envs.insertion.task.InsertionTask` is this description plus its simulator, expert,
tracker and writer. Every member delegates to the module that defines it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from roboloop import schema
from roboloop.envs.aloha.env import CAMERAS

from .conditions import AXES, START_COLUMNS, InsertionConditions, start_state
from .env import InsertionSim, sample_poses
from .success import CLASSIFIER_VERSION, INSERTION_FAILURE_KINDS

__all__ = ["INSERTION_SPEC", "InsertionSpec"]


class InsertionSpec:
    """Bimanual peg-in-socket (gym-aloha ``AlohaInsertion-v0``), described (module docstring)."""

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
        return f"InsertionSpec(name={self.name!r})"

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


INSERTION_SPEC = InsertionSpec()
"""The registered insertion task's description."""
