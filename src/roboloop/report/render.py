"""The HTML report of an experiment loop: one self-contained file that opens offline.

Two halves:

- :func:`render_report` is pure: it turns a :class:`ReportData` (plain tables as lists
  of dicts, curves as arrays) into HTML. Plots are drawn with matplotlib (Agg) and
  embedded as base64 PNG ``data:`` URIs; the style sheet is inline; there is no script,
  no external URL, no font or image fetched from anywhere. It computes no statistic:
  every number it shows is in the data it is given.
- :func:`build_report_data` is the glue: for each evaluation it reads the evaluation row,
  calls ``analyze.rollout_table`` / ``analyze.success_by`` / ``analyze.failures`` /
  ``analyze.compare``, the sequential decisions stored in the row (if any), the coverage gaps (``analyze_gaps.gaps``), the runs' loss curves
  (``/train/epoch_loss`` and ``/holdout/loss`` on timeline ``epoch`` in ``<ds>_runs``, plotted per epoch),
  the selections' queries and sizes, and the plans made from the evaluations.
  :func:`write_report` writes the file atomically.

Sections (HTML ids): ``summary``, ``success`` (heatmaps with k/n and Wilson intervals per
evaluation), ``comparison`` (the paired comparison per cell, and the sequential decision per cell
when an evaluation was run with ``--until-decided``), ``coverage`` (training
coverage per cell and the gap verdicts), ``loss`` (loss curves of the runs),
``selections`` (queries and sizes), ``failures`` (for each failing cell, commands that
open its failed rollouts in the viewer at the failure moment, and optional links to
exported ``.rrd`` files next to the report) and ``plans``.

Links outlive the process (DESIGN.md): the report never contains a live ``rerun+http``
URL, only ``roboloop open SEGMENT_ID --at SECONDS`` commands and relative file links.
"""

from __future__ import annotations

import base64
import datetime as _dt
import functools
import html
import io
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "SECTIONS",
    "EvalSection",
    "ReportData",
    "build_report_data",
    "open_command",
    "render_report",
    "write_report",
]

SECTIONS = ("summary", "success", "comparison", "coverage", "loss", "selections", "failures", "plans")
"""HTML ids of the report's sections, in order."""

CELL = "cell"
log = logging.getLogger(__name__)


def open_command(segment_id: str, at_s: float | None = None) -> str:
    """The command that opens one recording in the viewer (at a moment, when given)."""
    cmd = f"roboloop open {segment_id}"
    if at_s is not None and at_s >= 0 and math.isfinite(at_s):
        cmd += f" --at {at_s:.2f}"
    return cmd


