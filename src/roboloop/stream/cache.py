"""`SegmentCache`: what a stream fetched, kept as ready samples within a memory budget for the next epochs.

The stream's per-epoch costs are the catalog query of every block, the Arrow -> numpy split,
resampling and (for cameras) decoding. The cache keeps, per segment, the arrays of all its
grid samples exactly as the materializer makes them (fields resampled, windows and masks,
camera frames decoded, meta columns) so that a later epoch neither queries nor decodes a
cached segment: its block takes slices of them. It starts empty (nothing is fetched before the
loop asks for it) and is filled as segments are first materialized.

Budget. `budget_bytes` bounds the bytes of the arrays it holds (each entry owns its arrays:
what is counted is what is held). A segment is materialized whole (rather than only the
block's span of it) only when its estimated size fits in what is left.

When full. Epochs visit every segment once each, so "least recently used" is the worst
choice when the data exceeds the budget (with an unshuffled order it evicts every entry just
before it is needed again: no hit ever). In a loop over epochs the segment just fetched is the
one needed furthest ahead (a whole epoch away; every resident entry is needed again sooner, or
as soon in expectation with a shuffled order), so by Belady's rule it is the one to give up:
a segment that does not fit in what is left is not kept (counted as `dropped`), and the
resident part stays. Hit rate ~ budget / data size from the second epoch on, shuffled or not.
"""

from __future__ import annotations

import threading

import numpy as np


class SegmentCache:
    """Segment id -> the arrays of all its samples, at most `budget_bytes` in all; counts hits, misses and dropped segments."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = max(0, int(budget_bytes))
        self._items: dict[str, tuple[dict[str, np.ndarray], int]] = {}
        self._lock = threading.Lock()
        self.nbytes = 0
        self.hits = self.misses = self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, segment_id: str) -> bool:
        return segment_id in self._items

    def get(self, segment_id: str) -> dict[str, np.ndarray] | None:
        """The cached arrays of `segment_id` (counted as a hit), or None (a miss)."""
        with self._lock:
            item = self._items.get(segment_id)
            if item is None:
                self.misses += 1
                return None
            self.hits += 1
            return item[0]

    def peek(self, segment_id: str) -> dict[str, np.ndarray] | None:
        """The cached arrays of `segment_id` or None, not counted (the rest of a segment already counted this epoch)."""
        item = self._items.get(segment_id)
        return None if item is None else item[0]

    def room(self) -> int:
        """Bytes left in the budget."""
        return self.budget_bytes - self.nbytes

    def put(self, segment_id: str, arrays: dict[str, np.ndarray]) -> bool:
        """Keep `arrays` (which must own their memory) if they fit in what is left, else count a drop; True if kept."""
        size = sum(a.nbytes for a in arrays.values())
        with self._lock:
            if segment_id in self._items or self.nbytes + size > self.budget_bytes:
                self.dropped += segment_id not in self._items
                return segment_id in self._items
            self._items[segment_id] = (arrays, size)
            self.nbytes += size
        return True

    def drop(self) -> None:
        """Count a segment that was not kept for lack of room."""
        with self._lock:
            self.dropped += 1

    def info(self) -> dict[str, int]:
        """`{"bytes", "budget_bytes", "segments", "hits", "misses", "dropped"}`."""
        return {"bytes": self.nbytes, "budget_bytes": self.budget_bytes, "segments": len(self._items),
                "hits": self.hits, "misses": self.misses, "dropped": self.dropped}
