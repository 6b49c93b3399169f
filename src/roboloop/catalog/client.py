"""The catalog: an embedded Rerun catalog server restored from the workspace, or a remote one.

With no catalog URL, `Catalog` starts the open-source Rerun catalog server in-process,
bound to 127.0.0.1 on a free port, and restores the workspace into it: every dataset
(`base` layer first, then the other layers), every table, each dataset's default
blueprint. The server keeps all of that in memory only, so the workspace is the system
of record and a restart loses nothing. With a URL (`--catalog` / `ROBOLOOP_CATALOG`) it
attaches to a running catalog and starts nothing. With no URL configured it first looks
for the workspace's own server (`roboloop serve` records it in `server.json`, see
`roboloop.catalog.server`) and attaches to it when it is alive; `url=""` (or
`attach=False`) always starts an embedded server.

This module decides nothing about file layout: paths come from `Workspace`.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from roboloop import schema
from roboloop.catalog.errors import (
    CatalogError,
    CorruptRecordingError,
    PortInUseError,
    ReadOnlySQLError,
    UnknownDatasetError,
    first_line,
)
from roboloop.catalog.restore import RestoreReport, publish_row_table, restore_segments
from roboloop.catalog.restore import restore as restore_workspace
from roboloop.catalog.rrd import RECORDING_INFO_ENTITY, file_uri, has_recording_info, validate_rrds
from roboloop.catalog.server import live_server
from roboloop.workspace import Workspace, atomic_path, check_checksum, file_checksum, forget_checksum, make_folder

log = logging.getLogger(__name__)

ENV_CATALOG = "ROBOLOOP_CATALOG"
LOCALHOST = "127.0.0.1"



_READ_ONLY_REFUSAL = re.compile(r"(DDL|DML|Statement) not supported")
_QUERY_KEYWORDS = {"SELECT", "WITH", "EXPLAIN", "SHOW", "VALUES", "DESCRIBE"}
_SQL_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)


def _first_keyword(query: str) -> str:
    """The statement's first keyword, upper case (comments and opening parentheses skipped)."""
    m = re.match(r"[\s(]*([A-Za-z]+)", _SQL_COMMENTS.sub(" ", query))
    return m.group(1).upper() if m else ""


# --- the catalog ---------------------------------------------------------------------------

