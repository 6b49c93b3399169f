"""CLI commands of analyze: `success`, `compare`, `failures`, `reoutcome`, `label` (outcomes judged by a person),
`value` (demonstration value).

They read the rollout index (no catalog restore) and start or attach the catalog only when
they need it: stale index rows, `--where`/`--by` on derived layers (`signals.*`), live URLs,
exports, each failure's nearest training episode (the demonstrations' start states).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from roboloop import schema
from roboloop.analyze.export import export_segments
from roboloop.analyze.gaps import nearest_training
from roboloop.analyze.rollouts import (
    FAILURE_COLUMNS,
    compare,
    failure_modes,
    failures,
    load_rollouts,
    outcome_note,
    outcome_sources,
    success_by,
)
from roboloop.analyze.value import ValueConfig, demonstration_value, describe
from roboloop.catalog import links
from roboloop.cli.common import config_help, console, err_console, fail, open_catalog, open_workspace, print_rows, state
from roboloop.cli.tables import check_format, guard, lazy_catalog, print_table, split_list
from roboloop.evaluate.run import evals_dataset_of
from roboloop.evaluate.until_decided import DECISION_COLUMNS, attach_decisions, sequential_between, sequential_of
from roboloop.refine.labels import Label, apply_labels, label_history, read_labels_csv
from roboloop.refine.outcomes import reoutcome
from roboloop.report import plot_success

SEQ_COLUMNS = ["cell", "decision", "rollouts", "stop_round", "decided_at", "diff [CS]", "fixed_n"]
"""Columns of a sequential decision table."""


def sequential_text(rows_: list[dict]) -> list[dict]:
    """Sequential rows with the estimate and its confidence sequence as one `diff [CS]` text."""
    out = []
    for r in rows_:
        r = dict(r)
        lo, hi, est = r.get("ci_low"), r.get("ci_high"), r.get("estimate")
        r["diff [CS]"] = "-" if est is None else f"{est:+.2f} [{lo:+.2f}, {hi:+.2f}]"
        out.append(r)
    return out


# --- success -------------------------------------------------------------------------------------

def success_cmd(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Evaluation dataset (<dataset>_evals).")] = schema.evals_dataset(schema.DEFAULT_DATASET),
    eval_ids: Annotated[list[str] | None, typer.Option("--eval", "-e", help="Only these evaluations (repeatable).")] = None,
    by: Annotated[str, typer.Option("--by", "-b", help="Group by these columns, comma-separated (e.g. scene.region,scene.lighting).")] = "episode.cell",
    where: Annotated[str | None, typer.Option("--where", help="Predicate, e.g. \"scene.lighting = 'dim'\".")] = None,
    format: Annotated[str, typer.Option("--format", "-f", help="table, csv or json")] = "table",
    plot: Annotated[Path | None, typer.Option("--plot", help="Write a PNG: bars with intervals (one key) or a heatmap (two keys).")] = None,
) -> None:
    """Success rate grouped by any property, with Wilson 95% intervals and the mean stage reached."""
    check_format(format)
    keys = split_list(by)
    ws = open_workspace()
    with lazy_catalog() as catalog:
        table = guard(lambda: load_rollouts(ws, dataset, eval_ids, where, needed=keys, catalog_factory=catalog))
        groups = guard(lambda: success_by(table, keys))
    cols = [*keys, "n", "successes", "rate", "ci_low", "ci_high", "mean_stage", "small"]
    cols += [c for c in ("labelled", "unlabelled") if any(g.get(c) for g in groups)]  # only when there are any
    seq_rows = sequential_of(ws, eval_ids or [])
    if keys == ["episode.cell"] and len(seq_rows) == 1:  # one sequential evaluation: its decision next to each cell
        attach_decisions(groups, next(iter(seq_rows.values())), key="episode.cell")
        cols += DECISION_COLUMNS
        seq_rows = {}
    print_table(groups, cols, format, title=f"success in {dataset}" + (f" ({', '.join(eval_ids)})" if eval_ids else ""))
    note = outcome_note({c: sum(g.get(c, 0) for g in groups) for c in ("labelled", "unlabelled")})
    if format == "table" and note:
        console.print(f"note: {note}", soft_wrap=True)
    if format == "table":
        for eid, srows in seq_rows.items():
            print_table(sequential_text(srows), SEQ_COLUMNS, "table",
                        title=f"{eid} vs {srows[0]['against']}: sequential decision ({srows[0]['metric']})")
    if plot is not None:

        path = guard(lambda: plot_success([g for g in groups if g["n"]], keys, plot))  # unlabelled-only groups have no rate
        err_console.print(f"plot: {path}")


# --- compare -------------------------------------------------------------------------------------

COMPARE_COLUMNS = ["group", "A", "B", "B-A [95%]", "test", "n_pairs", "p", "p_holm", "verdict"]
COMPARE_DATA_COLUMNS = ["n_a", "successes_a", "rate_a", "n_b", "successes_b", "rate_b", "n_pairs", "test",
                        "diff", "diff_low", "diff_high", "discordant_a", "discordant_b", "p", "p_holm", "verdict"]


def compare_cmd(
    eval_a: Annotated[str, typer.Argument(help="Baseline evaluation id (A).")],
    eval_b: Annotated[str, typer.Argument(help="Evaluation compared with it (B).")],
    by: Annotated[str, typer.Option("--by", "-b", help="Cells to compare in, comma-separated.")] = "episode.cell",
    where: Annotated[str | None, typer.Option("--where", help="Only rollouts matching this predicate.")] = None,
    alpha: Annotated[float, typer.Option(help="Significance level after Holm's adjustment.")] = 0.05,
    format: Annotated[str, typer.Option("--format", "-f", help="table, csv or json")] = "table",
) -> None:
    """B against A per cell and overall: difference with 95% interval, paired exact McNemar on shared seeds, Holm."""
    check_format(format)
    ws = open_workspace()
    keys = split_list(by)
    with lazy_catalog() as catalog:
        tables = [
            guard(lambda e=e: load_rollouts(ws, evals_dataset_of(ws, e), [e], where, needed=keys, catalog_factory=catalog))
            for e in (eval_a, eval_b)
        ]
    out = guard(lambda: compare(tables[0], tables[1], keys, alpha=alpha))
    for r in out:
        r["A"] = f"{r['successes_a']}/{r['n_a']}"
        r["B"] = f"{r['successes_b']}/{r['n_b']}"
        r["B-A [95%]"] = "-" if r["diff"] != r["diff"] else f"{r['diff']:+.2f} [{r['diff_low']:+.2f}, {r['diff_high']:+.2f}]"
    cols = COMPARE_COLUMNS if format == "table" else ["group", *keys, *COMPARE_DATA_COLUMNS]
    seq = sequential_between(ws, eval_a, eval_b)
    if seq is not None and keys == ["episode.cell"]:
        attach_decisions(out, seq["rows"], key="group", overall=seq["overall"])
        cols = [*cols, *DECISION_COLUMNS]
    judged = [f"{c}_{side}" for c in ("labelled", "unlabelled") for side in "ab"]
    if format != "table" and any(r.get(c) for r in out for c in judged):
        cols = [*cols, *judged]
    print_table(out, cols, format, title=f"{eval_b} (B) vs {eval_a} (A)")
    overall = out[-1]
    for side, eid in (("a", eval_a), ("b", eval_b)):
        note = outcome_note({"labelled": overall[f"labelled_{side}"], "unlabelled": overall[f"unlabelled_{side}"]})
        if format == "table" and note:
            console.print(f"note ({side.upper()}, {eid}): {note}", soft_wrap=True)
    if seq is not None and format == "table":
        console.print(f"seq_*: {seq['eval_id']}'s sequential decision against {seq['against']} "
                      f"(metric {seq['metric']}, alpha {seq['alpha']}, anytime-valid); n_pairs is the fixed comparison's count",
                      soft_wrap=True)


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


# --- value ---------------------------------------------------------------------------------------

def value_cmd(
    run: Annotated[str, typer.Option("--run", "-r", help=config_help(ValueConfig, "run"))],
    eval_id: Annotated[str, typer.Option("--eval", "-e", help=config_help(ValueConfig, "eval"))],
    metric: Annotated[str, typer.Option("--metric", help=config_help(ValueConfig, "metric"))] = ValueConfig.metric,
    lowest: Annotated[int, typer.Option("--lowest", min=0, help="How many of the lowest-valued demonstrations to list.")] = 5,
    estimator: Annotated[str, typer.Option("--estimator", help=config_help(ValueConfig, "estimator"))] = ValueConfig.estimator,
) -> None:
    """Per training demonstration of RUN, its estimated effect on closed-loop success (from EVAL's rollouts), written as `signals.value`."""
    cfg = guard(lambda: ValueConfig(run=run, eval=eval_id, metric=metric, estimator=estimator))
    with open_catalog() as cat, Progress(
        TextColumn("value"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err_console, transient=True
    ) as bar:
        task = bar.add_task("value", total=None)
        res = demonstration_value(cat, cfg, progress=lambda done, total: bar.update(task, completed=done, total=total))
    summary = describe(res, lowest)
    if not summary["demonstrations"]:
        console.print(f"{res.dataset}: run {res.run}'s training episodes have no samples to value; nothing written")
        return
    q = summary["quartiles"]
    console.print(f"{res.dataset}: signals.value for {summary['demonstrations']} training demonstration(s) of run {res.run}, "
                  f"from {res.rollouts} rollout(s) of {res.eval} ({res.successes} successful) in {res.wall_s:.1f}s")
    console.print(f"  value (1 = the largest effect; > 0 helps, < 0 hurts): min {q[0]:+.2f}, quartiles {q[1]:+.2f} / {q[2]:+.2f} / "
                  f"{q[3]:+.2f}, max {q[4]:+.2f}; {summary['negative']} below 0")
    if summary["lowest"]:
        print_rows([{"segment": seg, "value": f"{v:+.3f}", "open": f"roboloop open {seg} --dataset {res.dataset}"}
                    for seg, v in summary["lowest"]], ["segment", "value", "open"])
    console.print(f"curate by it: roboloop curate --dataset {res.dataset} --name NAME --where \"outcome.success and signals.value > 0\"  "
                  "(or --order \"signals.value desc\" --limit N)")


def register(app: typer.Typer) -> typer.Typer:
    """Add `success`, `compare`, `failures`, `reoutcome`, `label` and `value` to `app`."""
    app.command("success")(success_cmd)
    app.command("compare")(compare_cmd)
    app.command("failures")(failures_cmd)
    app.command("reoutcome")(reoutcome_cmd)
    app.command("label")(label_cmd)
    app.command("value")(value_cmd)
    return app
