"""What an insertion episode recording contains: transfer cube's conventions
(:mod:`roboloop.envs.aloha.recording`: joint streams, reward, H.264 cameras, 3D scene, task and
outcome text, the same default blueprint), with the peg and the socket in place of the cube:

=============================  =====================  ============================================
entity                         rate                   content
=============================  =====================  ============================================
``/state/peg_pose``            control (50 Hz)        peg [x, y, z, qw, qx, qy, qz]
``/state/socket_pose``         control (50 Hz)        socket [x, y, z, qw, qx, qy, qz]
``/scene/peg``                 scene (25 Hz)          ``Transform3D`` world pose + static ``Boxes3D``
``/scene/socket``              scene (25 Hz)          ``Transform3D`` world pose + static ``Boxes3D`` (the tube's outline)
=============================  =====================  ============================================

It receives what the runner observes; it reads link and object poses from the simulator only on
scene steps (:meth:`InsertionEpisodeWriter.observe_scene`). Time convention as transfer cube's: at control step ``k`` (time ``k * dt``) the joint positions,
object poses and frames are observed before acting, the target is the action, the reward is what
that action earned.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from roboloop import schema
from roboloop.envs.aloha.recording import AlohaEpisodeWriter

__all__ = ["InsertionEpisodeWriter", "TASK_TEXT", "outcome_markdown"]

TASK_TEXT = (
    "# Insertion\n\n"
    "ALOHA bimanual (MuJoCo). The **right** arm picks up the red peg, the **left** arm the blue socket; "
    "both lift them, meet above the table, and the peg goes into the socket, which both arms keep holding "
    "until the end of the episode."
)


class InsertionEpisodeWriter(AlohaEpisodeWriter):
    """Build one insertion episode's streams into an :class:`~roboloop.record.episode.EpisodeRecorder`
    (the task protocol's ``EpisodeWriter``).

    ``InsertionEpisodeWriter(recorder, spec, sim)``; per control step :meth:`observe` with the state
    before acting (``InsertionTask.snapshot(sim)``: joint positions and object poses by entity path),
    on ``spec.scene_step(step)`` :meth:`observe_scene`, then :meth:`finish`.
    """

    OBJECTS = {"peg": (schema.PEG_POSE, schema.PEG_3D), "socket": (schema.SOCKET_POSE, schema.SOCKET_3D)}

    def __init__(self, recorder, spec, sim) -> None:
        super().__init__(recorder, spec, joint_names=sim.joint_names, geometry=sim.geometry(),
                         static_poses=sim.static_poses(), task=sim.task)
        self.task_text = TASK_TEXT

    def observe(  # type: ignore[override]
        self,
        step: int,
        state: Mapping[str, np.ndarray],
        action: np.ndarray,
        reward: float,
        images: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Record control step `step`: joints and object poses (`state`, by entity path), the action,
        the reward it earned, camera frames."""
        t = step * self.dt
        self.rec.append_scalars(schema.JOINT_POSITIONS, t, state[schema.JOINT_POSITIONS])
        self.rec.append_scalars(schema.JOINT_TARGETS, t, action)
        self.rec.append_scalars(schema.REWARD, t, [reward])
        for entity, _ in self.OBJECTS.values():
            self.rec.append_scalars(entity, t, state[entity])
        self.encode(t, images)

    def observe_scene(self, step: int, sim) -> None:  # type: ignore[override]
        """Record the 3D scene at `step`: the robot links and both objects, read from `sim`."""
        poses = dict(sim.link_poses())
        poses.update({name: (pose[:3], pose[3:]) for name, pose in sim.object_poses().items()})
        self.add_scene_poses(step, poses)

    def outcome_text(self, properties: Mapping[str, Mapping[str, Any]]) -> str:
        return outcome_markdown(properties)


def outcome_markdown(properties: Mapping[str, Mapping[str, Any]]) -> str:
    """Readable summary of an insertion episode: verdict, failure kind and moment, stage, cell, start state."""
    ep, sc, out = (properties.get(g, {}) for g in (schema.EPISODE, schema.SCENE, schema.OUTCOME))
    success = bool(out.get(schema.OUTCOME_SUCCESS))
    lines = ["# SUCCESS" if success else "# FAILURE", ""]
    if not success:
        kind = str(out.get(schema.OUTCOME_FAILURE_REASON, "?"))
        t = out.get(schema.OUTCOME_FAILURE_TIME_S)
        at = f"at **{float(t):.2f} s** (step {out.get(schema.OUTCOME_FAILURE_STEP, -1)})" if t is not None and t >= 0 else "(no moment)"
        lines += [f"**{schema.FAILURE_KINDS.get(kind, kind)}** {at}", ""]
    start = ", ".join(
        f"{k} {float(sc[k]):.3f}" for k in ("peg_x", "peg_y", "peg_yaw_deg", "socket_x", "socket_y", "socket_yaw_deg") if k in sc
    )
    lines += [
        f"- cell: `{ep.get(schema.EPISODE_CELL, '')}`" if ep.get(schema.EPISODE_CELL) else "- scene: see below",
        f"- start: {start or '?'}",
        f"- kind: {ep.get(schema.EPISODE_KIND, '?')}, policy: `{ep.get(schema.EPISODE_POLICY, '?')}`, seed: {ep.get(schema.EPISODE_SEED, '?')}",
        f"- steps: {out.get(schema.OUTCOME_STEPS, '?')}, max reward: {out.get(schema.OUTCOME_MAX_REWARD, '?')}, "
        f"furthest stage: {out.get(schema.OUTCOME_STAGE_NAME, '?')}",
        "- " + ", ".join(f"{a}: {sc.get(a, '?')}" for a in ("peg_region", "socket_region", "yaw", "lighting", "table")),
    ]
    return "\n".join(lines) + "\n"
