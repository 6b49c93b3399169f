"""The public recording API: record your own robot's episodes into a roboloop workspace.

A team calls it from its own control loop; no simulator is involved::

    from roboloop import record

    with record.episode("./.roboloop", "arm5", kind="demo", task="pick_block") as ep:
        ep.set_properties("episode", {"operator": "alice"})
        ep.set_properties("scene", {"lighting": "dim"})
        for k in range(steps):
            t = k / 20.0                                    # seconds since the episode start
            ep.log_scalars("/robot/joint_positions", t, q, names=JOINTS)
            ep.log_scalars("/robot/joint_targets", t, q_cmd, names=JOINTS)
            ep.log_video_frame("/cameras/wrist", t, rgb)   # H x W x 3 uint8 -> H.264
            ep.log_text("/log", t, "grasp")                # optional

Every stream is logged on the `time` timeline (`schema.TIMELINE`) at the times given:
each entity at its own rate, nothing resampled. Camera frames are encoded to H.264 as
roboloop's own cameras are (`roboloop.video.H264Encoder`), so `EpisodeStream` decodes
them; `log_image` stores lossless PNG frames instead.

**Atomic and registered.** Nothing reaches the workspace until the episode closes: it is
then written to a temporary file, renamed into place under
`datasets/<dataset>/base/<segment_id>.rrd` (a new, unique segment id), and registered in
the catalog: the `catalog` given, else the one `ROBOLOOP_CATALOG` names or the workspace's
running `roboloop serve`; with none, the next catalog started on the workspace restores it (the workspace is the
system of record). A rollout also gets its row in the rollout index. A process killed
mid-episode leaves at most a temporary file, which the next catalog start deletes.

**Exceptions.** If the `with` block raises, the episode is discarded (`on_error="discard"`,
the default) or kept with `episode.aborted = true` and `episode.abort_reason`
(`on_error="abort"`; an episode that logged nothing yet is discarded); the exception
propagates either way.

**Kinds and datasets.** `kind="demo"` records into `dataset`; `kind="rollout"` into
`<dataset>_evals` (where `roboloop success` and `failures` look); `kind="corrective"` (a policy
drove and a person took over: `Episode.log_control` at every step) into `dataset`, next to the
demonstrations it trains with. Properties added
automatically to the `episode` group: kind, task and policy (when given), seed (when
given; reserved like collect's, see `record.seeds`), `aborted`, the provenance
(`provenance()`: roboloop version and git commit/dirty flag, rerun-sdk and torch
versions, ...), your own code's git commit and dirty flag (`project_provenance()`), `host`
and `started_at` (UTC ISO time of `episode(...)`).

**Blueprint.** At close the dataset's default blueprint is derived from what its episodes
logged (`blueprint_for`, over the union kept in `datasets/<dataset>/.blueprint-layout.json`): a 3D view when transforms were logged, a view per camera or image
stream, a time-series panel per scalar stream, text views; written to
`datasets/<dataset>/blueprint.rbl` and registered, so `roboloop open` shows the episode readable.
"""

from __future__ import annotations

import datetime
import difflib
import functools
import io
import json
import math
import os
import re
import socket
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rerun as rr
import rerun.blueprint as rrb
from PIL import Image

from roboloop import schema
from roboloop.catalog import index
from roboloop.catalog.client import ENV_CATALOG, Catalog
from roboloop.catalog.server import live_server
from roboloop.errors import RoboloopError
from roboloop.record.episode import APPLICATION_ID, NONE, EpisodeRecorder, git_state, provenance
from roboloop.record.seeds import reserve_seeds, seeded_segment_id
from roboloop.video import DEFAULT_GOP, H264Encoder
from roboloop.workspace import Workspace, atomic_path, atomic_write_text

__all__ = ["Episode", "RecordError", "RecordWarning", "episode", "blueprint_for", "KINDS", "ON_ERROR"]

