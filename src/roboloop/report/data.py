"""What the report shows, gathered from the workspace and the catalog (the statistics come from analyze).

:func:`build_report_data` reads, for each evaluation, the evaluation row, calls
``rollout_table`` / ``success_by`` / ``failures`` /
``failure_modes`` / ``compare`` of ``roboloop.analyze.rollouts``, the sequential decisions stored in the row
(if any), the coverage gaps (``roboloop.analyze.gaps.gaps``), the runs' loss curves
(``/train/epoch_loss`` and ``/holdout/loss`` on timeline ``epoch`` in ``<ds>_runs``, per epoch),
the selections' queries and sizes, and the plans made from the evaluations; the result is a
:class:`ReportData` of plain tables. Failures listed for a failing cell carry the command
that opens them at the failure moment (``links.open_command``) and, when asked, a
self-contained ``.rrd`` export (``export.export_segment``) linked relative to the report.
"""

from __future__ import annotations

import base64
import datetime as _dt
import functools
import io
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from roboloop import curate, rows, schema
from roboloop.analyze import export
from roboloop.analyze.compare import compare
from roboloop.analyze.gaps import GapConfig, GapError, gaps
from roboloop.analyze.rollouts import (
    failure_modes,
    failures,
    indexed_rollout_table,
    outcome_note,
    outcome_sources,
    rollout_table,
    success_by,
)
from roboloop.analyze.value_signal import describe, stored_values, uses_value
from roboloop.catalog import links
from roboloop.catalog.errors import UnknownDatasetError
from roboloop.catalog.index import StaleIndexError, load_table
from roboloop.errors import UnknownEvaluationError
from roboloop.evaluate.table import sequential_rows
from roboloop.report.values import CELL, as_number
from roboloop.video import decode_samples

__all__ = ["EvalSection", "ReportData", "build_report_data", "failure_thumbnail", "report_datasets"]

log = logging.getLogger(__name__)

@dataclass
class EvalSection:
    """Everything the report shows about one evaluation (plain tables)."""

    eval_id: str
    label: str
    """Short name in titles, e.g. "v1"."""
    run_id: str = ""
    policy: str = ""
    evals_dataset: str = ""
    cells: list[dict[str, Any]] = field(default_factory=list)
    """One row per grid cell: cell (key), n, successes, rate, ci_low, ci_high, failing (bool);
    optional mean_stage."""
    coverage: list[dict[str, Any]] = field(default_factory=list)
    """Gap rows (`roboloop.analyze.gaps.CellGap.to_dict()`): cell, covered, n, covered_fraction, train_near,
    train_in_cell_by_label, verdict, rank, advice. Empty when coverage is unknown."""
    failures: list[dict[str, Any]] = field(default_factory=list)
    """Failed rollouts of failing cells: cell, segment_id, seed, reason, stage, time_s, command,
    rrd (path relative to the report, or "")."""
    notes: list[str] = field(default_factory=list)


@dataclass
class ReportData:
    """Input of :func:`render_report`."""

    title: str = "roboloop report"
    created_at: str = ""
    workspace: str = ""
    evals: list[EvalSection] = field(default_factory=list)
    comparison: list[dict[str, Any]] = field(default_factory=list)
    """Per cell (plus an "overall" row): cell, n_pairs, rate_a, rate_b, diff, diff_low, diff_high,
    p_value, p_adjusted, test, verdict."""
    comparison_labels: tuple[str, str] = ("A", "B")
    sequential: list[dict[str, Any]] = field(default_factory=list)
    """Sequential decisions (evaluations run with --until-decided), per cell: label, eval_id, against, cell,
    decision, rollouts, stop_round, decided_at, estimate, ci_low, ci_high, fixed_n, metric. Shown (in the
    comparison section, "Sequential decision") only when present."""
    loss_curves: dict[str, dict[str, tuple[Sequence[float], Sequence[float]]]] = field(default_factory=dict)
    """Run label -> {"train": (epochs, values), "holdout": (epochs, values)}; epochs done (1-based)."""
    selections: list[dict[str, Any]] = field(default_factory=list)
    """Per run: label, run_id, selection, dataset, predicate, num_train, num_holdout, digest."""
    plans: list[dict[str, Any]] = field(default_factory=list)
    """Plan rows: name, source_eval, status, total, items (list of {conditions, count, reason})."""
    values: list[dict[str, Any]] = field(default_factory=list)
    """Per run with demonstration values (`roboloop value`): label, run_id, dataset, evals (the evaluations they came
    from), summary (`analyze.value.describe`: quartiles, bins, counts), lowest ({segment_id, value, command})."""
    value_curation: list[dict[str, Any]] = field(default_factory=list)
    """Per run whose selection was curated by value (its query or order reads `signals.value`): label, run_id,
    selection, predicate, order, num_train, value_runs (the runs whose values it used)."""
    notes: list[str] = field(default_factory=list)



