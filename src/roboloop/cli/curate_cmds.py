"""Refine, flag, unflag and curate commands (signals and quality layers, saved selections)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from roboloop import curate, schema
from roboloop.cli.common import console, err_console, fail, id_list, open_catalog, print_rows
from roboloop.refine.layers import flag, flagged_ids, reads_frames, refine, unflag
from roboloop.refine.signals import resolve_signals


def refine_cmd(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset to compute signals for.")] = schema.DEFAULT_DATASET,
    all_: Annotated[bool, typer.Option("--all", help="Recompute every segment (default: only segments without a signals layer).")] = False,
    segment: Annotated[Optional[list[str]], typer.Option("--segment", "-s", help="Only these segments (repeatable; always recomputed).")] = None,
    signal_names: Annotated[Optional[list[str]], typer.Option("--signal", help="Only these signals: a registered name or an import path package.module:function (repeatable; default: every registered signal except those that decode video, e.g. sharpness).")] = None,
    batch_size: Annotated[int, typer.Option(help="Segments per catalog query.")] = 250,
    list_signals: Annotated[bool, typer.Option("--list", help="List the registered signals and exit.")] = False,
) -> None:
    """Compute derived signals (arm activity, jerk, idle fraction, gripper events, cube height, camera sharpness, your own ...) into the `signals` layer."""
    if list_signals:
        t = Table("signal", "version", "streams", "definition")
        for sig in sorted(resolve_signals(signal_names or None), key=reads_frames):  # the ones that run by default first
            streams = ", ".join(sig.streams) + (" (runs when named)" if reads_frames(sig) else "")
            t.add_row(schema.friendly_column(schema.SIGNALS, sig.name), sig.version, streams, sig.doc)
        console.print(t)
        return
    if signal_names:
        resolve_signals(signal_names)  # a bad name or import path fails before the catalog starts
    with open_catalog() as cat, Progress(
        TextColumn("refine"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err_console, transient=True
    ) as bar:
        task = bar.add_task("refine", total=None)
        report = refine(
            cat,
            dataset,
            all_segments=all_,
            segment_ids=segment or None,
            signals=signal_names or None,
            batch_size=batch_size,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    n = len(report.computed)
    if n == 0 and report.skipped == 0:
        console.print(f"{dataset}: no episodes yet (0 segments): nothing to refine; collect or import episodes first")
        return
    if n == 0:
        what = f"{', '.join(report.signals)} at their current version(s)" if signal_names else "signals"
        console.print(f"{dataset}: every segment already has {what} ({report.skipped}); use --all to recompute")
        _print_skipped(report, named=bool(signal_names))
        return
    console.print(
        f"{dataset}: signals for {n} segment(s) in {report.seconds:.2f}s "
        f"(read {report.read_seconds:.2f}s, compute {report.compute_seconds:.2f}s, write {report.write_seconds:.2f}s, "
        f"register {report.register_seconds:.2f}s)"
        + (f"; {report.skipped} already had signals" if report.skipped else "")
    )
    _print_skipped(report, named=bool(signal_names))
    for name, (reason, count) in report.not_applicable.items():
        console.print(f"  {name}: skipped on {count} episode(s): {reason}")
    print_rows(report.stats(), ["signal", "n", "min", "mean", "max"])


def _print_skipped(report, *, named: bool) -> None:
    """Signals that raised SkipSignal on segments left alone now (their earlier run skipped them)."""
    for name, count in report.skipped_signals.items():
        retry = "" if named else f" (retry with --signal {name}, or bump its version)"
        console.print(f"  {name}: skipped earlier on {count} of them{retry}")


def flag_cmd(
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why these episodes are flagged.")],
    dataset: Annotated[str, typer.Option("--dataset", "-d")] = schema.DEFAULT_DATASET,
    where: Annotated[Optional[str], typer.Option("--where", help="Predicate, e.g. \"signals.jerk_peak > 5e4\".")] = None,
    segment: Annotated[Optional[list[str]], typer.Option("--segment", "-s", help="Segment id (repeatable).")] = None,
) -> None:
    """Flag episodes (quality layer): flagged episodes are left out of every selection unless asked for."""
    with open_catalog() as cat:
        ids = flag(cat, dataset, reason=reason, segment_ids=segment, where=where)
        console.print(f"flagged {len(ids)} segment(s) of {dataset}: {id_list(ids)}")
        console.print(f"{len(flagged_ids(cat, dataset))} segment(s) of {dataset} are flagged now")


def unflag_cmd(
    dataset: Annotated[str, typer.Option("--dataset", "-d")] = schema.DEFAULT_DATASET,
    where: Annotated[Optional[str], typer.Option("--where", help="Predicate (only flagged matches change).")] = None,
    segment: Annotated[Optional[list[str]], typer.Option("--segment", "-s", help="Segment id (repeatable).")] = None,
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why the flag is cleared.")] = "",
) -> None:
    """Clear quality flags (writes quality.flagged = false; the change stays visible in the segment table)."""
    with open_catalog() as cat:
        ids = unflag(cat, dataset, segment_ids=segment, where=where, reason=reason)
    console.print(f"unflagged {len(ids)} segment(s) of {dataset}" + (f": {id_list(ids)}" if ids else " (none of them was flagged)"))


curate_app = typer.Typer(
    help="The training set as a query: `curate --dataset D --name v1 --where ...`, `curate show v1`, `curate ls`.",
    invoke_without_command=True,
    no_args_is_help=False,
)


@curate_app.callback()
def curate_cmd(
    ctx: typer.Context,
    dataset: Annotated[Optional[str], typer.Option("--dataset", "-d", help="Dataset to select from.")] = None,
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="Save the selection under this name.")] = None,
    where: Annotated[Optional[str], typer.Option("--where", help="Predicate, e.g. \"signals.arm_activity_right > 6 and scene.lighting = 'dim'\".")] = None,
    order: Annotated[Optional[str], typer.Option("--order", help="e.g. \"signals.jerk_peak asc, episode.seed\".")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Keep at most this many episodes (after ordering).")] = None,
    holdout: Annotated[float, typer.Option("--holdout", help="Fraction held out (stable hash of the segment id).")] = 0.0,
    include_flagged: Annotated[bool, typer.Option("--include-flagged", help="Keep flagged episodes.")] = False,
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite a saved selection of the same name.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Resolve and print, do not save.")] = False,
) -> None:
    """Select episodes with a predicate, split train/holdout, save as a named selection."""
    if ctx.invoked_subcommand is not None:
        return
    if dataset is None:
        fail("give --dataset (and --name to save), or a subcommand: `curate show NAME`, `curate ls`")
    if name is None and not dry_run:
        fail("give --name to save the selection (or --dry-run to only see it)")
    with open_catalog() as cat:
        sel = curate.select(cat, dataset, where, order=order, limit=limit, holdout=holdout, include_flagged=include_flagged, name=name)
        if not dry_run:
            sel = curate.save(cat, sel, name, replace=replace)
    print_selection(sel, saved=not dry_run)


def print_selection(sel, *, saved: bool, ids: bool = False) -> None:
    t = Table("", "", show_header=False)
    for k, v in [
        ("name", sel.name or "-"),
        ("dataset", sel.dataset),
        ("predicate", sel.where or "(all)"),
        ("sql", sel.predicate_sql or "-"),
        ("order", sel.order or schema.SEGMENT_ID),
        ("limit", sel.limit if sel.limit is not None else "-"),
        ("holdout", f"{sel.holdout:g} -> {len(sel.holdout_ids)} episode(s)"),
        ("train", f"{len(sel.train_ids)} episode(s)"),
        ("flagged", "included" if sel.include_flagged else "left out"),
        ("digest", sel.digest),
        ("created", sel.created_at.isoformat(timespec="seconds")),
    ]:
        t.add_row(k, str(v))
    console.print(t)
    if ids:
        console.print("train: " + " ".join(sel.train_ids))
        console.print("holdout: " + (" ".join(sel.holdout_ids) or "-"))
    else:
        console.print(f"train: {id_list(sel.train_ids, 5)}")
        if sel.holdout_ids:
            console.print(f"holdout: {id_list(sel.holdout_ids, 5)}")
    if sel.holdout > 0 and not sel.holdout_ids:
        err_console.print("[yellow]warning:[/] the holdout is empty (too few episodes for this fraction)")
    if not saved:
        console.print("(dry run: not saved)")


@curate_app.command("show")
def curate_show(
    name: Annotated[str, typer.Argument(help="Saved selection name.")],
    ids: Annotated[bool, typer.Option("--ids", help="Print every segment id.")] = False,
) -> None:
    """Show a saved selection (predicate, split, digest)."""
    with open_catalog() as cat:
        sel = curate.load(cat, name)
    print_selection(sel, saved=True, ids=ids)


@curate_app.command("ls")
def curate_ls() -> None:
    """List saved selections, newest first."""
    with open_catalog() as cat:
        sels = curate.list_selections(cat)
    if not sels:
        console.print("no saved selections yet: `roboloop curate --dataset D --name v1 --where ...`")
        return
    t = Table("name", "dataset", "predicate", "train", "held out", "digest", "created")
    for s in sels:
        extra = (f" order by {s.order}" if s.order else "") + (f" limit {s.limit}" if s.limit is not None else "")
        t.add_row(
            s.name or "-", s.dataset, (s.where or "(all)") + extra, str(len(s.train_ids)),
            f"{len(s.holdout_ids)} ({s.holdout:g})", s.digest[:12], s.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    console.print(t)


@curate_app.command("rm")
def curate_rm(name: Annotated[str, typer.Argument(help="Saved selection name.")]) -> None:
    """Delete a saved selection."""
    with open_catalog() as cat:
        curate.delete(cat, name)
    console.print(f"deleted selection {name!r}")


def register(app: typer.Typer) -> typer.Typer:
    """Add `refine`, `flag`, `unflag` and the `curate` group to `app`."""
    app.command("refine")(refine_cmd)
    app.command("flag")(flag_cmd)
    app.command("unflag")(unflag_cmd)
    app.add_typer(curate_app, name="curate")
    return app