KINDS = (schema.KIND_DEMO, schema.KIND_ROLLOUT, schema.KIND_CORRECTIVE)
ON_ERROR = ("discard", "abort")
SCALARS, IMAGE, VIDEO, TRANSFORM, TEXT = "scalars", "image", "video", "transform", "text"
AXIS_LENGTH_M = 0.05
"""Length of the axes drawn at every logged transform (so a pose shows in the 3D view without geometry)."""
_CAMERA = re.compile(rf"^{schema.CAMERA_ROOT}/[A-Za-z0-9_]+$")
_GROUP = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_AUTOMATIC = (schema.EPISODE_KIND, schema.EPISODE_ABORTED, schema.EPISODE_ABORT_REASON, schema.EPISODE_SEED,
              schema.EPISODE_HOST, schema.EPISODE_STARTED_AT, schema.EPISODE_PROJECT_GIT_COMMIT,
              schema.EPISODE_PROJECT_GIT_DIRTY, schema.EPISODE_SOFTWARE_VERSION, schema.EPISODE_GIT_COMMIT,
              schema.EPISODE_GIT_DIRTY, *schema.PROVENANCE_DISTRIBUTIONS)
"""`episode` properties the API owns (kind, seed, abort state, provenance): set through `episode(...)`'s arguments
or gathered automatically, never through `set_properties`."""


class RecordError(RoboloopError, ValueError):
    """A recording call that cannot be honoured (bad argument, time going backwards, a shape that changed):
    the message names the entity, what was expected and how to fix the call."""


class RecordWarning(UserWarning):
    """A recording call that is honoured but probably not what was meant (wall-clock times, a misspelt
    `outcome` key); the message names the fix."""


WALL_CLOCK_S = 1e6
"""A first time above this (11.6 days) is taken for a Unix wall-clock time rather than seconds since the episode start."""
OUTCOME_KEYS = frozenset(v for k, v in vars(schema).items()
                         if k.startswith("OUTCOME_") and k not in ("OUTCOME_LAYER", "OUTCOME_TEXT", "OUTCOME_SOURCE_LABEL")
                         and isinstance(v, str))
"""The `outcome` properties roboloop reads (success, failure_reason, failure_time_s, note, ...): another key warns."""


def episode(
    workspace_or_path: Workspace | str | Path | Any,
    dataset: str,
    *,
    kind: str = schema.KIND_DEMO,
    on_error: str = "discard",
    task: str | None = None,
    policy: str | None = None,
    seed: int | None = None,
    catalog: Any = None,
) -> Episode:
    """Open a new episode of `dataset` in a workspace; use it as a context manager (see the module docstring).

    `workspace_or_path`: a `Workspace`, its folder, or an open `Catalog` (its workspace is
    used and the episode is registered through it). `kind`: "demo", "rollout" or "corrective" (see `Episode.log_control`).
    `on_error`: "discard" or "abort" (keep it, marked aborted). `task`, `policy`: the
    `episode.task` / `episode.policy` properties. `seed`: the seed your loop used to
    randomize the scene, if any (a demonstration's is reserved in the dataset so collect never
    hands it out again; it appears in the segment id and as `episode.seed`). `catalog`: register through
    this catalog (default: the one given first, else the workspace's `roboloop serve`).
    """
    if catalog is None and hasattr(workspace_or_path, "register_files"):
        catalog = workspace_or_path
    ws = catalog.workspace if catalog is not None else workspace_or_path
    if not isinstance(ws, Workspace):
        if not isinstance(ws, (str, Path)):
            raise RecordError(f"record.episode needs a Workspace, a workspace folder or a Catalog, got {type(ws).__name__}")
        ws = Workspace(ws)
    return Episode(ws, dataset, kind=kind, on_error=on_error, task=task, policy=policy, seed=seed, catalog=catalog)


def project_provenance() -> dict[str, Any]:
    """`episode.project_git_commit` / `project_git_dirty`: the git state of YOUR code, the checkout that tracks the
    running script (`python my_loop.py`), else the working directory's; "none" / False outside a checkout."""
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    commit, dirty = _project_state(str(Path(main).resolve()) if main else None, str(Path.cwd()))
    return {schema.EPISODE_PROJECT_GIT_COMMIT: commit, schema.EPISODE_PROJECT_GIT_DIRTY: dirty}


@functools.cache
def _project_state(script: str | None, cwd: str) -> tuple[str, bool]:
    where, marker = (Path(script).parent, Path(script).name) if script else (Path(cwd), ".")
    commit, dirty = git_state(where, marker=marker)
    return commit or NONE, dirty


