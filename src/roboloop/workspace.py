"""The on-disk system of record: where every layer file, table and run artifact lives.

Layout (one folder per layer, so a layer file never collides with its base)::

    <root>/datasets/<dataset>/<layer>/<segment_id>.rrd
    <root>/datasets/<dataset>/blueprint.rbl
    <root>/tables/<table>/<entry_id>/        (Lance, written by the catalog server)
    <root>/runs/<run_id>/                    (checkpoint, config)
    <root>/locks/<name>.lock                 (fcntl locks: unique names, seed reservations, live catalogs)
    <root>/checksums/datasets/<dataset>/<layer>/<segment_id>.rrd.sha256   (the manifest: see below)

Every file is written under a temporary name in its final folder and renamed into
place, so a crash never leaves a half-written file under a real name. Before the rename,
the checksum (sha256 and size) of every layer file and blueprint is recorded in the
workspace's manifest (`record_checksum`: one record per file under `checksums/`), which
`verify` and `import` check (`check_checksum`). A registered
file is never modified in place: a new version is a new file registered with REPLACE
(`<segment_id>.rrd` is version 0, then `<segment_id>.1.rrd`, `.2`, ...; see
`next_version_path`); old versions are deleted only by `collect_garbage`, when no
catalog process still uses the workspace (`live_catalog` holds a shared lock for as long
as a catalog runs), and only when a newer version was actually registered (a damaged
newest version never costs the good older one).

A read-only workspace (a shared, mounted dataset; `Workspace.read_only`) is served as it
is: no clean-up, no lock that cannot be taken, one warning; a write into it raises
`WorkspaceReadOnlyError`. A write that hits a full disk raises `WorkspaceFullError` and
leaves no partial file.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from roboloop import faults, schema
from roboloop.errors import UnknownRunError, WorkspaceBusyError, WorkspaceError

log = logging.getLogger(__name__)

ENV_WORKSPACE = "ROBOLOOP_WORKSPACE"
DEFAULT_WORKSPACE = ".roboloop"
TEMP_MARKER = ".tmp-"
WRITER_RUN = "runs"
"""`writer` kind of a training run (key: run id)."""
WRITER_EVAL = "evals"
"""`writer` kind of an evaluation (key: eval id)."""
WRITER_WAIT_S = 0.5
_HELD: dict[Path, list[int]] = {}  # writer lock path -> [fd, depth], this process's held writer locks
_HELD_GUARD = threading.Lock()


class WorkspaceReadOnlyError(WorkspaceError):
    """A command that writes was run on a read-only workspace (a shared, mounted dataset)."""


class WorkspaceFullError(WorkspaceError):
    """The file system holding the workspace ran out of space while a file was written (the partial file is removed)."""


class WorkspaceLayoutError(WorkspaceError):
    """A file sits where the workspace keeps a folder (`datasets/<dataset>/<layer>/`, `tables/<table>/rows/`, `runs/`, ...)."""


class DamagedFileError(WorkspaceError):
    """A small file roboloop wrote (`run.json`, a run's config) no longer parses: it was cut short or edited afterwards."""


_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)


def read_only_error(where: Path) -> WorkspaceReadOnlyError:
    """The error for a write into a read-only workspace folder."""
    return WorkspaceReadOnlyError(
        f"cannot write to {where}: the workspace is read-only (a shared or mounted copy?). Read-only commands "
        "(ls, sql, success, failures, export, open, verify, ...) work on it; to record, train or evaluate, copy it to a "
        "writable folder (cp -r) and pass that with --workspace / ROBOLOOP_WORKSPACE"
    )


def not_a_folder_error(folder: Path) -> WorkspaceLayoutError:
    """The error for a folder that cannot be made because a file holds its name (or a parent's)."""
    folder = Path(folder)
    blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), folder)
    needed = "" if blocker == folder else f" (on the way to {folder})"
    return WorkspaceLayoutError(
        f"{blocker} is a file where roboloop keeps a folder{needed}, so the write there did not happen. Move the file "
        f"away (mv {blocker} {blocker}.bak) and run the command again"
    )


