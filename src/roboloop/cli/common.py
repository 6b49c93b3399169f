"""Helpers every `roboloop` command uses: consoles, the global options' state, the workspace and
catalog openers, parsing guards, config help and `--show-config` output, table printing."""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Optional

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from roboloop.catalog.client import Catalog
from roboloop.config import ConfigError, field_docs
from roboloop.errors import RoboloopError
from roboloop.workspace import Workspace

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "SHOW_CONFIG_HELP", "State", "config_help", "console", "err_console", "fail", "id_list", "open_catalog", "open_workspace",
    "presets_help", "print_arrow", "print_batches", "print_config", "print_rows", "report_error", "report_interrupt", "state",
    "user_input", "INTERRUPTED_EXIT",
]

console = Console()
err_console = Console(stderr=True)


def report_error(exc: BaseException) -> None:
    """How a user error is shown: one red `error:` line (plus the message's own lines); with `-v`, an error that
    carries the traceback of the user's own code (`traceback_text`, e.g. a signal function that raised) prints it first."""
    details = getattr(exc, "traceback_text", "")
    if details and state.verbose:
        err_console.print(details.rstrip(), highlight=False, markup=False, soft_wrap=True)
    err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, markup=True, soft_wrap=True)  # the text as written


INTERRUPTED_EXIT = 130
"""The exit code of a command stopped by Ctrl-C or SIGTERM (`errors.Terminated`), as a shell reports SIGINT (128 + 2)."""


def report_interrupt(exc: BaseException) -> None:
    """How an interrupt that no command handled is shown (e.g. while the command's modules load or the catalog
    starts, before the command has written anything): one yellow line, no traceback."""
    why = str(exc) or "Ctrl-C"
    err_console.print(f"[yellow]interrupted[/] ({escape(why)}) before the command finished", highlight=False, soft_wrap=True)


class State:
    """Global options shared by every command."""

    workspace: Optional[Path] = None
    catalog_url: Optional[str] = None
    verbose: bool = False


state = State()


def open_workspace() -> Workspace:
    return Workspace(state.workspace)


@contextlib.contextmanager
def open_catalog(*, port: int = 0, attach: bool = True, datasets: Sequence[str] | None = None) -> Iterator[Catalog]:
    """Attach to the catalog (`--catalog`, or the workspace's `roboloop serve`) or start one; report anything skipped while restoring (once: restore's own log lines are muted here).

    `datasets`: an embedded catalog restores only these (a running one serves everything anyway)."""
    restore_log = logging.getLogger("roboloop.catalog.restore")
    level = restore_log.level
    restore_log.setLevel(logging.ERROR)
    try:
        cat = Catalog(open_workspace(), state.catalog_url, port=port, attach=attach, datasets=datasets)
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


@contextlib.contextmanager
def optional_dependency() -> Iterator[None]:
    """A missing optional dependency (plots, the report's extras) becomes a clean error."""
    try:
        yield
    except ImportError as exc:
        fail(str(exc))


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


TABLE_ROWS_SHOWN = 1000
"""Most rows `--format table` draws (a terminal table holds them all in memory to size its columns); csv and json print every row."""
PRINT_SLICE_ROWS = 4096
"""Rows turned into Python values at a time while printing a streamed result (bounds memory whatever the batch size)."""


def print_batches(column_names: Sequence[str], batches, format: str = "table") -> int:
    """Print a stream of Arrow record batches as they arrive (csv / json lines: every row; table: the first
    `TABLE_ROWS_SHOWN`, then a count); memory stays bounded by one slice. Returns the number of rows."""
    names = list(column_names)
    writer = None
    if format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")  # not the csv default CRLF: shells keep the \r
        writer.writerow(names)
    shown = Table(*names) if format == "table" else None
    n = 0
    for batch in batches:
        for start in range(0, batch.num_rows, PRINT_SLICE_ROWS):
            part = batch.slice(start, PRINT_SLICE_ROWS)
            if shown is not None:
                room = TABLE_ROWS_SHOWN - n
                if room > 0:
                    for row in part.slice(0, room).to_pylist():
                        shown.add_row(*[cell(row[c]) for c in names])
            else:
                for row in part.to_pylist():
                    if writer is not None:
                        writer.writerow([row[c] for c in names])
                    else:
                        sys.stdout.write(json.dumps(row, default=str) + "\n")
            n += part.num_rows
    if shown is not None:
        console.print(shown)
        more = f" (the first {TABLE_ROWS_SHOWN:,} shown; --format csv or json prints every row)" if n > TABLE_ROWS_SHOWN else ""
        console.print(f"{n} row(s){more}")
    return n
