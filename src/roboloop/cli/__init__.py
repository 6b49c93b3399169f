"""The `roboloop` command: parses arguments into configs, calls the library, prints. Holds no logic.

Layout: this module holds the Typer `app`, the global options (`--workspace`,
`--catalog`, `--verbose`), the helpers every command uses (`open_catalog`, `console`,
`err_console`, `print_arrow`, `id_list`, `user_input`, `config_help`, `print_config`) and
`main`. Each stage group has its own module: `catalog_cmds` (serve, ls, import, sql, verify),
`collect_cmds` (collect), `curate_cmds` (refine, flag, unflag, curate ...), `train_cmds`
(train, runs), `evaluate_cmds` (eval, evals, plan-eval), `analyze_cmds` (success, compare,
failures, reoutcome), `links_cmds` (open), `loop_cmds` (gaps, plan, report; `collect --plan`),
`interop_cmds` (import-lerobot, export-lerobot), `demo_cmds` (demo), `workspace_cmds` (gc);
`tables` holds the table/CSV/JSON output of the evaluate and analyze commands.

Adding a stage's commands: one convention, `register(app)`
-----------------------------------------------------------
1. Write `src/roboloop/cli/<stage>_cmds.py`: plain functions, and a `register(app)` that adds them::

       from typing import Annotated
       import typer
       from roboloop.cli import SHOW_CONFIG_HELP, config_help, console, open_catalog, print_config, user_input
       from roboloop.config import resolve
       from roboloop.train import TrainConfig, train

       def train_cmd(config: Annotated[Optional[Path], typer.Option("--config")] = None,
                     epochs: Annotated[Optional[int], typer.Option(help=config_help(TrainConfig, "epochs"))] = None,
                     show_config: Annotated[bool, typer.Option("--show-config", help=SHOW_CONFIG_HELP)] = False) -> None:
           \"\"\"One line of help.\"\"\"
           with user_input():                                      # ValueError while parsing -> clean error
               cfg = resolve(TrainConfig, config, epochs=epochs)   # the one override helper: options over file values
           if show_config:
               print_config(cfg)                                   # `--show-config`: the resolved config as TOML
               return
           with open_catalog() as cat:
               result = train(cat, cfg)                            # ONE library call
           console.print(f"trained {result.run_id}")              # print

       def register(app: typer.Typer) -> typer.Typer:
           app.command("train")(train_cmd)
           return app

   Options default to None ("not given"); their help and defaults come from the config's
   field docs (`config_help`), never restated. A group of subcommands is a `typer.Typer()`
   added in `register` with `app.add_typer(sub, name="...")`.
2. Add the module to the import list and the `register` loop at the end of this file.

Errors: library code raises `roboloop.errors.RoboloopError` subclasses with actionable
messages; commands do not catch them. The app's group catches every `RoboloopError`
once, prints `error: <message>` and exits with code 1 (no traceback) — for `main()` and
for `CliRunner().invoke(app, ...)` alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import contextlib
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

if TYPE_CHECKING:
    from roboloop.catalog import Catalog
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from roboloop.config import ConfigError, field_docs
from roboloop.errors import RoboloopError
from roboloop.workspace import Workspace

__all__ = ["app", "console", "err_console", "open_catalog", "open_workspace", "print_arrow", "id_list", "user_input", "main"]

console = Console()
err_console = Console(stderr=True)


def report_error(exc: BaseException) -> None:
    """How a user error is shown: one red `error:` line (plus the message's own lines)."""
    err_console.print(f"[red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)


class _Group(TyperGroup):
    """The root command group: turns every `RoboloopError` into its message and exit code 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except RoboloopError as exc:
            report_error(exc)
            raise typer.Exit(1) from None


app = typer.Typer(
    name="roboloop",
    cls=_Group,
    help="The robot-learning experiment loop on one queryable data layer (a Rerun catalog).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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
def open_catalog(*, port: int = 0, attach: bool = True) -> Iterator[Catalog]:
    """Attach to the catalog (`--catalog`, or the workspace's `roboloop serve`) or start one; report anything skipped while restoring (once: restore's own log lines are muted here)."""
    from roboloop.catalog import Catalog  # imported here: pyarrow and numpy are not needed for --help

    restore_log = logging.getLogger("roboloop.catalog_restore")
    level = restore_log.level
    restore_log.setLevel(logging.ERROR)
    try:
        cat = Catalog(open_workspace(), state.catalog_url, port=port, attach=attach)
    finally:
        restore_log.setLevel(level)
    for path, reason in cat.report.skipped:
        err_console.print(f"[yellow]warning:[/] skipped {path}: {reason}")
    try:
        yield cat
    finally:
        cat.close()


@contextlib.contextmanager
def user_input() -> Iterator[None]:
    """Parsing arguments: a `ValueError` (bad preset, size, name) becomes a `ConfigError` (clean message, exit 1)."""
    try:
        yield
    except RoboloopError:
        raise
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def fail(message: str) -> None:
    """Stop with a user error (for problems found while parsing arguments)."""
    raise ConfigError(message)


def config_help(cls: type, name: str, extra: str = "") -> str:
    """An option's help taken from a config field: its one-line doc, `extra`, and its default (never restated)."""
    default = getattr(cls, name, None)
    shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
    return f"{field_docs(cls)[name]}{extra} Default {shown}." if default is not None else f"{field_docs(cls)[name]}{extra}"


SHOW_CONFIG_HELP = "Print the resolved config (file, then options) as TOML and exit."


def print_config(*configs: Any) -> None:
    """`--show-config`: each config as TOML (a second one, e.g. the sequential settings, as a table named after it)."""
    first, *rest = configs
    sys.stdout.write(first.to_toml())
    for name, cfg in rest:
        sys.stdout.write(f"\n[{name}]\n" + cfg.to_toml())


def presets_help(what: str, presets: Sequence[str] | Any, aliases: dict[str, str] | None = None, extra: str = "") -> str:
    """Help text listing a preset table's names (never copied by hand): `Lighting: normal, dim, bright.`"""
    names = list(presets)
    for alias, target in (aliases or {}).items():
        names = [f"{n}/{alias}" if n == target else n for n in names]
    return f"{what}: {', '.join(names)}{extra}."


def print_arrow(table, format: str = "table") -> None:
    """Print an Arrow table as a rich table, CSV or JSON lines."""
    rows = table.to_pylist()
    if format == "json":
        for row in rows:
            sys.stdout.write(json.dumps(row, default=str) + "\n")
    elif format == "csv":
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")  # the csv default CRLF breaks `$(... | tail -1)`
        writer.writerow(table.column_names)
        for row in rows:
            writer.writerow([row[c] for c in table.column_names])
    else:
        t = Table(*table.column_names)
        for row in rows:
            t.add_row(*[cell(row[c]) for c in table.column_names])
        console.print(t)
        console.print(f"{len(rows)} row(s)")


def print_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Print dict rows as a rich table of `columns`."""
    t = Table(*columns)
    for row in rows:
        t.add_row(*[cell(row.get(c)) for c in columns])
    console.print(t)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def id_list(ids, n: int = 8) -> str:
    ids = list(ids)
    return ", ".join(ids[:n]) + (f", ... (+{len(ids) - n})" if len(ids) > n else "")


def main() -> None:
    """Entry point (`roboloop = "roboloop.cli:main"`): user errors print their message and exit 1."""
    try:
        app()
    except RoboloopError as exc:  # raised outside the command group (e.g. while building the app)
        report_error(exc)
        sys.exit(1)


# --- command modules (one line per stage group; see the module docstring) ------------------------
from roboloop.cli import (
    analyze_cmds,
    catalog_cmds,
    collect_cmds,
    curate_cmds,
    demo_cmds,
    evaluate_cmds,
    interop_cmds,
    links_cmds,
    loop_cmds,
    train_cmds,
    workspace_cmds,
)

for _module in (catalog_cmds, collect_cmds, curate_cmds, demo_cmds, workspace_cmds, train_cmds, evaluate_cmds, analyze_cmds,
                links_cmds, loop_cmds, interop_cmds):
    _module.register(app)
