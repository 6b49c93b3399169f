"""The `roboloop` command: parses arguments into configs, calls the library, prints. Holds no logic.

Layout: this module holds the Typer `app`, the global options (`--workspace`,
`--catalog`, `--verbose`), the helpers every command uses (`open_catalog`, `console`,
`err_console`, `print_arrow`, `id_list`, `user_input`, `config_help`, `print_config`) and
`main`. Each stage group has its own module: `catalog_cmds` (serve, ls, import, sql, verify),
`collect_cmds` (collect, incl. `--plan`), `curate_cmds` (refine, flag, unflag, curate ...), `train_cmds`
(train, runs), `evaluate_cmds` (eval, evals, plan-eval), `analyze_cmds` (success), `compare_cmds` (compare),
`outcomes_cmds` (failures, reoutcome, label), `value_cmds` (value), `links_cmds` (open), `loop_cmds` (gaps, plan),
`report_cmds` (report),
`interop_cmds` (import-lerobot, export-lerobot), `demo_cmds` (demo), `workspace_cmds` (gc),
`tasks_cmds` (tasks);
`tables` holds the table/CSV/JSON output of the evaluate and analyze commands.

Adding a stage's commands: one convention, `register(app)`
-----------------------------------------------------------
1. Write `src/roboloop/cli/<stage>_cmds.py`: plain functions, and a `register(app)` that adds them::

       from typing import Annotated
       import typer
       from roboloop.cli.common import SHOW_CONFIG_HELP, config_help, console, open_catalog, print_config, user_input
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
2. Add the module and its command names to `COMMAND_MODULES` at the end of this file (`roboloop CMD`
   imports only CMD's module; `tests/cli/test_dispatch.py` checks the table against `register`).

Errors: library code raises `roboloop.errors.RoboloopError` subclasses with actionable
messages; commands do not catch them. The app's group catches every `RoboloopError`
once, prints `error: <message>` and exits with code 1 (no traceback) — for `main()` and
for `CliRunner().invoke(app, ...)` alike.
"""

from __future__ import annotations

import importlib
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from roboloop.cli.common import (  # noqa: F401 - the helpers, re-exported for scripts and tests
    INTERRUPTED_EXIT,
    SHOW_CONFIG_HELP,
    cell,
    config_help,
    console,
    err_console,
    fail,
    id_list,
    open_catalog,
    open_workspace,
    presets_help,
    print_arrow,
    print_batches,
    print_config,
    print_rows,
    report_error,
    report_interrupt,
    state,
    user_input,
)
from roboloop.errors import RoboloopError, on_sigterm

__all__ = ["app", "console", "err_console", "open_catalog", "open_workspace", "print_arrow", "id_list", "user_input", "main"]


class _Group(TyperGroup):
    """The root command group: turns every `RoboloopError` into its message and exit code 1, and an interrupt
    (Ctrl-C, or SIGTERM as `errors.Terminated`) that the command did not handle itself into one line and exit
    code 130 (instead of Click's "Aborted!" and 1)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except RoboloopError as exc:
            report_error(exc)
            raise typer.Exit(1) from None
        except KeyboardInterrupt as exc:
            report_interrupt(exc)
            raise typer.Exit(INTERRUPTED_EXIT) from None


def _global(
    workspace: Annotated[
        Optional[Path],
        typer.Option("--workspace", "-w", envvar="ROBOLOOP_WORKSPACE", help="Workspace folder (system of record). Default ./.roboloop"),
    ] = None,
    catalog: Annotated[
        Optional[str],
        typer.Option("--catalog", envvar="ROBOLOOP_CATALOG", help="Attach to a running catalog (e.g. from `roboloop serve`) instead of starting one."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show roboloop's debug logging and the traceback of your own code (a signal) that raised.")] = False,
) -> None:
    # -v: roboloop's own debug lines (and the traceback of a user's code that raised); libraries stay at warnings
    # (DataFusion alone logs hundreds of query-plan lines per query at debug level)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("roboloop").setLevel(logging.DEBUG if verbose else logging.NOTSET)
    state.verbose = verbose
    state.workspace = workspace
    state.catalog_url = catalog


def main() -> None:
    """Entry point (`roboloop = "roboloop.cli:main"`): user errors print their message and exit 1.

    SIGTERM is handled like Ctrl-C (`errors.Terminated`): a run or evaluation killed by
    `kill` or `timeout` records `interrupted` and can be resumed. An interrupt before the command
    runs (while its module loads, which takes seconds for `eval` or `train`) prints one line and
    exits 130 like one inside it.
    """
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        app_for(sys.argv[1:])()
    except RoboloopError as exc:  # raised outside the command group (e.g. while building the app)
        report_error(exc)
        sys.exit(1)
    except KeyboardInterrupt as exc:  # outside the command group: while the command's module is imported
        report_interrupt(exc)
        sys.exit(INTERRUPTED_EXIT)


# --- command modules (one line per stage group; see the module docstring) ------------------------

COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "catalog_cmds": ("serve", "ls", "import", "sql", "verify"),
    "collect_cmds": ("collect",),
    "curate_cmds": ("refine", "flag", "unflag", "curate"),
    "demo_cmds": ("demo",),
    "workspace_cmds": ("gc",),
    "train_cmds": ("train", "runs"),
    "evaluate_cmds": ("eval", "evals", "plan-eval"),
    "analyze_cmds": ("success",),
    "compare_cmds": ("compare",),
    "outcomes_cmds": ("failures", "reoutcome", "label"),
    "value_cmds": ("value",),
    "links_cmds": ("open",),
    "loop_cmds": ("gaps", "plan"),
    "report_cmds": ("report",),
    "interop_cmds": ("import-lerobot", "export-lerobot"),
    "tasks_cmds": ("tasks",),
}
"""Each command module of `roboloop.cli` (in `--help` order) and the commands its `register(app)` adds.

`roboloop CMD` imports only CMD's module (`app_for`): `roboloop success`, `compare` and `gaps` start without
loading training, the recorder, video or DataFusion (tests/cli/test_imports.py checks it). A command missing here still works, through the full app."""

_GLOBAL_VALUE_OPTIONS = ("--workspace", "-w", "--catalog")


def build_app(modules: Sequence[str] | None = None) -> typer.Typer:
    """The `roboloop` Typer app with the commands of `modules` (names in COMMAND_MODULES; default all)."""
    new = typer.Typer(
        name="roboloop",
        cls=_Group,
        help="The robot-learning experiment loop on one queryable data layer (a Rerun catalog).",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    new.callback()(_global)
    for name in COMMAND_MODULES if modules is None else modules:
        importlib.import_module(f"roboloop.cli.{name}").register(new)
    return new


def command_name(argv: Sequence[str]) -> str | None:
    """The command `argv` runs (its first word after the global options), None when there is none."""
    args = iter(argv)
    for arg in args:
        if arg in _GLOBAL_VALUE_OPTIONS:
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return None


def app_for(argv: Sequence[str]) -> typer.Typer:
    """The app that runs `argv`: only the module of its command (COMMAND_MODULES), else every command (help, typos)."""
    name = command_name(argv)
    module = next((m for m, names in COMMAND_MODULES.items() if name in names), None)
    return build_app([module]) if module is not None else sys.modules[__name__].app


def __getattr__(name: str):
    """`roboloop.cli.app`: the app with every command, built on first use (PEP 562)."""
    if name == "app":
        full = globals()["app"] = build_app()
        return full
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