_LOSS_ENTITIES = {"train": ("/train/epoch_loss", "/train/loss"), "holdout": ("/holdout/loss",)}
"""Per curve: the entities to read, preferred first (runs recorded before `/train/epoch_loss` have only the per-step loss)."""


def _first(row: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    for n in names:
        if n in row and row[n] is not None:
            return row[n]
    return default


def _norm_success(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        CELL: _first(row, "episode.cell", CELL, "key"),
        "n": int(_first(row, "n", default=0)),
        "successes": int(_first(row, "successes", "k", default=0)),
        "rate": _first(row, "rate"),
        "ci_low": _first(row, "ci_low"),
        "ci_high": _first(row, "ci_high"),
        **({"mean_stage": row["mean_stage"]} if row.get("mean_stage") is not None else {}),
        **{k: int(row[k]) for k in ("labelled", "unlabelled") if row.get(k)},  # shown only when there are any
    }


def _norm_compare(row: Mapping[str, Any]) -> dict[str, Any]:
    """One `compare` row in the report's column names (tolerant of naming)."""
    return {
        CELL: _first(row, "episode.cell", CELL, "key", "group", default="overall"),
        "n_pairs": _first(row, "n_pairs", "pairs", "n_paired", "n"),
        "rate_a": _first(row, "rate_a", "a_rate"),
        "rate_b": _first(row, "rate_b", "b_rate"),
        "diff": _first(row, "diff", "difference", "delta"),
        "diff_low": _first(row, "diff_low", "diff_ci_low", "ci_low"),
        "diff_high": _first(row, "diff_high", "diff_ci_high", "ci_high"),
        "test": _first(row, "test", "method", default=""),
        "p_value": _first(row, "p_value", "p", "pvalue"),
        "p_adjusted": _first(row, "p_adjusted", "p_holm", "p_adj"),
        "verdict": _first(row, "verdict", default=""),
    }


def _rows_of(table: Any) -> list[dict[str, Any]]:
    if table is None:
        return []
    return table.to_pylist() if hasattr(table, "to_pylist") else [dict(r) for r in table]


def _loss_curves(catalog, dataset: str, run_id: str) -> dict[str, tuple[list[float], list[float]]]:
    """(epochs done, values) of one run recording's train and holdout loss, on its `epoch` timeline.

    A value logged at epoch index e (0-based) is plotted at e + 1 (epochs done). The train
    curve is `/train/epoch_loss` (the mean over each epoch's steps), or for runs recorded
    before it existed the per-step `/train/loss` averaged per epoch.
    """
    runs = schema.runs_dataset(dataset)
    out: dict[str, tuple[list[float], list[float]]] = {}
    ds = catalog.dataset(runs)
    for part, entities in _LOSS_ENTITIES.items():
        for entity in entities:
            # indexed by `step` (one row per logged value; a read indexed by `epoch` keeps one row per epoch)
            table = ds.filter_segments([run_id]).filter_contents([entity]).reader(index=schema.STEP_TIMELINE).to_arrow_table()
            col = next((c for c in table.column_names if c.startswith(entity + ":") and "Scalar" in c), None)
            if col is None or schema.EPOCH_TIMELINE not in table.column_names:
                continue
            per_epoch: dict[int, list[float]] = {}
            for e, v in zip(table.column(schema.EPOCH_TIMELINE).to_pylist(), table.column(col).to_pylist()):
                val = v[0] if isinstance(v, (list, tuple)) and v else v
                if e is not None and val is not None:
                    per_epoch.setdefault(int(e), []).append(float(val))
            if per_epoch:
                epochs = sorted(per_epoch)
                out[part] = ([float(e + 1) for e in epochs], [sum(per_epoch[e]) / len(per_epoch[e]) for e in epochs])
                break
    return out


def _selection_row(catalog, label: str, info: Mapping[str, Any]) -> dict[str, Any]:
    row = {
        "label": label, "run_id": info.get("run_id", ""), "selection": info.get("selection", ""),
        "dataset": info.get("dataset", ""), "predicate": info.get("predicate", ""),
        "num_train": len(info.get("train_ids") or []), "num_holdout": len(info.get("holdout_ids") or []) if info.get("holdout_ids") is not None else None,
        "digest": (info.get("selection_digest") or "")[:12],
    }
    try:
        sel = curate.load(catalog, info.get("selection") or "")
        if not info.get("selection_digest") or sel.digest == info.get("selection_digest"):
            row.update(predicate=sel.where or "(all)", num_train=len(sel.train_ids), num_holdout=len(sel.holdout_ids))
    except Exception as exc:  # noqa: BLE001 - the run's own record is the fallback
        log.debug("selection %r of run %s not loaded: %s", info.get("selection"), info.get("run_id"), exc)
    return row


def failure_thumbnail(catalog, dataset: str, segment_id: str, at_s: float, *, camera: str = "top") -> str:
    """The recorded camera frame at `at_s` (the last frame at or before it) as a base64 PNG; "" when the
    episode has no camera (`camera` first, else the first recorded one). Decodes from the keyframe before it."""
    try:
        ds = catalog.dataset(dataset)
        cams = sorted(e for e in (str(p) for p in ds.segment_store(segment_id).schema().entity_paths())
                      if e.startswith(schema.CAMERA_ROOT + "/"))
        if not cams:
            return ""
        entity = schema.camera_path(camera) if schema.camera_path(camera) in cams else cams[0]
        table = ds.filter_segments([segment_id]).filter_contents([entity]).reader(index=schema.TIMELINE).to_arrow_table()
        sample_col, key_col = f"{entity}:{schema.VIDEO_SAMPLE_COMPONENT}", f"{entity}:{schema.VIDEO_KEYFRAME_COMPONENT}"
        table = table.filter(table.column(sample_col).is_valid()).sort_by(schema.TIMELINE)
        times = [t.total_seconds() if hasattr(t, "total_seconds") else float(t) / 1e9 for t in table.column(schema.TIMELINE).to_pylist()]
        at = max([i for i, t in enumerate(times) if t <= at_s + 1e-6] or [0])
        keys = [bool(k[0] if isinstance(k, list) else k) for k in table.column(key_col).to_pylist()]
        start = max([i for i in range(at + 1) if keys[i]] or [0])
        samples = [bytes(v[0] if v and isinstance(v[0], (bytes, list)) else v) for v in table.column(sample_col).to_pylist()[start : at + 1]]
        frames = list(decode_samples(samples))
        if not frames:
            return ""
        buf = io.BytesIO()
        Image.fromarray(frames[min(at - start, len(frames) - 1)]).save(buf, format="PNG")
        return base64.b64encode(buf.getvalue()).decode("ascii")
    except Exception as exc:  # noqa: BLE001 - a missing thumbnail leaves the command, which still works
        log.warning("no thumbnail for %s at %.2f s: %s", segment_id, at_s, exc)
        return ""




def build_report_data(
    catalog,
    eval_ids: Sequence[str],
    *,
    labels: Sequence[str] | None = None,
    failures_per_cell: int = 5,
    export_dir: str | Path | None = None,
    report_dir: str | Path | None = None,
    title: str = "roboloop: close-the-loop report",
) -> ReportData:
    """Collect everything the report shows for `eval_ids` (the first two are compared, paired).

    With `export_dir`, each listed failure is also exported as a self-contained .rrd there
    and linked relative to `report_dir` (the report's folder).
    """
    ws = catalog.workspace
    labels = list(labels) if labels else [f"v{i + 1}" for i in range(len(eval_ids))]
    data = ReportData(title=title, created_at=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), workspace=str(ws.root))
    exports = _FailureExports(catalog, export_dir, report_dir)
    segment_table = functools.lru_cache(maxsize=None)(catalog.segment_table)  # each dataset fetched once per report
    indexed = {d for d in _evals_datasets(ws, eval_ids) if d not in catalog.dataset_names()}  # see report_datasets
    rollout_index = functools.lru_cache(maxsize=None)(lambda d: indexed_rollout_table(ws, d))
    rollout_rows: list[list[dict[str, Any]]] = []
    gap_cfg = GapConfig()
    for eval_id, label in zip(eval_ids, labels):
        row = rows.read_row(ws, schema.EVALS_TABLE, eval_id)
        if row is None:
            raise UnknownEvaluationError(f"unknown evaluation {eval_id!r}")
        sec = EvalSection(eval_id=eval_id, label=label, run_id=row.get("run_id") or "", policy=str(row.get("policy") or ""),
                          evals_dataset=row.get("evals_dataset") or schema.evals_dataset(row["dataset"]))
        if row.get(schema.EVAL_SEQUENTIAL):
            data.sequential.extend({"label": label, "eval_id": eval_id, **r} for r in sequential_rows(row))
        from_index = sec.evals_dataset in indexed
        if from_index:
            rollouts = indexed_rollout_table(ws, sec.evals_dataset, [eval_id])
        else:
            rollouts = rollout_table(catalog, sec.evals_dataset, eval_ids=[eval_id], segment_table=segment_table)
        rollout_rows.append(_rows_of(rollouts))
        note = outcome_note(outcome_sources(rollout_rows[-1]))
        if note:
            data.notes.append(f"{label} ({eval_id}): {note}")
        gap_cfg = _add_coverage(catalog, sec, segment_table, gap_cfg, rollout_index if from_index else None)
        _add_success(sec, rollouts, gap_cfg)
        _add_failures(catalog, sec, rollouts, failures_per_cell, exports, register=from_index)
        data.evals.append(sec)
        if sec.run_id:
            _add_run(catalog, data, label, sec.run_id, row["dataset"])
    if len(rollout_rows) >= 2:
        data.comparison_labels = (labels[0], labels[1])
        data.comparison = [_norm_compare(r) for r in _rows_of(compare(rollout_rows[0], rollout_rows[1], ["episode.cell"]))]
    ids = set(eval_ids)
    data.plans = [p for p in rows.read_rows(ws, schema.PLANS_TABLE) if p.get("source_eval") in ids]
    return data