def _target_dataset(dataset: str, kind: str) -> str:
    if kind not in KINDS:
        raise RecordError(f"unknown episode kind {kind!r}: use kind='demo' (demonstrations), kind='rollout' "
                          f"(a policy's episodes, recorded into <dataset>_evals) or kind='corrective' (a policy drove and a "
                          f"person took over: log_control)")
    if not isinstance(dataset, str):
        raise RecordError(f"the dataset name must be a string, got {type(dataset).__name__}")
    suffix = "_evals"
    base = dataset[: -len(suffix)] if kind == schema.KIND_ROLLOUT and dataset.endswith(suffix) else dataset
    try:
        schema.validate_demo_dataset_name(base)
    except ValueError as exc:
        raise RecordError(str(exc)) from None
    return schema.evals_dataset(base) if kind == schema.KIND_ROLLOUT else base


_READ_GROUPS = (schema.EPISODE, schema.SCENE, schema.OUTCOME)


def _warn_misspelt_group(group: str) -> None:
    """A RecordWarning for a group of your own that is one letter or two off a group roboloop reads (`scenes`):
    its properties would be stored under that name, and `gaps`, `success --by scene...` and curation would miss them."""
    if group in _READ_GROUPS:
        return
    close = difflib.get_close_matches(group.lower(), _READ_GROUPS, n=1, cutoff=0.75)
    if close:
        warnings.warn(f"property group {group!r} is stored as its own group ({group}.<name>), not as {close[0]}.<name>, "
                      f"which roboloop reads; did you mean {close[0]!r}? (rename yours if it is meant as your own group)",
                      RecordWarning, stacklevel=3)


def _finite(entity: str, t: float, values: np.ndarray, what: str = "value") -> None:
    """Refuse NaN/inf: a non-finite value would poison training's normalization and every plot of the stream."""
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise RecordError(f"{entity}: non-finite {what} {values[bad[0]]} at index {int(bad[0])} at t={t} s; log only "
                          f"finite values (a sensor dropout: skip this row, the stream keeps its own rate, or log the "
                          f"last good value)")


