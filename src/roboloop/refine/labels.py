"""Outcomes judged by a person: `roboloop label` writes a labelled outcome as a new `outcome` layer version.

On hardware, success is a judgement. :func:`label` (one judgement for some segments) and
:func:`apply_labels` (a batch, e.g. :func:`read_labels_csv`) set a segment's outcome after the
fact: success or failure, the failure moment (seconds) and kind (one of the task's
``schema.FAILURE_KINDS``, given as the key or in words, or free text, stored as given and
marked ``outcome.free_kind``), a note, who labelled it (default: the OS user) and when (UTC).

What is written, per segment (DESIGN.md, "Outcomes can be re-judged; the recording is not
rewritten"): a new version of the segment's ``outcome`` layer (``schema.OUTCOME_LAYER``,
registered with REPLACE, so its ``outcome.*`` values win over the base recording's and any
earlier label in the catalog, after a restart too: restore registers the newest version). It
carries the outcome the segment had (the simulator's stage, steps, ...) with ``success``,
``failure_reason``, ``failure_time_s``, ``failure_step`` (from ``episode.control_hz`` when the
recording has it) replaced and the label's own fields added (``outcome.source = "label"``,
``note``, ``labelled_by``, ``labelled_at``, ``free_kind``). An evaluation dataset's rollout index
gets the same outcome in a new row, so ``success``, ``compare``, ``failures`` and ``gaps`` see it.

Superseded layer versions are removed by ``roboloop gc`` (and a catalog start that owns the
workspace), so the history lives in an append-only row table, ``schema.labels_table(dataset)``:
one row per label given (:func:`label_history`); its newest row per segment is also published as
a catalog table of that name.

A batch is all or nothing: every label is checked first (known segment, a moment within the
episode, no kind or moment on a success, a segment labelled once per batch) and nothing is
written if any is wrong; the error names each bad label (its CSV row and column). Order of
writes: the layer files, then the history rows, then the index rows, then one registration; an
interruption leaves at most unregistered layer files that the next catalog start registers.
"""

from __future__ import annotations

import csv
import dataclasses
import getpass
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rerun as rr

from roboloop import faults, rows, schema
from roboloop.catalog.index import BASE_GROUPS, segment_ids_on_disk
from roboloop.errors import RoboloopError
from roboloop.record.episode import write_layer_version

__all__ = [
    "CSV_COLUMNS",
    "FAILURE_KIND_UNSPECIFIED",
    "Label",
    "LabelError",
    "LabelReport",
    "apply_labels",
    "default_labeller",
    "failure_kind",
    "label",
    "label_history",
    "read_labels_csv",
]

CSV_COLUMNS = ("segment", "success", "at", "kind", "note", "by")
"""Columns of a label CSV file (`segment` and `success` required, the others may be left empty or out)."""
FAILURE_KIND_UNSPECIFIED = "unspecified"
"""`outcome.failure_reason` of a failure labelled without a kind."""
_TRUE = ("1", "true", "yes", "y", "success", "succeeded", "ok")
_FALSE = ("0", "false", "no", "n", "failure", "failed", "fail")
_LABEL_KEYS = (schema.OUTCOME_SOURCE, schema.OUTCOME_NOTE, schema.OUTCOME_LABELLED_BY, schema.OUTCOME_LABELLED_AT,
               schema.OUTCOME_FREE_KIND)


class LabelError(RoboloopError, ValueError):
    """A label that cannot be applied (unknown dataset or segment, a bad value in a CSV row); nothing was written."""


@dataclass(frozen=True)
class Label:
    """One person's judgement of one segment."""

    segment: str
    success: bool
    at_s: float | None = None
    """The failure moment (seconds since the episode start); None = not given."""
    kind: str | None = None
    """The failure kind: a key or the words of `schema.FAILURE_KINDS`, or free text; None = unspecified."""
    note: str = ""
    by: str | None = None
    """Who judged it; None = the OS user."""
    origin: str = ""
    """Where the label came from, for messages (e.g. "row 3 (line 4)" of a CSV file)."""


