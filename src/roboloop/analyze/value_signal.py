"""The stored demonstration-value signal, read and summarised without the policy (no torch).

`roboloop.analyze.value` computes `signals.value` from a run and an evaluation (it loads the
policy: torch); the report and the CLI only read what it wrote and summarise it, which is this
module, so that `roboloop report` does not import torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from roboloop import schema

__all__ = ["describe", "stored_values", "uses_value"]


def describe(result: Any, k: int = 5) -> dict[str, Any]:
    """A summary of values (a mapping segment id -> value, or a `ValueResult`) for printing and the report:
    counts, quartiles, a histogram over [-1, 1] (8 bins: `bins`, `counts`) and the `k` lowest-valued demonstrations (`lowest`: (segment id, value), lowest first)."""
    values = dict(result) if isinstance(result, Mapping) else dict(result.values)
    vals = np.array(list(values.values()), dtype=float)
    edges = np.linspace(-1.0, 1.0, 9)
    counts = np.histogram(np.clip(vals, -1.0, 1.0), bins=edges)[0] if len(vals) else np.zeros(8, int)
    return {
        "demonstrations": len(vals),
        "negative": int((vals < 0).sum()),
        "quartiles": [float(q) for q in np.quantile(vals, [0.0, 0.25, 0.5, 0.75, 1.0])] if len(vals) else [],
        "bins": [(float(a), float(b)) for a, b in zip(edges[:-1], edges[1:])],
        "counts": [int(c) for c in counts],
        "lowest": sorted(values.items(), key=lambda kv: (kv[1], kv[0]))[:k],
    }


def stored_values(rows: Sequence[Mapping[str, Any]], run_id: str) -> dict[str, float]:
    """`signals.value` of the demonstrations (friendly segment-table rows) whose value came from run `run_id`."""
    value, source = (schema.friendly_column(schema.SIGNALS, n) for n in (schema.SIGNAL_VALUE, schema.SIGNAL_VALUE_RUN))
    return {r[schema.SEGMENT_ID]: float(r[value]) for r in rows if r.get(source) == run_id and r.get(value) is not None}


def uses_value(text: str | None) -> bool:
    """Whether a selection's query or order reads `signals.value` (it was curated by value)."""
    return bool(text) and schema.friendly_column(schema.SIGNALS, schema.SIGNAL_VALUE) in str(text)
