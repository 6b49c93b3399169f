"""The on-disk system of record: where every layer file, table and run artifact lives.

Layout (one folder per layer, so a layer file never collides with its base)::

    <root>/datasets/<dataset>/<layer>/<segment_id>.rrd
    <root>/datasets/<dataset>/blueprint.rbl
    <root>/tables/<table>/<entry_id>/        (Lance, written by the catalog server)
    <root>/runs/<run_id>/                    (checkpoint, config)

Every file is written under a temporary name in its final folder and renamed into
place, so a crash never leaves a half-written file under a real name. A registered
file is never modified in place: a new version is a new file registered with REPLACE.
This module never talks to the catalog server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from roboloop import schema

ENV_WORKSPACE = "ROBOLOOP_WORKSPACE"
DEFAULT_WORKSPACE = ".roboloop"
TEMP_MARKER = ".tmp-"


def default_root() -> Path:
    """Workspace root from `ROBOLOOP_WORKSPACE`, else `./.roboloop`."""
    return Path(os.environ.get(ENV_WORKSPACE) or DEFAULT_WORKSPACE)


def is_temp_file(path: Path) -> bool:
    """True for a file that `atomic_path` has not renamed into place yet (or a crash left behind)."""
    return path.name.startswith(".") and TEMP_MARKER in path.name


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path next to `final`; rename it onto `final` only if the block succeeds.

    On any exception (including KeyboardInterrupt) the temporary file is removed and
    `final` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}{TEMP_MARKER}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary file for {final}")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


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
        """Finished segment files of one layer (temporary files are skipped)."""
        d = self.layer_dir(dataset, layer)
        if not d.is_dir():
            return []
        return sorted(p for p in d.iterdir() if p.suffix == ".rrd" and not is_temp_file(p) and p.is_file())

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
        """Temporary files a crashed writer left behind (never registered, safe to delete)."""
        if not self.datasets_dir.is_dir():
            return []
        return [p for p in self.datasets_dir.rglob(f".*{TEMP_MARKER}*") if p.is_file()]

    def remove_stale_temp_files(self) -> int:
        """Delete temporary files whose writer process is gone; returns how many were removed."""
        removed = 0
        for p in self.stale_temp_files():
            pid_part = p.name.split(TEMP_MARKER, 1)[1].split("-", 1)[0]
            if pid_part.isdigit() and _pid_alive(int(pid_part)):
                continue
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed += 1
        return removed

    def remove_dataset(self, dataset: str) -> None:
        """Delete a dataset's folder (used by tests and `--fresh` style resets)."""
        shutil.rmtree(self.dataset_dir(dataset), ignore_errors=True)


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
