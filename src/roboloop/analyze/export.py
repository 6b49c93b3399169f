"""An episode as a self-contained ``.rrd``: every layer merged plus the dataset's default blueprint,
rebuilt from the task's cameras, so it opens in the viewer with no catalog running (failure exports of
`roboloop failures --export` and the report)."""

from __future__ import annotations

import os
from pathlib import Path

from roboloop import schema
from roboloop.envs import DEFAULT_TASK, get_task
from roboloop.record.episode import APPLICATION_ID, write_memory_recording
from roboloop.workspace import Workspace, atomic_path

__all__ = ["export_segment", "export_segments"]


def export_segment(catalog, dataset: str, segment_id: str, path: str | os.PathLike[str]) -> Path:
    """Write one segment as a self-contained RRD: every layer merged + the dataset's default blueprint.

    The file keeps the segment id as its recording id and opens in the viewer with no
    catalog running. Written atomically.
    """
    import rerun as rr

    ds = catalog.dataset(dataset)
    store = ds.segment_store(segment_id)
    blueprint = _dataset_blueprint(catalog.workspace, dataset, store)
    final = Path(path)
    with atomic_path(final) as tmp:
        rec = rr.RecordingStream(APPLICATION_ID, recording_id=segment_id, send_properties=False)
        try:
            sink = rec.memory_recording()  # not rec.save: see write_memory_recording (full disk)
            if blueprint is not None:
                rec.send_blueprint(blueprint)
            rec.send_chunks(store)
            write_memory_recording(rec, sink, tmp)
        finally:
            rec.disconnect()
    return final


def export_segments(catalog, dataset: str, segment_ids, out_dir: str | os.PathLike[str]) -> list[Path]:
    """`export_segment` for each id into `out_dir/<segment_id>.rrd`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [export_segment(catalog, dataset, sid, out / f"{sid}.rrd") for sid in segment_ids]


def _dataset_blueprint(workspace: Workspace, dataset: str, store):
    """The dataset's default blueprint, rebuilt from the cameras the segment recorded.

    It is the blueprint `collect` saved for the dataset (`Task.blueprint` of the same cameras; every
    task's blueprint is laid out from the cameras alone): camera views for exactly the camera streams
    the file holds.
    """
    prefix = schema.CAMERA_ROOT + "/"
    cams = sorted({str(e)[len(prefix):] for e in _entity_paths(store) if str(e).startswith(prefix)})
    return get_task(DEFAULT_TASK).blueprint(cams)


def _entity_paths(store) -> list[str]:
    try:
        return [str(e) for e in store.schema().entity_paths()]
    except Exception:  # noqa: BLE001 - schema introspection is best effort; no camera views then
        return []