class _Stream:
    """What one entity has logged so far (its kind, last time, row shape) and its buffered rows."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.times: list[float] = []
        self.shape: tuple[int, ...] | None = None
        self.rows: list[Any] = []
        self.encoder: H264Encoder | None = None


class Episode:
    """One episode being recorded (made by :func:`episode`). Log with the `log_*` methods, set properties,
    then leave the `with` block (or call :meth:`close`). After closing: `path`, `segment_id`, `registered` (True
    when a catalog took it; else the next catalog start restores it) and `aborted`."""

    def __init__(self, workspace: Workspace, dataset: str, *, kind: str, on_error: str, task: str | None,
                 policy: str | None, seed: int | None, catalog: Any) -> None:
        if on_error not in ON_ERROR:
            raise RecordError(f"on_error must be 'discard' (drop an episode whose block raised) or 'abort' "
                              f"(keep it with episode.aborted = true), got {on_error!r}")
        self.workspace = workspace
        self.kind = kind
        self.dataset = _target_dataset(dataset, kind)
        self.on_error = on_error
        self.catalog = catalog
        self.started_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        self._t0 = time.monotonic()
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise RecordError(f"seed must be an int >= 0 (or None for no seed), got {seed!r}")
        if seed is not None:
            if kind != schema.KIND_ROLLOUT:  # a rollout's seed is not a demonstration seed: nothing to reserve (as collect)
                reserve_seeds(workspace, self.dataset, 1, start=seed)
            self.segment_id = seeded_segment_id(self.dataset, seed)
        else:
            self.segment_id = schema.new_segment_id(self.dataset)
        self.path = workspace.segment_path(self.dataset, schema.BASE_LAYER, self.segment_id)
        self.registered = False
        self.closed = False
        self.aborted = False
        self._streams: dict[str, _Stream] = {}
        self._names: dict[str, list[str]] = {}
        self._static: list[tuple[str, Any]] = []
        self._properties: dict[str, dict[str, Any]] = {schema.EPISODE: {
            schema.EPISODE_KIND: kind,
            **provenance(),
            **project_provenance(),
            schema.EPISODE_HOST: socket.gethostname() or "none",
            schema.EPISODE_STARTED_AT: self.started_at,
            schema.EPISODE_ABORTED: False,
        }}
        if seed is not None:
            self._properties[schema.EPISODE][schema.EPISODE_SEED] = int(seed)
        for name, value in ((schema.EPISODE_TASK, task), (schema.EPISODE_POLICY, policy)):
            if value is not None:
                self._properties[schema.EPISODE][name] = str(value)

    def __repr__(self) -> str:
        return f"Episode({self.dataset!r}, {self.segment_id!r}, kind={self.kind!r})"

    def elapsed(self) -> float:
        """Seconds since `record.episode(...)` opened this episode, from a monotonic clock: a `t` for the log calls
        when your loop has no clock of its own (`ep.log_scalars(path, ep.elapsed(), q)`)."""
        return time.monotonic() - self._t0

    # --- checks ----------------------------------------------------------------------------------
    def _stream(self, entity: str, kind: str, t: float) -> tuple[_Stream, float]:
        if self.closed:
            raise RecordError(f"episode {self.segment_id} is closed: open a new one with record.episode(...)")
        if not isinstance(entity, str) or not entity.startswith("/") or entity == "/" or entity.startswith("/__"):
            raise RecordError(f"entity paths look like '/robot/joint_positions' (start with '/'), got {entity!r}")
        try:
            t = float(t)
        except (TypeError, ValueError):
            raise RecordError(f"{entity}: time must be seconds since the episode start (a number), got {t!r}") from None
        if not math.isfinite(t) or t < 0:
            raise RecordError(f"{entity}: time must be finite and >= 0 (seconds since the episode start), got {t}")
        s = self._streams.get(entity)
        if s is None:
            s = self._streams[entity] = _Stream(kind)
            if t > WALL_CLOCK_S:
                warnings.warn(f"{entity}: first time {t:.0f} s looks like a wall-clock (Unix epoch) time; times are seconds "
                              f"since the episode start: log t - t0 (or ep.elapsed())", RecordWarning, stacklevel=3)
        elif s.kind != kind:
            raise RecordError(f"{entity} already holds {s.kind}; log {kind} under another entity path")
        if s.times and t < s.times[-1]:
            raise RecordError(f"{entity}: time went backwards ({t} s after {s.times[-1]} s); each entity's times must "
                              f"be non-decreasing: log at or after {s.times[-1]} s, e.g. from one monotonic clock")
        if kind in (IMAGE, VIDEO) and s.times and t == s.times[-1]:
            raise RecordError(f"{entity}: a second frame at {t} s; each frame needs its own time, after the previous one")
        return s, t

    @staticmethod
    def _same_shape(entity: str, s: _Stream, shape: tuple[int, ...], what: str) -> None:
        if s.shape is None:
            s.shape = shape
        elif s.shape != shape:
            raise RecordError(f"{entity}: {what} {shape} differs from the earlier rows' {s.shape}; keep one shape per "
                              f"entity (log a different shape under another entity path)")

    # --- logging ---------------------------------------------------------------------------------
    def log_scalars(self, entity: str, t: float, values: float | Sequence[float] | np.ndarray,
                    names: Sequence[str] | None = None) -> None:
        """One row of a scalar stream (a number or a vector, e.g. joint positions) at `t` seconds.

        `names` (e.g. joint names) label the dimensions in plots; give them once (they must match the width).
        Values must be finite: NaN/inf raise RecordError (for a sensor dropout skip the row; each entity keeps its
        own rate)."""
        arr = np.asarray(values, dtype=np.float64).reshape(-1) if np.ndim(values) <= 1 else None
        if arr is None:
            raise RecordError(f"{entity}: scalars are a number or a 1-D vector, got shape {np.shape(values)}")
        s, t = self._stream(entity, SCALARS, t)
        if arr.size == 0:
            raise RecordError(f"{entity}: empty vector; log at least one value")
        _finite(entity, t, arr)
        self._same_shape(entity, s, (arr.size,), "width")
        if names is not None:
            names = [str(n) for n in names]
            if len(names) != arr.size:
                raise RecordError(f"{entity}: {len(names)} names for {arr.size} values; give one name per value")
            if self._names.setdefault(entity, names) != names:
                raise RecordError(f"{entity}: names {names} differ from the earlier {self._names[entity]}")
        s.times.append(t)
        s.rows.append(arr)

    def log_control(self, t: float, source: int | bool, expert_action: float | Sequence[float] | np.ndarray | None = None) -> None:
        """Who was in control at `t` (a corrective episode, `kind="corrective"`): `source` 1 (or True) when the person
        (or an expert) was in control, 0 when the policy was; log it at every control step. `expert_action`: the
        person's action at a takeover step (the training target; log it on the steps they were in control). Only steps
        with source 1 carry a label (`train --expert-steps-only` trains on those only)."""
        if isinstance(source, (bool, np.bool_)):
            source = int(source)
        if source not in (schema.SOURCE_POLICY, schema.SOURCE_EXPERT):
            raise RecordError(f"{schema.CONTROL_SOURCE}: source is {schema.SOURCE_EXPERT} (a person or an expert in "
                              f"control) or {schema.SOURCE_POLICY} (the policy), got {source!r}")
        self.log_scalars(schema.CONTROL_SOURCE, t, float(source))
        if expert_action is not None:
            self.log_scalars(schema.CONTROL_EXPERT_ACTION, t, expert_action)

    def _control_properties(self) -> None:
        """A corrective episode's `corrective_mode` (default `intervention`: only takeover steps are labelled) and
        `expert_fraction` (of the logged `/control/source` rows); a warning when it logged no `/control/source`."""
        if self.kind != schema.KIND_CORRECTIVE:
            return
        props = self._properties[schema.EPISODE]
        props.setdefault(schema.EPISODE_CORRECTIVE_MODE, schema.MODE_INTERVENTION)
        props.setdefault(schema.EPISODE_CORRECTED_RUN, props.get(schema.EPISODE_POLICY, NONE))
        src = self._streams.get(schema.CONTROL_SOURCE)
        if src is None or not src.rows:
            warnings.warn(f"corrective episode {self.segment_id} logged no {schema.CONTROL_SOURCE}: training cannot tell "
                          "the takeover steps; call ep.log_control(t, source) at every control step", RecordWarning,
                          stacklevel=4)
            return
        props.setdefault(schema.EPISODE_EXPERT_FRACTION, float(np.mean([r[0] for r in src.rows])))

    def _frame(self, entity: str, rgb: Any) -> np.ndarray:
        img = np.asarray(rgb)
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise RecordError(f"{entity}: frames are H x W x 3 uint8 RGB arrays (or H x W grey), got {img.shape} {img.dtype}; "
                              f"convert first (floats in [0, 1]: (frame * 255).round().astype(np.uint8))")
        return np.ascontiguousarray(img)

    def log_image(self, entity: str, t: float, rgb: Any) -> None:
        """One camera image at `t` seconds, stored losslessly (PNG). For video-rate cameras prefer `log_video_frame`."""
        img = self._frame(entity, rgb)
        s, t = self._stream(entity, IMAGE, t)
        self._same_shape(entity, s, img.shape, "image size")
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        s.times.append(t)
        s.rows.append(buf.getvalue())

    def log_video_frame(self, entity: str, t: float, rgb: Any) -> None:
        """One camera frame at `t` seconds, encoded to H.264 as roboloop's cameras are (a keyframe at least every 25 frames).

        Frames must keep one even size per entity (H.264 4:2:0); times must increase."""
        img = self._frame(entity, rgb)
        h, w = img.shape[:2]
        if not _CAMERA.match(str(entity)):
            raise RecordError(f"{entity}: camera streams live at /cameras/<name> (e.g. /cameras/wrist), where training's "
                              f"camera policies, the sharpness signal and the loader find them; log to "
                              f"/cameras/{str(entity).rstrip('/').rsplit('/', 1)[-1] or 'wrist'}")
        if h % 2 or w % 2:
            raise RecordError(f"{entity}: H.264 needs an even frame size, got {w}x{h}; crop or pad to {w + w % 2}x{h + h % 2}")
        s, t = self._stream(entity, VIDEO, t)
        self._same_shape(entity, s, img.shape, "frame size")
        if s.encoder is None:
            s.encoder = H264Encoder(w, h, DEFAULT_GOP, gop=DEFAULT_GOP)
            self._static.append((entity, rr.VideoStream(codec=rr.VideoCodec.H264)))
        s.times.append(t)
        s.rows.extend(s.encoder.encode(img))

    def log_transform(self, entity: str, t: float, translation: Sequence[float],
                      quaternion_xyzw: Sequence[float] | None = None) -> None:
        """A 3D pose at `t` seconds: `translation` (x, y, z) and an optional rotation as a quaternion (x, y, z, w).

        Poses of child entities are relative to their parent (`/world/arm/link2` under `/world/arm`); the 3D
        view is rooted at their common top-level entity (`/world`). A pose shows as axes; add geometry once with
        `log_static(entity, rr.Boxes3D(...))` (or any Rerun archetype) on it or on a child entity."""
        pos = np.asarray(translation, dtype=np.float32).reshape(-1)
        quat = np.asarray([0, 0, 0, 1] if quaternion_xyzw is None else quaternion_xyzw, dtype=np.float32).reshape(-1)
        if pos.shape != (3,) or quat.shape != (4,):
            raise RecordError(f"{entity}: a transform is a finite translation (x, y, z) and quaternion (x, y, z, w), "
                              f"got {pos.shape} and {quat.shape}")
        s, t = self._stream(entity, TRANSFORM, t)
        _finite(entity, t, pos, "translation")
        _finite(entity, t, quat, "quaternion")
        norm = float(np.linalg.norm(quat))
        if norm < 1e-6:
            raise RecordError(f"{entity}: the quaternion {quat.tolist()} has zero length; identity is (0, 0, 0, 1)")
        s.times.append(t)
        s.rows.append((pos, quat / norm))
        if len(s.times) == 1:
            self._static.append((entity, rr.TransformAxes3D(AXIS_LENGTH_M)))  # visible without geometry

    def log_text(self, entity: str, t: float, text: str) -> None:
        """A line of text at `t` seconds (an event, an operator remark); shown in a text log view."""
        s, t = self._stream(entity, TEXT, t)
        s.times.append(t)
        s.rows.append(str(text))

    def log_static(self, entity: str, archetype: Any) -> None:
        """Anything timeless, as a Rerun archetype (geometry such as `rr.Boxes3D`, a `rr.TextDocument` task description)."""
        if self.closed:
            raise RecordError(f"episode {self.segment_id} is closed: open a new one with record.episode(...)")
        if not isinstance(entity, str) or not entity.startswith("/"):
            raise RecordError(f"entity paths look like '/task' (start with '/'), got {entity!r}")
        self._static.append((entity, archetype))

    def set_properties(self, group: str, mapping: Mapping[str, Any]) -> None:
        """Episode-level properties of one group, merged with earlier calls: `episode` (task, operator, policy,
        checkpoint, tags), `scene` (conditions), `outcome` (success, failure_reason, failure_time_s) or your own.

        Values are numbers, booleans, strings or lists of them; queries see them as `<group>.<name>`."""
        if not isinstance(group, str) or not _GROUP.match(group):
            raise RecordError(f"property group names are identifiers (e.g. 'episode', 'scene'), got {group!r}")
        if group in (schema.SIGNALS, schema.QUALITY):
            raise RecordError(f"the {group!r} group belongs to its own layer (roboloop refine / flag); pick another group name")
        _warn_misspelt_group(group)
        for name, value in mapping.items():
            if not isinstance(name, str) or not _GROUP.match(name):
                raise RecordError(f"property names are identifiers (e.g. 'operator'), got {group}.{name!r}")
            if group == schema.EPISODE and name in _AUTOMATIC:
                raise RecordError(f"episode.{name} is set by roboloop (provenance, or kind=/seed= of record.episode(...); "
                                  f"aborted comes from on_error); store your own value under another name")
            items = value if isinstance(value, (list, tuple)) else [value]
            bad = [v for v in items if not isinstance(v, (bool, int, float, str, np.generic))]
            mixed = len({type(v.item() if isinstance(v, np.generic) else v) for v in items}) > 1
            if bad or mixed or (isinstance(value, (list, tuple)) and not value):
                raise RecordError(f"{group}.{name}: property values are numbers, booleans, strings or non-empty "
                                  f"lists of one type of them, got {value!r}")
        if group == schema.OUTCOME and schema.OUTCOME_SUCCESS in mapping and not isinstance(mapping[schema.OUTCOME_SUCCESS], (bool, np.bool_)):
            raise RecordError(f"outcome.success is True or False (success, compare and failures count it), "
                              f"got {mapping[schema.OUTCOME_SUCCESS]!r}; leave it out when nobody judged the episode")
        if group == schema.OUTCOME:
            for name in sorted(set(mapping) - OUTCOME_KEYS):
                close = difflib.get_close_matches(name, sorted(OUTCOME_KEYS), n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                warnings.warn(f"outcome.{name} is not an outcome property roboloop reads; {hint}known: "
                              f"{', '.join(sorted(OUTCOME_KEYS))} (keep your own values in another group)",
                              RecordWarning, stacklevel=2)
        self._properties.setdefault(group, {}).update(mapping)
        if group == schema.OUTCOME and schema.OUTCOME_SUCCESS in mapping:  # judged by the loop, not a simulator
            self._properties[group].setdefault(schema.OUTCOME_SOURCE, schema.OUTCOME_SOURCE_RECORDED)

    # --- closing ---------------------------------------------------------------------------------
    def __enter__(self) -> Episode:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
        elif self.on_error == "abort" and not self.closed and any(s.times for s in self._streams.values()):
            self.aborted = True
            self._properties[schema.EPISODE][schema.EPISODE_ABORTED] = True
            self._properties[schema.EPISODE][schema.EPISODE_ABORT_REASON] = f"{exc_type.__name__}: {exc}"[:500]
            self.close()
        else:
            self.discard()
        return False

    def discard(self) -> None:
        """Drop the episode: nothing is written."""
        self.closed = True
        self._streams.clear()

    def close(self) -> Path:
        """Write the episode (temporary file, rename), register it and the dataset's blueprint; returns its path."""
        if self.closed:
            raise RecordError(f"episode {self.segment_id} is already closed")
        if not any(s.times for s in self._streams.values()):
            raise RecordError(f"episode {self.segment_id} logged nothing on the time timeline; log at least one "
                              f"stream (log_scalars, log_video_frame, ...) before closing")
        self.closed = True
        if self.path.exists():
            raise RecordError(f"{self.path} already exists; segment ids must be new")
        self._camera_properties()
        self._control_properties()
        with EpisodeRecorder(self.path, self.segment_id) as rec:
            self._fill(rec)
        blueprint = update_blueprint(self.workspace, self.dataset, self._layout())
        catalog = self.catalog or self._served_catalog()
        if catalog is not None:
            try:
                catalog.register_files(self.dataset, [self.path], validate=False)
                catalog.register_blueprint(self.dataset, blueprint)
                self.registered = True
            finally:
                if catalog is not self.catalog:
                    catalog.close()
        if self.kind == schema.KIND_ROLLOUT:
            index.write_row(self.workspace, self.dataset, self.segment_id, self._properties)
        return self.path

    def _camera_properties(self) -> None:
        """`episode.cameras`, `camera_size` ("WxH", when every camera has one size) and `camera_hz` (median frame rate)
        from what was logged under /cameras/<name>, as collect writes them (camera policies read them); set
        values are kept."""
        cams = {e: s for e, s in sorted(self._streams.items())
                if s.times and s.kind in (IMAGE, VIDEO) and _CAMERA.match(e)}
        if not cams:
            return
        props = self._properties[schema.EPISODE]
        props.setdefault(schema.EPISODE_CAMERAS, ",".join(e.rsplit("/", 1)[-1] for e in cams))
        sizes = {(s.shape[1], s.shape[0]) for s in cams.values()}
        if len(sizes) == 1:
            w, h = sizes.pop()
            props.setdefault(schema.EPISODE_CAMERA_SIZE, f"{w}x{h}")
        steps = np.concatenate([np.diff(s.times) for s in cams.values()])
        if steps.size and float(np.median(steps)) > 0:
            props.setdefault(schema.EPISODE_CAMERA_HZ, int(round(1.0 / float(np.median(steps)))))

    def _served_catalog(self):
        """A client of the catalog named by `ROBOLOOP_CATALOG` or of the workspace's running `roboloop serve`, else
        None (the next catalog started on the workspace restores the file)."""
        if not os.environ.get(ENV_CATALOG) and live_server(self.workspace) is None:
            return None
        return Catalog(self.workspace)

    def _fill(self, rec: EpisodeRecorder) -> None:
        for group, values in self._properties.items():
            rec.set_properties(group, values)
        for entity, names in self._names.items():
            rec.set_series_names(entity, names)
        for entity, archetype in self._static:
            rec.log_static(entity, archetype)
        for entity, s in self._streams.items():
            if not s.times:  # its first call was refused: nothing to write
                continue
            times = np.asarray(s.times, dtype=np.float64)
            if s.kind == SCALARS:
                rec.log_scalar_columns(entity, times, np.stack(s.rows))
            elif s.kind == IMAGE:
                rec.log_columns(entity, times, rr.EncodedImage.columns(blob=s.rows, media_type=["image/png"] * len(s.rows)))
            elif s.kind == VIDEO:
                samples = s.rows + s.encoder.flush()
                if len(samples) != len(times):
                    raise RuntimeError(f"{entity}: encoder produced {len(samples)} samples for {len(times)} frames")
                rec.log_columns(entity, times, rr.VideoStream.columns(
                    sample=[f.sample for f in samples], is_keyframe=[f.is_keyframe for f in samples]))
            elif s.kind == TRANSFORM:
                rec.log_columns(entity, times, rr.Transform3D.columns(
                    translation=np.stack([p for p, _ in s.rows]), quaternion=np.stack([q for _, q in s.rows])))
            else:
                rec.log_columns(entity, times, rr.TextLog.columns(text=s.rows))

    def _layout(self) -> dict[str, list[str]]:
        """Entity paths by what they hold (the blueprint's input)."""
        out: dict[str, list[str]] = {SCALARS: [], IMAGE: [], TRANSFORM: [], TEXT: [], "document": []}
        for entity, s in sorted(self._streams.items()):
            if s.times:
                out[IMAGE if s.kind == VIDEO else s.kind].append(entity)
        out["document"] = sorted({e for e, a in self._static if isinstance(a, rr.TextDocument)})
        return out


