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
        console.print(f"  open it in the viewer:   rerun {cat.url}", soft_wrap=True)
        console.print(f"  use it from roboloop:    ROBOLOOP_CATALOG={cat.url} roboloop ls", soft_wrap=True)
        console.print("  Ctrl-C to stop")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            console.print("stopping")


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
        if spec.cameras and not (width <= 640 and height <= 480):
            raise ValueError(f"camera size must be within 640x480, got {camera_size}")
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


def main() -> None:
    try:
        app()
    except CatalogError as exc:
        err_console.print(f"[red]error:[/] {exc}")
        sys.exit(1)


if __name__ == "__main__":
    main()