def _evals_datasets(workspace, eval_ids: Sequence[str]) -> list[str]:
    """The evaluation datasets of `eval_ids` (their evals rows; unknown ids are left to `build_report_data`)."""
    out = []
    for eval_id in eval_ids:
        row = rows.read_row(workspace, schema.EVALS_TABLE, eval_id)
        if row is not None:
            out.append(row.get("evals_dataset") or schema.evals_dataset(row["dataset"]))
    return sorted(set(out))


def report_datasets(workspace, eval_ids: Sequence[str]) -> list[str]:
    """The datasets a catalog for the report of `eval_ids` restores: every dataset except evaluation datasets.

    The rollouts come from the rollout index (`analyze.rollouts.indexed_rollout_table`), and :func:`build_report_data`
    registers only the few failures it shows (`Catalog.restore_segments`, for their thumbnails and exports): at
    10,000 rollouts restoring the evaluation dataset alone took ~26 s. An evaluation dataset of `eval_ids` whose index
    is stale (rows missing) is restored, and read from the catalog as before.
    """
    stale = []
    for dataset in _evals_datasets(workspace, eval_ids):
        try:
            load_table(workspace, dataset)
        except (StaleIndexError, UnknownDatasetError):
            stale.append(dataset)
    return [d for d in workspace.datasets() if not d.endswith(schema.evals_dataset("")) or d in stale]


