"""`EpisodeRecorder`: writes one episode (streams at their own rates + properties) to a new RRD, atomically.

Streams are buffered in memory while the episode runs (an episode is small: a few
hundred rows per stream) and written with `send_columns` when the recorder closes, into
a temporary file renamed into place only when everything was written. A crash or an
exception inside the `with` block therefore leaves no file under the final name and
nothing to register. Nothing is resampled: each stream keeps the times it was given.

`write_layer_properties` writes the small property-only RRDs of derived layers
(`signals`, `quality`), sharing the segment's recording id.
"""

from __future__ import annotations

import functools
import os
import subprocess
from collections import defaultdict
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import rerun as rr

import roboloop
from roboloop import schema
from roboloop.workspace import atomic_path

APPLICATION_ID = "roboloop"
NONE = "none"
"""What a provenance property says when there is nothing to record (Rerun drops "")."""


def provenance() -> dict[str, Any]:
    """The `episode` properties that say which software made a recording (cached once per process).

    `software_version` is roboloop's version, with the source checkout's commit as a PEP 440
    local part when roboloop runs from one (`0.1.0+g1a2b3c4d5e6f`, `.dirty` appended when
    tracked files differ from it); `git_commit` (full, "none" without a checkout),
    `git_dirty`, and the installed versions of rerun-sdk, mujoco, gym-aloha and torch
    ("none" when not installed). Demonstrations, runs and rollouts all carry them, so
    `success --by episode.git_commit` splits results by the code that produced them.
    """
    return dict(_provenance_cached())


@functools.cache
def _provenance_cached() -> tuple[tuple[str, Any], ...]:
    commit, dirty = git_state(Path(roboloop.__file__).resolve().parent)
    version = roboloop.__version__
    if commit is not None:
        version += f"+g{commit[:12]}" + (".dirty" if dirty else "")
    out: dict[str, Any] = {
        schema.EPISODE_SOFTWARE_VERSION: version,
        schema.EPISODE_GIT_COMMIT: commit or NONE,
        schema.EPISODE_GIT_DIRTY: bool(dirty),
    }
    for name, dist in schema.PROVENANCE_DISTRIBUTIONS.items():
        out[name] = distribution_version(dist)
    return tuple(out.items())


