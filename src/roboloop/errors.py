"""The project's error root.

Every error a user can act on (a bad name, a missing dataset, an unparsable predicate, a
loader field that does not exist) is a :class:`RoboloopError` whose message names the
problem and how to fix it. The CLI catches `RoboloopError` once, in `roboloop.cli.main`,
prints the message and exits with code 1, without a traceback.

Lookups of a name that does not exist raise a subclass of :class:`UnknownNameError`: it is
also a `KeyError` (so `except KeyError` keeps working) but prints its message as written
instead of `KeyError`'s `repr()`.

Errors are grouped by what they mean, not by the module that happens to raise them. The
meanings several stages share live here: a config value or file that is not valid
(:class:`ConfigError`), a workspace that cannot be used (:class:`WorkspaceError`,
:class:`WorkspaceBusyError`), an evaluation or training run id that does not exist
(:class:`UnknownEvaluationError`, :class:`UnknownRunError`). A stage's own problems are a class in that stage
(`EvaluateError`, `GapError`, `PlanError`, `TrainError`, `SequentialError`, ...), each
deriving from :class:`RoboloopError`; only problems with the Rerun catalog itself derive
from `roboloop.catalog.errors.CatalogError`.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "ConfigError",
    "RoboloopError",
    "Terminated",
    "UnknownEvaluationError",
    "UnknownNameError",
    "UnknownRunError",
    "WorkspaceBusyError",
    "WorkspaceError",
]


class RoboloopError(Exception):
    """A problem the user can act on; the message says what to do."""


class UnknownNameError(RoboloopError, KeyError):
    """A name (dataset, selection, entity path, ...) that does not exist; the message lists the valid ones.

    Subclasses pass the full message; :meth:`listing` formats the available names.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""

    @staticmethod
    def listing(names: Iterable[str], empty: str, sep: str = ", ") -> str:
        """`names` joined by `sep`, or `empty` when there are none."""
        names = list(names)
        return sep.join(names) if names else empty


class ConfigError(RoboloopError, ValueError):
    """A config value, key or file that is not valid; the message names the field and what is allowed."""


class WorkspaceError(RoboloopError):
    """The workspace path cannot be a workspace (e.g. it names a file)."""


class WorkspaceBusyError(RoboloopError):
    """Another process uses the workspace in a way that forbids this operation now."""


class UnknownEvaluationError(UnknownNameError):
    """An evaluation id that is not in the workspace; the message lists the known ones."""


class UnknownRunError(UnknownNameError):
    """A training run id that is not in the workspace (no `runs/<run_id>/run.json`); the message lists the known ones."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, `timeout`, a scheduler) raised as an interrupt: handled exactly like Ctrl-C.

    The `roboloop` command installs `on_sigterm` as the SIGTERM handler, so a terminated
    run or evaluation writes its `interrupted` status and keeps what it acknowledged.
    """


def on_sigterm(signum, frame) -> None:
    """SIGTERM handler: raise :class:`Terminated` in the main thread (like SIGINT raises KeyboardInterrupt)."""
    raise Terminated(f"terminated by signal {signum}")