# --- the default blueprint ------------------------------------------------------------------------

def _root_3d(paths: Sequence[str]) -> str:
    """Origin of the 3D view: the top-level entity all transforms live under (`/world`), else `/`."""
    tops = {p.strip("/").split("/")[0] for p in paths}
    return f"/{tops.pop()}" if len(tops) == 1 and all(p.strip("/").count("/") for p in paths) else "/"


def blueprint_for(layout: Mapping[str, Sequence[str]]):
    """The default blueprint of an episode that logged `layout` (kind -> entity paths): 3D view (transforms) and
    camera views on top; one time series per scalar stream, text documents and text logs below."""
    top: list[Any] = []
    if layout.get(TRANSFORM):
        top.append(rrb.Spatial3DView(origin=_root_3d(layout[TRANSFORM]), name="3D"))
    top += [rrb.Spatial2DView(origin=e, name=e.rsplit("/", 1)[-1]) for e in layout.get(IMAGE, ())]
    bottom: list[Any] = [rrb.TimeSeriesView(origin=e, name=e.strip("/")) for e in layout.get(SCALARS, ())]
    texts = [rrb.TextDocumentView(origin=e, name=e.strip("/")) for e in layout.get("document", ())]
    texts += [rrb.TextLogView(origin=e, name=e.strip("/")) for e in layout.get(TEXT, ())]
    if texts:
        bottom.append(rrb.Vertical(*texts))
    rows = [rrb.Horizontal(*part) for part in (top, bottom) if part]
    root = rrb.Vertical(*rows, row_shares=[3, 2]) if len(rows) == 2 else rows[0]
    return rrb.Blueprint(root, rrb.TimePanel(timeline=schema.TIMELINE), collapse_panels=False)


