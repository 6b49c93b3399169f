"""Restore: rebuild a freshly started catalog server from the workspace (the system of record).

The open-source Rerun server keeps registrations, tables and blueprints in memory only,
so every embedded start calls :func:`restore` (through `Catalog.restore`):

1. **Lance tables** (`tables/<name>/<entry>/`): an old workspace's Lance tables (e.g.
   `selections` before it moved onto row files) are migrated to row files once
   (:func:`migrate_lance_tables`); any other Lance folder is registered as is.
2. **Datasets**: for every dataset folder, every layer (`base` first, then the others by
   name), the newest version of every segment (`Workspace.segment_version_lists`, the single
   place restore gets files from). A cheap header/footer check skips truncated files, and a
   file whose recording id (read from the file's first message) is not the segment its name
   says is skipped, so one file never silently shadows another (:func:`checked_layer_files`);
   the rest is registered in one batch with REPLACE, and if the batch fails it is bisected
   (:func:`register_tolerant`) so one bad file cannot block the others. A segment whose newest
   version was skipped or rejected falls back to its next older version, and so on
   (:func:`restore_layer`): a damaged `S.1.rrd` leaves `S.rrd` registered, and the damaged
   file is reported and left on disk (never deleted: `roboloop verify` names it; delete it
   yourself once read). `RestoreReport.registered` lists the files actually registered: the
   only versions that supersede older ones (`Workspace.collect_garbage`). Every skipped file
   is reported with its reason. Restore reads no checksums (that would read every byte of
   every file); it checks structure only, and stays as fast as before: `verify` checks them.
3. **Blueprints**: each dataset's default blueprint, when the workspace has one.
4. **Row tables** (`tables/<name>/rows/*.json`, see `roboloop.rows`, e.g. `evals`, `plans`):
   published as in-memory catalog tables built from `rows.read_rows` (newest row per key), so
   `roboloop sql` can query them. They are rebuilt at every start; the row files stay the
   record. A name that is already a Lance table keeps the Lance table.
5. **Leftovers**: temporary files (`.<name>.tmp-<pid>-...`) of every writer (layer files,
   blueprints, row files, run artifacts) whose writer process is dead are deleted
   (`Workspace.remove_stale_temp_files`); a live writer's are left alone.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from roboloop import rows as _rows
from roboloop import schema
from roboloop.catalog.errors import CorruptRecordingError, first_line
from roboloop.catalog.rrd import file_uri, inspect_rrd, read_recording_id
from roboloop.workspace import Workspace

log = logging.getLogger(__name__)

__all__ = ["RestoreReport", "restore", "restore_layer", "restore_segments", "register_tolerant", "publish_row_table", "usable_versions"]


@dataclass
class RestoreReport:
    """What a start restored from the workspace, and what it had to skip."""

    segments: dict[tuple[str, str], int] = field(default_factory=dict)  # (dataset, layer) -> count
    tables: list[str] = field(default_factory=list)
    blueprints: list[str] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (file, reason)
    registered: list[Path] = field(default_factory=list)  # the layer files registered (one version per segment and layer)
    temp_files_removed: int = 0  # temporary files of dead writers deleted at the start
    seconds: float = 0.0


def restore(client, workspace: Workspace, datasets: Sequence[str] | None = None) -> RestoreReport:
    """Register everything in `workspace` with the catalog `client`: tables, datasets (base layer first), blueprints, row tables.

    `datasets`: restore only these datasets (names the workspace does not have are ignored); tables all the same.
    """
    t0 = time.perf_counter()
    report = RestoreReport()
    ws = workspace
    try:
        migrate_lance_tables(client, ws)
    except Exception as exc:  # noqa: BLE001 - the old tables stay on disk; report and go on
        report.skipped.append((ws.tables_dir, f"old Lance tables could not be migrated to row files: {first_line(exc)}"))
    for name, folder in ws.tables().items():
        if folder.name == _rows.ROWS_FOLDER:
            continue  # a row table: published below
        try:
            client.register_table(name, folder.resolve().as_uri())
            report.tables.append(name)
        except Exception as exc:  # noqa: BLE001
            report.skipped.append((folder, f"table could not be loaded: {exc}"))
    names = [d for d in ws.datasets() if datasets is None or d in datasets]
    files = {d: {layer: ws.segment_version_lists(d, layer) for layer in ws.layers(d)} for d in names}  # listed once
    ensure_fd_budget(sum(len(fs) for layers in files.values() for fs in layers.values()))
    for dataset, layers in files.items():
        ds = client.create_dataset(dataset, exist_ok=True)
        for layer, versions in layers.items():
            done = restore_layer(ds, layer, versions, report)
            report.registered.extend(done)
            report.segments[(dataset, layer)] = len(done)
        bp = ws.blueprint_path(dataset)
        if bp.is_file():
            try:
                ds.register_blueprint(file_uri(bp))
                report.blueprints.append(dataset)
            except Exception as exc:  # noqa: BLE001
                report.skipped.append((bp, f"blueprint could not be registered: {exc}"))
    # leftovers: temporary files of dead writers (never registered, so the order does not matter)
    report.temp_files_removed = ws.remove_stale_temp_files()
    for name in _rows.row_tables(ws):
        if name in report.tables or name.endswith(schema.INDEX_TABLE_SUFFIX):
            continue  # an index (e.g. the rollout index) is read from disk by analyze, not a table to publish
        try:
            if publish_row_table(client, ws, name):
                report.tables.append(name)
        except Exception as exc:  # noqa: BLE001 - one bad table must not stop the start
            report.skipped.append((_rows.rows_dir(ws, name), f"row table could not be published: {first_line(exc)}"))
    for path, reason in report.skipped:
        log.warning("skipped %s while restoring the workspace: %s", path, reason)
    report.seconds = time.perf_counter() - t0
    return report


MIGRATED_PREFIX = ".migrated-"


def migrate_lance_tables(client, workspace: Workspace) -> int:
    """Copy the rows of Lance tables that have a row key (an old workspace's `selections`) into row files.

    Tables moved onto row files (`schema.SELECTIONS_TABLE`) are migrated: the key is the
    table's index column (`name`). A key that already has a row file keeps it. The Lance
    folder is then renamed to `.migrated-<entry>` (kept on disk, never read again), so this
    runs once; it holds the table's workspace lock. Returns the number of rows written.
    """
    n = 0
    for table in (schema.SELECTIONS_TABLE,):
        tdir = workspace.table_dir(table)
        if not tdir.is_dir():
            continue
        with workspace.lock(table):
            entries = [p for p in tdir.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != _rows.ROWS_FOLDER]
            for entry in sorted(entries, key=lambda p: p.stat().st_mtime):
                tmp_name = f"_migrate_{table}_{uuid.uuid4().hex[:8]}"
                client.register_table(tmp_name, entry.resolve().as_uri())
                try:
                    tb = client.get_table(tmp_name).reader().to_arrow_table()
                finally:
                    try:
                        client.get_table(tmp_name).delete()
                    except Exception:  # noqa: BLE001
                        pass
                key_col = next((f.name for f in tb.schema if (f.metadata or {}).get(b"rerun:is_table_index") == b"true"), "name")
                for row in tb.to_pylist():
                    key = row.get(key_col)
                    if not key or _rows.read_row(workspace, table, key) is not None:
                        continue
                    _rows.write_row(workspace, table, key, row)
                    n += 1
                entry.rename(entry.with_name(MIGRATED_PREFIX + entry.name))
                log.info("migrated Lance table %s (%s) to row files", table, entry)
    return n

FD_MARGIN = 512
"""Descriptors kept free for everything else the process opens (sockets, libraries, new recordings)."""


def ensure_fd_budget(n_files: int) -> bool:
    """Make room for the server's open files: the Rerun server keeps one descriptor open per registered file.

    Raises the soft `RLIMIT_NOFILE` towards `n_files + FD_MARGIN` (never beyond the hard
    limit). Returns False, after one warning that says what to do, when the hard limit is
    too low: the files beyond it will be rejected ("Too many open files").
    """
    try:
        import resource
    except ImportError:  # not on POSIX
        return True
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = n_files + FD_MARGIN
    if need <= soft:
        return True
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.debug("could not raise the open-file limit to %d: %s", target, exc)
    if need <= soft:
        return True
    log.warning(
        "the workspace has %d segment files but this process may keep only %d open (ulimit -n; the catalog server "
        "holds one descriptor per registered file): files beyond that will be skipped. Raise the hard limit "
        "(e.g. `ulimit -Hn %d` as root / LimitNOFILE) or split the workspace.",
        n_files, soft, need,
    )
    return False


def restore_segments(client, workspace: Workspace, dataset: str, segment_ids: Sequence[str]) -> RestoreReport:
    """Register only `segment_ids` of `dataset` (every layer, base first; per layer the version a full restore would
    pick, :func:`restore_layer`): e.g. the few rollouts a report opens, without restoring the whole dataset."""
    report = RestoreReport()
    wanted = sorted(set(segment_ids))
    if not wanted or dataset not in workspace.datasets():
        return report
    ds = client.create_dataset(dataset, exist_ok=True)
    for layer in workspace.layers(dataset):
        versions = {seg: list(reversed(workspace.segment_versions(dataset, layer, seg))) for seg in wanted}
        done = restore_layer(ds, layer, {seg: v for seg, v in versions.items() if v}, report)
        report.registered.extend(done)
        report.segments[(dataset, layer)] = len(done)
    return report


def restore_layer(ds, layer: str, versions: dict[str, list[Path]], report: RestoreReport) -> list[Path]:
    """Register one version of every segment of a layer: the newest one that passes the checks and the catalog accepts.

    `versions`: segment id -> its version files, newest first. Rounds: the newest remaining
    version of every segment not registered yet is checked (:func:`checked_layer_files`) and
    registered (:func:`register_tolerant`); a segment whose candidate was skipped or rejected
    tries its next older version in the next round. Skipped newer versions are reported
    (`report.skipped`, with the version registered instead) and stay on disk. Returns the
    files registered.
    """
    pending = {seg: list(paths) for seg, paths in versions.items() if paths}
    registered: list[Path] = []
    first_skip = len(report.skipped)
    while pending:
        candidates = [paths.pop(0) for paths in pending.values()]
        good = checked_layer_files(candidates, report)
        done = register_tolerant_paths(ds, good, layer, report)
        registered.extend(done)
        done_segs = {segment_of(p) for p in done}
        pending = {seg: paths for seg, paths in pending.items() if seg not in done_segs and paths}
    used = {segment_of(p): p for p in registered}
    for i in range(first_skip, len(report.skipped)):
        path, reason = report.skipped[i]
        older = used.get(segment_of(path))
        if older is not None and older != path:
            report.skipped[i] = (path, f"{reason}; registered the older version {older.name} instead "
                                       f"(the damaged {path.name} is left on disk, not deleted: check it with `roboloop verify`, "
                                       "then delete it)")
    return registered


def usable_versions(workspace: Workspace) -> list[Path]:
    """The version of every segment and layer that a restore would register, from the same cheap checks, without a server.

    What `roboloop gc` keeps when no catalog runs: the newest version of each segment that
    passes :func:`checked_layer_files` (older ones are then superseded; a damaged newer one is not
    a reason to delete anything).
    """
    scratch = RestoreReport()
    out: list[Path] = []
    for dataset in workspace.datasets():
        for layer in workspace.layers(dataset):
            pending = {seg: list(paths) for seg, paths in workspace.segment_version_lists(dataset, layer).items() if paths}
            while pending:
                good = checked_layer_files([paths.pop(0) for paths in pending.values()], scratch)
                out.extend(good)
                ok = {segment_of(p) for p in good}
                pending = {seg: paths for seg, paths in pending.items() if seg not in ok and paths}
    return out


def register_tolerant(ds, files: list[Path], layer: str, report: RestoreReport) -> int:
    """Register in one batch; if the batch fails, bisect so one bad file cannot block the rest. Returns the count registered."""
    return len(register_tolerant_paths(ds, files, layer, report))


def register_tolerant_paths(ds, files: list[Path], layer: str, report: RestoreReport) -> list[Path]:
    """`register_tolerant`, returning the files registered (the others are in `report.skipped`)."""
    if not files:
        return []
    from rerun.catalog import OnDuplicateSegmentLayer

    uris = {file_uri(f): f for f in files}
    try:
        results = list(ds.register(list(uris), layer_name=layer, on_duplicate=OnDuplicateSegmentLayer.REPLACE).iter_results())
    except Exception as exc:  # noqa: BLE001 - a corrupt file fails the whole call
        if len(files) == 1:
            report.skipped.append((files[0], f"rejected by the catalog: {first_line(exc)}"))
            return []
        mid = len(files) // 2
        return register_tolerant_paths(ds, files[:mid], layer, report) + register_tolerant_paths(ds, files[mid:], layer, report)
    ok: list[Path] = []
    for res in results:
        path = uris.get(res.uri, Path(res.uri))
        if res.is_error:
            report.skipped.append((path, f"rejected by the catalog: {res.error}"))
        else:
            ok.append(path)
    return ok


def publish_row_table(client, workspace: Workspace, name: str) -> bool:
    """(Re)create catalog table `name` in memory from its live rows; False when it has none.

    Columns are inferred from the rows (`rows.to_arrow`); when the rows disagree on a
    column's type, nested values (lists, dicts) of that table are stored as JSON text.
    """
    live = _rows.read_rows(workspace, name)
    if not live:
        return False
    table = _arrow_rows(live)
    if name in client.table_names():
        client.get_table(name).delete()
    entry = client.create_table(name, table.schema)
    if table.num_rows:
        entry.append(table.combine_chunks().to_batches()[0])
    return True


def _arrow_rows(live: list[dict[str, Any]]):
    try:
        table = _rows.to_arrow(live)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        text = [{k: (json.dumps(v, sort_keys=True, default=str) if isinstance(v, (list, dict)) else v) for k, v in r.items()} for r in live]
        table = _rows.to_arrow(text)
    # a column that is null in every row has no type the catalog can store: make it text. A column whose
    # type holds a struct without fields (`{}` in every row: `collected` of a plan without items) is
    # written by Lance but shifts every later column when read back (measured: the next string column
    # came back null or failed to decode, so every query of the table failed): it becomes JSON text.
    for i, f in enumerate(table.schema):
        if pa.types.is_null(f.type):
            table = table.set_column(i, pa.field(f.name, pa.string()), pa.nulls(table.num_rows, pa.string()))
        elif _has_empty_struct(f.type):
            text = [None if r.get(f.name) is None else json.dumps(r.get(f.name), sort_keys=True, default=str) for r in live]
            table = table.set_column(i, pa.field(f.name, pa.string()), pa.array(text, pa.string()))
    return table


def _has_empty_struct(t) -> bool:
    """A struct type without fields anywhere inside `t` (lists, maps and structs are searched)."""
    if pa.types.is_struct(t):
        return t.num_fields == 0 or any(_has_empty_struct(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _has_empty_struct(t.value_type)
    if pa.types.is_map(t):
        return _has_empty_struct(t.key_type) or _has_empty_struct(t.item_type)
    return False


def segment_of(path: Path) -> str:
    """The segment a layer file belongs to, from its name: `<id>.rrd`, or a version `<id>.<n>.rrd`."""
    m = _VERSIONED.match(path.stem)
    return m.group(1) if m else path.stem


_VERSIONED = re.compile(r"^(.+)\.(\d+)$")


def checked_layer_files(files: list[Path], report: RestoreReport) -> list[Path]:
    """The files of one layer that are safe to register; every other one goes to `report.skipped` with its reason.

    A file is skipped when it is truncated (no footer: `quick_check_rrd`), its manifest is
    unreadable, or the recording id inside it differs from the segment its name says (the
    catalog registers by recording id, so such a file would silently replace the layer of
    another segment, or create a segment nobody wrote under that name). When two files
    hold one recording, the file named after it is kept and the warning names both.
    """
    by_name = {segment_of(f): f for f in files}
    good: list[Path] = []
    for f in files:
        reason, rid = inspect_rrd(f)
        if reason:
            report.skipped.append((f, reason))
            continue
        try:
            rid = rid or read_recording_id(f)
        except CorruptRecordingError as exc:
            report.skipped.append((f, str(exc).removeprefix(f"{f}: ")))
            continue
        seg = segment_of(f)
        if rid == seg:
            good.append(f)
        elif rid in by_name:
            report.skipped.append(
                (f, f"is named after segment {seg!r} but holds recording {rid!r}, the segment of {by_name[rid].name}; "
                    f"kept {by_name[rid].name}, skipped {f.name} "
                    f"(a file named after one segment must not replace another: delete or rename {f.name})")
            )
        else:
            report.skipped.append(
                (f, f"holds recording {rid!r} but is named after segment {seg!r}; skipped "
                    f"(rename it to {rid}.rrd if it is that segment's file)")
            )
    return good
