"""Collect command: options (or `--config FILE`) -> `CollectConfig` -> `collect.collect`; `--plan FILE` executes a plan
(:func:`collect_plan_command`), `--corrective` collects corrective episodes."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from roboloop import schema
from roboloop.cli.common import (
    INTERRUPTED_EXIT,
    SHOW_CONFIG_HELP,
    config_help,
    console,
    err_console,
    open_catalog,
    presets_help,
    print_config,
    user_input,
)
from roboloop.collect.corrective import CorrectiveConfig, check_task, collect_corrective
from roboloop.collect.plan import load_plan, plan_summary
from roboloop.collect.plan_run import execute_plan, spec_like_dataset
from roboloop.collect.run import CollectConfig, RecordingSpec, collect, parse_cameras, parse_size
from roboloop.config import ConfigError, resolve
from roboloop.envs import DEFAULT_TASK, get_task
from roboloop.evaluate.run import cell_conditions, parse_grid, resolve_policy
from roboloop.refine.layers import flag
from roboloop.train import run_info

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
    corrective: Annotated[bool, typer.Option("--corrective", help="Corrective collection: the policy of --run drives, the task's expert labels every step (and takes over, per --mode).")] = False,
    run: Annotated[Optional[str], typer.Option("--run", help="With --corrective: " + config_help(CorrectiveConfig, "run"))] = None,
    mode: Annotated[Optional[str], typer.Option("--mode", help="With --corrective: " + config_help(CorrectiveConfig, "mode"))] = None,
    threshold: Annotated[Optional[float], typer.Option("--threshold", help="With --corrective: " + config_help(CorrectiveConfig, "threshold"))] = None,
    grid: Annotated[Optional[str], typer.Option("--grid", help="With --corrective: cells to collect in ('yaw=none,any lighting=normal,dim' or a TOML file); --episodes per cell.")] = None,
    operator: Annotated[Optional[str], typer.Option(help=config_help(CollectConfig, "operator"))] = None,
    show_config: Annotated[bool, typer.Option("--show-config", help=SHOW_CONFIG_HELP)] = False,
) -> None:
    """Run the scripted demonstrator under scene conditions (or a plan, or corrective episodes); record and register every episode."""
    if plan is not None:
        collect_plan_command(plan, workers=workers or 1, steps=steps)
        return
    if corrective or run is not None:
        if config is not None:
            with user_input():
                raise ConfigError("--config is a CollectConfig file; corrective collection takes its options on the command line")
        named = dict(region=region, yaw=yaw, lighting=lighting, table=table, distractors=distractors)
        corrective_command(run, dataset=dataset, episodes=episodes, mode=mode, threshold=threshold, grid=grid, seed=seed,
                           workers=workers, cameras=cameras, camera_size=camera_size, named=named, steps=steps,
                           show_config=show_config)
        return
    if any(v is not None for v in (mode, threshold, grid)):
        with user_input():
            raise ConfigError("--mode, --threshold and --grid apply to corrective collection: add --corrective --run RUN")
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
            raise typer.Exit(INTERRUPTED_EXIT) from None
    n = len(report.results)
    if report.seeds is not None and len(report.seeds):
        gaps = "" if isinstance(report.seeds, range) else " (not contiguous: another collect reserved seeds in between)"
        console.print(f"seeds {report.seeds[0]}..{report.seeds[-1]}{gaps}")
    console.print(f"recorded and registered {n} episode(s) in {report.wall_s:.1f}s ({report.episodes_per_minute:.1f}/min); "
                  f"successes {report.successes}/{n}")
    if report.blueprint:
        console.print(f"default blueprint: {report.blueprint}")


def _corrective_spec(cat, dataset: str, source, cameras: str | None, camera_size: str | None) -> RecordingSpec:
    """What a corrective episode records: the cameras given (else the dataset's usual ones), plus the run's cameras at
    the size it was trained on (a camera policy sees them; nothing else is rendered)."""
    table = cat.segment_table(dataset) if dataset in cat.dataset_names() else None
    spec = spec_like_dataset(table)
    if cameras is not None:
        spec = RecordingSpec(cameras=parse_cameras(cameras), width=spec.width, height=spec.height, camera_hz=spec.camera_hz,
                             scene_hz=spec.scene_hz)
    w, h = parse_size(camera_size) if camera_size else (spec.width, spec.height)
    if source.cameras:
        w, h = source.camera_size or (w, h)
    cams = tuple(dict.fromkeys((*spec.cameras, *source.cameras)))
    return RecordingSpec(cameras=cams, width=w, height=h, camera_hz=spec.camera_hz, scene_hz=spec.scene_hz)


def corrective_command(run: str | None, *, dataset: str | None, episodes: int | None, mode: str | None, threshold: float | None,
                       grid: str | None, seed: int | None, workers: int | None, cameras: str | None, camera_size: str | None,
                       named: dict[str, str | None], steps: int | None, show_config: bool) -> None:
    """Body of `roboloop collect --corrective --run RUN`: the run's policy drives, the task's corrective expert labels."""
    with open_catalog() as cat:
        with user_input():
            if not run:
                raise ConfigError("--corrective needs --run RUN: the training run whose policy drives (roboloop runs lists them)")
            run_info(cat.workspace, run)  # an unknown run: the error lists the known ones
            source = resolve_policy(cat.workspace, run)
            task = source.task or DEFAULT_TASK
            check_task(task)
            n = episodes if episodes is not None else DEFAULT_EPISODES
            if grid is not None:
                cells = parse_grid(grid, task).cells()
                conditions = tuple(cell_conditions(c, task) for c in cells)
                n *= len(cells)
            else:
                given = {k: v for k, v in named.items() if v is not None}
                conditions = (_conditions(task, given),) if given else ()
            ds = dataset or source.dataset or schema.DEFAULT_DATASET
            cfg = resolve(CorrectiveConfig, None, run=run, dataset=ds, mode=mode, threshold=threshold, episodes=n,
                          conditions=conditions, task=task, seed=seed, workers=workers, steps=steps,
                          spec=_corrective_spec(cat, ds, source, cameras, camera_size))
        if show_config:
            print_config(cfg)
            return
        console.print(f"corrective collection: run [bold]{run}[/] drives, mode {cfg.mode}"
                      + (f" (takeover beyond {cfg.threshold:g})" if cfg.mode == schema.MODE_GATED else "")
                      + f"; {cfg.episodes} episode(s) into [bold]{cfg.dataset}[/], cameras {','.join(cfg.spec.cameras) or '(none)'}")
        counts = {"done": 0, "ok": 0, "expert": 0.0}
        progress = _success_progress()
        with progress:
            bar = progress.add_task("corrective episodes", total=cfg.episodes, ok="0/0")

            def on_result(result) -> None:
                counts["done"] += 1
                counts["ok"] += int(result.success)
                counts["expert"] += float(result.properties[schema.EPISODE][schema.EPISODE_EXPERT_FRACTION])
                progress.update(bar, advance=1, ok=f"{counts['ok']}/{counts['done']}")

            try:
                report = collect_corrective(cat, cfg, policy_factory=source.factory, provenance=source.provenance, on_result=on_result)
            except KeyboardInterrupt:
                progress.stop()
                err_console.print(f"[yellow]interrupted:[/] {counts['done']} finished episode(s) registered")
                raise typer.Exit(INTERRUPTED_EXIT) from None
    k = len(report.results)
    console.print(f"recorded and registered {k} corrective episode(s) in {report.wall_s:.1f}s; successes {report.successes}/{k}; "
                  f"expert in control {100 * counts['expert'] / max(k, 1):.0f}% of steps")
    console.print(f"train on them with the demonstrations: roboloop curate -d {cfg.dataset} --name NAME "
                  f"--where \"outcome.success or episode.kind = 'corrective'\"")


def _success_progress() -> Progress:
    """The progress bar of a collection: episodes done of total, running successes (`ok` field), elapsed time."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("successes {task.fields[ok]}"), TimeElapsedColumn(), console=console)


def collect_plan_command(plan_file: str | Path, *, workers: int = 1, steps: int | None = None, flag_failures: bool = True) -> None:
    """Body of `roboloop collect --plan FILE_OR_NAME`: execute the plan with a progress bar.

    With `flag_failures`, new demonstrations that failed the strict success metric are flagged
    in the quality layer (reason names the plan), so the curation query leaves them out.
    """
    counts = {"done": 0, "ok": 0}
    with open_catalog() as cat:
        p = load_plan(cat.workspace, plan_file)
        console.print(f"executing plan [bold]{p.name}[/] ({p.total} episode(s) into {p.dataset}; seeds after the dataset's highest)")
        for line in plan_summary(p):
            console.print(line, soft_wrap=True)
        progress = _success_progress()
        with progress:
            bar = progress.add_task("episodes", total=p.total, ok="0/0")

            def on_result(result) -> None:
                counts["done"] += 1
                counts["ok"] += int(result.success)
                progress.update(bar, advance=1, ok=f"{counts['ok']}/{counts['done']}")

            try:
                run = execute_plan(cat, p, workers=workers, steps=steps, on_result=on_result,
                                   policy_source=functools.partial(resolve_policy, cat.workspace))
            except KeyboardInterrupt:
                progress.stop()
                err_console.print(f"[yellow]interrupted:[/] {counts['done']} episode(s) registered; run the same command to collect the rest")
                raise typer.Exit(INTERRUPTED_EXIT) from None
            progress.update(bar, completed=p.total)
        seeds = f"seeds {run.seeds[0]}..{run.seeds[-1]}" if run.seeds else "nothing new (the plan was already executed)"
        console.print(f"collected {len(run.new_segment_ids)} episode(s), {run.successes} successful, {seeds}; plan row status {run.status}")
        if flag_failures and run.failed_segment_ids:
            ids = flag(cat, p.dataset, reason=f"plan {p.name}: demonstration failed strict success", segment_ids=run.failed_segment_ids)
            console.print(f"flagged {len(ids)} failed demonstration(s) in the quality layer (left out of selections); "
                          f"undo with: roboloop unflag -d {p.dataset} -s ID")


def register(app: typer.Typer) -> typer.Typer:
    """Add `collect` to `app`."""
    app.command("collect")(collect_cmd)
    return app
