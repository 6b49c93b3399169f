"""`roboloop train` and `roboloop runs`: thin commands over `roboloop.train`.

Wired into the `roboloop` command by `roboloop.cli` through `register(app)`.
Options override the config in ONE place (`build_config`, through `roboloop.config.resolve`):
`--like RUN` (that run's exact config) or `--config FILE` (a `TrainConfig` file), then the
options given; `--show-config` prints the result and exits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from roboloop.catalog.client import CatalogError
from roboloop.cli.common import (
    INTERRUPTED_EXIT,
    SHOW_CONFIG_HELP,
    config_help,
    console,
    err_console,
    fail,
    open_catalog,
    open_workspace,
    print_config,
)
from roboloop.config import read_mapping, resolve
from roboloop.train import ConfigError, TrainConfig, list_runs, train
from roboloop.train import load_config as load_run_config


def build_config(
    workspace,
    *,
    dataset: str | None,
    selection: str | None,
    config_file: Path | None = None,
    like: str | None = None,
    policy: str | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int | None = None,
    workers: int | None = None,
    nproc: int | None = None,
    state: list[str] | None = None,
    action: str | None = None,
    rate_hz: float | None = None,
    episode_steps: int | None = None,
    expert_steps_only: bool | None = None,
    cache_mb: float | None = None,
):
    """The TrainConfig for a `train` command: base (--like / --config / defaults), then flag overrides."""
    if like and config_file:
        raise ConfigError("pass either --like RUN_ID or --config FILE, not both")
    if not (like or config_file) and not (dataset and selection):
        raise ConfigError("train needs --dataset and --selection (or --like RUN_ID / --config FILE)")
    base = load_run_config(workspace, like) if like else config_file
    if policy is not None and base is not None:  # the policy decides how the model table reads: the file's [model] as the given policy's Config,
        base = _with_policy(base, policy)  # a --like run's model (another policy's) replaced by the given policy's defaults
    return resolve(TrainConfig, base, dataset=dataset, selection=selection, policy=policy, epochs=epochs, batch_size=batch_size,
                   lr=lr, seed=seed, num_workers=workers, nproc=nproc, state=tuple(state) if state else None, action=action,
                   rate_hz=rate_hz, episode_steps=episode_steps, expert_steps_only=expert_steps_only, cache_mb=cache_mb)


def _with_policy(base: TrainConfig | Path, policy: str) -> TrainConfig:
    if isinstance(base, TrainConfig):
        return base if base.policy == policy else TrainConfig.from_dict({**base.to_dict(), "policy": policy, "model": None})
    data = {**read_mapping(base), "policy": policy}
    try:
        return TrainConfig.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{base}: {exc}") from None


def train_cmd(
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="Demonstration dataset.")] = None,
    selection: Annotated[str | None, typer.Option("--selection", "-s", help="Saved selection to train on (see `curate ls`).")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="A TrainConfig file, .toml or .json (e.g. a run's config.json).")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help=config_help(TrainConfig, "epochs"))] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help=config_help(TrainConfig, "batch_size"))] = None,
    lr: Annotated[float | None, typer.Option(help=config_help(TrainConfig, "lr"))] = None,
    seed: Annotated[int | None, typer.Option(min=0, help=config_help(TrainConfig, "seed"))] = None,
    policy: Annotated[str | None, typer.Option(help=config_help(TrainConfig, "policy"))] = None,
    workers: Annotated[int | None, typer.Option(min=0, help=config_help(TrainConfig, "num_workers"))] = None,
    state: Annotated[list[str] | None, typer.Option("--state", help=config_help(TrainConfig, "state", " Repeat --state for several."))] = None,
    action: Annotated[str | None, typer.Option("--action", help=config_help(TrainConfig, "action"))] = None,
    rate_hz: Annotated[float | None, typer.Option("--rate-hz", help=config_help(TrainConfig, "rate_hz"))] = None,
    episode_steps: Annotated[int | None, typer.Option("--episode-steps", min=1, help=config_help(TrainConfig, "episode_steps"))] = None,
    cache_mb: Annotated[float | None, typer.Option("--cache-mb", min=0, help=config_help(TrainConfig, "cache_mb"))] = None,
    like: Annotated[str | None, typer.Option("--like", help="Re-use RUN_ID's exact config (optionally with a new --selection).")] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="Continue an interrupted run from its last checkpoint.")] = None,
    nproc: Annotated[int | None, typer.Option("--nproc", min=1, help="Training processes on this machine (DDP, gloo; the batch is split over them).")] = None,
    expert_steps_only: Annotated[bool, typer.Option("--expert-steps-only", help=config_help(TrainConfig, "expert_steps_only"))] = False,
    show_config: Annotated[bool, typer.Option("--show-config", help=SHOW_CONFIG_HELP)] = False,
) -> None:
    """Train a policy on a saved selection, streaming from the catalog; the run becomes a segment of <dataset>_runs."""
    try:
        if resume:
            cfg = load_run_config(open_workspace(), resume)
        else:
            cfg = build_config(open_workspace(), dataset=dataset, selection=selection, config_file=config, like=like, policy=policy,
                               epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, workers=workers, nproc=nproc, state=state,
                               action=action, rate_hz=rate_hz, episode_steps=episode_steps,
                               expert_steps_only=True if expert_steps_only else None, cache_mb=cache_mb)
    except (CatalogError, ValueError, OSError) as exc:
        fail(str(exc))
    if show_config:
        print_config(cfg)
        return
    console.print(f"training [bold]{cfg.policy}[/] on selection [bold]{cfg.selection}[/] of {cfg.dataset}: "
                  f"{cfg.epochs} epochs, batch {cfg.batch_size}, lr {cfg.lr:g}, seed {cfg.seed}" + (f", {cfg.nproc} processes" if cfg.nproc > 1 else "")
                  + (f", resuming {resume}" if resume else ""))
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("epoch {task.fields[epoch]}"),
        TextColumn("loss {task.fields[loss]}"), TextColumn("holdout {task.fields[holdout]}"), TextColumn("cache {task.fields[cache]}"),
        TimeElapsedColumn(), TimeRemainingColumn(),
        console=console,
    )
    with open_catalog() as cat, progress:
        bar = progress.add_task("steps", total=None, epoch="-", loss="-", holdout="-", cache="-")

        def on_progress(p) -> None:
            progress.update(bar, completed=p.step, total=p.total_steps, epoch=f"{p.epoch}/{p.epochs}", loss=f"{p.loss:.4f}",
                            holdout="-" if p.holdout_loss is None else f"{p.holdout_loss:.4f}", cache=f"{p.cache_bytes / (1 << 20):.1f} MB")

        try:
            res = train(cat, cfg, on_progress=on_progress, resume=resume)
        except KeyboardInterrupt:
            progress.stop()
            err_console.print("[yellow]interrupted:[/] the run is registered with status 'interrupted' and its last complete "
                              "checkpoint; continue it with `roboloop train --resume RUN_ID` (see `roboloop runs`)")
            raise typer.Exit(INTERRUPTED_EXIT) from None
        except CatalogError as exc:
            progress.stop()
            fail(str(exc))
    holdout = "-" if res.final_holdout_loss is None else f"{res.final_holdout_loss:.4f} (best {res.best_holdout_loss:.4f})"
    console.print(f"run [bold]{res.run_id}[/] {res.status}: {res.epochs_done} epochs in {res.wall_s:.1f}s, "
                  f"train loss {res.final_train_loss:.4f}, holdout loss {holdout}, {res.parameters:,} parameters")
    console.print(f"checkpoint {res.run_dir} (sha256 {res.checkpoint_sha256[:12]}); recording {res.recording}")
    console.print(f"compare runs: roboloop sql 'SELECT \"run.run_id\", \"run.selection\", \"run.final_holdout_loss\" FROM {cfg.dataset}_runs'")


def runs_cmd(
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="Only runs on this dataset.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print run.json records.")] = False,
) -> None:
    """List training runs (newest first). The same data is queryable: SELECT ... FROM <dataset>_runs."""
    rows = list_runs(open_workspace(), dataset)
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table("run", "status", "policy", "dataset", "selection", "epochs", "train loss", "holdout loss", "wall s", "started")
    for r in rows:
        table.add_row(
            r["run_id"], r["status"], r["policy"], r["dataset"], r["selection"], f"{r.get('epochs_done', 0)}/{r['epochs']}",
            _num(r.get("final_train_loss")), _num(r.get("final_holdout_loss")), _num(r.get("wall_s"), ".1f"), r.get("started_at", ""),
        )
    console.print(table)
    if not rows:
        console.print("no runs yet: `roboloop train --dataset D --selection NAME`")


def _num(v, fmt: str = ".4f") -> str:
    return "-" if v is None else format(v, fmt)


def register(app: typer.Typer) -> None:
    """Add `train` and `runs` to a Typer app."""
    app.command("train")(train_cmd)
    app.command("runs")(runs_cmd)