LAYOUT_FILE = ".blueprint-layout.json"
"""`datasets/<dataset>/.blueprint-layout.json`: every entity the API's episodes of the dataset logged, by kind."""


def update_blueprint(workspace: Workspace, dataset: str, layout: Mapping[str, Sequence[str]]) -> Path:
    """Merge one episode's `layout` into what the dataset's episodes logged so far and rewrite the default
    blueprint when that grew (an episode without a camera never hides the others' cameras). Returns its path."""
    final = workspace.blueprint_path(dataset)
    with workspace.lock(f"blueprint-{dataset}"):
        side = workspace.dataset_dir(dataset) / LAYOUT_FILE
        try:
            old = json.loads(side.read_text("utf-8"))
        except (OSError, ValueError):
            old = {}
        merged = {k: sorted(set(old.get(k, ())) | set(layout.get(k, ()))) for k in sorted(set(old) | set(layout))}
        if merged != old or not final.is_file():
            save_blueprint(workspace, dataset, merged)
            atomic_write_text(side, json.dumps(merged, sort_keys=True))
    return final


def save_blueprint(workspace: Workspace, dataset: str, layout: Mapping[str, Sequence[str]]) -> Path:
    """Write the dataset's default blueprint (`blueprint_for(layout)`) to `workspace.blueprint_path(dataset)`, atomically."""
    final = workspace.blueprint_path(dataset)
    with atomic_path(final) as tmp:
        blueprint_for(layout).save(APPLICATION_ID, tmp)
    return final
