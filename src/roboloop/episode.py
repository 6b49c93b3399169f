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

import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from roboloop import schema
from roboloop.workspace import atomic_path

APPLICATION_ID = "roboloop"


def _property_value(value: Any):
    """One property value as an explicit Arrow array (a scalar becomes a one-element array).

    Passing Arrow arrays bypasses `rr.AnyValues`' process-wide type cache, which otherwise
    silently drops a value whose type differs from the first one logged under the same
    name anywhere in the process (e.g. `lighting` once a float, later a string).
    """
    import pyarrow as pa

    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return pa.array(list(value))
    return pa.array([value])


def send_property_group(rec, group: str, values: Mapping[str, Any]) -> None:
    """Write one property group (`episode`, `scene`, ...) on a recording stream."""
    import rerun as rr

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
        import rerun as rr

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
        import rerun as rr

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
) -> Path:
    """Write a property-only layer RRD (e.g. `signals`) for an existing segment, atomically.

    It shares the segment's recording id and does not send RecordingInfo, so it never
    overwrites the base recording's own properties. With `exclusive`, an existing `path`
    is never replaced (`FileExistsError`; see `workspace.atomic_path`).
    """
    import rerun as rr

    path = Path(path)
    with atomic_path(path, exclusive=exclusive) as tmp:
        rec = rr.RecordingStream(application_id, recording_id=schema.validate_segment_id(segment_id), send_properties=False)
        try:
            sink = rec.memory_recording()
            for group, values in groups.items():
                send_property_group(rec, group, values)
            write_memory_recording(rec, sink, tmp)
        finally:
            rec.disconnect()
    return path


def write_layer_version(workspace, dataset: str, layer: str, segment_id: str, groups: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write a NEW version of a segment's property layer (`Workspace.next_version_path`); returns its path.

    The registered file is never touched: the new version gets the next free number
    (concurrent writers racing for one number each get their own, see `atomic_path(exclusive=True)`).
    Register the returned path with REPLACE.
    """
    for _ in range(1000):
        path = workspace.next_version_path(dataset, layer, segment_id)
        try:
            return write_layer_properties(path, segment_id, groups, exclusive=True)
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
