"""The HTML report of an experiment loop: one self-contained file that opens offline.

:func:`render_report` is pure: it turns a :class:`~roboloop.report.data.ReportData` (plain
tables as lists of dicts, curves as arrays) into HTML, one section after another. Plots are
drawn with matplotlib (Agg, :mod:`roboloop.report.plots`) and embedded as base64 PNG
``data:`` URIs; the style sheet is inline; there is no script, no external URL, no font or
image fetched from anywhere. It computes no statistic: every number it shows is in the data
it is given. :func:`write_report` gathers the data (:func:`~roboloop.report.data.build_report_data`),
renders it and writes the file atomically.

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

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from roboloop.report.data import ReportData, build_report_data
from roboloop.report.plots import comparison_plot, coverage_text, heatmap, loss_plot, success_text
from roboloop.report.values import CELL
from roboloop.workspace import atomic_write_text

__all__ = ["SECTIONS", "render_report", "write_report"]

SECTIONS = ("summary", "success", "comparison", "coverage", "loss", "selections", "values", "failures", "plans")
"""HTML ids of the report's sections, in order."""

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


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'



def render_report(data: ReportData) -> str:
    """The whole report as one HTML string (no external resource of any kind)."""
    out = [
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>{_e(data.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(data.title)}</h1>",
        f'<p class="meta">{_e(data.created_at)}{" &middot; workspace " + _e(data.workspace) if data.workspace else ""}</p>',
        _summary(data),
        _success(data),
        _comparison(data),
        _coverage(data),
        _loss(data),
        _selections(data),
        _values(data),
        _failures(data),
        _plans(data),
        "</body></html>\n",
    ]
    return "\n".join(out)


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
    out = Path(out_path)
    export_dir = out.parent / f"{out.stem}_files" if export_failures else None
    data = build_report_data(
        catalog, eval_ids, labels=labels, failures_per_cell=failures_per_cell, export_dir=export_dir, report_dir=out.parent
    )
    return atomic_write_text(out, render_report(data))


# --- the sections, in order ------------------------------------------------------------------

def _summary(data: ReportData) -> str:
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
    return _section("summary", "Summary", body)


def _success(data: ReportData) -> str:
    figs, tables = [], []
    for ev in data.evals:
        if ev.cells:
            figs.append(_img(heatmap(ev.cells, "rate", success_text, f"{ev.label}: success by cell (k/n, rate, Wilson 95%)"), f"success heatmap {ev.label}"))
        cols = [(CELL, "cell"), ("n", "n"), ("successes", "successes"), ("rate", "rate"), ("ci_low", "ci low"), ("ci_high", "ci high")]
        if any("mean_stage" in c for c in ev.cells):
            cols.append(("mean_stage", "mean stage"))
        cols += [(k, k) for k in ("labelled", "unlabelled") if any(c.get(k) for c in ev.cells)]  # a person's labels
        cols.append(("failing", "failing"))
        tables.append(f"<h3>{_e(ev.label)} ({_e(ev.eval_id)})</h3>" + _table(ev.cells, cols))
    return _section("success", "Success by condition", f'<div class="figs">{"".join(figs)}</div>' + "".join(tables))


def _comparison(data: ReportData) -> str:
    a, b = data.comparison_labels
    body = ""
    if data.comparison:
        fig = comparison_plot(data.comparison, data.comparison_labels)
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
    return _section("comparison", f"Paired comparison {a} -> {b}", body)


def _coverage(data: ReportData) -> str:
    figs, tables = [], []
    for ev in data.evals:
        if not ev.coverage:
            tables.append(f'<p class="note">{_e(ev.label)}: training coverage unknown</p>')
            continue
        figs.append(_img(heatmap(ev.coverage, "covered_fraction", coverage_text, f"{ev.label}: training coverage (start states)", cmap="Blues"), f"coverage heatmap {ev.label}"))
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
    return _section("coverage", "Training coverage per cell", body)


def _loss(data: ReportData) -> str:
    fig = loss_plot(data.loss_curves)
    body = _img(fig, "loss curves") if fig else '<p class="note">(no loss curves found)</p>'
    return _section("loss", "Loss curves", body)


def _selections(data: ReportData) -> str:
    return _section(
        "selections", "Selections (training sets as queries)",
        _table(data.selections, [("label", "run"), ("run_id", "run id"), ("selection", "selection"), ("dataset", "dataset"),
                                 ("predicate", "query"), ("num_train", "train"), ("num_holdout", "holdout"), ("digest", "digest")]),
    )


def _values(data: ReportData) -> str:
    """Demonstration value: its distribution per valued run, the lowest-valued demonstrations, what curating by it did."""
    parts = ['<p class="note">Each training demonstration\'s estimated effect on closed-loop success (<code>roboloop value</code>: '
             "&gt; 0 helps, &lt; 0 hurts, 1 = the largest effect), from the run's weights and its evaluation's rollouts.</p>"]
    for v in data.values:
        summ = v["summary"]
        top = max(summ["counts"]) or 1
        hist = [{"value": f"{a:+.2f} .. {b:+.2f}", "demonstrations": c, "": "\u2588" * round(24 * c / top)}
                for (a, b), c in zip(summ["bins"], summ["counts"])]
        q = summ["quartiles"]
        parts.append(f"<h3>{_e(v['label'])}: run {_e(v['run_id'])} (from {_e(', '.join(v['evals']))})</h3>"
                     f'<p class="note">{summ["demonstrations"]} demonstrations, {summ["negative"]} below 0; median {q[2]:+.2f}, '
                     f"quartiles {q[1]:+.2f} / {q[3]:+.2f}</p>"
                     + _table(hist, [("value", "value"), ("demonstrations", "demonstrations"), ("", "")])
                     + "<h4>Lowest-valued demonstrations</h4>"
                     + _table([{**r, "value": f"{r['value']:+.3f}"} for r in v["lowest"]],
                              [("segment_id", "segment"), ("value", "value"), ("command", "open it")]))
    if data.value_curation:
        parts.append("<h3>Runs curated by value</h3>" + _table(
            data.value_curation, [("label", "run"), ("run_id", "run id"), ("selection", "selection"), ("predicate", "query"),
                                  ("order", "order"), ("num_train", "train"), ("value_runs", "values from run")])
            + '<p class="note">Their success is in the summary and, when two evaluations are compared, in the comparison above.</p>')
    if not data.values and not data.value_curation:
        parts.append('<p class="note">(no run in this report has demonstration values: <code>roboloop value --run RUN --eval EVAL</code>)</p>')
    return _section("values", "Which demonstrations help (demonstration value)", "".join(parts))


def _failures(data: ReportData) -> str:
    parts = []
    for ev in data.evals:
        by_cell: dict[str, list[dict[str, Any]]] = {}
        for f in ev.failures:
            by_cell.setdefault(str(f.get(CELL)), []).append(f)
        for cell, rows in by_cell.items():
            parts.append(f"<h3>{_e(ev.label)}: {_e(cell)}</h3>{''.join(_failure_item(f) for f in rows)}")
    body = (
        '<p class="note">The failure modes of each failing cell (failures counted by kind), largest first, each with a '
        "representative rollout: the camera at the moment it went wrong, and the command that opens it there in the "
        "Rerun viewer; linked .rrd files (when exported) open in the viewer without the catalog.</p>"
        + ("".join(parts) or '<p class="note">(no failing cell)</p>')
    )
    return _section("failures", "Failure modes of failing cells", body)


def _failure_item(f: Mapping[str, Any]) -> str:
    """One listed failure: its thumbnail, mode, moment, the command that opens it and the link to its export."""
    link = f' &middot; <a href="{_e(f["rrd"])}">{_e(Path(str(f["rrd"])).name)}</a>' if f.get("rrd") else ""
    when = f"at {f['time_s']:.2f} s" if f.get("time_s") is not None else "no moment recorded"
    mode = (f"{f['count']} of {f['cell_failures']} failures: " if f.get("count") else "")
    head = f"<b>{mode}{_e(f.get('reason'))}</b> {when}"
    what = ", ".join(x for x in (f"stage {_e(f.get('stage'))}" if f.get("stage") not in (None, "") else "",
                                 f"seed {_e(f.get('seed'))}" if f.get("seed") is not None else "") if x)
    thumb = (f'<img class="thumb" alt="camera at the failure moment of {_e(f.get("segment_id"))}" '
             f'src="data:image/png;base64,{f["thumbnail"]}">' if f.get("thumbnail") else "")
    return (f'<div class="failure">{thumb}<div>{head}<br><code>{_e(f.get("command"))}</code> '
            f'<span class="note">{what}</span>{link}</div></div>')


def _plans(data: ReportData) -> str:
    prows = [
        {**p, "items_text": "; ".join(f"{it.get('count')} x {_fmt(it.get('conditions'))}" for it in p.get("items") or [])}
        for p in data.plans
    ]
    return _section(
        "plans", "Collection plans",
        _table(prows, [("name", "plan"), ("source_eval", "from evaluation"), ("status", "status"), ("total", "episodes"), ("items_text", "items")]),
    )
