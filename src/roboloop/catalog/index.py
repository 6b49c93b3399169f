"""The rollout index: one row of base properties per segment, so analysis needs no catalog restore.

Restoring 10,000 segments into the catalog takes seconds, and one segment-table fetch
more; a question like "success by region" needs only the properties each rollout was
recorded with. So every rollout also gets one row in the row table
``schema.rollout_index_table(dataset)`` (rows on disk, :mod:`roboloop.rows`), written by
``evaluate`` right after the rollout is registered. A row holds ``segment_id`` and every
recorded property under its friendly name (``episode.seed``, ``scene.region``,
``outcome.success``, ...): the same names and values as the catalog's segment table,
minus derived layers (``signals.*``, ``quality.*``). A demonstration dataset gets one the same
way the first time a reader asks (``roboloop gaps`` reads the training episodes' start states
from it): rows the index misses are rebuilt from a catalog once, then read without one.

**Snapshot.** Parsing one JSON file per rollout costs ~0.1 ms each (1 s at 10k), so a
reader that finds more than ``COMPACT_AFTER`` row files not yet in the snapshot writes
``tables/<table>/snapshot.arrow`` (Arrow IPC, written atomically): the live rows plus the
names of the row files they cover; ``evaluate`` also compacts at its end. Readers load the
snapshot and parse only the row files it does not cover. While neither the row folder nor
the dataset's base folder has changed since a consistent snapshot was written (their
modification times are recorded in it), a reader lists no folder at all. Row files are
never deleted (append-only history); a snapshot is a cache that can be removed at any time.

**Staleness.** The workspace stays the system of record: :func:`load_table` compares the
index with the dataset's base files; a file without a row (a crash between registration
and the index write, an import) is read from the catalog once and written as a row;
rows of files that are gone are tombstoned.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from roboloop import rows, schema
from roboloop.errors import RoboloopError
from roboloop.workspace import Workspace, atomic_path

__all__ = [
    "BASE_GROUPS",
    "COMPACT_AFTER",
    "SNAPSHOT_FILE",
    "StaleIndexError",
    "compact",
    "flatten",
    "group_codes",
    "load",
    "load_table",
    "read",
    "rows_to_arrow",
    "segment_ids_on_disk",
    "write_row",
]

BASE_GROUPS = (schema.EPISODE, schema.SCENE, schema.OUTCOME)
"""Property groups an index row holds (those written with the base recording)."""
SNAPSHOT_FILE = "snapshot.arrow"
COMPACT_AFTER = 200
"""A reader that parses more row files than this rewrites the snapshot (it also does when it can vouch for a
quiet folder state the snapshot does not record yet)."""
KEY = "segment_id"
_COVERED = b"roboloop.covered_files"
_MARKS = b"roboloop.fresh_marks"


class StaleIndexError(RoboloopError, RuntimeError):
    """The index misses rows for files in the workspace and no catalog was given to rebuild them."""


PAIR_COLUMNS = (f"{schema.EPISODE}.{schema.EPISODE_EVAL_ID}", f"{schema.EPISODE}.{schema.EPISODE_CELL}",
                f"{schema.EPISODE}.{schema.EPISODE_INDEX_IN_CELL}")
"""What identifies a rollout's place in its evaluation: (eval id, cell, index in cell)."""


def pair_duplicates(segment_ids, eval_ids, cells, indices) -> dict[str, str]:
    """Rollouts that repeat an (eval id, cell, index) pair: duplicate segment id -> the segment readers count.

    Every reader counts a pair once, the rollout with the smallest segment id (a rule
    that needs no order or clock); segments missing a part of the pair are never duplicates.
    Two writers of one evaluation once made such repeats; `verify` lists them.
    """
    kept: dict[tuple, str] = {}
    dup_key: dict[str, tuple] = {}
    for sid, *key in zip(segment_ids, eval_ids, cells, indices):
        if any(k is None for k in key):
            continue
        k = (key[0], key[1], int(key[2]))
        other = kept.get(k)
        if other is None:
            kept[k] = sid
        else:
            dup_key[max(sid, other)] = k
            kept[k] = min(sid, other)
    return {d: kept[k] for d, k in dup_key.items()}