def _add_coverage(catalog, sec: EvalSection, segment_table, gap_cfg: GapConfig, rollout_index=None) -> GapConfig:
    """The evaluation's coverage gaps into `sec.coverage` (a note when unknown); returns the gap settings in effect.
    `rollout_index(evals dataset)`: the rollouts from the index instead of the catalog's segment table."""
    try:
        rep = gaps(catalog, sec.eval_id, segment_table=segment_table, rollout_table=rollout_index)
    except (GapError, ImportError, KeyError, FileNotFoundError) as exc:
        sec.notes.append(f"coverage unavailable: {exc}")
        return gap_cfg
    sec.coverage = rep.rows()
    return rep.config


def _add_success(sec: EvalSection, rollouts, gap_cfg: GapConfig) -> None:
    """Success per cell into `sec.cells`; a cell fails by its gap verdict, else by the gap settings' rule."""
    cov_by_cell = {c[CELL]: c for c in sec.coverage}
    for c in (_norm_success(x) for x in _rows_of(success_by(rollouts, ["episode.cell"]))):
        if not c["n"]:  # only unlabelled rollouts: no rate, not failing
            c["failing"] = False
        elif c[CELL] in cov_by_cell:
            c["failing"] = bool(cov_by_cell[c[CELL]]["fails"])
        else:
            c["failing"] = gap_cfg.fails(as_number(c["rate"]) or 0.0, as_number(c["ci_high"]) or 0.0)
        sec.cells.append(c)


