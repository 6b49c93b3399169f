"""The insertion task as a task object (the protocol ``roboloop.envs.task.Task``): what every stage
needs to collect, evaluate and analyze insertion episodes without importing this package's modules.

``INSERTION`` is the instance a registry lists under the name ``insertion``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from roboloop import schema
from roboloop.envs.aloha.env import CAMERAS

from .conditions import AXES, START_COLUMNS, InsertionConditions, start_state
from .demonstrator import ScriptedInsertion
from .env import InsertionSim, sample_poses
from .recording import InsertionEpisodeWriter
from .success import CLASSIFIER_VERSION, INSERTION_FAILURE_KINDS, InsertionResult, InsertionTracker

__all__ = ["INSERTION", "InsertionTask"]


class InsertionTask:
    """Bimanual peg-in-socket (gym-aloha ``AlohaInsertion-v0``) on the task protocol."""

    name = "insertion"
    vocabulary = AXES
    cameras: tuple[str, ...] = tuple(CAMERAS)
    stages: tuple[str, ...] = schema.INSERTION_STAGES
    failure_kinds: Mapping[str, str] = INSERTION_FAILURE_KINDS
    episode_steps: int = InsertionSim.max_steps
    control_hz: int = InsertionSim.control_hz
    start_columns: tuple[str, ...] = START_COLUMNS
    """The ``scene.*`` columns of the start state (coverage is measured on them)."""
    expert_policy_id = ScriptedInsertion.policy_id

    def conditions(self, cell: Mapping[str, str]) -> InsertionConditions:
        """A cell (axis -> label; axes it leaves out keep their defaults) -> the conditions."""
        return InsertionConditions.from_cell(cell)

    def start_state(self, seed: int, conditions: InsertionConditions) -> dict[str, float]:
        """The sampled peg and socket poses of (seed, conditions) as ``scene`` numbers (without simulating)."""
        return start_state(*sample_poses(seed, conditions))

    def scene_properties(self, seed: int, conditions: InsertionConditions) -> dict[str, Any]:
        """The ``scene`` group: every condition label and what it means, plus the start state."""
        return {**conditions.to_dict(), **self.start_state(seed, conditions)}

    def make_sim(self, cameras: Sequence[str] = (), width: int = 320, height: int = 240) -> InsertionSim:
        return InsertionSim(cameras=cameras, width=width, height=height)

    def tracker(self) -> InsertionTracker:
        return InsertionTracker()

    def expert(self, sim: InsertionSim) -> ScriptedInsertion:
        return ScriptedInsertion(sim)

    def writer(self, recorder, spec, sim: InsertionSim) -> InsertionEpisodeWriter:
        return InsertionEpisodeWriter(
            recorder, spec, joint_names=sim.joint_names, geometry=sim.geometry(), static_poses=sim.static_poses(), task=self.name
        )

    def outcome_properties(self, res: InsertionResult, n_steps: int, dt: float) -> dict[str, Any]:
        """The ``outcome`` group of an episode from its result (as transfer cube's, with the final
        depth and lateral offset in place of the cube's height)."""
        failure_step = -1 if res.failure_step is None else int(res.failure_step)
        return {
            schema.OUTCOME_SUCCESS: bool(res.success),
            schema.OUTCOME_MAX_REWARD: float(res.max_reward),
            schema.OUTCOME_SUCCESS_STEP: -1 if res.success_step is None else int(res.success_step),
            schema.OUTCOME_STEPS: int(n_steps),
            schema.OUTCOME_DURATION_S: float(n_steps * dt),
            schema.OUTCOME_FAILURE_STEP: failure_step,
            schema.OUTCOME_FAILURE_REASON: res.failure_reason or "none",
            schema.OUTCOME_FINAL_DEPTH: float(res.final_depth),
            schema.OUTCOME_FINAL_LATERAL: float(res.final_lateral),
            schema.OUTCOME_STAGE: int(res.stage),
            schema.OUTCOME_STAGE_NAME: res.stage_name,
            schema.OUTCOME_FAILURE_TIME_S: failure_step * dt if failure_step >= 0 else -1.0,
            schema.OUTCOME_CLASSIFIER: int(CLASSIFIER_VERSION),
        }


INSERTION = InsertionTask()
"""The insertion task."""
