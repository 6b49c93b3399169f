"""The ALOHA transfer cube as a :class:`~roboloop.envs.task.Task`: the right arm picks up the cube and
hands it to the left arm, which holds it off the table to the end.

The task is its description (:class:`~roboloop.envs.aloha.spec.TransferCubeSpec`: conditions, vocabulary, start
states, stages) plus what runs and records it. Every member delegates to the modules that define it (nothing here
changes a result): the simulator (``env.py``), the scripted handover (``demonstrator.py``), strict success
(``success.py``), the episode's streams and blueprint (``recording.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from roboloop import schema
from roboloop.envs.aloha.demonstrator import CorrectiveHandover, ScriptedHandover
from roboloop.envs.aloha.env import AlohaSim
from roboloop.envs.aloha.recording import AlohaEpisodeWriter, default_blueprint, outcome_markdown
from roboloop.envs.aloha.spec import TransferCubeSpec
from roboloop.envs.aloha.success import SuccessResult, SuccessTracker

__all__ = ["TRANSFER_CUBE", "HandoverExpert", "TransferCube", "TransferCubeWriter"]


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
class TransferCube(TransferCubeSpec):
    """The transfer-cube task (module docstring); ``TRANSFER_CUBE`` is the registered instance."""

    def __repr__(self) -> str:
        return f"TransferCube(name={self.name!r})"

    def make_sim(self, cameras: Sequence[str] = (), width: int = 320, height: int = 240) -> AlohaSim:
        # the simulator carries this task's registry name (what collect looks the task up by), so a subclass
        # registered under a name of its own runs on transfer cube's simulator
        sim = AlohaSim(cameras=cameras, width=width, height=height)
        sim.task = self.name
        return sim

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
