"""The rollout index: one row of base properties per segment, so analysis needs no catalog restore.

Restoring 10,000 segments into the catalog takes seconds; a question like "success by
region" needs only the properties each rollout was recorded with. So every rollout
also gets one row in the row table ``schema.rollout_index_table(dataset)`` (rows on disk,
:mod:`roboloop.rows`), written by ``evaluate`` right after the rollout is registered.
A row holds ``segment_id`` and every recorded property under its friendly name
(``episode.seed``, ``scene.region``, ``outcome.success``, ...): the same names and values
as the catalog's segment table, minus derived layers (``signals.*``, ``quality.*``).

The workspace stays the system of record: :func:`load` compares the index with the
dataset's base files and, when a file has no row (a crash between registration and the
index write, an import), reads the missing rows from the catalog once and writes them;
rows of files that are gone are tombstoned.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from roboloop import rows, schema
from roboloop.workspace import Workspace

__all__ = ["BASE_GROUPS", "StaleIndexError", "flatten", "load", "read", "segment_ids_on_disk", "write_row"]

BASE_GROUPS = (schema.EPISODE, schema.SCENE, schema.OUTCOME)
"""Property groups an index row holds (those written with the base recording)."""
_VERSION = re.compile(r"^(.+)\.(\d+)$")


class StaleIndexError(RuntimeError):
    """The index misses rows for files in the workspace and no catalog was given to rebuild them."""


def flatten(segment_id: str, properties: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """`{"episode": {"seed": 3}}` -> `{"segment_id": ..., "episode.seed": 3}` (base groups only)."""
    out: dict[str, Any] = {"segment_id": segment_id}
    for group, values in properties.items():
        if group not in BASE_GROUPS:
            continue
        for name, value in values.items():
            if value is None or value == "":
                continue  # the recorder drops these too
            if isinstance(value, tuple):
                value = list(value)
            out[f"{group}.{name}"] = value
    return out


def write_row(workspace: Workspace, dataset: str, segment_id: str, properties: Mapping[str, Mapping[str, Any]]) -> Path:
    """Index one recorded segment (call it after the segment is registered)."""
    return rows.write_row(workspace, schema.rollout_index_table(dataset), segment_id, flatten(segment_id, properties))


def read(workspace: Workspace, dataset: str) -> list[dict[str, Any]]:
    """The index rows as they are on disk (no staleness check)."""
    out = []
    for r in rows.read_rows(workspace, schema.rollout_index_table(dataset)):
        out.append({k: v for k, v in r.items() if not k.startswith("_")})
    return out


def segment_ids_on_disk(workspace: Workspace, dataset: str) -> set[str]:
    """Segment ids of the dataset's base files (a version suffix `.N` is dropped)."""
    out = set()
    for p in workspace.segment_files(dataset, schema.BASE_LAYER):
        m = _VERSION.match(p.stem)
        out.add(m.group(1) if m else p.stem)
    return out


def load(workspace: Workspace, dataset: str, catalog: Any | Callable[[], Any] | None = None) -> list[dict[str, Any]]:
    """The index rows of every base file of `dataset`, rebuilt where stale.

    `catalog` (a Catalog, or a function returning one, called only when needed) supplies
    rows for files the index misses; without it a stale index raises StaleIndexError.
    """
    found = read(workspace, dataset)
    by_id = {r["segment_id"]: r for r in found}
    on_disk = segment_ids_on_disk(workspace, dataset)
    missing = on_disk - by_id.keys()
    table = schema.rollout_index_table(dataset)
    for orphan in by_id.keys() - on_disk:
        rows.delete_row(workspace, table, orphan)
        del by_id[orphan]
    if missing:
        if catalog is None:
            raise StaleIndexError(f"the index of {dataset!r} misses {len(missing)} segment(s); rebuild it with a catalog")
        cat = catalog() if callable(catalog) else catalog
        seg = cat.segment_table(dataset)
        for r in seg.to_pylist():
            sid = r.get("segment_id")
            if sid not in missing:
                continue
            row = {"segment_id": sid}
            for k, v in r.items():
                group = k.partition(".")[0]
                if group in BASE_GROUPS and v is not None:
                    row[k] = v
            rows.write_row(workspace, table, sid, row)
            by_id[sid] = row
    return [by_id[k] for k in sorted(by_id)]
