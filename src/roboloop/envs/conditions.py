"""Condition axes: the one vocabulary a task's scene conditions are named in.

A task varies its scene along a few **axes** (the ALOHA transfer cube: ``region``,
``yaw``, ``lighting``, ``table``, ``distractors``; see :mod:`roboloop.envs.aloha.conditions`).
Collect, evaluate, analyze and plans all name a condition through the task's
:class:`Vocabulary`, so one label means one thing everywhere.

**Reading a label** (:meth:`Axis.label`): an integer (not a bool) is read as its digits,
anything else as its text, stripped and lower-cased; an alias becomes the label it stands
for (``near`` -> ``left``). The result is a *label* of the axis when it is one of the
axis's labels or, on an axis that counts things (``max_count`` set), decimal digits whose
value lies in ``0..max_count`` (kept as written: a plan that says ``distractors = "2"``
keeps ``"2"``).

**The canonical label** (:meth:`Axis.canonical`), the one spelling of a condition used in
cell keys, grids and comparisons: the label, with a count replaced by the label that names
it (``2`` -> ``few``) or, where none does, by its number (``03`` -> ``3``).

**Cell keys.** A cell is a mapping axis -> label; its key is ``axis=label`` over the sorted
axes, joined by ``,`` (:meth:`Vocabulary.format_key`; :meth:`Vocabulary.split_key` reads one
back). A grid cell's key holds canonical labels (:meth:`Vocabulary.cell_key`); evaluation
seeds hash it, so its bytes never change.

**Unknown values.** :meth:`Vocabulary.canonical` raises ``ValueError`` naming the axis and
listing what it accepts; :meth:`Vocabulary.comparable`, for values already stored (whatever
wrote them: ``custom``, an older label), gives the canonical label when there is one and
the stripped, lower-cased text otherwise, so two stored values compare equal exactly when
they name the same condition.

Example::

    axes = Vocabulary((Axis("region", ("default", "left", "right"), {"near": "left"}),
                       Axis("distractors", ("none", "few"), counts={"none": 0, "few": 2}, max_count=4)))
    axes.cell_key({"region": "NEAR", "distractors": 2})    # 'distractors=few,region=left'
    axes.label("distractors", "2")                          # '2'
    axes.split_key("distractors=3,region=left")             # {'distractors': '3', 'region': 'left'}
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Axis", "Vocabulary"]


@dataclass(frozen=True)
class Axis:
    """One condition axis: its canonical labels, aliases and, for a count, the counts it accepts."""

    name: str
    labels: tuple[str, ...]
    """Canonical labels, in definition order."""
    aliases: Mapping[str, str] = field(default_factory=dict)
    """Other spellings -> canonical label."""
    counts: Mapping[str, int] = field(default_factory=dict)
    """Labels that name a count (``few`` -> 2), on an axis that counts things."""
    max_count: int | None = None
    """An axis that counts things accepts every count 0..max_count; None: not a count."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))
        bad = [a for a, c in self.aliases.items() if c not in self.labels]
        if bad:
            raise ValueError(f"axis {self.name!r}: aliases {bad} name no canonical label")

    def label(self, value: Any) -> str | None:
        """`value` as a label of this axis (module docstring), or None when the axis does not know it."""
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            value = int(value)
        text = str(value).strip().lower()
        text = self.aliases.get(text, text)
        if text in self.labels:
            return text
        if self._as_count(text) is not None:
            return text
        return None

    def canonical(self, value: Any) -> str | None:
        """The canonical label of `value` (counts named where a label names them), or None when unknown."""
        text = self.label(value)
        n = None if text is None or text in self.labels else self._as_count(text)
        if n is None:
            return text
        for name, count in self.counts.items():
            if count == n:
                return name
        return str(n)

    def _as_count(self, text: str) -> int | None:
        if self.max_count is None or not text.isdecimal():
            return None
        n = int(text)
        return n if n <= self.max_count else None

    def count(self, value: Any) -> int:
        """The count a label of a counting axis stands for (``few`` -> 2, ``3`` -> 3); ValueError if none."""
        text = self.canonical(value)
        if text is None or self.max_count is None:
            raise ValueError(f"{value!r} is not a {self.name} count")
        return self.counts[text] if text in self.counts else int(text)

    def accepted(self) -> list[str]:
        """Every accepted spelling, for a message: sorted labels, sorted aliases, then each count."""
        counts = [str(n) for n in range(self.max_count + 1)] if self.max_count is not None else []
        return sorted(self.labels) + sorted(self.aliases) + counts

    def described(self) -> list[str]:
        """The accepted spellings in definition order, counts as a range (``0-4``), for a message."""
        counts = [f"0-{self.max_count}"] if self.max_count is not None else []
        return list(self.labels) + list(self.aliases) + counts


