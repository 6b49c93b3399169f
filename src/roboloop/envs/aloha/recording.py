"""What an ALOHA episode recording contains, and the dataset's default blueprint.

:class:`AlohaEpisodeWriter` turns what an episode runner observes into the streams of
one :class:`~roboloop.record.episode.EpisodeRecorder`. It only receives data (from
``collect.run_episode``): joint names, scene geometry, static poses and the task at
construction, link/cube poses and camera frames per step; it never touches a simulator. Everything is logged on the ``time`` timeline (seconds since episode
start) at its own rate; nothing is resampled:

=============================  =====================  ============================================
entity                         rate                   content
=============================  =====================  ============================================
``/robot/joint_positions``     control (50 Hz)        14 measured joint positions (series names = joint names)
``/robot/joint_targets``       control (50 Hz)        14 commanded joint targets (the action)
``/reward``                    control (50 Hz)        gym-aloha's 0-4 contact reward
``/state/cube_pose``           control (50 Hz)        cube [x, y, z, qw, qx, qy, qz]
``/cameras/<name>``            camera (25 Hz)         H.264 ``VideoStream`` (keyframe every second)
``/scene/robot/<arm>/<link>``  scene (25 Hz)          ``Transform3D`` world pose + static ``Boxes3D``
``/scene/cube``                scene (25 Hz)          ``Transform3D`` world pose + static ``Boxes3D``
``/scene/static/<body>``       static                 table and distractors (transform + box)
``/task``                      static                 task text (markdown)
``/outcome``                   static                 outcome summary (markdown)
=============================  =====================  ============================================

Time convention at control step ``k`` (time ``k * dt``): joint positions, cube pose
and camera frames are the state *observed* before acting; the joint target is the
action chosen from that observation; the reward is the one that action earned (the
reward of the state reached at ``(k + 1) * dt``), as in a gym ``step``.
So every control-rate stream has exactly ``steps`` rows at ``0, dt, ..., (steps-1) dt``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rerun as rr
import rerun.blueprint as rrb

from roboloop import schema
from roboloop.config import Config, ConfigError, check
from roboloop.record.episode import APPLICATION_ID, EpisodeRecorder
from roboloop.video import H264Encoder
from roboloop.workspace import Workspace, atomic_path

TASK_TEXT = {
    "transfer_cube": (
        "# Transfer cube\n\n"
        "ALOHA bimanual (MuJoCo). The **right** arm picks up the red cube from the table and "
        "hands it over to the **left** arm, which must hold it off the table until the end of "
        "the episode."
    ),
}


@dataclass(frozen=True)
class RecordingSpec(Config):
    """What to record and at which rates (all rates must divide the control rate)."""

    cameras: tuple[str, ...] = ("top",)
    "Cameras to record (names from `schema.CAMERAS`), in this order."
    width: int = 320
    "Recorded camera width in pixels (even)."
    height: int = 240
    "Recorded camera height in pixels (even)."
    camera_hz: int = schema.CAMERA_HZ
    "Camera frame rate; must divide the control rate."
    scene_hz: int = schema.SCENE_HZ
    "Rate of the 3D scene poses; must divide the control rate."
    control_hz: int = schema.CONTROL_HZ
    "Control rate of the arms (joint state, targets, reward)."

    def __post_init__(self) -> None:
        if isinstance(self.cameras, str):
            object.__setattr__(self, "cameras", (self.cameras,))
        super().__post_init__()
        object.__setattr__(self, "cameras", tuple(self.cameras))
        for name in ("camera_hz", "scene_hz"):
            hz = getattr(self, name)
            if not isinstance(hz, int) or hz <= 0 or self.control_hz % hz:
                divisors = [d for d in range(1, self.control_hz + 1) if self.control_hz % d == 0]
                raise ConfigError(
                    f"{name} must divide the {self.control_hz} Hz control rate (frames are taken on control steps); "
                    f"got {hz!r}, valid: {', '.join(map(str, divisors))}"
                )
        check(
            not self.cameras or not (self.width % 2 or self.height % 2 or self.width <= 0 or self.height <= 0),
            f"camera size must be positive and even (H.264 yuv420p), got {self.width}x{self.height}",
        )
        max_w, max_h = schema.MAX_CAMERA_SIZE
        check(
            not self.cameras or (self.width <= max_w and self.height <= max_h),
            f"camera size must be within {max_w}x{max_h}, got {self.width}x{self.height}",
        )
        check(len(set(self.cameras)) == len(self.cameras), f"duplicate cameras in {self.cameras}")

    @property
    def dt(self) -> float:
        return 1.0 / self.control_hz

    @property
    def camera_every(self) -> int:
        """Control steps between two camera frames."""
        return self.control_hz // self.camera_hz

    @property
    def scene_every(self) -> int:
        """Control steps between two scene-pose samples."""
        return self.control_hz // self.scene_hz

    def camera_step(self, step: int) -> bool:
        return bool(self.cameras) and step % self.camera_every == 0

    def scene_step(self, step: int) -> bool:
        return step % self.scene_every == 0


def _rgba8(rgba: Sequence[float]) -> list[int]:
    return [int(round(float(np.clip(c, 0.0, 1.0)) * 255)) for c in rgba]


def _xyzw(quat_wxyz: np.ndarray) -> np.ndarray:
    q = np.asarray(quat_wxyz, dtype=np.float32)
    return q[..., [1, 2, 3, 0]]


@dataclass
class _PoseTrack:
    times: list[float] = field(default_factory=list)
    pos: list[np.ndarray] = field(default_factory=list)
    quat: list[np.ndarray] = field(default_factory=list)


class AlohaEpisodeWriter:
    """Build one ALOHA episode's streams into an :class:`EpisodeRecorder`.

    Call :meth:`observe` once per control step (in order, from step 0), :meth:`observe_scene`
    on ``spec.scene_step(step)``, then :meth:`finish` with the outcome before the recorder
    closes. Camera frames are passed in by the caller (who renders only on
    ``spec.camera_step(step)``) and encoded to H.264 as they arrive, so raw frames are never kept.

    ``geometry``: body name -> ``{"half_size", "center", "rgba"}`` boxes (robot links, the
    cube, static bodies); ``static_poses``: static body name -> (position, wxyz quaternion).

    Another task's writer subclasses it: :attr:`OBJECTS` names its objects (state stream, 3D entity)
    and :meth:`outcome_text` / ``task_text`` say what the text views show.
    """

    OBJECTS: Mapping[str, tuple[str, str]] = {"cube": (schema.CUBE_POSE, schema.CUBE_3D)}
    """Object name -> (its pose stream at the control rate, its entity in the 3D scene)."""

    def __init__(
        self,
        recorder: EpisodeRecorder,
        spec: RecordingSpec,
        *,
        joint_names: Sequence[str],
        geometry: Mapping[str, Mapping[str, Any]],
        static_poses: Mapping[str, tuple[np.ndarray, np.ndarray]],
        task: str,
    ) -> None:
        self.rec = recorder
        self.spec = spec
        self.task = task
        self.dt = spec.dt
        self._video_t: dict[str, list[float]] = {c: [] for c in spec.cameras}
        self._video: dict[str, list] = {c: [] for c in spec.cameras}
        self._encoders = {
            c: H264Encoder(spec.width, spec.height, spec.camera_hz, gop=spec.camera_hz) for c in spec.cameras
        }
        self._poses: dict[str, _PoseTrack] = {}

        names = list(joint_names)
        recorder.set_series_names(schema.JOINT_POSITIONS, names)
        recorder.set_series_names(schema.JOINT_TARGETS, names)
        recorder.set_series_names(schema.REWARD, ["reward"])
        for state, _ in self.OBJECTS.values():
            recorder.set_series_names(state, ["x", "y", "z", "qw", "qx", "qy", "qz"])
        self.task_text = TASK_TEXT.get(task, task)
        for cam in spec.cameras:
            recorder.log_static(schema.camera_path(cam), rr.VideoStream(codec=rr.VideoCodec.H264))
        self._log_static_scene(rr, geometry, static_poses)

    # --- static content ----------------------------------------------------------------------
    def _scene_entity(self, name: str) -> str:
        return self.OBJECTS[name][1] if name in self.OBJECTS else schema.link_path(name)

    def _log_static_scene(self, rr, geometry, statics) -> None:
        for name, g in geometry.items():
            if name in statics:
                entity = f"{schema.STATIC_SCENE}/{name}"
                pos, quat = statics[name]
                self.rec.log_static(
                    entity, rr.Transform3D(translation=np.asarray(pos, np.float32), quaternion=_xyzw(quat))
                )
            else:
                entity = self._scene_entity(name)
            self.rec.log_static(
                entity,
                rr.Boxes3D(
                    half_sizes=[g["half_size"]],
                    centers=[g["center"]],
                    colors=[_rgba8(g["rgba"])],
                    fill_mode=rr.components.FillMode.Solid,
                ),
            )

    # --- per step ----------------------------------------------------------------------------
    def observe(
        self,
        step: int,
        joint_positions: np.ndarray,
        joint_targets: np.ndarray,
        reward: float,
        cube_pose: np.ndarray,
        images: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Record control step `step` (see the module docstring for the time convention)."""
        t = step * self.dt
        self.rec.append_scalars(schema.JOINT_POSITIONS, t, joint_positions)
        self.rec.append_scalars(schema.JOINT_TARGETS, t, joint_targets)
        self.rec.append_scalars(schema.REWARD, t, [reward])
        self.rec.append_scalars(schema.CUBE_POSE, t, cube_pose)
        self.encode(t, images)

    def encode(self, t: float, images: Mapping[str, np.ndarray] | None) -> None:
        """Encode camera frames taken at time `t` (s)."""
        if images:
            for cam, img in images.items():
                out = self._encoders[cam].encode(img)
                self._video[cam].extend(out)
                self._video_t[cam].append(t)

    def observe_scene(self, step: int, link_poses: Mapping[str, tuple[np.ndarray, np.ndarray]], cube_pose: np.ndarray) -> None:
        """Record the 3D scene at `step`: robot link poses (position, wxyz) and the cube pose [x, y, z, qw, qx, qy, qz]."""
        poses = dict(link_poses)
        poses["cube"] = (cube_pose[:3], cube_pose[3:])
        self.add_scene_poses(step, poses)

    def add_scene_poses(self, step: int, poses: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Record 3D scene poses ``{body: (position, wxyz)}`` at `step` (links, objects)."""
        t = step * self.dt
        for name, (pos, quat) in poses.items():
            tr = self._poses.get(name)
            if tr is None:
                tr = self._poses[name] = _PoseTrack()
            tr.times.append(t)
            tr.pos.append(np.asarray(pos, np.float32))
            tr.quat.append(np.asarray(quat, np.float32))

    # --- end ---------------------------------------------------------------------------------
    def finish(self, properties: Mapping[str, Mapping[str, Any]]) -> None:
        """Hand every buffered stream and the property groups to the recorder."""
        rec = self.rec  # the 50 Hz scalar streams are already buffered in it (append_scalars)
        for cam, enc in self._encoders.items():
            samples = self._video[cam] + enc.flush()
            times = self._video_t[cam]
            if len(samples) != len(times):
                raise RuntimeError(f"{cam}: encoder produced {len(samples)} samples for {len(times)} frames")
            if samples:
                rec.log_columns(
                    schema.camera_path(cam),
                    np.asarray(times),
                    rr.VideoStream.columns(
                        sample=[s.sample for s in samples], is_keyframe=[s.is_keyframe for s in samples]
                    ),
                )
        for name, tr in self._poses.items():
            rec.log_columns(
                self._scene_entity(name),
                np.asarray(tr.times),
                rr.Transform3D.columns(translation=np.stack(tr.pos), quaternion=_xyzw(np.stack(tr.quat))),
            )
        rec.log_static(schema.TASK, rr.TextDocument(self.task_text, media_type="text/markdown"))
        rec.log_static(schema.OUTCOME_TEXT, rr.TextDocument(self.outcome_text(properties), media_type="text/markdown"))
        for group, values in properties.items():
            rec.set_properties(group, values)

    def outcome_text(self, properties: Mapping[str, Mapping[str, Any]]) -> str:
        """The outcome view's markdown (:func:`outcome_markdown`)."""
        return outcome_markdown(properties)


def outcome_markdown(properties: Mapping[str, Mapping[str, Any]]) -> str:
    """Readable summary of an episode's properties, shown in the blueprint's text view.

    A failure names its kind, the moment it went wrong (scrub there) and the scene
    conditions that define its cell."""
    ep = properties.get(schema.EPISODE, {})
    sc = properties.get(schema.SCENE, {})
    out = properties.get(schema.OUTCOME, {})
    verdict = "SUCCESS" if out.get(schema.OUTCOME_SUCCESS) else "FAILURE"
    lines = [f"# {verdict}", ""]
    if not out.get(schema.OUTCOME_SUCCESS):
        kind = str(out.get(schema.OUTCOME_FAILURE_REASON, "?"))
        t = out.get(schema.OUTCOME_FAILURE_TIME_S, -1.0)
        at = f"at **{float(t):.2f} s** (step {out.get(schema.OUTCOME_FAILURE_STEP, -1)})" if t is not None and t >= 0 else "(no moment)"
        lines += [f"**{schema.FAILURE_KINDS.get(kind, kind)}** {at}", ""]
    cell = ep.get(schema.EPISODE_CELL)
    start = ""
    if sc.get(schema.SCENE_CUBE_X) is not None:
        start = (f"; cube start x {float(sc[schema.SCENE_CUBE_X]):.3f} m, y {float(sc.get(schema.SCENE_CUBE_Y, 0.0)):.3f} m, "
                 f"yaw {float(sc.get(schema.SCENE_CUBE_YAW_DEG, 0.0)):+.1f} deg")
    lines += [
        f"- cell: `{cell}`" + start if cell else f"- scene{start or ': see below'}",
        f"- kind: {ep.get(schema.EPISODE_KIND, '?')}, policy: `{ep.get(schema.EPISODE_POLICY, '?')}`, seed: {ep.get(schema.EPISODE_SEED, '?')}",
        f"- steps: {out.get(schema.OUTCOME_STEPS, '?')} ({out.get(schema.OUTCOME_DURATION_S, '?')} s), "
        f"max reward: {out.get(schema.OUTCOME_MAX_REWARD, '?')}, furthest stage: {out.get(schema.OUTCOME_STAGE_NAME, '?')}",
        f"- success step: {out.get(schema.OUTCOME_SUCCESS_STEP, -1)}, failure step: {out.get(schema.OUTCOME_FAILURE_STEP, -1)}",
        f"- region: {sc.get(schema.SCENE_REGION_LABEL, sc.get('region', '?'))}, yaw: {sc.get(schema.SCENE_YAW, '?')}, "
        f"lighting: {sc.get('lighting', '?')}, table: {sc.get('table', '?')}, distractors: {sc.get('distractors', '?')}",
    ]
    return "\n".join(lines) + "\n"


# --- default blueprint -------------------------------------------------------------------------

def default_blueprint(cameras: Sequence[str]):
    """3D scene + camera views on top; joint positions, joint targets, task/outcome text below."""
    top = [rrb.Spatial3DView(origin=schema.SCENE_ROOT, name="scene")]
    top += [rrb.Spatial2DView(origin=schema.camera_path(c), name=c) for c in cameras]
    bottom = [
        rrb.TimeSeriesView(origin=schema.JOINT_POSITIONS, name="joint positions"),
        rrb.TimeSeriesView(origin=schema.JOINT_TARGETS, name="joint targets (action)"),
        rrb.Vertical(
            rrb.TextDocumentView(origin=schema.TASK, name="task"),
            rrb.TextDocumentView(origin=schema.OUTCOME_TEXT, name="outcome"),
        ),
    ]
    return rrb.Blueprint(
        rrb.Vertical(rrb.Horizontal(*top), rrb.Horizontal(*bottom), row_shares=[3, 2]),
        collapse_panels=False,
    )


def save_default_blueprint(workspace: Workspace, dataset: str, cameras: Sequence[str]) -> Path:
    """Write the dataset's default blueprint to `workspace.blueprint_path(dataset)`, atomically."""
    final = workspace.blueprint_path(dataset)
    with atomic_path(final) as tmp:
        default_blueprint(cameras).save(APPLICATION_ID, tmp)
    return final
