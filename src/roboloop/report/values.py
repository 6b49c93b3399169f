"""How the report reads a value: the cell column, numbers that may be missing, percentages."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["CELL", "as_number", "percent"]

CELL = "cell"
"""The column naming a grid cell (its canonical key) in every per-cell table of the report."""


def as_number(v: Any) -> float | None:
    """`v` as a finite float, or None (missing, not a number, infinite)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def percent(v: Any) -> str:
    """A rate in [0, 1] as a whole percentage, "-" when missing."""
    f = as_number(v)
    return "-" if f is None else f"{100 * f:.0f}%"
