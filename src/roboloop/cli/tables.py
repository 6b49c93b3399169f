"""Output and option helpers of the evaluate/analyze commands: rows as a table, CSV or JSON lines; a lazily started catalog."""

from __future__ import annotations

import contextlib
import csv
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from rich.table import Table

from roboloop.cli.common import console, fail, open_catalog, user_input

FORMATS = ("table", "csv", "json")


def split_list(text: str | None) -> list[str]:
    """`"a, b,,c"` -> `["a", "b", "c"]` (a comma-separated option)."""
    return [s.strip() for s in (text or "").split(",") if s.strip()]


def check_format(format: str) -> None:
    """Stop with a user error unless `format` is one of :data:`FORMATS`."""
    if format not in FORMATS:
        fail(f"unknown --format {format!r}: use table, csv or json")


def show(v: Any) -> str:
    """A table cell: `-` for None, yes/no, floats to 3 significant digits."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def print_table(rows: Sequence[dict], columns: Sequence[str], format: str, *, title: str | None = None) -> None:
    """Rows as a rich table, CSV or JSON lines (only `columns`, in that order)."""
    if format == "json":
        for r in rows:
            sys.stdout.write(json.dumps({c: r.get(c) for c in columns}, default=str) + "\n")
        return
    if format == "csv":
        w = csv.writer(sys.stdout, lineterminator="\n")  # not the csv default CRLF: shells keep the \r
        w.writerow(columns)
        for r in rows:
            w.writerow([r.get(c) for c in columns])
        return
    t = Table(*columns, title=title)
    for r in rows:
        t.add_row(*[show(r.get(c)) for c in columns])
    console.print(t)


@contextlib.contextmanager
def lazy_catalog(*, datasets: Sequence[str] | None = None) -> Iterator[Callable[[], Any]]:
    """A function starting (or attaching) the catalog on first call (restoring only `datasets` when given); closed on exit."""
    stack = contextlib.ExitStack()
    box: dict[str, Any] = {}

    def get():
        if "cat" not in box:
            box["cat"] = stack.enter_context(open_catalog(datasets=datasets))
        return box["cat"]

    with stack:
        yield get


def guard(fn: Callable[[], Any]) -> Any:
    """Run a library call under `roboloop.cli.user_input`: a user error becomes `error: ...` and exit 1."""
    with user_input():
        return fn()
