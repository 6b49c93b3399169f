"""The catalog's errors: every one derives from `CatalogError` (a `RoboloopError`), the message says what to do."""

from __future__ import annotations

from collections.abc import Sequence

from roboloop.errors import RoboloopError, UnknownNameError


class CatalogError(RoboloopError):
    """A catalog problem a user can act on; the message says what to do."""


class UnknownDatasetError(CatalogError, UnknownNameError):
    """A dataset name that the catalog does not have."""

    def __init__(self, name: str, available: Sequence[str]) -> None:
        self.name = name
        self.available = list(available)
        listing = self.listing(self.available, "(none yet: create one with `roboloop collect` or `roboloop import`)")
        super().__init__(f"unknown dataset {name!r}; available datasets: {listing}")


class CorruptRecordingError(CatalogError, ValueError):
    """An RRD file that cannot be read (truncated, not an RRD, no recording in it, a chunk that does not decode)."""


class ReadOnlySQLError(CatalogError):
    """A `sql` statement that would change something (DDL, DML, SET): `roboloop sql` only queries."""


class PortInUseError(CatalogError):
    """The port asked for is taken by another process."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), for one-line error reports."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