def group_codes(columns) -> np.ndarray:
    """One int64 code per row, equal exactly where the rows' values of all `columns` (pyarrow arrays of one length) are
    equal (null is a value of its own); codes are dense (0 .. groups - 1).

    What `Table.group_by` keys rows by, from hash kernels and numpy: `group_by` loads pyarrow's Acero engine, whose
    import (pyarrow.dataset, pandas) alone costs 0.4-1 s, more than `roboloop success` spends on 100,000 rollouts.
    """
    codes, size = None, 1
    for col in columns:
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        enc = pc.dictionary_encode(col, null_encoding="encode")
        idx, k = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64), max(len(enc.dictionary), 1)
        if codes is not None and size * k >= 2**62:  # re-number densely before the product could overflow
            codes, size = np.unique(codes, return_inverse=True)[1].astype(np.int64), len(codes)
        codes, size = (idx, k) if codes is None else (codes * k + idx, size * k)
    return np.zeros(0, np.int64) if codes is None else np.unique(codes, return_inverse=True)[1].astype(np.int64)


def unique_rollouts(table):
    """`table` (a pyarrow rollout table) without the rows that repeat an (eval id, cell, index) pair (`pair_duplicates`)."""
    if table.num_rows < 2 or KEY not in table.column_names or not all(c in table.column_names for c in PAIR_COLUMNS):
        return table
    try:  # the usual case, no repeats, without leaving Arrow (readers run this at 100k rollouts)
        pairs = table.select(list(PAIR_COLUMNS)).drop_null()
        if len(np.unique(group_codes(pairs.columns))) == pairs.num_rows:
            return table
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    dups = pair_duplicates(table.column(KEY).to_pylist(), *(table.column(c).to_pylist() for c in PAIR_COLUMNS))
    if not dups:
        return table
    return table.filter(pc.invert(pc.is_in(table.column(KEY), value_set=pa.array(sorted(dups), pa.string()))))