class Catalog:
    """Client access to the catalog, embedded (restored from the workspace) or remote.

    Keep the object alive while using `client`: it owns the in-process server.
    """

    def __init__(
        self,
        workspace: Workspace | str | os.PathLike[str] | None = None,
        url: str | None = None,
        *,
        restore: bool = True,
        port: int = 0,
        attach: bool = True,
        datasets: Sequence[str] | None = None,
    ) -> None:
        import rerun as rr

        # a workspace folder is accepted like record.episode and load_policy accept it
        self.workspace = workspace if isinstance(workspace, Workspace) else Workspace(workspace) if workspace else Workspace()
        explicit = url
        url = url if url is not None else (os.environ.get(ENV_CATALOG) or None)
        self.server = None
        self._live_fd: int | None = None
        self.report = RestoreReport()
        self._synced: dict[tuple[str, str], int] = {}  # (dataset, layer) -> when `refresh_layer` last looked (time_ns)
        self._own: set[Path] = set()  # layer files this catalog registered (`refresh_layer` need not look at them again)
        self._started_ns = time.time_ns()  # an embedded catalog's restore shows the workspace as of (after) this moment
        self.server_record = None  # the workspace's `roboloop serve` record when attached through it
        if not url and explicit is None and attach:
            url = self._workspace_server_url()
            if url:
                try:
                    self.client = _connect(url)
                except CatalogError as exc:  # it stopped between the check and now: start our own
                    log.warning("the workspace's catalog server did not answer (%s); starting an embedded one", exc)
                    url, self.server_record = None, None
                else:
                    self.url = url
                    return
        if url:
            self.client = _connect(url)
            self.url = url
        else:
            # this process now owns a catalog over the workspace: superseded layer versions are
            # deleted only if no other catalog process still runs (it may be reading them)
            self._live_fd, alone = self.workspace.live_catalog()
            try:
                self.server = _start_server(rr, port)
            except BaseException:
                self._release_workspace()
                raise
            self.client = self.server.client()
            self.url = self.server.url()
            if restore:
                self.report = self.restore(datasets)  # removes dead writers' temporary files too
                if alone and datasets is None:  # garbage is judged only against a complete restore  # a version is superseded only by a newer one this restore registered
                    self.workspace.collect_garbage(self.report.registered, temp_files=False)
            elif alone:
                self.workspace.remove_stale_temp_files()

    def _workspace_server_url(self) -> str | None:
        """URL of the workspace's running `roboloop serve`, if any (see `roboloop.catalog.server`)."""
        rec = live_server(self.workspace)
        if rec is None:
            return None
        self.server_record = rec
        log.debug("attaching to the workspace's catalog server %s (pid %d)", rec.url, rec.pid)
        return rec.url

    # --- lifecycle -------------------------------------------------------------------------
    @property
    def embedded(self) -> bool:
        """True when this process runs the catalog server."""
        return self.server is not None

    def close(self) -> None:
        """Stop the embedded server (no-op when attached to a remote catalog)."""
        if self.server is not None:
            try:
                self.server.shutdown()
            finally:
                self.server = None
                self._release_workspace()

    def _release_workspace(self) -> None:
        if self._live_fd is not None:
            os.close(self._live_fd)
            self._live_fd = None

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- restore ---------------------------------------------------------------------------
    def restore(self, datasets: Sequence[str] | None = None) -> RestoreReport:
        """Register everything in the workspace: datasets (base layer first), tables, blueprints.

        With `datasets`, only those datasets (and every table): a command that reads one small dataset
        from the catalog and the rest from the rollout index starts in a fraction of the time.
        See `roboloop.catalog.restore.restore`.
        """
        return restore_workspace(self.client, self.workspace, datasets)

    def restore_segments(self, dataset: str, segment_ids: Sequence[str]) -> RestoreReport:
        """Register only `segment_ids` of `dataset` (every layer): a catalog started without that dataset can still open
        a few of its segments (a report's failure thumbnails). See `roboloop.catalog.restore.restore_segments`."""
        return restore_segments(self.client, self.workspace, dataset, segment_ids)

    def refresh_layer(self, dataset: str, layer: str) -> list[str]:
        """Register the versions of `layer` that other processes wrote into the workspace since this catalog last looked
        (its restore, or the previous call); returns those segment ids. Call it under the lock its writers share.

        An embedded catalog is a snapshot of the workspace taken at its start: a writer that carries values over from
        a segment's current version (refine, value: `signals`) must read the newest one. A catalog attached to a
        server (`roboloop serve`, a remote URL) is shared by every writer: nothing to do. Files changed within a
        second of the last look are included (coarse file-system clocks); registering one twice is harmless.
        """
        if self.server is None:
            return []
        key = (dataset, layer)
        since = self._synced.get(key, self._started_ns) - 1_000_000_000
        self._synced[key] = time.time_ns()
        changed = []
        for seg, paths in self.workspace.segment_version_lists(dataset, layer).items():
            try:
                if paths[0] not in self._own and paths[0].stat().st_mtime_ns > since:
                    changed.append(seg)
            except FileNotFoundError:  # collected meanwhile: the segment has a newer version, seen next time
                continue
        if changed:
            self.restore_segments(dataset, changed)
        return changed

    # --- datasets --------------------------------------------------------------------------
    def dataset_names(self) -> list[str]:
        return sorted(self.client.dataset_names())

    def dataset(self, name: str):
        """The DatasetEntry called `name`; UnknownDatasetError (listing the existing ones) if absent."""
        names = self.dataset_names()
        if name not in names:
            raise UnknownDatasetError(name, names)
        return self.client.get_dataset(name)

    def ensure_dataset(self, name: str):
        """Get or create a dataset (its workspace folder is created by the first file written)."""
        schema.validate_dataset_name(name)
        return self.client.create_dataset(name, exist_ok=True)

    def register_files(
        self,
        dataset: str,
        paths: Iterable[str | os.PathLike[str]],
        *,
        layer: str = schema.BASE_LAYER,
        validate: bool = True,
    ) -> list[str]:
        """Register finished RRD files (already in the workspace) as `layer` of `dataset`.

        A layer that already exists for a segment is replaced. With `validate`, every file
        is decoded completely first (`validate_rrd`) and nothing is registered if any file is corrupt.
        Returns the segment ids.
        """
        from rerun.catalog import OnDuplicateSegmentLayer

        files = [Path(p) for p in paths]
        if not files:
            return []
        if validate:
            validate_rrds(files)
        ds = self.ensure_dataset(dataset)
        op = ds.register([file_uri(f) for f in files], layer_name=layer, on_duplicate=OnDuplicateSegmentLayer.REPLACE)
        ids, errors = [], []
        for res in op.iter_results():
            (errors.append(f"{res.uri}: {res.error}") if res.is_error else ids.append(res.segment_id))
        if errors:
            raise CatalogError("the catalog rejected some files:\n  " + "\n  ".join(errors))
        if self.server is not None and layer != schema.BASE_LAYER:
            self._own.update(files)
        return ids

    def import_files(
        self, dataset: str, paths: Sequence[str | os.PathLike[str]], *, layer: str = schema.BASE_LAYER
    ) -> list[str]:
        """Copy existing RRD files into the workspace and register them as `layer` of `dataset`.

        All or nothing: every file is validated first (a corrupt file, a bad segment id or a
        segment that already has a `layer` file in the workspace raises `CatalogError`
        naming every problem, and nothing is copied); a failure while copying or
        registering removes the files copied so far. Returns the segment ids.
        """
        return import_files(self, dataset, paths, layer=layer)

    def dataset_summary(self, dataset: str) -> tuple[int, dict[str, int]]:
        """(number of segments, layer name -> number of segments that have it), `base` first, then by name."""
        st = self.segment_table(dataset)
        counts: dict[str, int] = {}
        for row in st.column(schema.LAYERS).to_pylist() if st.num_rows else []:
            for layer in row or []:
                counts[layer] = counts.get(layer, 0) + 1
        return st.num_rows, dict(sorted(counts.items(), key=lambda kv: (kv[0] != schema.BASE_LAYER, kv[0])))

    def unregister_layer(self, dataset: str, layer: str, segment_ids: Sequence[str] = ()) -> None:
        """Drop one layer (of the given segments, or of all of them) from the catalog."""
        self.dataset(dataset).unregister(segments_to_drop=list(segment_ids), layers_to_drop=[layer]).wait()

    def register_blueprint(self, dataset: str, path: str | os.PathLike[str]) -> None:
        """Register an .rbl file as the dataset's default blueprint."""
        self.dataset(dataset).register_blueprint(file_uri(Path(path)))

    # --- queries ---------------------------------------------------------------------------
    def segment_table(self, dataset: str) -> pa.Table:
        """The dataset's segment table with friendly property columns.

        Each `property:<group>:<name>` column becomes `<group>.<name>`; single-valued
        properties are unwrapped from their one-element lists. `rerun_segment_id` is
        kept as `segment_id`, `rerun_layer_names` as `layers`.
        """
        raw = self.dataset(dataset).segment_table().to_arrow_table()
        return friendly_segment_table(raw)

    def sql(self, query: str) -> pa.Table:
        """Run a read-only DataFusion SQL query; each dataset's friendly segment table is a view named after it, each table too.

        Only queries run (`SELECT`, `WITH`, `EXPLAIN`, `SHOW`): DDL (`CREATE`, `DROP`), DML
        (`INSERT`, `COPY ... TO`) and statements (`SET`) are refused with `ReadOnlySQLError`
        before anything executes (DataFusion `SQLOptions`). Only the datasets the query names
        are fetched (building a segment table is the expensive part, ~0.5 s per 1000
        segments); a dataset with no segments is an empty view. The whole result is held in
        memory: `sql_batches` streams it.
        """
        frame, fail = self._sql_frame(query)
        try:
            return frame.to_arrow_table()
        except Exception as exc:
            raise fail(exc) from exc

    def sql_batches(self, query: str) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """`sql`, streamed: (the result's schema, its record batches as DataFusion produces them).

        Memory stays bounded by what the query itself needs (an aggregation or a sort holds
        its input; a scan or projection does not): `roboloop sql` prints each batch as it
        arrives. Errors while executing are raised from the iterator as `CatalogError`.
        """
        frame, fail = self._sql_frame(query)

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                stream = frame.execute_stream()
                for batch in stream:
                    yield batch.to_pyarrow()
            except Exception as exc:
                raise fail(exc) from exc

        try:
            schema_ = frame.schema()
        except Exception as exc:
            raise fail(exc) from exc
        return schema_, batches()

    def _sql_frame(self, query: str):
        """(the DataFusion DataFrame of a read-only query, a function mapping an execution error to a `CatalogError`)."""
        from datafusion import SQLOptions

        keyword = _first_keyword(query)
        if keyword not in _QUERY_KEYWORDS:
            raise ReadOnlySQLError(
                f"`sql` is read-only: only queries (SELECT, WITH, EXPLAIN, SHOW, VALUES) run, not {keyword or 'an empty statement'}; "
                "datasets and tables change through roboloop commands (collect, refine, flag, curate, import)"
            )
        ctx = self.client.ctx
        names = self.dataset_names()
        words = set(re.findall(r"[A-Za-z0-9_-]+", query))
        empty = []
        for name in names:
            if name in words:
                raw = self.client.get_dataset(name).segment_table().to_arrow_table()
                table = friendly_segment_table(raw)
                if table.num_rows == 0:
                    empty.append(name)
                _register_arrow(ctx, name, table)

        def fail(exc: BaseException) -> CatalogError:
            first = first_line(exc)
            if _READ_ONLY_REFUSAL.search(first):
                return ReadOnlySQLError(
                    f"`sql` is read-only: only queries (SELECT, WITH, EXPLAIN, SHOW) run; refused: {first}\n"
                    "  datasets and tables change through roboloop commands (collect, refine, flag, curate, import)"
                )
            hint = "".join(f"\n  dataset {n!r} has no episodes yet (0 segments): it has only the columns segment_id, layers" for n in empty)
            return CatalogError(
                f"SQL failed: {first}{hint}\n  datasets available as views: {', '.join(names) or '(none)'}"
                f"\n  tables: {', '.join(self.table_names()) or '(none)'}"
            )

        options = SQLOptions().with_allow_ddl(False).with_allow_dml(False).with_allow_statements(False)
        try:
            return ctx.sql_with_options(query, options), fail
        except Exception as exc:
            err = fail(exc)
            if isinstance(err, ReadOnlySQLError):
                raise err from None
            raise err from exc

    # --- tables ----------------------------------------------------------------------------
    def publish_rows(self, name: str) -> bool:
        """Rebuild catalog table `name` from its row files (`roboloop.rows`) after rows were written.

        Restore does this for every row table at start; call it to make new rows visible to
        `sql` in a running catalog. False when the table has no live rows.
        """
        return publish_row_table(self.client, self.workspace, name)

    def table_names(self) -> list[str]:
        return sorted(self.client.table_names())

    def table(self, name: str, arrow_schema: pa.Schema | None = None):
        """Get a table; with `arrow_schema`, create it (persisted under the workspace) when missing."""
        if name in self.table_names():
            return self.client.get_table(name)
        if arrow_schema is None:
            raise CatalogError(f"unknown table {name!r}; available tables: {', '.join(self.table_names()) or '(none)'}")
        folder = self.workspace.table_dir(name)
        make_folder(folder)
        return self.client.create_table(name, arrow_schema, url=folder.resolve().as_uri())


