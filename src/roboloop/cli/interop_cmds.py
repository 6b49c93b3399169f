"""`roboloop import-lerobot` and `roboloop export-lerobot`: thin commands over `roboloop.interop`.

Wired into `roboloop` by `roboloop.cli` (`register(app)`) (the commands use the
main CLI's `open_catalog`, `console` and `user_input`, looked up at call time). Errors are
`RoboloopError`s, shown once by the root command group. Every option defaults to None ("not
given") so `--config FILE` values are overridden only by flags actually given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from roboloop.cli.common import SHOW_CONFIG_HELP, console, err_console, open_catalog, print_config, user_input
from roboloop.config import resolve
from roboloop.interop import ExportConfig, ImportConfig, export_from_config, import_from_config


def _progress(label: str):
    progress = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err_console, transient=True)
    task = progress.add_task(label, total=None)

    def update(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    return progress, update


def import_lerobot_cmd(
    path: Annotated[Path | None, typer.Argument(help="Folder of a local LeRobot dataset (v3.0 or v2.1; holds meta/info.json).")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="roboloop dataset that receives one segment per episode.")] = None,
    kind: Annotated[str | None, typer.Option(help="episode.kind of the imported segments [default: demo].")] = None,
    task: Annotated[str | None, typer.Option(help="Override episode.task (default: the episode's LeRobot task).")] = None,
    episodes: Annotated[str | None, typer.Option(help="Comma-separated LeRobot episode indices to import (default: all).")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="ImportConfig file (.toml/.json); flags override it.")] = None,
    show_config: Annotated[bool, typer.Option("--show-config", help=SHOW_CONFIG_HELP)] = False,
) -> None:
    """Import a LeRobot dataset: features -> streams at its fps, videos -> H.264 cameras, metadata -> properties."""
    with user_input():
        wanted = tuple(int(x) for x in episodes.split(",") if x.strip()) if episodes else None
        cfg = resolve(ImportConfig, config, path=str(path) if path else None, dataset=dataset, kind=kind, task=task, episodes=wanted)
    if show_config:
        print_config(cfg)
        return
    with open_catalog() as cat:
        progress, update = _progress("importing episodes")
        with progress:
            rep = import_from_config(cat, cfg, on_progress=update)
    console.print(
        f"imported [bold]{len(rep.segment_ids)}[/] episode(s), {rep.frames} frames at {rep.fps} fps "
        f"(LeRobot {rep.codebase_version}) into dataset [bold]{rep.dataset}[/] in {rep.seconds:.1f}s"
    )
    for key, entity in {**rep.streams, **rep.cameras}.items():
        console.print(f"  {key:<32} -> {entity}")
    for key, reason in rep.skipped_features.items():
        console.print(f"  [yellow]skipped[/] {key}: {reason}")


def export_lerobot_cmd(
    out: Annotated[Path | None, typer.Argument(help="Folder to create (the LeRobot v3.0 dataset root).")] = None,
    selection: Annotated[str | None, typer.Option("--selection", "-s", help="Saved selection to export (`roboloop curate --dataset D --name NAME`).")] = None,
    fps: Annotated[int | None, typer.Option("--fps", help="The dataset's frame rate: every stream is resampled onto k / fps.")] = None,
    split: Annotated[str | None, typer.Option(help="train | holdout | all (train then holdout, as splits train/test) [default: train].")] = None,
    feature: Annotated[
        list[str] | None, typer.Option("--feature", help="KEY=ENTITY_PATH to export (repeatable); default: every scalar and camera stream.")
    ] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="Entity path to leave out of the default features (repeatable).")] = None,
    task: Annotated[str | None, typer.Option(help="Task text for every episode (default: episode.task).")] = None,
    robot_type: Annotated[str | None, typer.Option(help="robot_type written to info.json.")] = None,
    overwrite: Annotated[bool | None, typer.Option("--overwrite", help="Replace OUT if it is an earlier export (never a file or a workspace folder).")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="ExportConfig file (.toml/.json); flags override it.")] = None,
    show_config: Annotated[bool, typer.Option("--show-config", help=SHOW_CONFIG_HELP)] = False,
) -> None:
    """Export a saved selection as a LeRobot v3.0 dataset (parquet + H.264 mp4 + meta with statistics)."""
    with user_input():
        features = None
        if feature:
            features = {}
            for item in feature:
                key, sep, path = item.partition("=")
                if not sep or not key or not path:
                    raise ValueError(f"--feature takes KEY=ENTITY_PATH (e.g. observation.state=/robot/joint_positions), got {item!r}")
                features[key] = path
        cfg = resolve(
            ExportConfig,
            config,
            selection=selection,
            out_dir=str(out) if out else None,
            fps=fps,
            split=split,
            features=features,
            exclude=tuple(exclude) if exclude else None,
            task=task,
            robot_type=robot_type,
            overwrite=overwrite,
        )
    if show_config:
        print_config(cfg)
        return
    with open_catalog() as cat:
        progress, update = _progress("exporting episodes")
        with progress:
            rep = export_from_config(cat, cfg, on_progress=update)
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