def flatten(segment_id: str, properties: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """`{"episode": {"seed": 3}}` -> `{"segment_id": ..., "episode.seed": 3}` (base groups only)."""
    out: dict[str, Any] = {KEY: segment_id}
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


def segment_ids_on_disk(workspace: Workspace, dataset: str) -> set[str]:
    """Segment ids of the dataset's base files (a version suffix `.N` is dropped)."""
    folder = workspace.layer_dir(dataset, schema.BASE_LAYER)
    if not folder.is_dir():
        return set()
    stems = {n[:-4] for n in os.listdir(folder) if n.endswith(".rrd") and not n.startswith(".")}
    versioned = {s for s in stems if "." in s and s.rpartition(".")[2].isdigit() and s.rpartition(".")[0]}
    return (stems - versioned) | {s.rpartition(".")[0] for s in versioned}


def rows_to_arrow(rows_: list[Mapping[str, Any]]):
    """Dict rows -> pyarrow Table over the union of their keys (a column of mixed types becomes strings)."""
    names: dict[str, None] = {}
    for r in rows_:
        for k in r:
            names.setdefault(k, None)
    arrays = []
    for name in names:
        values = [r.get(name) for r in rows_]
        try:
            arrays.append(pa.array(values))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arrays.append(pa.array([None if v is None else str(v) for v in values], type=pa.string()))
    return pa.Table.from_arrays(arrays, names=list(names))


# --- snapshot + row files -----------------------------------------------------------------------

def _snapshot_path(workspace: Workspace, dataset: str) -> Path:
    return workspace.table_dir(schema.rollout_index_table(dataset)) / SNAPSHOT_FILE


def _read_snapshot(path: Path, *, with_covered: bool = True):
    """(table or None, covered file names, freshness marks or None)."""
    if not path.is_file():
        return None, set(), None
    try:
        with pa.memory_map(str(path)) as src:
            table = pa.ipc.open_file(src).read_all()
        meta = table.schema.metadata or {}
        covered = set(json.loads(meta.get(_COVERED, b"[]"))) if with_covered else set()
        marks = json.loads(meta[_MARKS]) if _MARKS in meta else None
        return table.replace_schema_metadata(None), covered, marks
    except (OSError, ValueError, KeyError, pa.ArrowInvalid):
        return None, set(), None  # a cache: unreadable means rebuild from the row files


def _marks(workspace: Workspace, dataset: str) -> dict[str, int | None] | None:
    """Modification times of the row folder and the base folder, or None when either changed within 1 s.

    A snapshot records them when it is consistent with both folders; while they are
    unchanged, a reader trusts the snapshot without listing either folder. Taken before
    listing; a folder changed in the last second is not trusted (coarse-mtime file systems).
    """
    out: dict[str, int | None] = {}
    now = time.time_ns()
    for key, folder in (("rows", rows.rows_dir(workspace, schema.rollout_index_table(dataset))),
                        ("base", workspace.layer_dir(dataset, schema.BASE_LAYER)),
                        ("outcome", workspace.layer_dir(dataset, schema.OUTCOME_LAYER))):
        try:
            m = os.stat(folder).st_mtime_ns
        except FileNotFoundError:
            m = None
        if m is not None and now - m < 1_000_000_000:
            return None
        out[key] = m
    return out


def _row_files(workspace: Workspace, dataset: str) -> list[str]:
    folder = rows.rows_dir(workspace, schema.rollout_index_table(dataset))
    if not folder.is_dir():
        return []
    return [n for n in os.listdir(folder) if n.endswith(".json") and not n.startswith(".")]  # ".": temp files


def _outcome_ahead(workspace: Workspace, dataset: str, names: set[str]) -> set[str]:
    """Segments whose newest `outcome` layer file is newer than their newest index row (of the row files `names`).

    `label` and `reoutcome` write the layer version first and the index row after it, so a row always
    post-dates the outcome it holds; a layer file without such a row is an outcome a killed command left
    in effect (restore registers it) that the index does not know yet.
    """
    versions = workspace.segment_version_lists(dataset, schema.OUTCOME_LAYER)
    if not versions:
        return set()
    newest_row: dict[str, int] = {}
    for name in names:
        key, _, rest = name[:-5].rpartition("@")
        stamp = rest.split("-", 1)[0]
        if stamp.isdigit():
            newest_row[key] = max(newest_row.get(key, 0), int(stamp))
    out = set()
    for seg, paths in versions.items():
        try:
            if paths[0].stat().st_mtime_ns > newest_row.get(seg, 0):
                out.add(seg)
        except FileNotFoundError:
            continue
    return out


def _order(name: str) -> tuple[int, str]:
    stamp = name[:-5].rsplit("@", 1)[-1].split("-", 1)[0]
    return (int(stamp) if stamp.isdigit() else -1, name)


def _parse_new(workspace: Workspace, dataset: str, names: list[str]) -> dict[str, tuple[tuple[int, str], dict | None]]:
    """key -> (order, row or None for a tombstone): the newest of the given row files per key."""
    folder = rows.rows_dir(workspace, schema.rollout_index_table(dataset))
    newest: dict[str, tuple[tuple[int, str], dict | None]] = {}
    for name in names:
        try:
            row = json.loads((folder / name).read_text("utf-8"))
            key = row[rows.KEY_FIELD]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        order = _order(name)
        if key not in newest or order > newest[key][0]:
            live = None if row.get(rows.DELETED_FIELD) else {k: v for k, v in row.items() if not k.startswith("_")}
            newest[key] = (order, live)
    return newest


def _merge(workspace: Workspace, dataset: str):
    """(live table, covered file names, number of parsed row files, the snapshot's marks)."""
    snap, covered, snap_marks = _read_snapshot(_snapshot_path(workspace, dataset))
    names = _row_files(workspace, dataset)
    new = [n for n in names if n not in covered]
    newest = _parse_new(workspace, dataset, new)
    live_new = [r for _, r in newest.values() if r is not None]
    parts = []
    if snap is not None and snap.num_rows:
        if newest:
            keep = pc.invert(pc.is_in(snap.column(KEY), value_set=pa.array(list(newest), pa.string())))
            snap = snap.filter(keep)
        parts.append(snap)
    if live_new:
        parts.append(rows_to_arrow(live_new))
    if not parts:
        table = pa.table({KEY: pa.array([], pa.string())})
    elif len(parts) == 1:
        table = parts[0]
    else:
        try:
            table = pa.concat_tables(parts, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            table = rows_to_arrow(parts[0].to_pylist() + parts[1].to_pylist())
    existing = set(names)
    return table, (covered & existing) | set(new), len(new), snap_marks


def compact(workspace: Workspace, dataset: str) -> Path:
    """Write the snapshot now (atomically): every live row, covering every current row file."""
    marks = _marks(workspace, dataset)
    table, covered, _, _ = _merge(workspace, dataset)
    consistent = segment_ids_on_disk(workspace, dataset) == set(table.column(KEY).to_pylist())
    return _write_snapshot(workspace, dataset, table, covered, marks if consistent else None)


def _write_snapshot(workspace: Workspace, dataset: str, table, covered: set[str], marks) -> Path:
    path = _snapshot_path(workspace, dataset)
    if table.num_rows:
        table = table.sort_by(KEY)
    meta = {_COVERED: json.dumps(sorted(covered)).encode()}
    if marks is not None:
        meta[_MARKS] = json.dumps(marks).encode()
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp, pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return path


def load_table(workspace: Workspace, dataset: str, catalog: Any | Callable[[], Any] | None = None):
    """The index of every base file of `dataset` as a pyarrow Table (one row per segment, no order), rebuilt where stale.

    `catalog` (a Catalog, or a function returning one, called only when needed) supplies
    rows for files the index misses; without it a stale index raises StaleIndexError.
    """
    marks = _marks(workspace, dataset)  # before any listing
    if marks is not None:
        snap, _, snap_marks = _read_snapshot(_snapshot_path(workspace, dataset), with_covered=False)
        if snap is not None and snap_marks == marks:
            return snap  # nothing was added, replaced or removed since the snapshot: no folder listing
    table, covered, parsed, snap_marks = _merge(workspace, dataset)
    on_disk = segment_ids_on_disk(workspace, dataset)
    ids = set(table.column(KEY).to_pylist())
    missing = on_disk - ids
    orphans = ids - on_disk
    ahead = _outcome_ahead(workspace, dataset, covered) & on_disk & ids  # re-read from the catalog like missing rows
    name = schema.rollout_index_table(dataset)
    for orphan in orphans:
        rows.delete_row(workspace, name, orphan)
    if orphans:
        table = table.filter(pc.invert(pc.is_in(table.column(KEY), value_set=pa.array(list(orphans), pa.string()))))
    if missing or ahead:
        if catalog is None:
            raise StaleIndexError(f"the index of {dataset!r} misses {len(missing)} segment(s) and {len(ahead)} newer "
                                  "outcome(s); rebuild it with a catalog")
        cat = catalog() if callable(catalog) else catalog
        for r in cat.segment_table(dataset).to_pylist():
            sid = r.get(KEY)
            if sid not in missing and sid not in ahead:
                continue
            row = {KEY: sid, **{k: v for k, v in r.items() if k.partition(".")[0] in BASE_GROUPS and v is not None}}
            rows.write_row(workspace, name, sid, row)
        table, covered, parsed, _ = _merge(workspace, dataset)
    wrote = bool(orphans or missing or ahead)  # our own writes changed the folders: do not vouch for them yet
    if parsed > COMPACT_AFTER or wrote or (marks is not None and snap_marks != marks):
        _write_snapshot(workspace, dataset, table, covered, None if wrote else marks)
    return table


def load(workspace: Workspace, dataset: str, catalog: Any | Callable[[], Any] | None = None) -> list[dict[str, Any]]:
    """:func:`load_table` as dict rows (absent properties left out)."""
    out = [{k: v for k, v in r.items() if v is not None} for r in load_table(workspace, dataset, catalog).to_pylist()]
    return sorted(out, key=lambda r: r[KEY])


def read(workspace: Workspace, dataset: str) -> list[dict[str, Any]]:
    """The index rows as they are on disk (no staleness check, no snapshot)."""
    out = []
    for r in rows.read_rows(workspace, schema.rollout_index_table(dataset)):
        out.append({k: v for k, v in r.items() if not k.startswith("_")})
    return out
