"""`verify`: decode every file of the workspace and report what is broken (`roboloop verify`).

Restore only runs cheap checks at every start (footer present, recording id matches the
file name) so that starting stays fast; `verify` is the slow, complete check, run on
demand. Per dataset (or one, with `dataset=`):

- every `.rrd` of every layer folder (every version, temporary files excluded) must match
  the checksum the workspace recorded when it was written (`workspace.check_checksum`; a
  file written before checksums were recorded is listed in `VerifyReport.no_checksum`, not
  a problem), must decode completely (`catalog.validate_rrd`'s decoding: manifest, every
  chunk of every store), and its recording id must be the segment its file name says
  (`<id>.rrd` or `<id>.<n>.rrd`);
- the default blueprint (`blueprint.rbl`) likewise: checksum, decodes, holds a blueprint.

Decoding runs in one child process for all files (`catalog.iter_decode_problems`): a file
that makes the decoder panic and abort is reported as that file's problem, and verify goes
on with the next file in a new child.
- in an evaluation dataset, no two rollouts may share an (eval id, cell, index) pair
  (`duplicate_rollouts`, from the rollout index: readers count such a pair once).

Without `dataset=`, every row file of every row table (`tables/<t>/rows/*.json`) must also
parse as a JSON row with a key. Nothing is repaired or deleted: each problem names the file
and what is wrong with it, so the user decides (restore skips the same files, with a warning).

This needs no catalog server: it reads the workspace (the system of record) directly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from roboloop import rows as _rows
from roboloop import schema
from roboloop.catalog import index as episode_index
from roboloop.catalog.errors import UnknownDatasetError
from roboloop.catalog.restore import segment_of
from roboloop.catalog.rrd import iter_decode_problems, quick_check_rrd, read_recording_id
from roboloop.errors import RoboloopError
from roboloop.workspace import Workspace, check_checksum, is_temp_file

__all__ = ["VerifyReport", "verify", "workspace_files"]


@dataclass
class VerifyReport:
    """What `verify` checked and what it found broken."""

    checked: int = 0
    "Files checked (layer files, blueprints, row files)."
    problems: list[tuple[Path, str]] = field(default_factory=list)
    "(file, what is wrong), in the order found."
    datasets: list[str] = field(default_factory=list)
    "Datasets checked."
    no_checksum: list[Path] = field(default_factory=list)
    "Files without a recorded checksum (written before roboloop recorded them): decoded, but a flip that decodes is not caught."
    seconds: float = 0.0
    "Wall time."

    @property
    def ok(self) -> bool:
        """True when nothing is broken."""
        return not self.problems


def workspace_files(workspace: Workspace, dataset: str | None = None) -> list[tuple[str, Path]]:
    """(kind, path) of every file `verify` checks: kind is 'layer', 'blueprint' or 'row'.

    An unknown `dataset` raises `UnknownDatasetError` listing the workspace's datasets.
    """
    ws = workspace
    names = ws.datasets()
    if dataset is not None:
        if dataset not in names:
            raise UnknownDatasetError(dataset, names)
        names = [dataset]
    out: list[tuple[str, Path]] = []
    for name in names:
        for layer in ws.layers(name):
            folder = ws.layer_dir(name, layer)
            out.extend(("layer", p) for p in sorted(folder.iterdir()) if p.suffix == ".rrd" and p.is_file() and not is_temp_file(p))
        bp = ws.blueprint_path(name)
        if bp.is_file():
            out.append(("blueprint", bp))
    if dataset is None:
        for table in _rows.row_tables(ws):
            folder = _rows.rows_dir(ws, table)
            out.extend(("row", p) for p in sorted(folder.iterdir()) if p.suffix == ".json" and p.is_file() and not is_temp_file(p))
    return out


def verify(
    workspace: Workspace, dataset: str | None = None, *, on_file: Callable[[Path, str | None], None] | None = None
) -> VerifyReport:
    """Decode every file of `dataset` (default: every dataset and row table) and report what is broken.

    `on_file(path, problem_or_None)` is called after each file (for progress display).
    """
    t0 = time.perf_counter()
    files = workspace_files(workspace, dataset)
    report = VerifyReport(datasets=[dataset] if dataset is not None else workspace.datasets())
    rrds = [(kind, path) for kind, path in files if kind != "row"]
    first: dict[Path, list[str]] = {}
    to_decode: list[tuple[Path, bool]] = []
    for kind, path in rrds:
        found = []
        reason = quick_check_rrd(path)
        if reason:
            found.append(reason)
        status, detail = check_checksum(path) if not reason else ("skip", "")
        if status == "mismatch":
            found.append(detail)
        elif status == "missing":
            report.no_checksum.append(path)
        first[path] = found
        if not reason:
            to_decode.append((path, kind == "blueprint"))
    sent = {p for p, _ in to_decode}
    decoded = iter_decode_problems(to_decode)
    try:
        _report_files(files, first, sent, decoded, report, on_file)
    finally:
        decoded.close()  # stops the decoding child
    for name in report.datasets:
        for path, problem in duplicate_rollouts(workspace, name):
            report.problems.append((path, problem))
            if on_file is not None:
                on_file(path, problem)
    report.seconds = time.perf_counter() - t0
    return report


def _report_files(files, first, sent, decoded, report: VerifyReport, on_file) -> None:
    for kind, path in files:
        if kind == "row":
            problem = _row_problem(path)
        else:
            found = first[path]
            if path in sent:  # the decoder's answers come in order
                decode = next(decoded)
                if decode:
                    found.append(decode)
                elif kind == "layer":
                    found.extend(_id_problem(path))
            problem = "; ".join(found) or None
        report.checked += 1
        if problem:
            report.problems.append((path, problem))
        if on_file is not None:
            on_file(path, problem)


def _id_problem(path: Path) -> list[str]:
    try:
        rid = read_recording_id(path)
    except RoboloopError as exc:
        return [str(exc).removeprefix(f"{path}: ")]
    seg = segment_of(path)
    if rid != seg:
        return [f"holds recording {rid!r} but its name says segment {seg!r} (restore skips it)"]
    return []


def duplicate_rollouts(workspace: Workspace, dataset: str) -> list[tuple[Path, str]]:
    """(file, problem) for every rollout of `dataset` that repeats an (eval id, cell, index) pair of another.

    Read from the rollout index rows of the segments on disk (segments without a row are not
    checked). Readers count the pair once (`episode_index.pair_duplicates`); nothing is deleted.
    """
    if not dataset.endswith(schema.evals_dataset("")):
        return []
    on_disk = episode_index.segment_ids_on_disk(workspace, dataset)
    rows = sorted((r for r in episode_index.read(workspace, dataset) if r.get(episode_index.KEY) in on_disk),
                  key=lambda r: r[episode_index.KEY])
    cols = [[r.get(c) for r in rows] for c in episode_index.PAIR_COLUMNS]
    dups = episode_index.pair_duplicates([r[episode_index.KEY] for r in rows], *cols)
    by_id = {r[episode_index.KEY]: r for r in rows}
    out = []
    for dup, kept in sorted(dups.items()):
        r = by_id[dup]
        e, c, i = (r.get(col) for col in episode_index.PAIR_COLUMNS)
        out.append((workspace.segment_path(dataset, schema.BASE_LAYER, dup),
                    f"duplicate rollout: evaluation {e!r} cell {c!r} index {i} was also recorded as {kept!r}, which "
                    f"every reader counts instead (two writers ran this evaluation at once); this file is not counted"))
    return out


def _row_problem(path: Path) -> str | None:
    try:
        row = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        return f"unreadable row file: {exc}"
    if not isinstance(row, dict) or _rows.KEY_FIELD not in row:
        return f"not a table row (no {_rows.KEY_FIELD!r} field)"
    return None