# --- data ----------------------------------------------------------------------------------

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
    """Gap rows (analyze_gaps.CellGap.to_dict()): cell, covered, n, covered_fraction, train_near,
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
    notes: list[str] = field(default_factory=list)


# --- plots (matplotlib Agg, embedded as PNG) -------------------------------------------------

def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    _plt().close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _parse_key(key: str) -> dict[str, str]:
    out = {}
    for part in str(key).split(","):
        a, sep, v = part.partition("=")
        if sep:
            out[a] = v
    return out


def _grid_layout(keys: Sequence[str]) -> tuple[list[str], list[str], dict[str, tuple[int, int]], str, str]:
    """Rows = the axis with the most labels, columns = the other axes combined."""
    conds = {k: _parse_key(k) for k in keys}
    axes = sorted({a for c in conds.values() for a in c})
    if not axes:
        return ["all"], list(keys), {k: (0, i) for i, k in enumerate(keys)}, "", "cell"
    nlab = {a: len({c.get(a) for c in conds.values()}) for a in axes}
    row_axis = max(axes, key=lambda a: (nlab[a], a))
    rest = [a for a in axes if a != row_axis]
    row_of = {k: c.get(row_axis, "") for k, c in conds.items()}
    col_of = {k: ",".join(f"{a}={c.get(a, '')}" for a in rest) or "-" for k, c in conds.items()}
    rows = sorted(set(row_of.values()))
    cols = sorted(set(col_of.values()))
    pos = {k: (rows.index(row_of[k]), cols.index(col_of[k])) for k in keys}
    return rows, cols, pos, row_axis, ",".join(rest)


def _heatmap(cells: Sequence[Mapping[str, Any]], value: str, text, title: str, cmap: str = "RdYlGn") -> str:
    import numpy as np

    plt = _plt()
    keys = [c[CELL] for c in cells]
    rows, cols, pos, row_axis, col_axes = _grid_layout(keys)
    grid = np.full((len(rows), len(cols)), np.nan)
    for c in cells:
        r, k = pos[c[CELL]]
        v = c.get(value)
        grid[r, k] = float(v) if v is not None else np.nan
    fig, ax = plt.subplots(figsize=(1.2 + 2.1 * len(cols), 0.9 + 0.85 * len(rows)))
    ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    colormap = plt.get_cmap(cmap)
    for c in cells:
        r, k = pos[c[CELL]]
        v = grid[r, k]
        red, green, blue, _ = colormap(float(v)) if np.isfinite(v) else (1.0, 1.0, 1.0, 1.0)
        dark = 0.2126 * red + 0.7152 * green + 0.0722 * blue < 0.45  # white text on dark colours
        ax.text(k, r, text(c), ha="center", va="center", fontsize=8, color="white" if dark else "black")
    if col_axes:
        ax.set_xticks(range(len(cols)), [col.replace(",", "\n") for col in cols], fontsize=8)
    else:
        ax.set_xticks([])
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_ylabel(row_axis)
    if col_axes:
        ax.set_xlabel(col_axes)
    ax.set_title(title, fontsize=10)
    return _png(fig)


def _success_text(c: Mapping[str, Any]) -> str:
    return f"{c.get('successes', '?')}/{c.get('n', '?')}\n{_pct(c.get('rate'))}\n[{_pct(c.get('ci_low'))}, {_pct(c.get('ci_high'))}]"


def _coverage_text(c: Mapping[str, Any]) -> str:
    return f"covered {c.get('covered', '?')}/{c.get('n', '?')}\nnear {c.get('train_near', '?')} demos\n{c.get('verdict', '')}"


def _comparison_plot(rows: Sequence[Mapping[str, Any]], labels: tuple[str, str]) -> str | None:
    pts = [r for r in rows if _num(r.get("diff")) is not None]
    if not pts:
        return None
    plt = _plt()
    colors = {"improved": "#1a9850", "regressed": "#d73027"}
    fig, ax = plt.subplots(figsize=(7.5, 0.8 + 0.38 * len(pts)))
    for i, r in enumerate(pts):
        d = _num(r["diff"])
        lo, hi = _num(r.get("diff_low")), _num(r.get("diff_high"))
        col = colors.get(str(r.get("verdict")), "#555555")
        if lo is not None and hi is not None:
            ax.plot([lo, hi], [i, i], color=col, lw=2)
        ax.plot([d], [i], "o", color=col)
    ax.axvline(0, color="#999999", lw=1)
    ax.set_yticks(range(len(pts)), [str(r.get(CELL)).replace(",", ", ") for r in pts], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(-1.05, 1.05)
    ax.set_xlabel(f"success {labels[1]} - {labels[0]} (95% interval)")
    ax.set_title(f"paired comparison {labels[0]} -> {labels[1]}", fontsize=10)
    return _png(fig)


def _loss_plot(curves: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]]) -> str | None:
    fig = _loss_figure(curves)
    return None if fig is None else _png(fig)


def _loss_figure(curves: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]]):
    """Loss per epoch (runs of different size compare on passes over their data): the train loss (mean over
    each epoch's steps) thin, the holdout loss on top of it, thick with markers, in the run's colour."""
    if not any(len(v[0]) for c in curves.values() for v in c.values()):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, parts) in enumerate(curves.items()):
        col = cycle[i % len(cycle)]
        epochs, values = parts.get("train", ((), ()))
        if len(epochs):
            ax.plot(epochs, values, "-", color=col, lw=1.0, alpha=0.55, zorder=2, label=f"{label} train")
        epochs, values = parts.get("holdout", ((), ()))
        if len(epochs):
            ax.plot(epochs, values, "--o", color=col, lw=2.2, ms=4.5, markeredgecolor="black", markeredgewidth=0.6,
                    zorder=3, label=f"{label} holdout")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (L1, normalized)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title("training runs: train (mean per epoch) and holdout loss", fontsize=10)
    return fig


# --- html ----------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1280px;color:#222;padding:0 16px}
h1{font-size:24px;margin-bottom:4px} h2{font-size:19px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
h3{font-size:15px;margin:18px 0 6px} .meta{color:#666;font-size:13px}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0 12px} th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;background:#f6f6f6;padding:1px 4px;border-radius:3px}
pre{padding:8px;white-space:pre-wrap} img{max-width:100%;margin:4px 0}
.figs{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.coverage_gap{background:#fde0dc} .policy_or_data_quality{background:#fff1cc} .fine{background:#eaf6ea}
.improved{color:#1a7f37;font-weight:600} .regressed{color:#c62828;font-weight:600}
.note{color:#555;font-size:13px} li{margin:2px 0;font-size:13px}
.failure{display:flex;gap:10px;align-items:flex-start;margin:6px 0;font-size:13px} img.thumb{width:240px;image-rendering:pixelated;border:1px solid #ccc}
"""


def _e(v: Any) -> str:
    return html.escape("" if v is None else str(v))


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _pct(v: Any) -> str:
    f = _num(v)
    return "-" if f is None else f"{100 * f:.0f}%"


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "inf" if v > 0 else "-"
        return f"{v:.3g}" if abs(v) < 1e-3 and v != 0 else f"{v:.3f}".rstrip("0").rstrip(".")
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v))
    if isinstance(v, Mapping):
        return ", ".join(f"{k}={x}" for k, x in v.items())
    return "" if v is None else str(v)


