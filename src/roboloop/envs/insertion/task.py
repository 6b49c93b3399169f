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
from roboloop.envs.aloha.recording import default_blueprint

from .demonstrator import ScriptedInsertion
from .env import InsertionSim
from .recording import InsertionEpisodeWriter, outcome_markdown
from .spec import InsertionSpec
from .success import InsertionResult, InsertionTracker

__all__ = ["INSERTION", "InsertionTask"]


class InsertionTask(InsertionSpec):
    """Bimanual peg-in-socket (gym-aloha ``AlohaInsertion-v0``) on the task protocol: its description
    (:class:`~roboloop.envs.insertion.spec.InsertionSpec`) plus what runs and records it."""

    def __repr__(self) -> str:
        return f"InsertionTask(name={self.name!r})"

    def make_sim(self, cameras: Sequence[str] = (), width: int = 320, height: int = 240) -> InsertionSim:
        sim = InsertionSim(cameras=cameras, width=width, height=height)
        sim.task = self.name  # this task's registry name, also for a subclass registered under its own name
        return sim

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
