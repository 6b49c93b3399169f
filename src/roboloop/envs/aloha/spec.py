"""The transfer cube as described (its :class:`~roboloop.envs.task.TaskSpec`): names, condition axes, start states,
cameras, stages and failure kinds, without the code that simulates, demonstrates or records it.

What an analysis needs of the task (`roboloop gaps`: the vocabulary, the start-state columns, the appearance axes;
plans: conditions) comes from here through :func:`roboloop.envs.get_task_spec`, so it loads no recording code
(rerun, video). :class:`~roboloop.envs.aloha.task.TransferCube`, the task itself, is this description plus its
simulator, expert, tracker and writer. Nothing here changes a result: every member delegates to the module that
defines it (``conditions.py``, ``env.py``'s start-state sampler, ``success.py``'s classifier version).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from roboloop import schema
from roboloop.envs.aloha.conditions import APPEARANCE_AXES, AXES, START_COLUMNS, SceneConditions, start_state, yaw_preset
from roboloop.envs.aloha.env import CAMERAS, AlohaSim, sample_cube_pose
from roboloop.envs.aloha.success import CLASSIFIER_VERSION

__all__ = ["FAILURE_KIND_NAMES", "LEGACY_FAILURE_KINDS", "TRANSFER_CUBE_SPEC", "TransferCubeSpec"]

LEGACY_FAILURE_KINDS = ("never_touched", "not_lifted")
"""Kinds only the first classifier wrote (still readable through `schema.FAILURE_KINDS`, re-judged by `reoutcome`)."""

FAILURE_KIND_NAMES = ("closed_on_air", "knocked_away", "dropped", "not_handed_over", "timed_out", "never_reached", "missed_grasp", "unstable")
"""The kinds the current handover classifier (``success.py``) judges (``schema.FAILURE_KINDS`` also holds other tasks' kinds)."""


@dataclasses.dataclass(frozen=True, repr=False)
class TransferCubeSpec:
    """The transfer cube's description (module docstring); ``TRANSFER_CUBE_SPEC`` is the registry's."""

    name: str = "transfer_cube"
    description: str = "ALOHA bimanual: the right arm picks up the cube and hands it to the left arm, which holds it up"
    vocabulary = AXES
    appearance_axes: tuple[str, ...] = APPEARANCE_AXES
    conditions_type = SceneConditions
    start_columns: tuple[str, ...] = START_COLUMNS
    cameras: tuple[str, ...] = CAMERAS
    stages: tuple[str, ...] = schema.STAGES
    failure_kinds: Mapping[str, str] = dataclasses.field(
        default_factory=lambda: {k: schema.FAILURE_KINDS[k] for k in FAILURE_KIND_NAMES})
    classifier_version: int = CLASSIFIER_VERSION
    episode_steps: int = AlohaSim.max_steps
    control_hz: int = AlohaSim.control_hz
    policy_state: tuple[str, ...] = (schema.JOINT_POSITIONS, schema.CUBE_POSE)

    def __repr__(self) -> str:
        return f"TransferCubeSpec(name={self.name!r})"

    def conditions(self, cell: Mapping[str, Any] | None = None) -> SceneConditions:
        return SceneConditions.from_names(**{a: self.vocabulary.canonical(a, v) for a, v in (cell or {}).items()})

    def conditions_from_dict(self, values: Mapping[str, Any]) -> SceneConditions:
        names = {f.name for f in dataclasses.fields(SceneConditions)}
        return SceneConditions.from_dict({k: v for k, v in values.items() if k in names and v is not None})

    def start_state(self, seed: int, conditions: SceneConditions) -> dict[str, float]:
        return start_state(sample_cube_pose(seed, conditions))

    def scene_properties(self, conditions: SceneConditions, seed: int | None = None) -> dict[str, Any]:
        """Every SceneConditions field, the region's readable label, the yaw preset ("custom" if none) and,
        with a seed, the start state (``cube_x``, ``cube_y`` in m, ``cube_yaw_deg``)."""
        props = conditions.to_dict()
        props[schema.SCENE_REGION_LABEL] = conditions.region_label
        props[schema.SCENE_YAW] = yaw_preset(conditions.yaw_min, conditions.yaw_max) or "custom"
        if seed is not None:
            props.update(self.start_state(seed, conditions))
        return props


TRANSFER_CUBE_SPEC = TransferCubeSpec()
"""The registered transfer cube's description."""