def import_files(catalog: Catalog, dataset: str, paths: Sequence[str | os.PathLike[str]], *, layer: str = schema.BASE_LAYER) -> list[str]:
    """See `Catalog.import_files`."""
    try:
        schema.validate_dataset_name(dataset)
        schema.validate_dataset_name(layer)
    except ValueError as exc:
        raise CatalogError(str(exc)) from None
    ids, digests, problems = _checked_sources([Path(p) for p in paths], layer)
    if problems:
        raise CatalogError("nothing was imported; fix or drop these files:\n  " + "\n  ".join(problems))
    targets = _import_targets(catalog.workspace, dataset, layer, ids)
    written: list[Path] = []
    try:
        for src, dest in targets:
            with atomic_path(dest) as tmp:  # records the copy's checksum in the workspace manifest
                shutil.copyfile(src, tmp)
                if file_checksum(tmp) != digests[src]:
                    raise CatalogError(f"{src}: changed while it was imported (its bytes differ from the ones validated); "
                                       "nothing was imported, import it again")
            written.append(dest)
        return catalog.register_files(dataset, written, layer=layer, validate=False)  # decoded above
    except BaseException:
        for dest in written:
            dest.unlink(missing_ok=True)
            forget_checksum(dest)
        raise


def _checked_sources(sources: list[Path], layer: str) -> tuple[dict[Path, str], dict[Path, tuple[str, int]], list[str]]:
    """(segment id per file, checksum per file, problems) of the files an import would copy: each decodes
    fully (in a child process), matches its own checksum record if it has one, names a valid segment, is of
    the right kind for `layer`, and no two hold one recording."""
    ids: dict[Path, str] = {}
    problems: list[str] = []
    try:
        decoded = validate_rrds(sources)
    except CorruptRecordingError as exc:
        problems.extend(str(exc).splitlines())
        decoded = {}
    digests: dict[Path, tuple[str, int]] = {}
    for p, rid in decoded.items():
        problem = _source_problem(p, rid, layer)
        if problem:
            problems.append(f"{p}: {problem}")
            continue
        ids[p] = rid
        digests[p] = file_checksum(p)
    seen: dict[str, Path] = {}
    for p, seg in ids.items():
        if seg in seen:
            problems.append(f"{p}: holds recording {seg!r}, like {seen[seg]} (one file per segment and layer)")
        seen.setdefault(seg, p)
    return ids, digests, problems