@dataclass
class LabelReport:
    dataset: str
    written: dict[str, dict[str, Any]] = field(default_factory=dict)  # segment id -> the outcome group written
    previous: dict[str, bool | None] = field(default_factory=dict)  # segment id -> success before (None: unlabelled)
    was: dict[str, str] = field(default_factory=dict)  # segment id -> the outcome before, in words ("failure (simulator)")
    files: dict[str, Path] = field(default_factory=dict)  # segment id -> the new outcome layer version


def default_labeller() -> str:
    """The OS user name (the default `--by`)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (containers)
        return f"uid{os.getuid()}"


def failure_kind(text: str | None) -> tuple[str, bool]:
    """(`outcome.failure_reason`, is free text) of a kind given by a person.

    A key of `schema.FAILURE_KINDS` or its words (case, spaces, '-' and '_' ignored) gives the key;
    anything else is kept as written (trimmed), marked free text; None or blank is unspecified.
    """
    if text is None or not text.strip():
        return FAILURE_KIND_UNSPECIFIED, False

    def norm(s: str) -> str:
        return "".join(ch for ch in s.lower() if ch.isalnum())

    wanted = norm(text)
    for key, words in schema.FAILURE_KINDS.items():
        if wanted in (norm(key), norm(words)):
            return key, False
    return " ".join(text.split()), True


def label(catalog, dataset: str, segments: Sequence[str], *, success: bool, at_s: float | None = None,
          kind: str | None = None, note: str = "", by: str | None = None) -> LabelReport:
    """Label `segments` of `dataset` with one judgement (see the module docstring); all or nothing."""
    return apply_labels(catalog, dataset, [Label(s, bool(success), at_s, kind, note or "", by) for s in segments])


def apply_labels(catalog, dataset: str, labels: Sequence[Label], *, problems: Sequence[str] = ()) -> LabelReport:
    """Write each label as a new `outcome` layer version + a history row (+ a rollout-index row); all or nothing.
    `problems`: ones already found (a CSV's bad rows, `read_labels_csv(..., problems=[])`), reported with the
    labels' own in one LabelError."""
    ws = catalog.workspace
    if dataset not in ws.datasets():
        raise LabelError(f"no dataset {dataset!r} in {ws.root}; datasets: {', '.join(ws.datasets()) or '(none)'}")
    if not labels and not problems:
        raise LabelError("nothing to label: name segments (roboloop label SEGMENT... --dataset D --success|--failure) "
                         "or give a CSV file (--csv FILE)")
    table = {r[schema.SEGMENT_ID]: r for r in catalog.segment_table(dataset).to_pylist()}
    _check(labels, table, dataset, list(problems), ws)
    now = rows.now_iso()
    report = LabelReport(dataset)
    for lab in labels:
        row = table[lab.segment]
        before = row.get(f"{schema.OUTCOME}.{schema.OUTCOME_SUCCESS}")
        report.previous[lab.segment] = None if before is None else bool(before)
        group = _outcome_group(row, lab, now)
        report.written[lab.segment] = group
        report.files[lab.segment] = write_layer_version(
            ws, dataset, schema.OUTCOME_LAYER, lab.segment, {schema.OUTCOME: group},
            statics={schema.OUTCOME_TEXT: rr.TextDocument(_outcome_text(group), media_type="text/markdown")})
    for lab in labels:
        hist = _history_row(lab.segment, report.written[lab.segment], table[lab.segment], report.files[lab.segment])
        report.was[lab.segment] = hist["previous"]
        rows.write_row(ws, schema.labels_table(dataset), lab.segment, hist)
    if rows.rows_dir(ws, schema.rollout_index_table(dataset)).is_dir():  # evaluation datasets keep an index
        for lab in labels:
            _update_index(ws, dataset, table[lab.segment], report.written[lab.segment])
    catalog.register_files(dataset, list(report.files.values()), layer=schema.OUTCOME_LAYER, validate=False)
    faults.point("layer.registered")
    return report


def _duration(row: Mapping[str, Any]) -> float | None:
    """The episode's length in seconds: its recorded `outcome.duration_s`, else its last time on the `time` timeline."""
    d = row.get(f"{schema.OUTCOME}.{schema.OUTCOME_DURATION_S}")
    if d is None:
        end = row.get(f"{schema.TIMELINE}_end")  # the catalog's index range of the segment
        d = end.total_seconds() if hasattr(end, "total_seconds") else None
    try:
        return float(d) if d is not None else None
    except (TypeError, ValueError):
        return None


def _other_dataset(ws, dataset: str, segment: str) -> str | None:
    """The workspace's dataset (other than `dataset`) whose base layer holds `segment`, if any."""
    try:
        return next((d for d in ws.datasets() if d != dataset and ws.segment_path(d, schema.BASE_LAYER, segment).is_file()), None)
    except ValueError:  # not a valid segment id: it is nowhere
        return None


def _check(labels: Sequence[Label], table: Mapping[str, Mapping[str, Any]], dataset: str, problems: list[str],
           ws=None) -> None:
    """Every problem of every label (after `problems` already found), in one LabelError (nothing is written when
    there is one)."""
    seen: dict[str, str] = {}
    unknown = [lab for lab in labels if lab.segment not in table]
    for lab in labels:
        where = f"{lab.origin}: " if lab.origin else ""
        if lab.segment not in table:
            other = _other_dataset(ws, dataset, lab.segment) if ws is not None else None
            problems.append(f"{where}no segment {lab.segment!r} in {dataset}"
                            + (f" (it is in {other}: pass --dataset {other})" if other else ""))
            continue
        if lab.segment in seen:
            problems.append(f"{where}segment {lab.segment} is labelled twice in one batch (also {seen[lab.segment] or 'earlier'})")
        seen[lab.segment] = lab.origin
        if lab.success and (lab.at_s is not None or (lab.kind or "").strip()):
            problems.append(f"{where}{lab.segment} is labelled a success: a failure moment (at) or kind belongs to a failure")
        if lab.at_s is not None:
            dur = _duration(table[lab.segment])
            if not math.isfinite(lab.at_s) or lab.at_s < 0:
                problems.append(f"{where}column 'at' of {lab.segment}: {lab.at_s} is not a moment (seconds >= 0)")
            elif dur is not None and lab.at_s > dur + 1e-9:
                problems.append(f"{where}column 'at' of {lab.segment}: {lab.at_s} s is after the episode's end ({dur:g} s)")
    if problems:
        hint = ""
        if unknown:
            sample = ", ".join(sorted(table)[:5]) or "(none)"
            hint = f"\nsegments of {dataset} look like: {sample}{', ...' if len(table) > 5 else ''} (all of them: roboloop sql 'SELECT segment_id FROM {dataset}')"
        raise LabelError(f"{len(problems)} bad label(s), nothing written:\n  " + "\n  ".join(problems) + hint)


def _outcome_group(row: Mapping[str, Any], lab: Label, now: str) -> dict[str, Any]:
    """The segment's current outcome with the label's judgement and metadata in place."""
    prefix = f"{schema.OUTCOME}."
    out = {k[len(prefix):]: v for k, v in row.items()
           if k.startswith(prefix) and v is not None and k[len(prefix):] not in _LABEL_KEYS}
    kind, free = failure_kind(lab.kind) if not lab.success else ("none", False)
    at = -1.0 if lab.success or lab.at_s is None else float(lab.at_s)
    hz = row.get(f"{schema.EPISODE}.{schema.EPISODE_CONTROL_HZ}")
    out.update({
        schema.OUTCOME_SUCCESS: bool(lab.success),
        schema.OUTCOME_FAILURE_REASON: kind,
        schema.OUTCOME_FAILURE_TIME_S: at,
        schema.OUTCOME_SOURCE: schema.OUTCOME_SOURCE_LABEL,
        schema.OUTCOME_NOTE: lab.note or "",
        schema.OUTCOME_LABELLED_BY: (lab.by or "").strip() or default_labeller(),
        schema.OUTCOME_LABELLED_AT: now,
        schema.OUTCOME_FREE_KIND: free,
    })
    if hz:
        out[schema.OUTCOME_FAILURE_STEP] = -1 if at < 0 else int(round(at * float(hz)))
    else:
        out.pop(schema.OUTCOME_FAILURE_STEP, None)
    return out


def _outcome_text(group: Mapping[str, Any]) -> str:
    """The `/outcome` text of a labelled outcome (the viewer's outcome panel)."""
    verdict = "SUCCESS" if group[schema.OUTCOME_SUCCESS] else "FAILURE"
    lines = [f"# {verdict} (labelled by {group[schema.OUTCOME_LABELLED_BY]}, {group[schema.OUTCOME_LABELLED_AT]})", ""]
    if not group[schema.OUTCOME_SUCCESS]:
        kind = group[schema.OUTCOME_FAILURE_REASON]
        words = schema.FAILURE_KINDS.get(kind, kind) + (" (free text)" if group[schema.OUTCOME_FREE_KIND] else "")
        t = group[schema.OUTCOME_FAILURE_TIME_S]
        lines.append(f"- kind: {words}" + (f", at {t:.2f} s" if t >= 0 else ""))
    if group.get(schema.OUTCOME_NOTE):
        lines.append(f"- note: {group[schema.OUTCOME_NOTE]}")
    return "\n".join(lines) + "\n"


def _history_row(segment: str, group: Mapping[str, Any], row: Mapping[str, Any], path: Path) -> dict[str, Any]:
    before = row.get(f"{schema.OUTCOME}.{schema.OUTCOME_SUCCESS}")
    source = row.get(f"{schema.OUTCOME}.{schema.OUTCOME_SOURCE}")
    return {
        "segment_id": segment,
        "success": group[schema.OUTCOME_SUCCESS],
        "at_s": None if group[schema.OUTCOME_FAILURE_TIME_S] < 0 else group[schema.OUTCOME_FAILURE_TIME_S],
        "kind": None if group[schema.OUTCOME_SUCCESS] else group[schema.OUTCOME_FAILURE_REASON],
        "free_kind": group[schema.OUTCOME_FREE_KIND],
        "note": group[schema.OUTCOME_NOTE],
        "labelled_by": group[schema.OUTCOME_LABELLED_BY],
        "labelled_at": group[schema.OUTCOME_LABELLED_AT],
        "previous": (schema.OUTCOME_UNLABELLED if before is None
                     else f"{'success' if before else 'failure'} ({source or 'simulator'})"),
        "layer_file": path.name,
    }


def _update_index(ws, dataset: str, row: Mapping[str, Any], group: Mapping[str, Any]) -> None:
    """A new rollout-index row for the segment: its base properties with the labelled outcome."""
    sid = row[schema.SEGMENT_ID]
    old = rows.read_row(ws, schema.rollout_index_table(dataset), sid)
    base = ({k: v for k, v in old.items() if not k.startswith("_")} if old is not None
            else {k: v for k, v in row.items() if k == schema.SEGMENT_ID or k.partition(".")[0] in BASE_GROUPS})
    merged = {k: v for k, v in base.items() if v is not None and not k.startswith(f"{schema.OUTCOME}.")}
    merged.update({f"{schema.OUTCOME}.{k}": v for k, v in group.items() if v is not None and v != ""})
    rows.write_row(ws, schema.rollout_index_table(dataset), sid, merged)


# --- history and CSV ----------------------------------------------------------------------------

def label_history(workspace, dataset: str, segment: str) -> list[dict[str, Any]]:
    """Every label `segment` of `dataset` was given, oldest first (the last one is in effect)."""
    if dataset not in workspace.datasets():
        raise LabelError(f"no dataset {dataset!r} in {workspace.root}; datasets: {', '.join(workspace.datasets()) or '(none)'}")
    if segment not in segment_ids_on_disk(workspace, dataset):
        raise LabelError(f"no segment {segment!r} in {dataset}")
    out = []
    for r in rows.history(workspace, schema.labels_table(dataset), segment):
        if not r.get(rows.DELETED_FIELD):
            out.append({k: v for k, v in r.items() if not k.startswith("_")})
    return out


def _parse_bool(text: str) -> bool | None:
    t = text.strip().lower()
    return True if t in _TRUE else False if t in _FALSE else None


def _parse_row(n: int, rec: Mapping[str, str | None], problems: list[str]) -> Label | None:
    where = f"row {n} (line {n + 1})"
    get = {c: (rec.get(c) or "").strip() for c in CSV_COLUMNS}
    bad = len(problems)
    if not get["segment"]:
        problems.append(f"{where}, column 'segment': empty (the segment id to label)")
    ok = _parse_bool(get["success"])
    if ok is None:
        problems.append(f"{where}, column 'success': {get['success']!r} is not one of yes/no, true/false, 1/0, success/failure")
    at = None
    if get["at"]:
        try:
            at = float(get["at"])
        except ValueError:
            problems.append(f"{where}, column 'at': {get['at']!r} is not a number of seconds")
        else:
            if not math.isfinite(at) or at < 0:
                problems.append(f"{where}, column 'at': {get['at']} is not a moment (seconds >= 0)")
    if ok and (get["at"] or get["kind"]):
        problems.append(f"{where}, column '{'at' if get['at'] else 'kind'}': a success has no failure moment or kind")
    if len(problems) > bad:
        return None
    return Label(get["segment"], bool(ok), at, get["kind"] or None, get["note"], get["by"] or None, origin=where)


def read_labels_csv(path: str | os.PathLike[str], *, problems: list[str] | None = None) -> list[Label]:
    """The labels of a CSV file (header: `CSV_COLUMNS`, `segment` and `success` required); LabelError naming
    every bad row and column (the file is read whole before anything is labelled). With a `problems` list, bad rows
    are appended to it instead (prefixed with the file) and the good rows returned: `apply_labels(...,
    problems=problems)` then reports them together with unknown segments, in one error."""
    path = Path(path)
    try:
        text = path.read_text("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelError(f"cannot read label file {path}: {exc}") from exc
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    missing = [c for c in ("segment", "success") if c not in header]
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if missing or unknown:
        raise LabelError(f"{path}: the header must name columns {', '.join(CSV_COLUMNS)} (segment and success required); "
                         + "; ".join(([f"missing: {', '.join(missing)}"] if missing else [])
                                     + ([f"unknown: {', '.join(unknown)}"] if unknown else [])))
    labels, found = [], []
    for n, rec in enumerate(reader, start=1):
        if None in rec:  # more cells than header columns
            found.append(f"row {n} (line {n + 1}): {len(header) + len(rec[None])} cells for {len(header)} columns")
            continue
        lab = _parse_row(n, rec, found)
        if lab is not None:
            labels.append(lab)
    if found and problems is None:
        raise LabelError(f"{path}: {len(found)} bad row(s), nothing labelled:\n  " + "\n  ".join(found))
    if problems is not None:
        problems.extend(f"{path.name} {p}" for p in found)
        labels = [dataclasses.replace(lab, origin=f"{path.name} {lab.origin}") for lab in labels]
    if not labels and not found:
        raise LabelError(f"{path}: no rows to label (header {', '.join(header)})")
    return labels