def distribution_version(dist: str) -> str:
    """The installed version of a distribution, "none" when it is not installed."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return NONE


def git_state(source_dir: Path, marker: str = "__init__.py") -> tuple[str | None, bool]:
    """(commit, dirty) of the git checkout `source_dir` is TRACKED in, else (None, False).

    Tracked = the checkout tracks `marker` (a file of `source_dir`, or "." for any file in it).
    A package installed into a virtualenv that happens to sit inside some repository is
    not tracked there (`git ls-files` finds no `__init__.py`), so it reports no commit
    rather than the surrounding repository's. Dirty = tracked files differ from HEAD
    (untracked files are ignored). No git executable counts as no checkout.
    """
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(source_dir), *args], capture_output=True, text=True, timeout=10)

    try:
        tracked = git("ls-files", "--error-unmatch", marker)
        if tracked.returncode != 0:
            return None, False
        head = git("rev-parse", "--verify", "HEAD")
        if head.returncode != 0:
            return None, False
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None, False
    return head.stdout.strip(), bool(status.stdout.strip()) or status.returncode != 0


def _property_value(value: Any):
    """One property value as an explicit Arrow array (a scalar becomes a one-element array).

    Passing Arrow arrays bypasses `rr.AnyValues`' process-wide type cache, which otherwise
    silently drops a value whose type differs from the first one logged under the same
    name anywhere in the process (e.g. `lighting` once a float, later a string).
    """
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return pa.array(list(value))
    return pa.array([value])


def send_property_group(rec, group: str, values: Mapping[str, Any]) -> None:
    """Write one property group (`episode`, `scene`, ...) on a recording stream."""
    # Rerun drops None and "" values without a word, so skip them explicitly: a missing
    # property reads back as null in the segment table. Write a sentinel (e.g. "none", -1)
    # when the absence itself should be queryable.
    clean = {k: _property_value(v) for k, v in values.items() if v is not None and v != ""}
    if clean:
        rec.send_property(group, rr.AnyValues(**clean))


class EpisodeRecorder:
    """Record one episode into `path` (a workspace segment path), atomically.

    Use as a context manager::

        with EpisodeRecorder(path, segment_id) as rec:
            rec.set_properties("episode", {...})
            for step ...:
                rec.append_scalars(schema.JOINT_POSITIONS, t, qpos)
            rec.log_static(schema.TASK, rr.TextDocument("..."))
    """

    def __init__(self, path: str | os.PathLike[str], segment_id: str, *, application_id: str = APPLICATION_ID) -> None:
        self.path = Path(path)
        self.segment_id = schema.validate_segment_id(segment_id)
        self.application_id = application_id
        self._scalars: dict[str, tuple[list[float], list[np.ndarray]]] = defaultdict(lambda: ([], []))
        self._scalar_names: dict[str, Sequence[str]] = {}
        self._properties: dict[str, dict[str, Any]] = defaultdict(dict)
        self._static: list[tuple[str, Any]] = []
        self._columns: list[tuple[str, np.ndarray, Any]] = []  # (entity, times_s, ComponentColumnList)
        self._closed = False

    # --- collecting ------------------------------------------------------------------------
    def append_scalars(self, entity: str, t: float, values: Sequence[float] | np.ndarray) -> None:
        """Append one row of a scalar stream (any width) at time `t` seconds."""
        times, rows = self._scalars[entity]
        times.append(float(t))
        rows.append(np.asarray(values, dtype=np.float64).reshape(-1))

    def set_series_names(self, entity: str, names: Sequence[str]) -> None:
        """Name the dimensions of a scalar stream (e.g. joint names) for plots."""
        self._scalar_names[entity] = list(names)

    def log_scalar_columns(self, entity: str, times_s: np.ndarray, values: np.ndarray) -> None:
        """Add a whole scalar stream at once (rows at `times_s` seconds)."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim == 1:
            values = values[:, None]
        self._columns.append((entity, np.asarray(times_s, dtype=np.float64), rr.Scalars.columns(scalars=values)))

    def log_columns(self, entity: str, times_s: np.ndarray, columns: Any) -> None:
        """Add any archetype's columns (e.g. `rr.VideoStream.columns(...)`) at `times_s` seconds."""
        self._columns.append((entity, np.asarray(times_s, dtype=np.float64), columns))

    def log_static(self, entity: str, archetype: Any) -> None:
        """Log something timeless (codec, meshes, task text, series names)."""
        self._static.append((entity, archetype))

    def set_properties(self, group: str, values: Mapping[str, Any]) -> None:
        """Set episode-level properties of one group (merged with earlier calls)."""
        self._properties[group].update(values)

    # --- writing ---------------------------------------------------------------------------
    def __enter__(self) -> EpisodeRecorder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._closed = True  # discard: nothing is written under the final name

    def close(self) -> Path:
        """Write everything to a temporary file and rename it into place. Returns the final path."""
        if self._closed:
            raise RuntimeError("recorder already closed")
        self._closed = True
        with atomic_path(self.path) as tmp:
            rec = rr.RecordingStream(self.application_id, recording_id=self.segment_id, send_properties=True)
            try:
                sink = rec.memory_recording()
                for group, values in self._properties.items():
                    send_property_group(rec, group, values)
                for entity, archetype in self._static:
                    rec.log(entity, archetype, static=True)
                for entity, names in self._scalar_names.items():
                    rec.log(entity, rr.SeriesLines(names=list(names)), static=True)
                for entity, (times, rows) in self._scalars.items():
                    if not times:
                        continue
                    widths = {r.shape[0] for r in rows}
                    if len(widths) != 1:
                        raise ValueError(f"{entity}: rows of different widths {sorted(widths)}")
                    t = np.asarray(times)
                    _check_sorted(entity, t)
                    rec.send_columns(
                        entity,
                        indexes=[rr.TimeColumn(schema.TIMELINE, duration=t)],
                        columns=rr.Scalars.columns(scalars=np.stack(rows)),
                    )
                for entity, t, columns in self._columns:
                    _check_sorted(entity, t)
                    rec.send_columns(entity, indexes=[rr.TimeColumn(schema.TIMELINE, duration=t)], columns=columns)
                write_memory_recording(rec, sink, tmp)
            finally:
                rec.disconnect()
        return self.path


