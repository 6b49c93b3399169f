"""`SegmentCache`: what a stream fetched from the catalog, kept within a memory budget for the next epochs.

The stream's known per-epoch cost is the catalog query (and the Arrow -> numpy split) of
every block. The cache keeps each fetched segment's raw rows (`decode.RawSegment`: scalar
values, compressed camera samples and their times; never decoded frames) so that epochs
after the first query only what is not cached. It starts empty (nothing is fetched before
the loop asks for it) and is filled by the fetch thread as blocks arrive.

Budget. `budget_bytes` bounds the bytes of the arrays it holds (each entry is compacted:
its arrays are copied out of the block-wide Arrow buffers, so what is counted is what is
held). An entry larger than the whole budget is not kept.

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

from roboloop.stream.decode import RawSegment, RawStream


def _own(a: np.ndarray | None) -> np.ndarray | None:
    """`a` as an array owning its memory (a view into a block's buffer would keep the whole block alive)."""
    if a is None:
        return None
    return a if a.flags.owndata and a.base is None else a.copy()


def raw_nbytes(raw: RawSegment) -> int:
    """Bytes of `raw`'s own rows (camera blobs counted by their rows' byte range): what `compact(raw)` holds."""
    total = 0
    for s in raw.streams.values():
        total += s.times.nbytes + (s.values.nbytes if s.values is not None else 0)
        if s.blob is not None and len(s):
            total += int(s.ends.max() - s.starts.min()) + s.starts.nbytes + s.ends.nbytes + (s.keyframes.nbytes if s.keyframes is not None else 0)
    return total


def compact(raw: RawSegment) -> tuple[RawSegment, int]:
    """A copy of `raw` holding only its own rows (camera blobs cut to their byte range), and its size in bytes."""
    streams: dict[str, RawStream] = {}
    total = 0
    for name, s in raw.streams.items():
        blob, starts, ends = s.blob, s.starts, s.ends
        if blob is not None and len(s):
            lo, hi = int(starts.min()), int(ends.max())
            blob, starts, ends = blob[lo:hi].copy(), starts - lo, ends - lo
        c = RawStream(_own(s.times), values=_own(s.values), blob=_own(blob), starts=_own(starts), ends=_own(ends), keyframes=_own(s.keyframes))
        total += sum(a.nbytes for a in (c.times, c.values, c.blob, c.starts, c.ends, c.keyframes) if a is not None)
        streams[name] = c
    return RawSegment(raw.segment_id, streams), total


class SegmentCache:
    """Segment id -> compacted raw rows, at most `budget_bytes` in all; counts hits, misses and dropped segments."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = max(0, int(budget_bytes))
        self._items: dict[str, tuple[RawSegment, int]] = {}
        self._lock = threading.Lock()
        self.nbytes = 0
        self.hits = self.misses = self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, segment_id: str) -> bool:
        return segment_id in self._items

    def get(self, segment_id: str) -> RawSegment | None:
        """The cached rows of `segment_id` (counted as a hit), or None (a miss)."""
        with self._lock:
            item = self._items.get(segment_id)
            if item is None:
                self.misses += 1
                return None
            self.hits += 1
            return item[0]

    def put(self, raw: RawSegment) -> RawSegment:
        """Keep `raw` if it fits in what is left of the budget (else count it as dropped); return the rows to use."""
        if self.budget_bytes <= 0:
            return raw
        with self._lock:
            old = self._items.pop(raw.segment_id, None)
            if old is not None:
                self.nbytes -= old[1]
            room = self.budget_bytes - self.nbytes
        size = raw_nbytes(raw)
        if size > room:
            with self._lock:
                self.dropped += 1
            return raw
        kept, size = compact(raw)
        with self._lock:
            if self.nbytes + size > self.budget_bytes:
                self.dropped += 1
                return raw
            self._items[raw.segment_id] = (kept, size)
            self.nbytes += size
        return kept

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.nbytes = 0

    def info(self) -> dict[str, int]:
        """`{"bytes", "budget_bytes", "segments", "hits", "misses", "dropped"}`."""
        return {"bytes": self.nbytes, "budget_bytes": self.budget_bytes, "segments": len(self._items),
                "hits": self.hits, "misses": self.misses, "dropped": self.dropped}
