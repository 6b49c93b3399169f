"""Tables as rows on disk: one small JSON file per row, append-only; the newest row of a key wins.

DESIGN.md ("Tables are rows on disk, not shared mutable state"): a selection, an
evaluation row or a plan is one file under ``<workspace>/tables/<table>/rows/``. Two
writers therefore never overwrite each other (each writes its own new file), a crash
leaves at most a temporary file (written atomically), and the catalog's table is
rebuilt from these files at every start (:func:`publish`). Deleting a key writes a
tombstone row; nothing is ever edited in place.

File name: ``<key>@<stamp:020d>-<pid>-<4 hex>.json``; ordering by (stamp, name)
decides which row of a key is the newest. The stamp is the wall clock in nanoseconds,
forced to increase strictly within a process (a clock step back or two writes within
one tick cannot reorder a process's own rows).

**Creation order.** Every row read back carries ``_created_ns``: the stamp of the key's
first row file (after its last tombstone), i.e. when the key was created, not when it
was last updated. :func:`creation_order` sorts by it (then by key): a total order that
matches creation, unlike a ``created_at`` string of one-second resolution.
"""

from __future__ import annotations

import datetime as _dt
import glob
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from roboloop import schema
from roboloop.workspace import Workspace, atomic_write_text, is_temp_file

log = logging.getLogger(__name__)

ROWS_FOLDER = "rows"
KEY_FIELD = "_key"
DELETED_FIELD = "_deleted"
WRITTEN_FIELD = "_written_ns"
CREATED_FIELD = "_created_ns"
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def rows_dir(workspace: Workspace, table: str) -> Path:
    """Folder holding one table's row files."""
    return workspace.table_dir(table) / ROWS_FOLDER


def now_iso() -> str:
    """The current UTC time to the second in ISO 8601 (``2026-12-05T00:45:29+00:00``).

    The one timestamp format of rows and layers: ``created_at``, ``updated_at``,
    ``executed_at``, ``flagged_at``, ``judged_at``, a run's ``started_at``.
    """
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def validate_key(key: str) -> str:
    """Row keys become file names: letters, digits, '_', '.', '-'."""
    if not isinstance(key, str) or not _KEY.match(key):
        raise ValueError(f"invalid row key {key!r}: use letters, digits, '_', '.' or '-' (max 128)")
    return key


def _json_default(value: Any) -> Any:
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} in a table row")


_last_stamp = 0
_stamp_lock = threading.Lock()


def _stamp() -> int:
    """Wall-clock nanoseconds, strictly increasing within this process (threads included)."""
    global _last_stamp
    with _stamp_lock:
        _last_stamp = max(time.time_ns(), _last_stamp + 1)
        return _last_stamp


def write_row(workspace: Workspace, table: str, key: str, row: Mapping[str, Any]) -> Path:
    """Append one row for `key` (atomically); it supersedes every earlier row of the key."""
    schema.validate_dataset_name(table)
    validate_key(key)
    now = _stamp()
    payload = {**row, KEY_FIELD: key, WRITTEN_FIELD: now}
    name = f"{key}@{now:020d}-{os.getpid()}-{uuid.uuid4().hex[:4]}.json"
    return atomic_write_text(rows_dir(workspace, table) / name, json.dumps(payload, default=_json_default, sort_keys=True))


def delete_row(workspace: Workspace, table: str, key: str) -> Path:
    """Delete `key` by appending a tombstone (older rows stay on disk as history)."""
    return write_row(workspace, table, key, {DELETED_FIELD: True})


def _sort_key(path: Path) -> tuple[int, str]:
    stamp = path.stem.rsplit("@", 1)[-1].split("-", 1)[0]
    return (int(stamp) if stamp.isdigit() else -1, path.name)


def creation_order(row: Mapping[str, Any]) -> tuple[int, str]:
    """Sort key of a row read back: when its key was created (``_created_ns``), then the key."""
    return (int(row.get(CREATED_FIELD) or 0), str(row.get(KEY_FIELD, "")))


def read_rows(workspace: Workspace, table: str) -> list[dict[str, Any]]:
    """The live rows of `table`: newest row per key, tombstoned keys dropped, sorted by key.

    Each carries ``_created_ns`` (see the module docstring); sort with :func:`creation_order`
    for creation order.

    An unreadable row file (not JSON) is skipped with a warning naming it.
    """
    return _live_rows(rows_dir(workspace, table), "*.json")


def read_row(workspace: Workspace, table: str, key: str) -> dict[str, Any] | None:
    """The newest live row of `key`, or None (reads only that key's files: their names start with `<key>@`)."""
    if not isinstance(key, str) or not _KEY.match(key):
        return None  # no row can have this key
    for row in _live_rows(rows_dir(workspace, table), f"{glob.escape(key)}@*.json"):
        if row[KEY_FIELD] == key:
            return row
    return None


def history(workspace: Workspace, table: str, key: str) -> list[dict[str, Any]]:
    """Every row ever written for `key`, oldest first (tombstones included, marked by ``_deleted``).

    Rows are never edited or removed, so this is the key's full history (e.g. every label a
    segment was given); :func:`read_row` is its newest entry.
    """
    folder = rows_dir(workspace, table)
    if not isinstance(key, str) or not _KEY.match(key) or not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob(f"{glob.escape(key)}@*.json"), key=_sort_key):
        if is_temp_file(path) or not path.is_file():
            continue
        try:
            row = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("skipped unreadable row file %s: %s", path, exc)
            continue
        if isinstance(row, dict) and row.get(KEY_FIELD) == key:
            out.append(row)
    return out


def _live_rows(folder: Path, pattern: str) -> list[dict[str, Any]]:
    if not folder.is_dir():
        return []
    newest: dict[str, tuple[tuple[int, str], dict[str, Any]]] = {}
    stamps: dict[str, list[tuple[tuple[int, str], bool]]] = {}  # key -> (order, is tombstone) of every file
    for path in folder.glob(pattern):
        if is_temp_file(path) or not path.is_file():
            continue
        try:
            row = json.loads(path.read_text("utf-8"))
            key = row[KEY_FIELD]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("skipped unreadable row file %s: %s", path, exc)
            continue
        order = _sort_key(path)
        stamps.setdefault(key, []).append((order, bool(row.get(DELETED_FIELD))))
        if key not in newest or order > newest[key][0]:
            newest[key] = (order, row)
    out = []
    for key, (_, row) in newest.items():
        if row.get(DELETED_FIELD):
            continue
        history = sorted(stamps[key])
        last_tombstone = max((i for i, (_, dead) in enumerate(history) if dead), default=-1)
        out.append({**row, CREATED_FIELD: history[last_tombstone + 1][0][0]})
    return sorted(out, key=lambda r: r[KEY_FIELD])


def row_tables(workspace: Workspace) -> list[str]:
    """Names of tables that have row files in the workspace."""
    if not workspace.tables_dir.is_dir():
        return []
    return sorted(p.parent.name for p in workspace.tables_dir.glob(f"*/{ROWS_FOLDER}") if p.is_dir())


def to_arrow(rows: list[dict[str, Any]], arrow_schema=None):
    """Rows as an Arrow table (columns inferred unless `arrow_schema` is given); private fields dropped."""
    clean = [{k: v for k, v in r.items() if k not in (DELETED_FIELD, WRITTEN_FIELD, CREATED_FIELD)} for r in rows]
    if arrow_schema is not None:
        return pa.Table.from_pylist(clean, schema=arrow_schema)
    return pa.Table.from_pylist(clean)
