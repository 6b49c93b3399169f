"""CLI commands of rollout outcomes: `failures` (modes, each failed rollout, its nearest training episode, open or
export it), `reoutcome` (re-judge by replaying), `label` (outcomes judged by a person).

`failures` reads the rollout index like `success`; these commands start the catalog when they open, export,
re-judge or write an `outcome` layer version.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from roboloop import schema
from roboloop.analyze.export import export_segments
from roboloop.analyze.gaps import nearest_training
from roboloop.analyze.rollouts import FAILURE_COLUMNS, failure_modes, failures, load_rollouts, outcome_note, outcome_sources
from roboloop.catalog import links
from roboloop.cli.common import console, err_console, fail, open_catalog, open_workspace, state
from roboloop.cli.tables import check_format, guard, lazy_catalog, print_table
from roboloop.refine.labels import Label, apply_labels, label_history, read_labels_csv
from roboloop.refine.outcomes import reoutcome

# --- failures ------------------------------------------------------------------------------------

MODE_COLUMNS = ["eval_id", "cell", "kind_words", "count", "share", "open"]
MODE_DATA_COLUMNS = ["eval_id", "cell", "kind", "kind_words", "count", "cell_failures", "share", "segment_id",
                     "episode.seed", "at_s", "open", "nearest_train_id", "nearest_distance"]


def _failure_columns(format: str, live: bool, with_url: bool) -> list[str]:
    if format != "table":
        return [*FAILURE_COLUMNS, "failure_kind", "at_s", "nearest_train_id", "nearest_distance",
                "nearest_dataset", "open"] + (["url"] if with_url else [])
    cols = ["segment_id", "episode.cell", "failure_kind", "at_s", "nearest_train_id", "nearest_distance", "open"]
    return [*cols, "url"] if live else cols


def _failure_notes(out: list[dict], unmatched: dict[str, str], nearest: bool) -> None:
    for eval_id, why in unmatched.items():
        err_console.print(f"note: no nearest training episodes for {eval_id or 'rollouts without an evaluation'}: {why}", soft_wrap=True)
    if nearest and any("nearest_train_id" in r for r in out):
        err_console.print("nearest_distance: scaled start-state distance (1 = 2 cm or 3 deg, `roboloop gaps`); "
                          "compare with `roboloop open SEGMENT --with-nearest`", soft_wrap=True)


def failures_cmd(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Evaluation dataset (<dataset>_evals).")] = schema.evals_dataset(schema.DEFAULT_DATASET),
    eval_ids: Annotated[list[str] | None, typer.Option("--eval", "-e", help="Only these evaluations (repeatable).")] = None,
    where: Annotated[str | None, typer.Option("--where", help="Only rollouts matching this predicate.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="At most this many failures.")] = None,
    modes: Annotated[bool, typer.Option("--modes", help="Only the failure modes (counts per kind per cell, one representative each).")] = False,
    nearest: Annotated[bool, typer.Option("--nearest/--no-nearest", help="Each failure's nearest training episode (start state) and its distance.")] = True,
    urls: Annotated[bool, typer.Option("--urls", help="Also print live catalog URLs (only while a catalog serves: use with --catalog).")] = False,
    open_: Annotated[bool, typer.Option("--open", help="Open the failures in the Rerun viewer at their failure moment.")] = False,
    export: Annotated[Path | None, typer.Option("--export", help="Write each failure as a self-contained .rrd into this folder.")] = None,
    format: Annotated[str, typer.Option("--format", "-f", help="table, csv or json")] = "table",
) -> None:
    """Failure modes (counts per kind per cell, a representative each), then every failed rollout: kind, moment,
    nearest training episode, and how to open it at that moment."""
    check_format(format)
    ws = open_workspace()
    live = urls and bool(state.catalog_url)
    if urls and not live:
        err_console.print("[yellow]note:[/] live URLs die with this command's embedded catalog; use the `open` "
                          "commands, --export, or run `roboloop serve` and pass --catalog")
    with lazy_catalog() as catalog:
        table = guard(lambda: load_rollouts(ws, dataset, eval_ids, where, catalog_factory=catalog))
        url_for = (lambda s, t: links.segment_url(catalog(), dataset, s, t)) if (live or open_) else None
        out = guard(lambda: failures(table, dataset=dataset, url_for=url_for, limit=limit))
        unmatched: dict[str, str] = guard(lambda: nearest_training(catalog(), out)) if nearest and out else {}
        if modes or format == "table":
            mode_rows = failure_modes(out)
            print_table(mode_rows, MODE_COLUMNS if format == "table" else MODE_DATA_COLUMNS, format,
                        title=f"{len(mode_rows)} failure mode(s): kind per cell, a representative each")
        if not modes:
            cols = _failure_columns(format, live, url_for is not None)
            if any(r.get("judged", "simulator") != "simulator" for r in out):  # a person labelled some of them
                cols = [*cols[:3], "judged", *cols[3:]]
            print_table(out, cols, format, title=f"{len(out)} failure(s) in {dataset}")
        if format == "table":
            _failure_notes(out, unmatched, nearest)
            note = outcome_note(outcome_sources(table))
            if note:
                err_console.print(f"note: {note}", soft_wrap=True)
        if export is not None:
            paths = guard(lambda: export_segments(catalog(), dataset, [r["segment_id"] for r in out], export))
            err_console.print(f"exported {len(paths)} file(s) to {export} (every layer + the blueprint); open one with: "
                              f"{links.viewer_command(str(paths[0])) if paths else 'rerun FILE.rrd'}", soft_wrap=True)
        if open_ and out:
            links.view([r["url"] for r in out], embedded=catalog().embedded, say=lambda s: console.print(s, soft_wrap=True))


# --- reoutcome -----------------------------------------------------------------------------------

def reoutcome_cmd(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset whose outcomes to re-judge (rollouts: <dataset>_evals).")] = schema.evals_dataset(schema.DEFAULT_DATASET),
    eval_ids: Annotated[list[str] | None, typer.Option("--eval", "-e", help="Only these evaluations (repeatable).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Re-judge every segment in scope, not only failures judged by an older classifier.")] = False,
) -> None:
    """Re-judge failures (kind and moment) by replaying each recording; writes a new `outcome` layer version."""
    with open_catalog() as cat:
        rep = guard(lambda: reoutcome(cat, dataset, eval_ids=eval_ids, all_segments=all_))
    counts: dict[tuple[str, str], int] = {}
    for sid, new in rep.judged.items():
        key = (rep.before.get(sid, "?"), str(new[schema.OUTCOME_FAILURE_REASON]))
        counts[key] = counts.get(key, 0) + 1
    print_table([{"was": a, "now": b, "n": n} for (a, b), n in sorted(counts.items())], ["was", "now", "n"], "table",
                title=f"{len(rep.judged)} outcome(s) re-judged in {dataset} ({len(rep.changed)} changed), layer '{schema.OUTCOME_LAYER}'")
    for sid, why in rep.skipped.items():
        err_console.print(f"[yellow]not re-judged[/] {sid}: {why}", soft_wrap=True)
    if not rep.judged and not rep.skipped:
        console.print("nothing to re-judge (every failure was judged by the current classifier; --all re-judges everything)")


# --- label ---------------------------------------------------------------------------------------

LABEL_COLUMNS = ["segment_id", "was", "now", "kind", "at_s", "labelled_by"]
HISTORY_COLUMNS = ["labelled_at", "success", "kind", "at_s", "note", "labelled_by", "previous", "layer_file"]


def _label_batch(segments: list[str], success: bool | None, at: float | None, kind: str | None, note: str | None,
                 by: str | None, csv_file: Path | None, problems: list[str]) -> list[Label]:
    """The labels the options ask for (a user error for a contradictory combination); a CSV's bad rows go to
    `problems` (reported with the unknown segments, all at once)."""
    if csv_file is not None:
        if segments or success is not None or at is not None or kind is not None or note is not None:
            fail("--csv takes every label from the file: give no segments, --success/--failure, --at, --kind or --note with it")
        return [lab if lab.by else dataclasses.replace(lab, by=by) for lab in read_labels_csv(csv_file, problems=problems)]
    if not segments:
        fail("name the segments to label (roboloop label SEGMENT... --dataset D --success|--failure) or give --csv FILE")
    if success is None:
        fail("say how it went: --success or --failure")
    return [Label(s, bool(success), at, kind, note or "", by) for s in segments]


def label_cmd(
    segments: Annotated[list[str] | None, typer.Argument(help="Segment ids to label (or to show with --history).", show_default=False)] = None,
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset of the segments (rollouts: <dataset>_evals).")] = ...,
    success: Annotated[bool | None, typer.Option("--success/--failure", help="The outcome a person judged.", show_default=False)] = None,
    at: Annotated[float | None, typer.Option("--at", help="The failure moment, seconds since the episode start.")] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="Failure kind: one of the task's kinds (key or words) or free text.")] = None,
    note: Annotated[str | None, typer.Option("--note", help="Free-text note kept with the label.")] = None,
    by: Annotated[str | None, typer.Option("--by", help="Who judged it (default: the OS user; with --csv, for rows without one).")] = None,
    csv_file: Annotated[Path | None, typer.Option("--csv", help="Label in batch from a CSV file: columns segment,success,at,kind,note,by.")] = None,
    history: Annotated[bool, typer.Option("--history", help="Show every label the segments were given (oldest first).")] = False,
    format: Annotated[str, typer.Option("--format", "-f", help="table, csv or json")] = "table",
) -> None:
    """Set outcomes judged by a person (success or failure, moment, kind, note): a new `outcome` layer version,
    which every table uses instead of the simulator's judgement; relabelling keeps the history."""
    check_format(format)
    segments = list(segments or [])
    if history:
        if not segments:
            fail("--history shows the labels of the named segments: roboloop label --history SEGMENT --dataset D")
        ws = open_workspace()
        for seg in segments:
            hist = guard(lambda seg=seg: label_history(ws, dataset, seg))
            print_table(hist, HISTORY_COLUMNS, format, title=f"labels of {seg} in {dataset} ({len(hist)}, newest last: in effect)")
        return
    problems: list[str] = []
    batch = guard(lambda: _label_batch(segments, success, at, kind, note, by, csv_file, problems))
    with open_catalog() as cat:
        rep = guard(lambda: apply_labels(cat, dataset, batch, problems=problems))

    out = []
    for sid, group in rep.written.items():
        ok = group[schema.OUTCOME_SUCCESS]
        t = group[schema.OUTCOME_FAILURE_TIME_S]
        kind_text = None if ok else schema.FAILURE_KINDS.get(group[schema.OUTCOME_FAILURE_REASON], group[schema.OUTCOME_FAILURE_REASON])
        if kind_text is not None and group[schema.OUTCOME_FREE_KIND]:
            kind_text += " (free text)"
        out.append({"segment_id": sid, "was": rep.was[sid], "now": "success" if ok else "failure", "kind": kind_text,
                     "at_s": None if t < 0 else t, "labelled_by": group[schema.OUTCOME_LABELLED_BY]})
    print_table(out, LABEL_COLUMNS, format, title=f"{len(out)} outcome(s) labelled in {dataset}, layer '{schema.OUTCOME_LAYER}'")
    if format == "table":
        console.print(f"history: roboloop label --history SEGMENT --dataset {dataset}", soft_wrap=True)


def register(app: typer.Typer) -> typer.Typer:
    """Add `failures`, `reoutcome` and `label` to `app`."""
    app.command("failures")(failures_cmd)
    app.command("reoutcome")(reoutcome_cmd)
    app.command("label")(label_cmd)
    return app