def _source_problem(p: Path, rid: str, layer: str) -> str | None:
    """What is wrong with one decoded import source, or None."""
    status, detail = check_checksum(p)  # a file from another workspace carries its record: it must match
    if status == "mismatch":
        return detail
    try:
        schema.validate_segment_id(rid)
    except ValueError as exc:
        return str(exc)
    if layer != schema.BASE_LAYER and has_recording_info(p):
        return (f"is a base recording (it carries the recording's own properties, {RECORDING_INFO_ENTITY}), "
                f"not a {layer!r} layer: registered as a layer it would overwrite the base's properties; "
                "import it without --layer, or write the layer without recording properties "
                "(rerun: RecordingStream(..., send_properties=False))")
    return None


def _import_targets(ws: Workspace, dataset: str, layer: str, ids: dict[Path, str]) -> list[tuple[Path, Path]]:
    """(source, destination) per file; a segment that already has a file in that layer stops the import."""
    targets = []
    for src, seg in ids.items():
        dest = ws.segment_path(dataset, layer, seg)
        if dest.exists():
            raise CatalogError(f"{src}: segment {seg!r} already has a {layer!r} file in the workspace ({dest}); nothing was imported")
        targets.append((src, dest))
    return targets


def friendly_segment_table(raw: pa.Table) -> pa.Table:
    """Rename property columns to `group.name` and unwrap one-element list values."""
    columns, names = [], []
    for name in raw.column_names:
        col = raw.column(name)
        if name == schema.SEGMENT_ID_COLUMN:
            names.append(schema.SEGMENT_ID)
            columns.append(col)
        elif name == schema.LAYER_NAMES_COLUMN:
            names.append(schema.LAYERS)
            columns.append(col)
        elif name.startswith(schema.PROPERTY_PREFIX):
            friendly = schema.friendly_name(name)
            if friendly is None or friendly.startswith("RecordingInfo."):
                continue
            if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
                lengths = pc.list_value_length(col)
                max_len = pc.max(lengths).as_py()
                if max_len is None or max_len <= 1:
                    values = [v[0] if v else None for v in col.to_pylist()]
                    col = pa.array(values, type=col.type.value_type)
            names.append(friendly)
            columns.append(col)
        elif name.startswith(schema.TIMELINE + ":"):
            names.append(name.replace(":", "_"))
            columns.append(col)
    return pa.Table.from_arrays(columns, names=names)


