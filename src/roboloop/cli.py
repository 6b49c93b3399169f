"""The `roboloop` command: parses arguments, calls the library, shows progress. Holds no logic."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from roboloop import schema
from roboloop.catalog import Catalog, CatalogError, validate_rrd
from roboloop.workspace import Workspace, atomic_path

app = typer.Typer(
    name="roboloop",
    help="The robot-learning experiment loop on one queryable data layer (a Rerun catalog).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


class State:
    """Global options shared by every command."""

    workspace: Optional[Path] = None
    catalog_url: Optional[str] = None


state = State()


@app.callback()
def _global(
    workspace: Annotated[
        Optional[Path],
        typer.Option("--workspace", "-w", envvar="ROBOLOOP_WORKSPACE", help="Workspace folder (system of record). Default ./.roboloop"),
    ] = None,
    catalog: Annotated[
        Optional[str],
        typer.Option("--catalog", envvar="ROBOLOOP_CATALOG", help="Attach to a running catalog (e.g. from `roboloop serve`) instead of starting one."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show debug logging.")] = False,
) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    state.workspace = workspace
    state.catalog_url = catalog


def open_workspace() -> Workspace:
    return Workspace(state.workspace)


@contextlib.contextmanager
def open_catalog(*, port: int = 0) -> Iterator[Catalog]:
    """Start (or attach to) the catalog; report anything skipped while restoring."""
    cat = Catalog(open_workspace(), state.catalog_url, port=port)
    for path, reason in cat.report.skipped:
        err_console.print(f"[yellow]warning:[/] skipped {path}: {reason}")
    try:
        yield cat
    finally:
        cat.close()


def fail(message: str, code: int = 1) -> None:
    err_console.print(f"[red]error:[/] {message}")
    raise typer.Exit(code)


# --- serve ---------------------------------------------------------------------------------

@app.command()
def serve(
    port: Annotated[int, typer.Option(help="Port to bind on 127.0.0.1 (0 = any free port; a taken port falls back to a free one).")] = 9876,
) -> None:
    """Run the catalog server in the foreground, restored from the workspace."""
    if state.catalog_url:
        fail("`serve` starts a catalog; drop --catalog / ROBOLOOP_CATALOG")
    with open_catalog(port=port) as cat:
        rep = cat.report
        n = sum(rep.segments.values())
        console.print(f"[bold]roboloop catalog[/] serving workspace {cat.workspace.root}")
        console.print(f"  restored {n} segment layers, {len(rep.tables)} tables, {len(rep.blueprints)} blueprints in {rep.seconds:.2f}s")
        console.print(f"  catalog URL: [bold cyan]{cat.url}[/]")
        console.print(f"  open it in the viewer:   {viewer_command(cat.url)}", soft_wrap=True)
        console.print(f"  use it from roboloop:    ROBOLOOP_CATALOG={cat.url} roboloop ls", soft_wrap=True)
        console.print("  Ctrl-C to stop")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            console.print("stopping")


def viewer_command(target: str) -> str:
    """How to open `target` in the native Rerun viewer from a shell, with H.264 decoding working.

    The viewer decodes H.264 with an `ffmpeg` executable on PATH; setup links one into
    the virtualenv's bin folder, which may not be on the user's PATH.
    """
    venv_bin = Path(sys.prefix) / "bin"
    if shutil.which("ffmpeg") is None and (venv_bin / "ffmpeg").exists():
        return f'PATH="{venv_bin}:$PATH" rerun {target}'
    return f"rerun {target}"


# --- ls ------------------------------------------------------------------------------------

@app.command("ls")
def ls_() -> None:
    """List datasets (segment counts, layers) and tables."""
    with open_catalog() as cat:
        names = cat.dataset_names()
        if not names:
            console.print("no datasets yet: `roboloop collect` or `roboloop import` creates one")
        else:
            table = Table("dataset", "segments", "layers")
            for name in names:
                st = cat.segment_table(name)
                layers: dict[str, int] = {}
                for row in st.column("layers").to_pylist() if st.num_rows else []:
                    for layer in row:
                        layers[layer] = layers.get(layer, 0) + 1
                layer_text = ", ".join(f"{k} ({v})" for k, v in sorted(layers.items(), key=lambda kv: (kv[0] != "base", kv[0])))
                table.add_row(name, str(st.num_rows), layer_text or "-")
            console.print(table)
        tables = cat.table_names()
        console.print(f"tables: {', '.join(tables) if tables else '(none)'}")


# --- import --------------------------------------------------------------------------------

@app.command("import")
def import_(
    paths: Annotated[list[Path], typer.Argument(help="RRD files to copy into the workspace and register.")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset to register into (created if missing).")],
    layer: Annotated[str, typer.Option(help="Layer to register the files as.")] = schema.BASE_LAYER,
) -> None:
    """Copy existing RRD files into the workspace and register them (each file validated first)."""
    try:
        schema.validate_dataset_name(dataset)
        schema.validate_dataset_name(layer)
    except ValueError as exc:
        fail(str(exc))
    ids: dict[Path, str] = {}
    problems = []
    for p in paths:
        try:
            ids[p] = schema.validate_segment_id(validate_rrd(p))
        except (CatalogError, ValueError) as exc:
            problems.append(str(exc))
    if problems:
        fail("nothing was imported; fix or drop these files:\n  " + "\n  ".join(problems))
    ws = open_workspace()
    with open_catalog() as cat:
        targets = []
        for src, seg in ids.items():
            dest = ws.segment_path(dataset, layer, seg)
            if dest.exists():
                fail(f"{src}: segment {seg!r} already has a {layer!r} file in the workspace ({dest}); nothing was imported")
            targets.append((src, dest))
        written = []
        try:
            for src, dest in targets:
                with atomic_path(dest) as tmp:
                    shutil.copyfile(src, tmp)
                written.append(dest)
            cat.register_files(dataset, written, layer=layer)
        except BaseException:
            for dest in written:
                dest.unlink(missing_ok=True)
            raise
        console.print(f"imported {len(written)} segment(s) into {dataset}/{layer}")


# --- sql -----------------------------------------------------------------------------------

@app.command()
def sql(
    query: Annotated[str, typer.Argument(help='SQL; each dataset is a view, e.g. SELECT "scene.region", count(*) FROM aloha GROUP BY 1')],
    format: Annotated[str, typer.Option("--format", "-f", help="table, csv or json")] = "table",
) -> None:
    """DataFusion SQL over the catalog (each dataset's segment table is a view named after it)."""
    if format not in ("table", "csv", "json"):
        fail(f"unknown --format {format!r}: use table, csv or json")
    with open_catalog() as cat:
        try:
            result = cat.sql(query)
        except CatalogError as exc:
            fail(str(exc))
        print_arrow(result, format)


def print_arrow(table, format: str = "table") -> None:
    """Print an Arrow table as a rich table, CSV or JSON lines."""
    rows = table.to_pylist()
    if format == "json":
        for row in rows:
            sys.stdout.write(json.dumps(row, default=str) + "\n")
    elif format == "csv":
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow(table.column_names)
        for row in rows:
            writer.writerow([row[c] for c in table.column_names])
    else:
        t = Table(*table.column_names)
        for row in rows:
            t.add_row(*[_cell(row[c]) for c in table.column_names])
        console.print(t)
        console.print(f"{len(rows)} row(s)")


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# --- collect -------------------------------------------------------------------------------

@app.command("collect")
def collect_cmd(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset to record into (created if missing).")] = schema.DEFAULT_DATASET,
    episodes: Annotated[int, typer.Option("--episodes", "-n", min=1, help="Number of episodes.")] = 10,
    region: Annotated[str, typer.Option(help="Cube start region: default, left/near, right/far, front, back, wide, or 'x0,x1,y0,y1'.")] = "default",
    yaw: Annotated[str, typer.Option(help="Cube yaw range: none, small, any.")] = "none",
    lighting: Annotated[str, typer.Option(help="Lighting: normal, dim, bright.")] = "normal",
    table: Annotated[str, typer.Option(help="Table colour: dark, light, wood, blue, green.")] = "dark",
    distractors: Annotated[str, typer.Option(help="Distractor objects: none, few, many, or a count 0-4.")] = "none",
    seed: Annotated[int, typer.Option(min=0, help="Episode i uses seed S+i.")] = 0,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (each owns a simulator).")] = 1,
    cameras: Annotated[str, typer.Option(help="Comma-separated cameras to record (top, angle, front_close, left_wrist, right_wrist, left_pillar, right_pillar).")] = "top",
    camera_size: Annotated[str, typer.Option(help="Recorded camera size WIDTHxHEIGHT (even numbers, max 640x480).")] = "320x240",
    camera_hz: Annotated[int, typer.Option(help="Camera rate; must divide the 50 Hz control rate.")] = schema.CAMERA_HZ,
    scene_hz: Annotated[int, typer.Option(help="Rate of the 3D scene poses; must divide 50.")] = schema.SCENE_HZ,
    steps: Annotated[Optional[int], typer.Option(min=1, help="Control steps per episode (default: the task's 300).")] = None,
) -> None:
    """Run the scripted demonstrator under scene conditions; record and register every episode."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from roboloop.collect import RecordingSpec, collect, parse_cameras, parse_size
    from roboloop.sim import SceneConditions

    try:
        schema.validate_dataset_name(dataset)
        conditions = SceneConditions.from_names(region=region, yaw=yaw, lighting=lighting, table=table, distractors=distractors)
        width, height = parse_size(camera_size)
        spec = RecordingSpec(cameras=parse_cameras(cameras), width=width, height=height, camera_hz=camera_hz, scene_hz=scene_hz)
    except ValueError as exc:
        fail(str(exc))
    console.print(f"collecting {episodes} episode(s) into [bold]{dataset}[/]: {conditions.label}, seeds {seed}..{seed + episodes - 1}, "
                  f"cameras {','.join(spec.cameras) or '(none)'} {width}x{height} @ {spec.camera_hz} Hz, {workers} worker(s)")
    counts = {"done": 0, "ok": 0}
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("successes {task.fields[ok]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=console,
    )
    with open_catalog() as cat, progress:
        bar = progress.add_task("episodes", total=episodes, ok=0)

        def on_result(result) -> None:
            counts["done"] += 1
            counts["ok"] += int(result.success)
            progress.update(bar, advance=1, ok=f"{counts['ok']}/{counts['done']}")

        try:
            report = collect(cat, dataset, episodes, conditions=conditions, seed=seed, workers=workers, spec=spec,
                             steps=steps, on_result=on_result)
        except KeyboardInterrupt:
            progress.stop()
            err_console.print(f"[yellow]interrupted:[/] {counts['done']} finished episode(s) registered; episodes in flight were discarded")
            raise typer.Exit(130)
    n = len(report.results)
    console.print(f"recorded and registered {n} episode(s) in {report.wall_s:.1f}s ({report.episodes_per_minute:.1f}/min); "
                  f"successes {report.successes}/{n}")
    if report.blueprint:
        console.print(f"default blueprint: {report.blueprint}")


# --- end collect ---------------------------------------------------------------------------


# --- refine / flag / curate ----------------------------------------------------------------

@app.command("refine")
def refine_cmd(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset to compute signals for.")] = schema.DEFAULT_DATASET,
    all_: Annotated[bool, typer.Option("--all", help="Recompute every segment (default: only segments without a signals layer).")] = False,
    segment: Annotated[Optional[list[str]], typer.Option("--segment", "-s", help="Only these segments (repeatable; always recomputed).")] = None,
    signal_names: Annotated[Optional[list[str]], typer.Option("--signal", help="Only these signals (repeatable; default all).")] = None,
    batch_size: Annotated[int, typer.Option(help="Segments per catalog query.")] = 250,
    list_signals: Annotated[bool, typer.Option("--list", help="List the registered signals and exit.")] = False,
) -> None:
    """Compute derived signals (arm activity, jerk, idle fraction, gripper events, cube height, ...) into the `signals` layer."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from roboloop import refine

    if list_signals:
        t = Table("signal", "streams", "definition")
        for sig in refine.SIGNALS.values():
            t.add_row(f"signals.{sig.name}", ", ".join(sig.streams), sig.doc)
        console.print(t)
        return
    with open_catalog() as cat, Progress(
        TextColumn("refine"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err_console, transient=True
    ) as bar:
        task = bar.add_task("refine", total=None)
        try:
            report = refine.refine(
                cat,
                dataset,
                all_segments=all_,
                segment_ids=segment or None,
                signals=signal_names or None,
                batch_size=batch_size,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        except CatalogError as exc:
            fail(str(exc))
    n = len(report.computed)
    if n == 0:
        console.print(f"{dataset}: every segment already has signals ({report.skipped}); use --all to recompute")
        return
    console.print(
        f"{dataset}: signals for {n} segment(s) in {report.seconds:.2f}s "
        f"(read {report.read_seconds:.2f}s, compute {report.compute_seconds:.2f}s, write {report.write_seconds:.2f}s, "
        f"register {report.register_seconds:.2f}s)"
        + (f"; {report.skipped} already had signals" if report.skipped else "")
    )
    _print_signal_stats(report.values)


def _print_signal_stats(values: dict) -> None:
    import math

    names: dict[str, list[float]] = {}
    for row in values.values():
        for k, v in row.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                names.setdefault(k, []).append(float(v))
    t = Table("signal", "n", "min", "mean", "max")
    for k, vs in names.items():
        vs = [v for v in vs if math.isfinite(v)]
        if vs:
            t.add_row(f"signals.{k}", str(len(vs)), _cell(min(vs)), _cell(sum(vs) / len(vs)), _cell(max(vs)))
    console.print(t)


@app.command("flag")
def flag_cmd(
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why these episodes are flagged.")],
    dataset: Annotated[str, typer.Option("--dataset", "-d")] = schema.DEFAULT_DATASET,
    where: Annotated[Optional[str], typer.Option("--where", help="Predicate, e.g. \"signals.jerk_peak > 5e4\".")] = None,
    segment: Annotated[Optional[list[str]], typer.Option("--segment", "-s", help="Segment id (repeatable).")] = None,
) -> None:
    """Flag episodes (quality layer): flagged episodes are left out of every selection unless asked for."""
    from roboloop import refine
    from roboloop.predicate import PredicateError

    with open_catalog() as cat:
        try:
            ids = refine.flag(cat, dataset, reason=reason, segment_ids=segment, where=where)
        except (CatalogError, PredicateError) as exc:
            fail(str(exc))
        console.print(f"flagged {len(ids)} segment(s) of {dataset}: {_id_list(ids)}")
        console.print(f"{len(refine.flagged_ids(cat, dataset))} segment(s) of {dataset} are flagged now")


@app.command("unflag")
def unflag_cmd(
    dataset: Annotated[str, typer.Option("--dataset", "-d")] = schema.DEFAULT_DATASET,
    where: Annotated[Optional[str], typer.Option("--where", help="Predicate (only flagged matches change).")] = None,
    segment: Annotated[Optional[list[str]], typer.Option("--segment", "-s", help="Segment id (repeatable).")] = None,
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why the flag is cleared.")] = "",
) -> None:
    """Clear quality flags (writes quality.flagged = false; the change stays visible in the segment table)."""
    from roboloop import refine
    from roboloop.predicate import PredicateError

    with open_catalog() as cat:
        try:
            ids = refine.unflag(cat, dataset, segment_ids=segment, where=where, reason=reason)
        except (CatalogError, PredicateError) as exc:
            fail(str(exc))
        console.print(f"unflagged {len(ids)} segment(s) of {dataset}" + (f": {_id_list(ids)}" if ids else " (none of them was flagged)"))


def _id_list(ids, n: int = 8) -> str:
    ids = list(ids)
    return ", ".join(ids[:n]) + (f", ... (+{len(ids) - n})" if len(ids) > n else "")


curate_app = typer.Typer(
    help="The training set as a query: `curate --dataset D --name v1 --where ...`, `curate show v1`, `curate ls`.",
    invoke_without_command=True,
    no_args_is_help=False,
)
app.add_typer(curate_app, name="curate")


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
    from roboloop import curate
    from roboloop.predicate import PredicateError

    if dataset is None:
        fail("give --dataset (and --name to save), or a subcommand: `curate show NAME`, `curate ls`")
    if name is None and not dry_run:
        fail("give --name to save the selection (or --dry-run to only see it)")
    with open_catalog() as cat:
        try:
            sel = curate.select(
                cat, dataset, where, order=order, limit=limit, holdout=holdout, include_flagged=include_flagged, name=name
            )
            if not dry_run:
                sel = curate.save(cat, sel, name, replace=replace)
        except (CatalogError, PredicateError) as exc:
            fail(str(exc))
        _print_selection(sel, saved=not dry_run)


def _print_selection(sel, *, saved: bool, ids: bool = False) -> None:
    t = Table("", "", show_header=False)
    for k, v in [
        ("name", sel.name or "-"),
        ("dataset", sel.dataset),
        ("predicate", sel.where or "(all)"),
        ("sql", sel.predicate_sql or "-"),
        ("order", sel.order or "segment_id"),
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
        console.print(f"train: {_id_list(sel.train_ids, 5)}")
        if sel.holdout_ids:
            console.print(f"holdout: {_id_list(sel.holdout_ids, 5)}")
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
    from roboloop import curate

    with open_catalog() as cat:
        try:
            sel = curate.load(cat, name)
        except CatalogError as exc:
            fail(str(exc))
        _print_selection(sel, saved=True, ids=ids)


@curate_app.command("ls")
def curate_ls() -> None:
    """List saved selections, newest first."""
    from roboloop import curate

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
    from roboloop import curate

    with open_catalog() as cat:
        try:
            curate.delete(cat, name)
        except CatalogError as exc:
            fail(str(exc))
        console.print(f"deleted selection {name!r}")


# --- end refine / flag / curate ------------------------------------------------------------

# --- demo ----------------------------------------------------------------------------------

@app.command()
def demo(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset to build the loop on.")] = schema.DEFAULT_DATASET,
    episodes: Annotated[int, typer.Option(help="Demonstrations the dataset should hold (missing ones are collected).")] = 24,
    workers: Annotated[int, typer.Option(help="Worker processes for collection and streaming.")] = 2,
    seed: Annotated[int, typer.Option(help="Base seed.")] = 0,
) -> None:
    """Run the whole loop (as far as it is built) on the embedded catalog: collect, refine, flag, curate, stream, query."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from roboloop.demo import DemoConfig, run_demo

    if episodes < 1:
        fail("--episodes must be >= 1")
    cfg = DemoConfig(dataset=dataset, episodes=episodes, workers=max(1, workers), seed=seed)
    with open_catalog() as cat:
        console.print(f"[bold]roboloop demo[/] workspace {cat.workspace.root}, catalog {cat.url}", soft_wrap=True)
        with Progress(TextColumn("      {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True) as progress:
            task = progress.add_task("episodes", total=None)

            def on_episode(result) -> None:
                progress.update(task, advance=1, total=progress.tasks[0].total or episodes)

            result = run_demo(cat, cfg, say=lambda text: console.print(text, highlight=False, soft_wrap=True), on_episode=on_episode)
        console.print(
            "\n[bold]next:[/] open the episodes in the Rerun viewer: `./run serve`, then `rerun <printed URL>`;\n"
            f"      ask anything: ./run sql 'SELECT \"scene.lighting\", count(*) FROM {dataset} GROUP BY 1'",
            soft_wrap=True,
        )
        if result.collected and result.successes < result.collected:
            console.print(f"[yellow]{result.collected - result.successes} collected episode(s) failed the strict success check[/]")



def main() -> None:
    try:
        app()
    except CatalogError as exc:
        err_console.print(f"[red]error:[/] {exc}")
        sys.exit(1)


if __name__ == "__main__":
    main()