def open_lock_file(path: Path) -> int:
    """`os.open` a lock file for flock (created if absent); a folder in its place is a `WorkspaceLayoutError` naming it."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except IsADirectoryError as exc:
        raise WorkspaceLayoutError(
            f"{path} is a folder where roboloop keeps a lock file, so the command could not take its lock. Move the "
            f"folder away (mv {path} {path}.bak) and run the command again"
        ) from exc


def make_folder(folder: Path, final: Path | None = None) -> None:
    """`mkdir -p folder`, with the workspace's errors: read-only (`WorkspaceReadOnlyError`), full (`WorkspaceFullError`
    about `final`, the file about to be written there) or a file in the way (`WorkspaceLayoutError`)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno in _READ_ONLY_ERRNOS:
            raise read_only_error(folder) from exc
        if _is_disk_full(exc):
            raise disk_full_error(final if final is not None else folder / ".") from exc
        if exc.errno in (errno.EEXIST, errno.ENOTDIR):
            raise not_a_folder_error(folder) from exc
        raise


def read_json_file(path: Path, what: str, kind: type = dict):
    """A JSON file roboloop wrote holding a `kind` (`run.json`: an object; `features.json`: a list); `DamagedFileError`
    naming it when it does not parse as one (FileNotFoundError when absent: the caller says what is missing)."""
    path = Path(path)
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        value, why = None, str(exc)
    else:
        why = f"it holds a JSON {type(value).__name__}, not {'an object' if kind is dict else 'a ' + kind.__name__}"
    if not isinstance(value, kind):
        raise DamagedFileError(
            f"{path} ({what}) is damaged: {why}. It was cut short or edited after roboloop wrote it; restore it from a "
            f"backup (or move {path.parent} away to drop it from the workspace), then run the command again"
        )
    return value


def free_bytes(path: Path) -> int | None:
    """Bytes available to this user on the file system of `path` (or its nearest existing parent); None if unknown."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


_FULL_MESSAGES = ("No space left on device", "Disk quota exceeded")
"""How a native writer (Rerun's blueprint `save`) words ENOSPC / EDQUOT in the `RuntimeError` it raises."""


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in _FULL_MESSAGES)


def disk_full_error(final: Path) -> WorkspaceFullError:
    """The error for a write of `final` that failed because its file system is full."""
    free = free_bytes(final.parent)
    left = f" ({free:,} bytes free)" if free is not None else ""
    return WorkspaceFullError(
        f"no space left on the device holding {final.parent}{left}: {final.name} was not written (its partial file was "
        "removed; nothing else changed). Free some space (`roboloop gc` removes superseded versions) or move the "
        "workspace to a larger disk (--workspace / ROBOLOOP_WORKSPACE), then run the command again"
    )


def default_root() -> Path:
    """Workspace root from `ROBOLOOP_WORKSPACE`, else `./.roboloop`."""
    return Path(os.environ.get(ENV_WORKSPACE) or DEFAULT_WORKSPACE)


def is_temp_file(path: Path) -> bool:
    """True for a file that `atomic_path` has not renamed into place yet (or a crash left behind)."""
    return path.name.startswith(".") and TEMP_MARKER in path.name


def temp_path(final: Path, owner_pid: int | None = None) -> Path:
    """A temporary name next to `final` owned by process `owner_pid` (default this one).

    Such a file is garbage once its owner is gone (`remove_stale_temp_files`): a worker that
    writes for its parent names the file after the parent, so nothing it leaves counts
    unless the parent, alive, renames it into place (`publish_temp`).
    """
    pid = os.getpid() if owner_pid is None else int(owner_pid)
    return Path(final).with_name(f".{Path(final).name}{TEMP_MARKER}{pid}-{uuid.uuid4().hex[:8]}")


def publish_temp(tmp: Path, final: Path) -> Path:
    """Rename a finished temporary file (see `temp_path`) onto `final`, which must not exist yet (FileExistsError).

    Its checksum is recorded first, like `atomic_path` does (DESIGN: before the rename that publishes it).
    """
    record_checksum(tmp, final)
    os.link(tmp, final)
    os.unlink(tmp)
    return Path(final)


