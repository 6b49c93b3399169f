"""The ALOHA transfer cube as a :class:`~roboloop.envs.task.Task`: the right arm picks up the cube and
hands it to the left arm, which holds it off the table to the end.

Every member delegates to the modules that define it (nothing here changes a result):
conditions and vocabulary (``conditions.py``), the simulator (``env.py``), the scripted
handover (``demonstrator.py``), strict success, stages and failure kinds (``success.py``),
the episode's streams and blueprint (``recording.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from roboloop import schema
from roboloop.envs.aloha.conditions import (
    APPEARANCE_AXES,
    AXES,
    START_COLUMNS,
    SceneConditions,
    start_state,
    yaw_preset,
)
from roboloop.envs.aloha.demonstrator import CorrectiveHandover, ScriptedHandover
from roboloop.envs.aloha.env import CAMERAS, AlohaSim, sample_cube_pose
from roboloop.envs.aloha.recording import AlohaEpisodeWriter, default_blueprint, outcome_markdown
from roboloop.envs.aloha.success import CLASSIFIER_VERSION, SuccessResult, SuccessTracker

__all__ = ["FAILURE_KIND_NAMES", "LEGACY_FAILURE_KINDS", "TRANSFER_CUBE", "HandoverExpert", "TransferCube", "TransferCubeWriter"]

LEGACY_FAILURE_KINDS = ("never_touched", "not_lifted")
"""Kinds only the first classifier wrote (still readable through `schema.FAILURE_KINDS`, re-judged by `reoutcome`)."""

FAILURE_KIND_NAMES = ("closed_on_air", "knocked_away", "dropped", "not_handed_over", "timed_out", "never_reached", "missed_grasp", "unstable")
"""The kinds the current handover classifier (``success.py``) judges (``schema.FAILURE_KINDS`` also holds other tasks' kinds)."""


class HandoverExpert:
    """The scripted handover (:class:`ScriptedHandover`, or `planner`, e.g. :class:`CorrectiveHandover`) as an
    expert: it plans from the sim's state at each ``reset`` (built on the first one, after the sim's first ``reset``)."""

    def __init__(self, sim: AlohaSim, planner: type[ScriptedHandover] = ScriptedHandover) -> None:
        self.sim = sim
        self.planner = planner
        self.policy_id: str = planner.policy_id
        self._demo: ScriptedHandover | None = None

    def reset(self) -> None:
        if self._demo is None:
            self._demo = self.planner(self.sim)  # plans from the sim's current state
        else:
            self._demo.reset()

    def action(self, step: int, observation: Any = None) -> np.ndarray:
        if self._demo is None:
            raise RuntimeError("call reset() after sim.reset() before asking for actions")
        return self._demo.action(step)


class TransferCubeWriter:
    """The task's :class:`~roboloop.envs.task.EpisodeWriter`: :class:`AlohaEpisodeWriter` fed from the sim."""

    def __init__(self, recorder: Any, spec: Any, sim: AlohaSim) -> None:
        self.inner = AlohaEpisodeWriter(recorder, spec, joint_names=sim.joint_names, geometry=sim.geometry(),
                                        static_poses=sim.static_poses(), task=sim.task)

    def observe_scene(self, step: int, sim: AlohaSim) -> None:
        self.inner.observe_scene(step, sim.link_poses(), sim.cube_pose())

    def observe(self, step: int, state: Mapping[str, np.ndarray], action: np.ndarray, reward: float,
                images: Mapping[str, np.ndarray]) -> None:
        self.inner.observe(step, state[schema.JOINT_POSITIONS], action, reward, state[schema.CUBE_POSE], images)

    def finish(self, properties: Mapping[str, Mapping[str, Any]]) -> None:
        self.inner.finish(properties)


@dataclasses.dataclass(frozen=True, repr=False)
class TransferCube:
    """The transfer-cube task (module docstring); ``TRANSFER_CUBE`` is the registered instance."""

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
        return f"TransferCube(name={self.name!r})"

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

    def make_sim(self, cameras: Sequence[str] = (), width: int = 320, height: int = 240) -> AlohaSim:
        return AlohaSim(task=self.name, cameras=cameras, width=width, height=height)

    def tracker(self) -> SuccessTracker:
        return SuccessTracker()

    def outcome_properties(self, outcome: SuccessResult) -> dict[str, Any]:
        return {schema.OUTCOME_FINAL_CUBE_Z: float(outcome.final_cube_z)}

    def expert(self, sim: AlohaSim) -> HandoverExpert:
        return HandoverExpert(sim)

    def corrective_expert(self, sim: AlohaSim) -> HandoverExpert:
        """The handover that acts from any state (:class:`CorrectiveHandover`): re-plans when the cube moved, re-grasps."""
        return HandoverExpert(sim, CorrectiveHandover)

    def snapshot(self, sim: AlohaSim) -> dict[str, np.ndarray]:
        return {schema.JOINT_POSITIONS: sim.joint_positions(), schema.CUBE_POSE: sim.cube_pose()}

    def writer(self, recorder: Any, spec: Any, sim: AlohaSim) -> TransferCubeWriter:
        return TransferCubeWriter(recorder, spec, sim)

    def blueprint(self, cameras: Sequence[str]):
        return default_blueprint(cameras)

    def markdown(self, properties: Mapping[str, Mapping[str, Any]]) -> str:
        return outcome_markdown(properties)


TRANSFER_CUBE = TransferCube()
"""The registered transfer-cube task."""