def _register_arrow(ctx, name: str, table: pa.Table) -> None:
    """Register `table` as a view; a table with no rows too (zero batches would be a Rust panic, see FIELD-NOTES)."""
    try:
        ctx.deregister_table(name)
    except Exception:  # noqa: BLE001
        pass
    batches = table.to_batches() or [pa.RecordBatch.from_pylist([], schema=table.schema)]
    ctx.register_record_batches(name, [batches])



def _start_server(rr, port: int):
    """Start the in-process server on 127.0.0.1; a taken port is an error naming the process that holds it."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise CatalogError(f"port {port!r} is not a TCP port: use 1-65535, or 0 for any free port")
    if port:
        holder = port_holder(port)
        if holder is not None:
            raise PortInUseError(f"port {port} is already in use{holder}; stop that process, or choose another port (--port 0 = any free port)")
    try:
        return rr.server.Server(host=LOCALHOST, port=port)
    except Exception as exc:
        if port:
            raise PortInUseError(
                f"could not listen on port {port}: {first_line(exc)}; choose another port (--port 0 = any free port)"
            ) from exc
        raise CatalogError(f"could not start the embedded catalog server: {exc}") from exc


def port_holder(port: int) -> str | None:
    """None when `port` is free on 127.0.0.1; else a description of who holds it (`" by pid 123 (python3: ...)"`, or "").

    The probe binds with SO_REUSEADDR, as the Rerun server's listener does (tokio sets it on
    Unix): connections of a server that was killed linger in TIME_WAIT for ~60 s, and they
    must not count as a holder (the server can bind over them; a listening socket still
    refuses the probe).
    """
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((LOCALHOST, port))
    except OSError:
        pass
    else:
        return None
    finally:
        probe.close()
    pid = _listening_pid(port)
    if pid is None:
        return ""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        cmd = ""
    return f" by pid {pid}" + (f" ({cmd[:120]})" if cmd else "")


def _listening_pid(port: int) -> int | None:
    """The pid of a process listening on TCP `port` (Linux /proc; None when it cannot be told)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 9 and parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:  # 0A = LISTEN
                inodes.add(parts[9])
    if not inodes:
        return None
    targets = {f"socket:[{i}]" for i in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in targets:
                    return int(proc.name)
        except OSError:
            continue
    return None


def _connect(url: str):
    from rerun.catalog import CatalogClient

    try:
        return CatalogClient(url)
    except Exception as exc:
        raise CatalogError(
            f"could not reach the catalog at {url}: {first_line(exc)}\n"
            f"  start one with `roboloop serve`, or unset {ENV_CATALOG} / drop --catalog to use the embedded one"
        ) from exc