def _add_failures(catalog, sec: EvalSection, rollouts, per_cell: int, exports: _FailureExports, *, register: bool = False) -> None:
    """The failure modes of each failing cell, largest first, one representative rollout each (at most `per_cell`).
    With `register`, those representatives are registered with the catalog first (`Catalog.restore_segments`: a catalog
    restored without the evaluation dataset, :func:`report_datasets`)."""
    failing = {c[CELL] for c in sec.cells if c["failing"]}
    fails = failures(rollouts)
    shown: dict[str, int] = {}
    modes = []
    for m in failure_modes(fails):
        cell = m["cell"]
        if cell not in failing or shown.get(cell, 0) >= per_cell:
            continue
        shown[cell] = shown.get(cell, 0) + 1
        modes.append(m)
    if register and modes:
        catalog.restore_segments(sec.evals_dataset, [m["segment_id"] for m in modes])
    for m in modes:
        cell = m["cell"]
        seg = m["segment_id"]
        rep = next(f for f in fails if f["segment_id"] == seg)
        t = as_number(rep.get("outcome.failure_time_s"))
        t = t if t is not None and t >= 0 else None
        sec.failures.append({
            CELL: cell, "segment_id": seg, "seed": rep.get("episode.seed"), "reason": rep.get("failure_kind"),
            "kind": m["kind"], "count": m["count"], "cell_failures": m["cell_failures"],
            "stage": rep.get("outcome.stage_name"), "time_s": t, "command": links.open_command(seg, t),
            "rrd": exports.link(sec.evals_dataset, seg),
            "thumbnail": failure_thumbnail(catalog, sec.evals_dataset, seg, t or 0.0),
        })


class _FailureExports:
    """Where listed failures are exported (``export.export_segment``) and how the report links them."""

    def __init__(self, catalog, export_dir: str | Path | None, report_dir: str | Path | None) -> None:
        self.catalog = catalog
        self.export_dir = Path(export_dir) if export_dir is not None else None
        self.report_dir = Path(report_dir) if report_dir is not None else None

    def link(self, dataset: str, segment_id: str) -> str:
        """Export the segment and return its path relative to the report; "" when not exporting."""
        if self.export_dir is None:
            return ""
        target = export.export_segment(self.catalog, dataset, segment_id, self.export_dir / f"{segment_id}.rrd")
        base = self.report_dir if self.report_dir is not None else target.parent
        return Path(os.path.relpath(target.resolve(), base.resolve())).as_posix()


def _add_run(catalog, data: ReportData, label: str, run_id: str, eval_dataset: str) -> None:
    """The run's selection and loss curves (a note instead of either when unavailable)."""
    info: dict[str, Any] = {}
    try:
        info = dict(catalog.workspace.run_info(run_id))
        data.selections.append(_selection_row(catalog, label, info))
    except Exception as exc:  # noqa: BLE001 - a missing run record degrades the report, not the command
        data.notes.append(f"{label}: the record of run {run_id} is unavailable ({exc})")
    try:
        data.loss_curves[label] = _loss_curves(catalog, info.get("dataset") or eval_dataset, run_id)
    except Exception as exc:  # noqa: BLE001
        data.notes.append(f"{label}: no loss curves for run {run_id} ({exc})")
    _add_values(catalog, data, label, run_id, info)


def _add_values(catalog, data: ReportData, label: str, run_id: str, info: Mapping[str, Any]) -> None:
    """The run's demonstration values (when `roboloop value` wrote some) and whether its own selection was curated by value."""
    dataset = info.get("dataset")
    if not dataset or dataset not in catalog.dataset_names():
        return
    table = catalog.segment_table(dataset).to_pylist()
    values = stored_values(table, run_id)
    if values:
        source = schema.friendly_column(schema.SIGNALS, schema.SIGNAL_VALUE_EVAL)
        summary = describe(values, 10)
        data.values.append({
            "label": label, "run_id": run_id, "dataset": dataset, "summary": summary,
            "evals": sorted({str(r.get(source)) for r in table if r.get(schema.SEGMENT_ID) in values and r.get(source)}),
            "lowest": [{"segment_id": seg, "value": v, "command": links.open_command(seg, dataset=dataset)} for seg, v in summary["lowest"]],
        })
    try:
        sel = curate.load(catalog, info.get("selection") or "")
    except Exception:  # noqa: BLE001 - no saved selection: nothing to say about how it was curated
        return
    if uses_value(sel.where) or uses_value(sel.order):
        source = schema.friendly_column(schema.SIGNALS, schema.SIGNAL_VALUE_RUN)
        ids = set(sel.segment_ids)
        data.value_curation.append({
            "label": label, "run_id": run_id, "selection": sel.name, "predicate": sel.where or "(all)", "order": sel.order or "",
            "num_train": len(sel.train_ids),
            "value_runs": sorted({str(r.get(source)) for r in table if r.get(schema.SEGMENT_ID) in ids and r.get(source)}),
        })