@dataclass(frozen=True)
class Vocabulary:
    """A task's condition axes and the rules for labels and cell keys (module docstring)."""

    axes: tuple[Axis, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """The axis names, in definition order."""
        return tuple(a.name for a in self.axes)

    def axis(self, name: str) -> Axis:
        """The axis called `name`; ValueError listing the valid axes otherwise."""
        for a in self.axes:
            if a.name == name:
                return a
        raise ValueError(f"unknown condition axis {name!r}; valid axes: {', '.join(self.names)}")

    def label(self, axis: str, value: Any) -> str | None:
        """`value` as a label of `axis` (aliases resolved, a count kept as written), or None (axis must exist)."""
        return self.axis(axis).label(value)

    def lookup(self, axis: str, value: Any) -> str | None:
        """The canonical label of `value` on `axis`, or None if the axis does not know it (axis must exist)."""
        return self.axis(axis).canonical(value)

    def canonical(self, axis: str, value: Any) -> str:
        """The canonical label of `value` on `axis`; ValueError naming the axis and what it accepts otherwise."""
        ax = self.axis(axis)
        found = ax.canonical(value)
        if found is None:
            raise ValueError(f"unknown {axis} label {value!r}; valid {axis} labels: {', '.join(ax.accepted())}")
        return found

    def comparable(self, axis: str, value: Any) -> str | None:
        """A stored value in the form two values compare in: canonical when known, else its stripped,
        lower-cased text (integers as digits); None stays None. Never raises (any axis name)."""
        if value is None:
            return None
        if axis in self.names:
            found = self.axis(axis).canonical(value)
            if found is not None:
                return found
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return str(int(value))
        return str(value).strip().lower()

    @staticmethod
    def format_key(cell: Mapping[str, Any]) -> str:
        """The key of a cell as given: ``axis=label`` over the sorted axes, joined by ``,`` ("" for none)."""
        return ",".join(f"{a}={v}" for a, v in sorted(cell.items()))

    @staticmethod
    def split_key(key: str) -> dict[str, str]:
        """Inverse of :meth:`format_key` (axes and labels stripped, not checked; "" -> {}).

        ValueError for a part without ``=`` or with an empty axis.
        """
        pairs: dict[str, str] = {}
        if not key:
            return pairs
        for part in str(key).split(","):
            axis, sep, label = part.partition("=")
            if not sep or not axis.strip():
                raise ValueError(f"bad cell key {key!r}: expected 'axis=label,axis=label'")
            pairs[axis.strip()] = label.strip()
        return pairs

    def cell_key(self, cell: Mapping[str, Any]) -> str:
        """The canonical key of a cell: every axis and label checked, labels canonical (ValueError otherwise)."""
        return self.format_key({a: self.canonical(a, v) for a, v in cell.items()})

    def parse_cell_key(self, key: str) -> dict[str, str]:
        """Inverse of :meth:`cell_key`: ``"lighting=dim,yaw=any"`` -> ``{"lighting": "dim", "yaw": "any"}``,
        labels canonical; ValueError for a malformed key, an unknown axis or label."""
        return {a: self.canonical(a, v) for a, v in self.split_key(key).items()}
