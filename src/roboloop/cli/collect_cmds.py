"""Collect command: options (or `--config FILE`) -> `CollectConfig` -> `collect.collect`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from roboloop import schema
from roboloop.cli.common import SHOW_CONFIG_HELP, config_help, console, err_console, open_catalog, presets_help, print_config, user_input
from roboloop.cli.loop_cmds import collect_plan_command
from roboloop.collect.run import CollectConfig, RecordingSpec, collect, parse_cameras, parse_size
from roboloop.config import resolve
from roboloop.envs import DEFAULT_TASK, get_task

DEFAULT_EPISODES = 10
_AXES = get_task(DEFAULT_TASK).vocabulary
"""The condition options name the default task's axes (a task with other labels validates its own)."""


def _axis_help(what: str, axis: str, extra: str = "") -> str:
    a = _AXES.axis(axis)
    return presets_help(what, a.labels, dict(a.aliases), extra)


def _conditions(task_name: str | None, named: dict[str, str]):
    """The conditions the options name, built by the task (`from_names` of its conditions type when it has one,
    which also reads explicit bounds such as a region 'x0,x1,y0,y1'; else `Task.conditions`)."""
    task = get_task(task_name)
    build = getattr(task.conditions_type, "from_names", None)
    return build(**named) if build is not None else task.conditions(named)


def collect_cmd(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="CollectConfig file (.toml or .json); options given override its values.")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", "-d", help=config_help(CollectConfig, "dataset"))] = None,
    episodes: Annotated[Optional[int], typer.Option("--episodes", "-n", min=1, help=f"Number of episodes. Default {DEFAULT_EPISODES}.")] = None,
    task: Annotated[Optional[str], typer.Option(help=config_help(CollectConfig, "task"))] = None,
    region: Annotated[Optional[str], typer.Option(help=_axis_help("Cube start region", "region", ", or 'x0,x1,y0,y1'"))] = None,
    yaw: Annotated[Optional[str], typer.Option(help=_axis_help("Cube yaw range", "yaw"))] = None,
    lighting: Annotated[Optional[str], typer.Option(help=_axis_help("Lighting", "lighting"))] = None,
    table: Annotated[Optional[str], typer.Option(help=_axis_help("Table colour", "table"))] = None,
    distractors: Annotated[Optional[str], typer.Option(help=_axis_help("Distractor objects", "distractors", f", or a count 0-{_AXES.axis('distractors').max_count}"))] = None,
    seed: Annotated[Optional[int], typer.Option(min=0, help="Episode i uses seed S+i (re-uses seeds on purpose). Default: continue after the highest seed the dataset holds.")] = None,
    workers: Annotated[Optional[int], typer.Option(min=1, help=config_help(CollectConfig, "workers"))] = None,
    cameras: Annotated[Optional[str], typer.Option(help=config_help(RecordingSpec, "cameras", f" Comma-separated ({', '.join(schema.CAMERAS)})."))] = None,
    camera_size: Annotated[Optional[str], typer.Option(help="Recorded camera size WIDTHxHEIGHT (even numbers, max {}x{}). Default {}x{}.".format(*schema.MAX_CAMERA_SIZE, RecordingSpec.width, RecordingSpec.height))] = None,
    camera_hz: Annotated[Optional[int], typer.Option(help=config_help(RecordingSpec, "camera_hz"))] = None,
    scene_hz: Annotated[Optional[int], typer.Option(help=config_help(RecordingSpec, "scene_hz"))] = None,
    steps: Annotated[Optional[int], typer.Option(min=1, help="Control steps per episode (default: the task's 300).")] = None,
    plan: Annotated[Optional[str], typer.Option("--plan", help="Execute a collection plan (file written by `roboloop plan`, or a saved plan's name) instead.")] = None,
    executor: Annotated[Optional[str], typer.Option(help=config_help(CollectConfig, "executor"))] = None,
    ray_address: Annotated[Optional[str], typer.Option(help="With --executor ray: the cluster (`auto`, `ray://head:10001`); default: a local Ray instance.")] = None,
    operator: Annotated[Optional[str], typer.Option(help=config_help(CollectConfig, "operator"))] = None,
    show_config: Annotated[bool, typer.Option("--show-config", help=SHOW_CONFIG_HELP)] = False,
) -> None:
    """Run the scripted demonstrator under scene conditions (or a plan); record and register every episode."""
    if plan is not None:
        collect_plan_command(plan, workers=workers or 1, steps=steps)
        return
    with user_input():
        size = parse_size(camera_size) if camera_size else (None, None)
        spec = dict(cameras=parse_cameras(cameras) if cameras is not None else None, width=size[0], height=size[1],
                    camera_hz=camera_hz, scene_hz=scene_hz)
        named = dict(region=region, yaw=yaw, lighting=lighting, table=table, distractors=distractors)
        conditions = None
        if any(v is not None for v in named.values()):
            conditions = (_conditions(task, {k: v for k, v in named.items() if v is not None}),)
        cfg = resolve(CollectConfig, config, dataset=dataset, task=task, episodes=episodes if episodes is not None or config else DEFAULT_EPISODES,
                      seed=seed, workers=workers, steps=steps, spec=spec, conditions=conditions, executor=executor,
                      ray_address=ray_address, operator=operator)
    if show_config:
        print_config(cfg)
        return
    spec = cfg.spec
    labels = ", ".join(c.label for c in cfg.conditions) or "default"
    console.print(f"collecting {cfg.episodes} episode(s) into [bold]{cfg.dataset}[/]: {labels}, "
                  + (f"seeds {cfg.seed}..{cfg.seed + cfg.episodes - 1} (explicit), " if cfg.seed is not None else "seeds continuing after the dataset's highest, ")
                  + f"cameras {','.join(spec.cameras) or '(none)'} {spec.width}x{spec.height} @ {spec.camera_hz} Hz, {cfg.workers} worker(s)"
                  + (" on Ray" if cfg.executor == "ray" else ""))
    counts = {"done": 0, "ok": 0}
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("successes {task.fields[ok]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=console,
    )
    with open_catalog() as cat, progress:
        bar = progress.add_task("episodes", total=cfg.episodes, ok=0)

        def on_result(result) -> None:
            counts["done"] += 1
            counts["ok"] += int(result.success)
            progress.update(bar, advance=1, ok=f"{counts['ok']}/{counts['done']}")

        try:
            report = collect(cat, cfg, on_result=on_result)
        except KeyboardInterrupt:
            progress.stop()
            err_console.print(f"[yellow]interrupted:[/] {counts['done']} finished episode(s) registered; episodes in flight were discarded")
            raise typer.Exit(130) from None
    n = len(report.results)
    if report.seeds is not None and len(report.seeds):
        gaps = "" if isinstance(report.seeds, range) else " (not contiguous: another collect reserved seeds in between)"
        console.print(f"seeds {report.seeds[0]}..{report.seeds[-1]}{gaps}")
    console.print(f"recorded and registered {n} episode(s) in {report.wall_s:.1f}s ({report.episodes_per_minute:.1f}/min); "
                  f"successes {report.successes}/{n}")
    if report.blueprint:
        console.print(f"default blueprint: {report.blueprint}")


def register(app: typer.Typer) -> typer.Typer:
    """Add `collect` to `app`."""
    app.command("collect")(collect_cmd)
    return app