def write_layer_properties(
    path: str | os.PathLike[str],
    segment_id: str,
    groups: Mapping[str, Mapping[str, Any]],
    *,
    application_id: str = APPLICATION_ID,
    exclusive: bool = False,
    statics: Mapping[str, Any] | None = None,
) -> Path:
    """Write a property-only layer RRD (e.g. `signals`) for an existing segment, atomically.

    It shares the segment's recording id and does not send RecordingInfo, so it never
    overwrites the base recording's own properties. With `exclusive`, an existing `path`
    is never replaced (`FileExistsError`; see `workspace.atomic_path`). `statics` (entity
    path -> archetype) are logged as static data too (e.g. a re-judged `/outcome` text,
    which wins over the base layer's when the layer is registered after it).
    """
    path = Path(path)
    with atomic_path(path, exclusive=exclusive) as tmp:
        rec = rr.RecordingStream(application_id, recording_id=schema.validate_segment_id(segment_id), send_properties=False)
        try:
            sink = rec.memory_recording()
            for group, values in groups.items():
                send_property_group(rec, group, values)
            for entity, archetype in (statics or {}).items():
                rec.log(entity, archetype, static=True)
            write_memory_recording(rec, sink, tmp)
        finally:
            rec.disconnect()
    return path


def write_layer_version(workspace, dataset: str, layer: str, segment_id: str, groups: Mapping[str, Mapping[str, Any]],
                        *, statics: Mapping[str, Any] | None = None) -> Path:
    """Write a NEW version of a segment's property layer (`Workspace.next_version_path`); returns its path.

    The registered file is never touched: the new version gets the next free number
    (concurrent writers racing for one number each get their own, see `atomic_path(exclusive=True)`).
    Register the returned path with REPLACE.
    """
    for _ in range(1000):
        path = workspace.next_version_path(dataset, layer, segment_id)
        try:
            return write_layer_properties(path, segment_id, groups, exclusive=True, statics=statics)
        except FileExistsError:
            continue
    raise RuntimeError(f"could not find a free version name for {segment_id!r} in layer {layer!r}")


def write_memory_recording(rec, sink, tmp: Path) -> None:
    """Encode what `rec` logged into its memory sink (`sink = rec.memory_recording()`, made before
    logging) and write the bytes to `tmp` (Python I/O). Every RRD roboloop writes goes through here.

    Not Rerun's file sink (`rec.save`): on a full disk (ENOSPC) its writer thread dies, a failed
    footer write is only logged (a truncated file would be renamed into place), and the next
    recording's `flush()` in the same process waits for the dead thread for ever. A plain
    write raises `OSError(ENOSPC)`, which `atomic_path` turns into `WorkspaceFullError`. The
    bytes are the same RRD encoding (header, chunks, footer); an episode is a few MB at most.
    """
    rec.flush()
    data = sink.drain_as_bytes()
    with open(tmp, "wb") as fh:
        fh.write(data)


def _check_sorted(entity: str, t: np.ndarray) -> None:
    if t.size and np.any(np.diff(t) < 0):
        raise ValueError(f"{entity}: times must be non-decreasing")
