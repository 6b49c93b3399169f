"""`roboloop import-lerobot` and `roboloop export-lerobot`: thin commands over `roboloop.interop`.

`register(app)` adds the commands to the main Typer app; they use the main CLI's
workspace/catalog options through `open_catalog` (looked up at call time, so this module
does not care where the CLI keeps it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

console = Console()
err_console = Console(stderr=True)


def _cli():
    """The main CLI module (for `open_catalog` and the global options)."""
    import importlib

    return importlib.import_module("roboloop.cli")


def _progress(label: str):
    progress = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err_console, transient=True)
    task = progress.add_task(label, total=None)

    def update(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    return progress, update


def _fail(message: str) -> None:
    err_console.print(f"[red]error:[/] {message}")
    raise typer.Exit(1)


def import_lerobot_cmd(
    path: Annotated[Path, typer.Argument(help="Folder of a local LeRobot dataset (v3.0 or v2.1; holds meta/info.json).")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="roboloop dataset that receives one segment per episode.")],
    kind: Annotated[str, typer.Option(help="episode.kind of the imported segments.")] = "demo",
    task: Annotated[str | None, typer.Option(help="Override episode.task (default: the episode's LeRobot task).")] = None,
    episodes: Annotated[str | None, typer.Option(help="Comma-separated LeRobot episode indices to import (default: all).")] = None,
) -> None:
    """Import a LeRobot dataset: features -> streams at its fps, videos -> H.264 cameras, metadata -> properties."""
    from roboloop.catalog import CatalogError
    from roboloop.interop import import_lerobot

    wanted = None
    if episodes:
        try:
            wanted = [int(x) for x in episodes.split(",") if x.strip()]
        except ValueError:
            _fail(f"--episodes takes comma-separated integers, got {episodes!r}")
    try:
        with _cli().open_catalog() as cat:
            progress, update = _progress("importing episodes")
            with progress:
                rep = import_lerobot(cat, path, dataset, kind=kind, task=task, episodes=wanted, on_progress=update)
    except (CatalogError, ValueError) as exc:
        _fail(str(exc))
    console.print(
        f"imported [bold]{len(rep.segment_ids)}[/] episode(s), {rep.frames} frames at {rep.fps} fps "
        f"(LeRobot {rep.codebase_version}) into dataset [bold]{rep.dataset}[/] in {rep.seconds:.1f}s"
    )
    for key, entity in {**rep.streams, **rep.cameras}.items():
        console.print(f"  {key:<32} -> {entity}")
    for key, reason in rep.skipped_features.items():
        console.print(f"  [yellow]skipped[/] {key}: {reason}")


def export_lerobot_cmd(
    out: Annotated[Path, typer.Argument(help="Folder to create (the LeRobot v3.0 dataset root).")],
    selection: Annotated[str, typer.Option("--selection", "-s", help="Saved selection to export (`roboloop curate --dataset D --name NAME`).")],
    fps: Annotated[int, typer.Option("--fps", help="The dataset's frame rate: every stream is resampled onto k / fps.")],
    split: Annotated[str, typer.Option(help="train | holdout | all (train then holdout, as splits train/test).")] = "train",
    feature: Annotated[
        list[str] | None, typer.Option("--feature", help="KEY=ENTITY_PATH to export (repeatable); default: every scalar and camera stream.")
    ] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="Entity path to leave out of the default features (repeatable).")] = None,
    task: Annotated[str | None, typer.Option(help="Task text for every episode (default: episode.task).")] = None,
    robot_type: Annotated[str | None, typer.Option(help="robot_type written to info.json.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
) -> None:
    """Export a saved selection as a LeRobot v3.0 dataset (parquet + H.264 mp4 + meta with statistics)."""
    from roboloop.catalog import CatalogError
    from roboloop.interop import export_lerobot
    from roboloop.stream import StreamError

    features = None
    if feature:
        features = {}
        for item in feature:
            key, sep, path = item.partition("=")
            if not sep or not key or not path:
                _fail(f"--feature takes KEY=ENTITY_PATH (e.g. observation.state=/robot/joint_positions), got {item!r}")
            features[key] = path
    try:
        with _cli().open_catalog() as cat:
            progress, update = _progress("exporting episodes")
            with progress:
                rep = export_lerobot(
                    cat,
                    selection,
                    out,
                    fps,
                    split=split,
                    features=features,
                    exclude=exclude or (),
                    task=task,
                    robot_type=robot_type,
                    overwrite=overwrite,
                    on_progress=update,
                )
    except (CatalogError, StreamError, ValueError, KeyError) as exc:
        _fail(str(exc).strip("'\""))
    console.print(
        f"wrote [bold]{len(rep.segment_ids)}[/] episode(s), {rep.frames} frames at {rep.fps} fps from selection "
        f"[bold]{rep.selection}[/] ({rep.dataset}) to {rep.out_dir} in {rep.seconds:.1f}s"
    )
    for key, entity in rep.features.items():
        console.print(f"  {entity:<32} -> {key}")


def register(app: typer.Typer) -> None:
    """Add `import-lerobot` and `export-lerobot` to `app`."""
    app.command("import-lerobot")(import_lerobot_cmd)
    app.command("export-lerobot")(export_lerobot_cmd)
