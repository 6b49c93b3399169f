"""One catalog server per workspace: `roboloop serve` records its URL; other commands attach to it.

While `roboloop serve` runs it holds an exclusive `flock` on `<workspace>/.server.lock` (so
a second `serve` on the same workspace fails at once, before restoring anything) and
publishes `<workspace>/server.json` (written atomically)::

    {"url": "rerun+http://127.0.0.1:9876", "pid": 4242, "host": "127.0.0.1", "port": 9876,
     "workspace": "/abs/path/.roboloop", "started_at": "2026-11-23T14:00:00+00:00"}

`Catalog(workspace)` with no URL configured (no `--catalog`, no `ROBOLOOP_CATALOG`) calls
:func:`live_server` first and, when it returns a record, attaches to that URL instead of
starting and restoring its own server. A record is **stale** and ignored when its process
is gone (`kill(pid, 0)` fails), nothing accepts connections on its port within `timeout`,
or it names another workspace folder (a copied workspace). A clean shutdown removes the
record; a killed server leaves it behind, and the next `serve` overwrites it.

Limits: the pid check only means something on the machine that wrote the record (the
catalog is local: the server must see the workspace files anyway). `--catalog ""`
(`Catalog(url="")`) forces an embedded server and never attaches.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from urllib.parse import urlparse

from roboloop import rows
from roboloop.catalog.errors import CatalogError
from roboloop.workspace import Workspace, atomic_write_text, pid_alive

log = logging.getLogger(__name__)

__all__ = [
    "ServerLock",
    "ServerRecord",
    "ServerRunningError",
    "live_server",
    "published",
    "read_record",
    "remove_record",
    "serve_running",
    "write_record",
]

DEFAULT_TIMEOUT_S = 1.0


class ServerRunningError(CatalogError):
    """`roboloop serve` was started for a workspace that already has a running server."""


@dataclass(frozen=True)
class ServerRecord:
    """What `server.json` holds: where the workspace's catalog server listens and which process runs it."""

    url: str
    pid: int
    host: str
    port: int
    workspace: str
    started_at: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ServerRecord:
        return cls(
            url=str(d["url"]),
            pid=int(d["pid"]),
            host=str(d["host"]),
            port=int(d["port"]),
            workspace=str(d["workspace"]),
            started_at=str(d.get("started_at", "")),
        )


def read_record(ws: Workspace) -> ServerRecord | None:
    """The workspace's server record, or None when there is none (or it is unreadable)."""
    path = ws.server_record_path
    try:
        return ServerRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable catalog server record %s: %s", path, exc)
        return None


def write_record(ws: Workspace, url: str, *, pid: int | None = None) -> ServerRecord:
    """Publish `url` as the workspace's catalog server (atomic write)."""
    rec = _record(ws, url, pid=pid)
    ws.root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(ws.server_record_path, json.dumps(rec.to_dict(), indent=2) + "\n")
    return rec


def _record(ws: Workspace, url: str, *, pid: int | None = None) -> ServerRecord:
    parsed = urlparse(url.replace("rerun+", "", 1))
    return ServerRecord(
        url=url,
        pid=os.getpid() if pid is None else int(pid),
        host=parsed.hostname or "127.0.0.1",
        port=int(parsed.port or 0),
        workspace=str(ws.root),
        started_at=rows.now_iso(),
    )


def remove_record(ws: Workspace, pid: int | None = None) -> bool:
    """Remove the record if it belongs to `pid` (default: this process). True if removed."""
    rec = read_record(ws)
    if rec is None or rec.pid != (os.getpid() if pid is None else pid):
        return False
    with contextlib.suppress(FileNotFoundError):
        ws.server_record_path.unlink()
    return True


def reachable(host: str, port: int, timeout: float = DEFAULT_TIMEOUT_S) -> bool:
    """True if something accepts TCP connections on host:port within `timeout` seconds."""
    if not port:
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def stale_reason(ws: Workspace, rec: ServerRecord, timeout: float = DEFAULT_TIMEOUT_S) -> str | None:
    """Why `rec` cannot be used (None if it looks alive)."""
    if os.path.realpath(rec.workspace) != os.path.realpath(ws.root):
        return f"it was written for workspace {rec.workspace}"
    if not pid_alive(rec.pid):
        return f"process {rec.pid} is gone"
    if not reachable(rec.host, rec.port, timeout):
        return f"nothing answers at {rec.host}:{rec.port}"
    return None


def live_server(ws: Workspace, *, timeout: float = DEFAULT_TIMEOUT_S) -> ServerRecord | None:
    """The workspace's running catalog server, or None (no record, or a stale one, which is logged)."""
    rec = read_record(ws)
    if rec is None:
        return None
    reason = stale_reason(ws, rec, timeout)
    if reason:
        log.info("ignoring stale catalog server record %s: %s", ws.server_record_path, reason)
        return None
    return rec


class ServerLock:
    """Exclusive ownership of a workspace's one server (an `flock` released when the process ends)."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self._fh = None

    def acquire(self, *, wait_s: float = 1.0) -> None:
        """Take the lock; `ServerRunningError` if another process holds it (after `wait_s` of retries,
        so a brief `serve_running` probe by another command never makes a start fail)."""
        if self.ws.read_only:  # a shared, mounted workspace: lock through the existing file if there is one
            try:
                fh = open(self.ws.server_lock_path)
            except OSError:
                return  # nothing to lock: a second `serve` on this read-only copy is not refused
        else:
            self.ws.root.mkdir(parents=True, exist_ok=True)
            fh = open(self.ws.server_lock_path, "a+")
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
            fh.close()
            rec = read_record(self.ws)
            where = f" at {rec.url} (pid {rec.pid})" if rec else ""
            raise ServerRunningError(
                f"a catalog server for workspace {self.ws.root} is already running{where}; "
                "other roboloop commands attach to it automatically. Stop it first to start another."
            ) from None
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> ServerLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def serve_running(ws: Workspace) -> bool:
    """True while a `roboloop serve` process holds the workspace's server lock (robust to pid reuse).

    For clean-up code: files a running server may read must not be deleted while this is True.
    """
    path = ws.server_lock_path
    if not path.exists():
        return False
    with open(path) as fh:  # flock works on a read-only descriptor (and a read-only workspace)
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return False


@contextlib.contextmanager
def published(catalog) -> Iterator[ServerRecord]:
    """Publish `catalog`'s (embedded) server as its workspace's server while the block runs.

    A read-only workspace cannot hold `server.json`: the record is made but not written (one
    warning: other commands attach with `--catalog URL`).
    """
    if not catalog.embedded:
        raise CatalogError("only an embedded catalog server can be published for a workspace")
    if catalog.workspace.read_only:
        log.warning("workspace %s is read-only: %s is not written; other commands attach with --catalog %s",
                    catalog.workspace.root, catalog.workspace.server_record_path.name, catalog.url)
        yield _record(catalog.workspace, catalog.url)
        return
    rec = write_record(catalog.workspace, catalog.url)
    try:
        yield rec
    finally:
        remove_record(catalog.workspace, rec.pid)