@contextlib.contextmanager
def atomic_path(final: Path, *, exclusive: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to `final`; rename it onto `final` only if the block succeeds.

    On any exception (including KeyboardInterrupt) the temporary file is removed and
    `final` is untouched; a write that failed because the disk is full (ENOSPC, EDQUOT)
    raises `WorkspaceFullError`. With `exclusive`, an existing `final` is never replaced: the
    file is linked into place and `FileExistsError` is raised if `final` appeared
    meanwhile (two writers racing for one new version name: one wins, the other retries).
    """
    final = Path(final)
    make_folder(final.parent, final)
    tmp = temp_path(final)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary file for {final}")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        record_checksum(tmp, final)  # before the rename that publishes the file (DESIGN)
        faults.point("file.written")
        if exclusive:
            os.link(tmp, final)  # FileExistsError if another writer took the name
            tmp.unlink()
        else:
            os.replace(tmp, final)
        faults.point("file.renamed")
    except BaseException as exc:
        full = _is_disk_full(exc)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if full:
            raise disk_full_error(final) from exc
        if isinstance(exc, OSError) and exc.errno in _READ_ONLY_ERRNOS:
            raise read_only_error(final.parent) from exc
        raise


# --- checksums ------------------------------------------------------------------------------
CHECKSUMS_DIR = "checksums"
CHECKSUM_SUFFIX = ".sha256"
_CHECKSUM_LINE = re.compile(r"^([0-9a-f]{64}) (\d+)$")


def checksum_record_path(path: Path) -> Path | None:
    """Where the workspace records the checksum of a file it owns, or None for a file it does not checksum.

    Recorded: every layer file (`<root>/datasets/<dataset>/<layer>/<name>.rrd`) and every
    dataset's blueprint (`<root>/datasets/<dataset>/blueprint.rbl`), i.e. every file the
    catalog reads a recording or blueprint from. The record mirrors the file's path under
    `<root>/checksums/` (`checksums/datasets/<dataset>/<layer>/<name>.rrd.sha256`): one small
    record per file, so concurrent writers never touch each other's record, and the data
    folders hold only data.
    """
    path = Path(path)
    parents = path.parents
    if path.suffix == ".rrd" and len(parents) > 3 and parents[2].name == "datasets":
        root = parents[3]
    elif path.name == "blueprint.rbl" and len(parents) > 2 and parents[1].name == "datasets":
        root = parents[2]
    else:
        return None
    return root / CHECKSUMS_DIR / path.relative_to(root).with_name(path.name + CHECKSUM_SUFFIX)


def file_checksum(path: Path) -> tuple[str, int]:
    """(sha256 hex digest, size in bytes) of a file's bytes."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def record_checksum(tmp: Path, final: Path) -> None:
    """Record the checksum of `tmp` (about to be renamed onto `final`) in the workspace manifest, durably.

    The record is one line `<sha256> <size>` appended (O_APPEND, one write) to `final`'s
    record file. It is not fsynced (that would double the cost of every write, ~6 ms here):
    a kill -9 cannot lose it (the kernel has it before the rename), and after a power loss
    the worst case is a record missing or torn (unparseable lines are ignored), which verify
    reports as "no checksum recorded", never as a false mismatch. Appending, not replacing, keeps it right under every race:
    two writers racing for one new version name (`atomic_path(exclusive=True)`) both
    append and the winner's content matches its own line; a writer killed between this and
    its rename leaves a line no file matches, which is harmless. A file matches its record
    when its checksum is one of the lines (`check_checksum`). No-op for files the workspace
    does not checksum (`checksum_record_path`).
    """
    rec = checksum_record_path(final)
    if rec is None:
        return
    digest, size = file_checksum(tmp)
    make_folder(rec.parent, rec)
    fd = os.open(rec, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{digest} {size}\n".encode())
    finally:
        os.close(fd)


def forget_checksum(path: Path) -> None:
    """Delete the checksum record of a file that was deleted (garbage collection, a rolled-back write)."""
    rec = checksum_record_path(path)
    if rec is not None:
        with contextlib.suppress(FileNotFoundError):
            rec.unlink()


def recorded_checksums(path: Path) -> list[tuple[str, int]] | None:
    """The (sha256, size) lines recorded for `path`; None when nothing is recorded (a file written before checksums)."""
    rec = checksum_record_path(path)
    if rec is None:
        return None
    try:
        text = rec.read_text("ascii", errors="replace")
    except FileNotFoundError:
        return None
    out = []
    for line in text.splitlines():
        m = _CHECKSUM_LINE.match(line.strip())
        if m:
            out.append((m.group(1), int(m.group(2))))
    return out


def check_checksum(path: Path) -> tuple[str, str]:
    """Compare a file with its recorded checksum: ("ok" | "missing" | "mismatch", what to tell the user).

    Reads every byte of the file (`verify`, `import`; restore does not call it).
    """
    recorded = recorded_checksums(path)
    if not recorded:  # none, or only torn lines (a power loss before the record reached the disk)
        return "missing", "no checksum recorded (written before roboloop recorded checksums)"
    digest, size = file_checksum(path)
    if (digest, size) in recorded:
        return "ok", ""
    want_digest, want_size = recorded[-1]
    if all(size != s for _, s in recorded):
        what = f"its size is {size} bytes, {want_size} were written"
    else:
        what = f"its sha256 is {digest[:16]}..., {want_digest[:16]}... was written"
    return "mismatch", (f"checksum mismatch: the file changed after it was written ({what}); "
                        "restore it from a backup or delete it (an older version, if any, is then used)")


def atomic_write_bytes(final: Path, data: bytes) -> Path:
    """Write `data` to `final` atomically."""
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)
    return Path(final)


def atomic_write_text(final: Path, text: str) -> Path:
    """Write `text` (UTF-8) to `final` atomically."""
    return atomic_write_bytes(final, text.encode("utf-8"))


class Workspace:
    """A workspace folder: the system of record the catalog is restored from."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.root = self.root.expanduser().resolve()
        existing = next((p for p in (self.root, *self.root.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            where = "is a file" if existing == self.root else f"is inside {existing}, which is a file"
            raise WorkspaceError(f"workspace {self.root} {where}: a workspace is a folder; pass --workspace "
                                 f"(or ROBOLOOP_WORKSPACE) a folder path, new or existing")

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    # --- folders ---------------------------------------------------------------------------
    @property
    def datasets_dir(self) -> Path:
        return self.root / "datasets"

    @property
    def tables_dir(self) -> Path:
        return self.root / "tables"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def server_record_path(self) -> Path:
        """`server.json`: the URL and pid of the catalog server `roboloop serve` runs for this workspace."""
        return self.root / "server.json"

    @property
    def server_lock_path(self) -> Path:
        """`.server.lock`: held (flock) by the one `roboloop serve` process of this workspace while it runs."""
        return self.root / ".server.lock"

    def dataset_dir(self, dataset: str) -> Path:
        return self.datasets_dir / schema.validate_dataset_name(dataset)

    def layer_dir(self, dataset: str, layer: str) -> Path:
        return self.dataset_dir(dataset) / schema.validate_dataset_name(layer)

    def segment_path(self, dataset: str, layer: str, segment_id: str) -> Path:
        """Where one segment's file for one layer lives."""
        return self.layer_dir(dataset, layer) / f"{schema.validate_segment_id(segment_id)}.rrd"

    def blueprint_path(self, dataset: str) -> Path:
        """The dataset's default blueprint (restored with the workspace)."""
        return self.dataset_dir(dataset) / "blueprint.rbl"

    def table_dir(self, table: str) -> Path:
        return self.tables_dir / schema.validate_dataset_name(table)

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / schema.validate_segment_id(run_id)

    def run_info(self, run_id: str) -> dict:
        """`runs/<run_id>/run.json` (`schema.RUN_INFO_FILE`): run_id, dataset, task, selection(+digest), config_digest,
        checkpoint_sha256, policy, cameras, camera_size, train_ids, status, losses, ... (`UnknownRunError` when absent)."""
        path = self.run_dir(run_id) / schema.RUN_INFO_FILE
        if not path.is_file():
            known = sorted(p.name for p in self.runs_dir.iterdir()) if self.runs_dir.is_dir() else []
            raise UnknownRunError(f"unknown run {run_id!r} (no {path}); known runs: {', '.join(known) or '(none)'}")
        return read_json_file(path, f"run {run_id}'s record")

    # --- listing ---------------------------------------------------------------------------
    def datasets(self) -> list[str]:
        """Names of datasets that have a folder in the workspace."""
        if not self.datasets_dir.is_dir():
            return []
        return sorted(p.name for p in self.datasets_dir.iterdir() if p.is_dir() and not p.name.startswith("."))

    def layers(self, dataset: str) -> list[str]:
        """Layer folders of a dataset, `base` first, the others sorted by name."""
        d = self.dataset_dir(dataset)
        if not d.is_dir():
            return []
        names = sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
        if schema.BASE_LAYER in names:
            names.remove(schema.BASE_LAYER)
            names.insert(0, schema.BASE_LAYER)
        return names

    def segment_files(self, dataset: str, layer: str) -> list[Path]:
        """The newest finished file of every segment of one layer (temporary files are skipped).

        A segment's versions are `<segment_id>.rrd` (version 0), `<segment_id>.1.rrd`,
        `<segment_id>.2.rrd`, ...: only the highest version of each segment is returned,
        so restore registers the newest one.
        """
        newest: dict[str, tuple[int, Path]] = {}
        for seg, n, p in self._layer_versions(dataset, layer):
            if seg not in newest or n > newest[seg][0]:
                newest[seg] = (n, p)
        return sorted(p for _, p in newest.values())

    def segment_versions(self, dataset: str, layer: str, segment_id: str) -> list[Path]:
        """Every finished version file of one segment in one layer, oldest (version 0) first."""
        versions = [(n, p) for seg, n, p in self._layer_versions(dataset, layer, prefix=segment_id) if seg == segment_id]
        return [p for _, p in sorted(versions)]

    def next_version_path(self, dataset: str, layer: str, segment_id: str) -> Path:
        """Where the next version of a segment's layer file goes: `<id>.rrd` first, then `<id>.<n+1>.rrd`.

        A registered file is never modified: a changed segment is written to this new
        path and registered with REPLACE. Segment ids ending in `.<digits>` are refused
        (they would read as a version of another segment).
        """
        schema.validate_segment_id(segment_id)
        if _VERSION_SUFFIX.match(segment_id):
            raise ValueError(f"segment id {segment_id!r} ends in '.<digits>', which names a file version; choose another id")
        existing = self.segment_versions(dataset, layer, segment_id)
        if not existing:
            return self.segment_path(dataset, layer, segment_id)
        n = max(_split_version(p.stem)[1] for p in existing)
        return self.layer_dir(dataset, layer) / f"{segment_id}.{n + 1}.rrd"

    def _layer_versions(self, dataset: str, layer: str, prefix: str = "") -> list[tuple[str, int, Path]]:
        """(segment id, version, path) of the layer's finished files; with `prefix`, only files whose name starts with it
        (one segment's versions without listing every file of the layer: writers ask per segment)."""
        d = self.layer_dir(dataset, layer)
        if not d.is_dir():
            return []
        out = []
        for p in (d.glob(glob.escape(prefix) + "*.rrd") if prefix else d.iterdir()):
            if p.suffix == ".rrd" and not is_temp_file(p) and p.is_file():
                seg, n = _split_version(p.stem)
                out.append((seg, n, p))
        return out

    def tables(self) -> dict[str, Path]:
        """Table name -> the Lance folder to load (the newest entry folder of each table)."""
        out: dict[str, Path] = {}
        if not self.tables_dir.is_dir():
            return out
        for tdir in sorted(self.tables_dir.iterdir()):
            if not tdir.is_dir() or tdir.name.startswith("."):
                continue
            entries = [p for p in tdir.iterdir() if p.is_dir() and not p.name.startswith(".")]
            if entries:
                out[tdir.name] = max(entries, key=lambda p: p.stat().st_mtime)
        return out

    def stale_temp_files(self) -> list[Path]:
        """Temporary files a crashed writer left behind (never registered, safe to delete): layer files, rows, runs."""
        out: list[Path] = []
        for d in (self.datasets_dir, self.tables_dir, self.runs_dir):
            if d.is_dir():
                out.extend(p for p in d.rglob(f".*{TEMP_MARKER}*") if p.is_file())
        return out

    def remove_stale_temp_files(self) -> int:
        """Delete temporary files whose writer process is gone; returns how many were removed (none in a read-only workspace)."""
        removed = 0
        if self.read_only:
            return 0
        for p in self.stale_temp_files():
            pid_part = p.name.split(TEMP_MARKER, 1)[1].split("-", 1)[0]
            if pid_part.isdigit() and _pid_alive(int(pid_part)):
                continue
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed += 1
        return removed

    # --- versions and garbage ----------------------------------------------------------------
    def segment_version_lists(self, dataset: str, layer: str) -> dict[str, list[Path]]:
        """Segment id -> every finished version file of that segment in one layer, newest first (what restore tries, in order)."""
        by_seg: dict[str, list[tuple[int, Path]]] = {}
        for seg, n, p in self._layer_versions(dataset, layer):
            by_seg.setdefault(seg, []).append((n, p))
        return {seg: [p for _, p in sorted(vs, reverse=True)] for seg, vs in sorted(by_seg.items())}

    def old_versions(self, in_use: Iterable[Path]) -> list[Path]:
        """The layer files superseded by a version in `in_use` (the files a catalog registered): older versions of those segments.

        A version is superseded only by a newer one that was actually registered: when the
        newest file of a segment is damaged (restore skipped it and registered an older one),
        the older one is in use and the damaged newer one is not superseded either, so
        neither is returned (the damaged file stays on disk for `roboloop verify` to name).
        Segments none of whose versions are in `in_use` lose nothing.
        """
        keep: dict[Path, dict[str, int]] = {}  # layer folder -> segment -> version in use
        for p in map(Path, in_use):
            if p.suffix == ".rrd" and p.parent.parent.parent == self.datasets_dir:
                seg, n = _split_version(p.stem)
                keep.setdefault(p.parent, {})[seg] = n
        out: list[Path] = []
        for folder, used in keep.items():  # each layer folder listed once
            for q in folder.iterdir():
                if q.suffix == ".rrd" and not is_temp_file(q):
                    seg, n = _split_version(q.stem)
                    if seg in used and n < used[seg]:
                        out.append(q)
        return sorted(out)

    def collect_garbage(self, in_use: Iterable[Path], *, temp_files: bool = True) -> tuple[int, int]:
        """Delete the layer versions that the registered files `in_use` supersede, and dead writers' temporary files.

        Returns (versions, temp files) removed. Call it only when no catalog server can
        still be reading the old versions: `Catalog` does it after its restore when it was
        alone on the workspace (`live_catalog`), `roboloop gc` checks that first. Each
        deleted file's checksum record goes with it. `temp_files=False` leaves temporary files
        (a restore has just removed them).
        """
        versions = 0
        for p in self.old_versions(in_use):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                versions += 1
            forget_checksum(p)
        return versions, self.remove_stale_temp_files() if temp_files else 0

    def gc(self, in_use: Iterable[Path], *, force: bool = False) -> tuple[int, int]:
        """`roboloop gc`: `collect_garbage(in_use)` if no catalog process runs over the workspace; (versions, temp files) removed.

        `in_use` is what a restore registers now (`roboloop.catalog.restore.usable_versions` computes it
        without a server). Raises `WorkspaceBusyError` while another process holds a catalog on
        it (it may still read an old version), unless `force`.
        """
        with self.lock(CATALOG_LOCK, blocking=False) as alone:
            if not alone and not force:
                raise WorkspaceBusyError(
                    f"a roboloop process (collect, serve, ...) runs a catalog over {self.root}: it may still read old "
                    "versions; stop it and run `roboloop gc` again, or pass --force"
                )
            return self.collect_garbage(in_use)

    # --- locks ---------------------------------------------------------------------------
    def lock_path(self, name: str) -> Path:
        return self.root / "locks" / f"{schema.validate_segment_id(name)}.lock"

    @contextlib.contextmanager
    def lock(self, name: str, *, shared: bool = False, blocking: bool = True) -> Iterator[bool]:
        """Hold the workspace lock `name` (fcntl, across processes) for the block; yields whether it was acquired.

        Used where a name must be unique (saving a new selection), for seed reservations
        and by `live_catalog`. A killed holder releases it (the kernel closes its files).
        With `blocking=False` the block runs with False when another process holds it.
        """
        path = self.lock_path(name)
        make_folder(path.parent)
        try:
            fd = open_lock_file(path)
        except OSError as exc:
            if exc.errno in _READ_ONLY_ERRNOS:
                raise read_only_error(path.parent) from exc
            raise
        try:
            flags = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB)
            try:
                fcntl.flock(fd, flags)
                got = True
            except BlockingIOError:
                got = False
            yield got
        finally:
            os.close(fd)  # releases the lock

    @property
    def read_only(self) -> bool:
        """True when this process cannot write into the (existing) workspace folder: a read-only mount, or no permission."""
        return self.root.is_dir() and not os.access(self.root, os.W_OK)

    # --- lifetime locks of writers (DESIGN: a process that writes a run or an evaluation holds a lock) ------
    def writer_lock_path(self, kind: str, key: str) -> Path:
        """`locks/<kind>/<key>.lock`: held (flock, exclusive) by the one process writing that run or evaluation."""
        return self.root / "locks" / schema.validate_segment_id(kind) / f"{schema.validate_segment_id(key)}.lock"

    @contextlib.contextmanager
    def writer(self, kind: str, key: str, *, wait_s: float = WRITER_WAIT_S) -> Iterator[bool]:
        """Hold the lifetime lock of writer `kind`/`key` for the block; yields False if another process holds it.

        The kernel releases the lock when the holder dies (any signal, SIGKILL included), so
        a `running` row whose lock is free belongs to a dead process (`writer_alive`).
        Re-entrant within one process (an evaluation that tops up its own baseline, a
        resumed run inside a launcher). Never waits for a live writer: it retries only for
        `wait_s` seconds, to step past a listing that probes the lock at that instant.
        """
        path = self.writer_lock_path(kind, key)
        with _HELD_GUARD:
            held = _HELD.get(path)
            if held is not None:
                held[1] += 1
        if held is not None:
            try:
                yield True
            finally:
                self._release_writer(path)
            return
        deadline = time.monotonic() + wait_s
        while True:
            make_folder(path.parent)
            fd = open_lock_file(path)  # O_CLOEXEC: spawned children do not inherit it
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.02)
                continue
            try:  # the holder before us may have removed the file on release: lock the file that is there now
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())  # who holds it, for messages (`writer_pid`)
        with _HELD_GUARD:
            _HELD[path] = [fd, 1]
        try:
            yield True
        finally:
            self._release_writer(path)

    @staticmethod
    def _release_writer(path: Path) -> None:
        """Drop one level; the last removes the lock file (a writer that ends leaves no trace) and releases the lock.
        A killed holder leaves the file, unlocked: `writer_alive` is False, the next writer re-uses it."""
        with _HELD_GUARD:
            held = _HELD[path]
            held[1] -= 1
            if held[1] == 0:
                del _HELD[path]
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # still locked: a writer that opened it meanwhile re-checks the inode and retries
                os.close(held[0])  # releases the lock

    def writer_alive(self, kind: str, key: str) -> bool:
        """True while some process (this one included) holds the lifetime lock of `kind`/`key`."""
        path = self.writer_lock_path(kind, key)
        with _HELD_GUARD:
            if path in _HELD:
                return True
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    def writer_pid(self, kind: str, key: str) -> int | None:
        """The pid the last holder of `kind`/`key`'s writer lock wrote into it (meaningful while `writer_alive`)."""
        try:
            text = self.writer_lock_path(kind, key).read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def live_status(self, kind: str, key: str, status: str | None) -> str | None:
        """`status` as stored, except `running` without a live writer, which is `schema.STATUS_DEAD`."""
        if status == schema.STATUS_RUNNING and not self.writer_alive(kind, key):
            return schema.STATUS_DEAD
        return status

    def live_catalog(self) -> tuple[int | None, bool]:
        """Mark this process as running a catalog over the workspace until the returned fd is closed; (fd, alone).

        Takes a shared lock on `locks/catalog.lock`, after first trying the exclusive lock
        without waiting: `alone` says no other catalog process held the workspace at that
        moment. Only then may the caller delete superseded versions, and only after its
        restore, with what it registered (`collect_garbage(in_use)`): a version is superseded
        by a newer one that was actually registered, never by one that exists. Otherwise only
        dead writers' temporary files are removed (safe while others run). Close the returned
        fd (`os.close`) when the catalog stops.

        A read-only workspace (`read_only`: a shared, mounted dataset) is served as it is:
        no clean-up (`alone` is False), and the shared lock only if its file exists already
        (flock works on a read-only descriptor); the fd is None when there is no lock to hold.
        One warning says so.
        """
        if self.read_only:
            log.warning("workspace %s is read-only: serving it as it is (queries only; no clean-up of old versions "
                        "or temporary files)", self.root)
            try:
                fd = os.open(self.lock_path(CATALOG_LOCK), os.O_RDONLY)
            except OSError:
                return None, False
            fcntl.flock(fd, fcntl.LOCK_SH)
            return fd, False
        path = self.lock_path(CATALOG_LOCK)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = open_lock_file(path)
        except OSError as exc:  # e.g. a workspace folder that does not exist inside a read-only mount
            if exc.errno in (errno.EEXIST, errno.ENOTDIR):
                raise not_a_folder_error(path.parent) from exc
            if exc.errno not in _READ_ONLY_ERRNOS:
                raise
            log.warning("cannot create %s (%s): running without the workspace's catalog lock and clean-up", path, exc.strerror)
            return None, False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                alone = True
            except BlockingIOError:
                alone = False
                self.remove_stale_temp_files()
            fcntl.flock(fd, fcntl.LOCK_SH)
        except BaseException:
            os.close(fd)
            raise
        return fd, alone

    def remove_dataset(self, dataset: str) -> None:
        """Delete a dataset's folder and its checksum records (used by tests and `--fresh` style resets)."""
        shutil.rmtree(self.dataset_dir(dataset), ignore_errors=True)
        shutil.rmtree(self.root / CHECKSUMS_DIR / self.dataset_dir(dataset).relative_to(self.root), ignore_errors=True)


CATALOG_LOCK = "catalog"

_VERSION_SUFFIX = re.compile(r"^(.+)\.(\d+)$")


def _split_version(stem: str) -> tuple[str, int]:
    """`run-x.2` -> ("run-x", 2); `run-x` -> ("run-x", 0)."""
    m = _VERSION_SUFFIX.match(stem)
    return (m.group(1), int(m.group(2))) if m else (stem, 0)


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists (on this machine)."""
    return _pid_alive(pid)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def die_with_parent(parent_pid: int) -> None:
    """In a worker process: have the kernel SIGKILL it when its parent dies (Linux `PR_SET_PDEATHSIG`).

    A worker of a killed `collect`/`eval` would otherwise keep simulating (hundreds of MB
    each) and finish files nobody acknowledges. If the parent is already gone (it died
    before the call took effect), the worker exits at once. Elsewhere than Linux it only
    checks the parent.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:
        os._exit(1)