def _table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]], row_class: str | None = None) -> str:
    if not rows:
        return '<p class="note">(none)</p>'
    head = "".join(f"<th>{_e(title)}</th>" for _, title in columns)
    body = []
    for r in rows:
        cls = f' class="{_e(r.get(row_class))}"' if row_class and r.get(row_class) else ""
        tds = []
        for key, _ in columns:
            v = r.get(key)
            num = isinstance(v, (int, float)) and not isinstance(v, bool)
            tds.append(f'<td class="num">{_e(_fmt(v))}</td>' if num else f"<td>{_e(_fmt(v))}</td>")
        body.append(f"<tr{cls}>{''.join(tds)}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{_e(title)}</h2>\n{body}\n</section>\n'


def render_report(data: ReportData) -> str:
    """The whole report as one HTML string (no external resource of any kind)."""
    out = [
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>{_e(data.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(data.title)}</h1>",
        f'<p class="meta">{_e(data.created_at)}{" &middot; workspace " + _e(data.workspace) if data.workspace else ""}</p>',
    ]
    # summary
    summ = [
        {
            "label": ev.label, "eval_id": ev.eval_id, "run_id": ev.run_id, "policy": ev.policy,
            "rollouts": sum(int(c.get("n") or 0) for c in ev.cells),
            "successes": sum(int(c.get("successes") or 0) for c in ev.cells),
            "cells": len(ev.cells), "failing cells": sum(bool(c.get("failing")) for c in ev.cells),
        }
        for ev in data.evals
    ]
    body = _table(summ, [(k, k) for k in ("label", "eval_id", "run_id", "policy", "rollouts", "successes", "cells", "failing cells")])
    body += "".join(f'<p class="note">{_e(n)}</p>' for n in data.notes)
    out.append(_section("summary", "Summary", body))

    # success heatmaps
    figs, tables = [], []
    for ev in data.evals:
        if ev.cells:
            figs.append(_img(_heatmap(ev.cells, "rate", _success_text, f"{ev.label}: success by cell (k/n, rate, Wilson 95%)"), f"success heatmap {ev.label}"))
        cols = [(CELL, "cell"), ("n", "n"), ("successes", "successes"), ("rate", "rate"), ("ci_low", "ci low"), ("ci_high", "ci high")]
        if any("mean_stage" in c for c in ev.cells):
            cols.append(("mean_stage", "mean stage"))
        cols.append(("failing", "failing"))
        tables.append(f"<h3>{_e(ev.label)} ({_e(ev.eval_id)})</h3>" + _table(ev.cells, cols))
    out.append(_section("success", "Success by condition", f'<div class="figs">{"".join(figs)}</div>' + "".join(tables)))

    # paired comparison
    a, b = data.comparison_labels
    body = ""
    if data.comparison:
        fig = _comparison_plot(data.comparison, data.comparison_labels)
        body += _img(fig, "paired comparison") if fig else ""
        body += _table(
            [{**r, "verdict_class": r.get("verdict")} for r in data.comparison],
            [(CELL, "cell"), ("n_pairs", "pairs"), ("rate_a", f"rate {a}"), ("rate_b", f"rate {b}"), ("diff", "diff"),
             ("diff_low", "diff low"), ("diff_high", "diff high"), ("test", "test"), ("p_value", "p"), ("p_adjusted", "p (Holm)"), ("verdict", "verdict")],
        )
    else:
        body += '<p class="note">(one evaluation only: nothing to compare)</p>'
    if data.sequential:
        body += (
            "<h3>Sequential decision</h3>"
            '<p class="note">Decided round by round with an anytime-valid paired test (the error stays below alpha '
            "however often it was looked at); rollouts = pairs the decision took, next to the fixed grid's count per cell.</p>"
            + _table(
                data.sequential,
                [("label", "evaluation"), ("against", "against"), (CELL, "cell"), ("decision", "decision"),
                 ("rollouts", "rollouts"), ("fixed_n", "fixed grid"), ("stop_round", "stop round"), ("decided_at", "decided at"),
                 ("estimate", "diff"), ("ci_low", "CS low"), ("ci_high", "CS high"), ("metric", "metric")],
            )
        )
    out.append(_section("comparison", f"Paired comparison {a} -> {b}", body))

    # coverage
    figs, tables = [], []
    for ev in data.evals:
        if not ev.coverage:
            tables.append(f'<p class="note">{_e(ev.label)}: training coverage unknown</p>')
            continue
        figs.append(_img(_heatmap(ev.coverage, "covered_fraction", _coverage_text, f"{ev.label}: training coverage (start states)", cmap="Blues"), f"coverage heatmap {ev.label}"))
        tables.append(
            f"<h3>{_e(ev.label)}: cells ranked worst first</h3>"
            + _table(
                ev.coverage,
                [("rank", "rank"), (CELL, "cell"), ("successes", "successes"), ("n", "n"), ("covered", "covered"),
                 ("covered_fraction", "covered frac"), ("median_distance", "median dist"), ("train_near", "demos near"),
                 ("train_in_cell_by_label", "demos by label"),
                 ("verdict", "verdict"), ("advice", "advice")],
                row_class="verdict",
            )
        )
    body = (
        '<p class="note">A rollout is covered when a training episode started within tolerance of its start state '
        "(cube x, y and yaw, scaled: one unit is about 2 cm or 3 degrees, the distance at which a policy trained on "
        "one start stops generalizing); \"median dist\" is the median scaled distance of the cell's rollouts to the "
        "nearest training start, \"demos by label\" what counting by condition labels would say. Coverage is strict on "
        "purpose: it explains failing cells; a cell that succeeds with little coverage is interpolating between "
        "training starts.</p>"
        + f'<div class="figs">{"".join(figs)}</div>' + "".join(tables)
    )
    out.append(_section("coverage", "Training coverage per cell", body))

    # loss
    fig = _loss_plot(data.loss_curves)
    body = _img(fig, "loss curves") if fig else '<p class="note">(no loss curves found)</p>'
    out.append(_section("loss", "Loss curves", body))

    # selections
    out.append(_section(
        "selections", "Selections (training sets as queries)",
        _table(data.selections, [("label", "run"), ("run_id", "run id"), ("selection", "selection"), ("dataset", "dataset"),
                                 ("predicate", "query"), ("num_train", "train"), ("num_holdout", "holdout"), ("digest", "digest")]),
    ))

    # failures
    parts = []
    for ev in data.evals:
        by_cell: dict[str, list[dict[str, Any]]] = {}
        for f in ev.failures:
            by_cell.setdefault(str(f.get(CELL)), []).append(f)
        for cell, rows in by_cell.items():
            items = []
            for f in rows:
                link = f' &middot; <a href="{_e(f["rrd"])}">{_e(Path(str(f["rrd"])).name)}</a>' if f.get("rrd") else ""
                when = f"at {f['time_s']:.2f} s" if f.get("time_s") is not None else "no moment recorded"
                mode = (f"{f['count']} of {f['cell_failures']} failures: " if f.get("count") else "")
                head = f"<b>{mode}{_e(f.get('reason'))}</b> {when}"
                what = ", ".join(x for x in (f"stage {_e(f.get('stage'))}" if f.get("stage") not in (None, "") else "",
                                             f"seed {_e(f.get('seed'))}" if f.get("seed") is not None else "") if x)
                thumb = (f'<img class="thumb" alt="camera at the failure moment of {_e(f.get("segment_id"))}" '
                         f'src="data:image/png;base64,{f["thumbnail"]}">' if f.get("thumbnail") else "")
                items.append(f'<div class="failure">{thumb}<div>{head}<br><code>{_e(f.get("command"))}</code> '
                             f'<span class="note">{what}</span>{link}</div></div>')
            parts.append(f"<h3>{_e(ev.label)}: {_e(cell)}</h3>{''.join(items)}")
    body = (
        '<p class="note">The failure modes of each failing cell (failures counted by kind), largest first, each with a '
        "representative rollout: the camera at the moment it went wrong, and the command that opens it there in the "
        "Rerun viewer; linked .rrd files (when exported) open in the viewer without the catalog.</p>"
        + ("".join(parts) or '<p class="note">(no failing cell)</p>')
    )
    out.append(_section("failures", "Failure modes of failing cells", body))

    # plans
    prows = [
        {**p, "items_text": "; ".join(f"{it.get('count')} x {_fmt(it.get('conditions'))}" for it in p.get("items") or [])}
        for p in data.plans
    ]
    out.append(_section(
        "plans", "Collection plans",
        _table(prows, [("name", "plan"), ("source_eval", "from evaluation"), ("status", "status"), ("total", "episodes"), ("items_text", "items")]),
    ))
    out.append("</body></html>\n")
    return "\n".join(out)


# --- glue: the catalog -----------------------------------------------------------------------

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
    }


def _norm_compare(row: Mapping[str, Any]) -> dict[str, Any]:
    """One `analyze.compare` row in the report's column names (tolerant of naming)."""
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
    from roboloop import schema

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
        from roboloop import curate

        sel = curate.load(catalog, info.get("selection") or "")
        if not info.get("selection_digest") or sel.digest == info.get("selection_digest"):
            row.update(predicate=sel.where or "(all)", num_train=len(sel.train_ids), num_holdout=len(sel.holdout_ids))
    except Exception as exc:  # noqa: BLE001 - the run's own record is the fallback
        log.debug("selection %r of run %s not loaded: %s", info.get("selection"), info.get("run_id"), exc)
    return row


def failure_thumbnail(catalog, dataset: str, segment_id: str, at_s: float, *, camera: str = "top") -> str:
    """The recorded camera frame at `at_s` (the last frame at or before it) as a base64 PNG; "" when the
    episode has no camera (`camera` first, else the first recorded one). Decodes from the keyframe before it."""
    from PIL import Image

    from roboloop import schema
    from roboloop.video import decode_samples

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


def _export_rrd(catalog, evals_dataset: str, segment_id: str, path: Path) -> bool:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        store = catalog.dataset(evals_dataset).segment_store(segment_id)
        store.write_rrd(str(path), application_id="roboloop", recording_id=segment_id)
        return True
    except Exception:  # noqa: BLE001 - a missing export leaves the command, which still works
        return False


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
    from roboloop import analyze, rows, schema
    from roboloop.analyze_gaps import GapConfig, GapError, gaps

    ws = catalog.workspace
    labels = list(labels) if labels else [f"v{i + 1}" for i in range(len(eval_ids))]
    data = ReportData(title=title, created_at=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), workspace=str(ws.root))
    rollout_rows: list[list[dict[str, Any]]] = []
    infos: list[dict[str, Any]] = []
    cfg = GapConfig()
    segment_table = functools.lru_cache(maxsize=None)(catalog.segment_table)  # each dataset fetched once per report
    for eval_id, label in zip(eval_ids, labels):
        row = rows.read_row(ws, schema.EVALS_TABLE, eval_id)
        if row is None:
            raise GapError(f"unknown evaluation {eval_id!r}")
        evals_ds = row.get("evals_dataset") or schema.evals_dataset(row["dataset"])
        sec = EvalSection(eval_id=eval_id, label=label, run_id=row.get("run_id") or "", policy=str(row.get("policy") or ""), evals_dataset=evals_ds)
        if row.get(schema.EVAL_SEQUENTIAL):
            from roboloop.evaluate_sequential import sequential_rows

            data.sequential.extend({"label": label, "eval_id": eval_id, **r} for r in sequential_rows(row))
        rollouts = analyze.rollout_table(catalog, evals_ds, eval_ids=[eval_id], segment_table=segment_table)
        r_rows = _rows_of(rollouts)
        rollout_rows.append(r_rows)
        cov_by_cell: dict[str, dict[str, Any]] = {}
        try:
            rep = gaps(catalog, eval_id, segment_table=segment_table)
            cfg = rep.config
            sec.coverage = rep.rows()
            cov_by_cell = {c[CELL]: c for c in sec.coverage}
        except (GapError, ImportError, KeyError, FileNotFoundError) as exc:
            sec.notes.append(f"coverage unavailable: {exc}")
        for c in (_norm_success(x) for x in _rows_of(analyze.success_by(rollouts, ["episode.cell"]))):
            if c[CELL] in cov_by_cell:
                c["failing"] = bool(cov_by_cell[c[CELL]]["fails"])
            else:
                c["failing"] = cfg.fails(_num(c["rate"]) or 0.0, _num(c["ci_high"]) or 0.0)
            sec.cells.append(c)
        failing = {c[CELL] for c in sec.cells if c["failing"]}
        fails = analyze.failures(rollouts)
        modes = [m for m in analyze.failure_modes(fails) if m["cell"] in failing]
        shown: dict[str, int] = {}
        for m in modes:  # largest mode of each failing cell first; one representative each
            cell = m["cell"]
            if shown.get(cell, 0) >= failures_per_cell:
                continue
            shown[cell] = shown.get(cell, 0) + 1
            seg = m["segment_id"]
            rep = next(f for f in fails if f["segment_id"] == seg)
            t = _num(rep.get("outcome.failure_time_s"))
            t = t if t is not None and t >= 0 else None
            rrd = ""
            if export_dir is not None:
                target = Path(export_dir) / f"{seg}.rrd"
                if _export_rrd(catalog, evals_ds, seg, target):
                    base = Path(report_dir) if report_dir is not None else target.parent
                    rrd = _relpath(target, base)
            sec.failures.append({
                CELL: cell, "segment_id": seg, "seed": rep.get("episode.seed"), "reason": rep.get("failure_kind"),
                "kind": m["kind"], "count": m["count"], "cell_failures": m["cell_failures"],
                "stage": rep.get("outcome.stage_name"), "time_s": t, "command": open_command(seg, t), "rrd": rrd,
                "thumbnail": failure_thumbnail(catalog, evals_ds, seg, t or 0.0),
            })
        data.evals.append(sec)
        info: dict[str, Any] = {}
        if sec.run_id:
            try:
                from roboloop.train import run_info

                info = dict(run_info(ws, sec.run_id))
                data.selections.append(_selection_row(catalog, label, info))
            except Exception as exc:  # noqa: BLE001 - a missing run record degrades the report, not the command
                data.notes.append(f"{label}: the record of run {sec.run_id} is unavailable ({exc})")
            try:
                data.loss_curves[label] = _loss_curves(catalog, info.get("dataset") or row["dataset"], sec.run_id)
            except Exception as exc:  # noqa: BLE001
                data.notes.append(f"{label}: no loss curves for run {sec.run_id} ({exc})")
        infos.append(info)
    if len(rollout_rows) >= 2:
        data.comparison_labels = (labels[0], labels[1])
        data.comparison = [_norm_compare(r) for r in _rows_of(analyze.compare(rollout_rows[0], rollout_rows[1], ["episode.cell"]))]
    ids = set(eval_ids)
    data.plans = [p for p in rows.read_rows(ws, schema.PLANS_TABLE) if p.get("source_eval") in ids]
    return data


def _relpath(target: Path, base: Path) -> str:
    import os

    return Path(os.path.relpath(target.resolve(), base.resolve())).as_posix()


def write_report(
    catalog,
    eval_ids: Sequence[str],
    out_path: str | Path,
    *,
    labels: Sequence[str] | None = None,
    export_failures: bool = False,
    failures_per_cell: int = 5,
) -> Path:
    """Build and write the report for `eval_ids` to `out_path` (atomically); returns the path.

    With `export_failures`, the listed failures are exported as .rrd files into
    `<report name>_files/` next to the report and linked from it.
    """
    from roboloop.workspace import atomic_write_text

    out = Path(out_path)
    export_dir = out.parent / f"{out.stem}_files" if export_failures else None
    data = build_report_data(
        catalog, eval_ids, labels=labels, failures_per_cell=failures_per_cell, export_dir=export_dir, report_dir=out.parent
    )
    return atomic_write_text(out, render_report(data))
