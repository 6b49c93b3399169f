"""The up-front index (segment ids + time ranges) and the per-epoch work plan.

Only the index is read before iterating: one `get_index_ranges` call gives every
segment's `time` range. The output grid of a segment is `start + k * step` for
`k = 0 .. floor((end - start) / step)`. An epoch's plan is pure arithmetic on that index:

1. order the segments (a seeded permutation when shuffling, seeded by `(seed, epoch)`),
2. lay their grid samples end to end and cut the sequence into `world_size * num_workers`
   contiguous, equal (within one sample) shards, one per (DDP rank, DataLoader worker),
3. cut each shard into blocks of at most `block_samples` samples (a block may hold spans
   of several segments, and a long segment is split over consecutive blocks).

Every grid sample is in exactly one block of exactly one shard: exactly once per epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from roboloop import schema
from roboloop.stream.fields import UnknownSegmentError


@dataclass(frozen=True)
class Span:
    """Grid samples `k0 <= k < k1` of segment number `seg` (an index into the stream's segment list)."""

    seg: int
    k0: int
    k1: int

    @property
    def size(self) -> int:
        return self.k1 - self.k0


@dataclass
class SegmentIndex:
    """Segment ids with their time ranges (ns) and grid sizes at `step_ns`."""

    segment_ids: list[str]
    start_ns: np.ndarray  # int64
    end_ns: np.ndarray  # int64
    step_ns: int

    @cached_property
    def num_samples(self) -> np.ndarray:
        """Grid points per segment (computed once: read per span on the hot path)."""
        return (self.end_ns - self.start_ns) // self.step_ns + 1

    @property
    def total(self) -> int:
        return int(self.num_samples.sum()) if len(self.segment_ids) else 0


@dataclass(frozen=True)
class EpisodeSource:
    """Which episodes a stream reads: a dataset and its segment ids (None = every segment)."""

    dataset: str
    segment_ids: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not self.dataset or not isinstance(self.dataset, str):
            raise TypeError("EpisodeStream needs a dataset: source=(dataset, segment_ids) or dataset=...")
        if self.segment_ids is not None:
            ids = tuple(str(s) for s in self.segment_ids)
            if len(set(ids)) != len(ids):
                raise ValueError("segment ids must be unique")
            object.__setattr__(self, "segment_ids", ids)

    @classmethod
    def of(cls, source: Any = None, *, dataset: str | None = None, segments: Sequence[str] | None = None) -> EpisodeSource:
        """Normalize every accepted form into one `EpisodeSource`.

        Accepted: an `EpisodeSource`, `(dataset, segment_ids)`, a dataset name, any object
        with a `.dataset` attribute and `.train_ids` or `.segment_ids` (a curate selection),
        or `dataset=..., segments=...`.
        """
        if source is not None:
            if dataset is not None or segments is not None:
                raise TypeError("pass either source=... or dataset=/segments=, not both")
            if isinstance(source, EpisodeSource):
                return source
            if isinstance(source, str):
                dataset, segments = source, None
            elif isinstance(source, tuple) and len(source) == 2:
                dataset, segments = source
            elif hasattr(source, "dataset"):
                dataset = source.dataset
                for attr in ("train_ids", "segment_ids", "segments"):
                    ids = getattr(source, attr, None)
                    if ids is not None:
                        segments = ids
                        break
                else:
                    raise TypeError(f"{type(source).__name__} has .dataset but no .train_ids / .segment_ids")
            else:
                raise TypeError(
                    "source must be (dataset, segment_ids), a dataset name, or an object with .dataset and .train_ids/.segment_ids"
                )
        if hasattr(dataset, "name") and not isinstance(dataset, str):  # a DatasetEntry
            dataset = dataset.name
        return cls(str(dataset) if dataset else "", None if segments is None else tuple(segments))


def resolve_source(source: Any = None, *, dataset: str | None = None, segments: Sequence[str] | None = None) -> tuple[str, list[str] | None]:
    """(dataset name, segment ids or None for all): `EpisodeSource.of(...)` as a tuple."""
    src = EpisodeSource.of(source, dataset=dataset, segments=segments)
    return src.dataset, None if src.segment_ids is None else list(src.segment_ids)


def read_index(dataset_entry, segment_ids: list[str] | None, step_ns: int, timeline: str = schema.TIMELINE) -> SegmentIndex:
    """One metadata query: each segment's `timeline` range. Unknown segment ids raise, listing a few known ones."""
    src = dataset_entry if segment_ids is None else dataset_entry.filter_segments(list(segment_ids))
    table = src.get_index_ranges().to_arrow_table()
    start_col, end_col = f"{timeline}:start", f"{timeline}:end"
    if start_col not in table.column_names:
        raise ValueError(f"dataset {dataset_entry.name!r} has no {timeline!r} timeline (columns: {table.column_names})")
    ids = table.column(schema.SEGMENT_ID_COLUMN).to_pylist()
    starts = table.column(start_col).cast("int64").to_pylist()
    ends = table.column(end_col).cast("int64").to_pylist()
    ranges = {i: (s, e) for i, s, e in zip(ids, starts, ends) if s is not None and e is not None}
    if segment_ids is None:
        order = sorted(ranges)
    else:
        missing = [s for s in segment_ids if s not in ranges]
        if missing:
            known = sorted(dataset_entry.segment_ids())
            hint = ", ".join(known[:10]) + (" ..." if len(known) > 10 else "")
            raise UnknownSegmentError(
                f"{len(missing)} segment(s) not in dataset {dataset_entry.name!r} (or with no {timeline!r} data): "
                f"{', '.join(missing[:10])}; known segments: {hint or '(none)'}"
            )
        order = list(segment_ids)
    return SegmentIndex(
        segment_ids=order,
        start_ns=np.asarray([ranges[s][0] for s in order], dtype=np.int64),
        end_ns=np.asarray([ranges[s][1] for s in order], dtype=np.int64),
        step_ns=step_ns,
    )


def epoch_segment_order(num_segments: int, *, shuffle: bool, seed: int, epoch: int) -> np.ndarray:
    if not shuffle:
        return np.arange(num_segments)
    return np.random.default_rng([seed, epoch]).permutation(num_segments)


def shard_bounds(total: int, shard: int, num_shards: int) -> tuple[int, int]:
    """Contiguous, balanced cut of `total` samples: shard sizes differ by at most one."""
    return total * shard // num_shards, total * (shard + 1) // num_shards


def plan_blocks(
    num_samples: np.ndarray,
    *,
    order: np.ndarray,
    shard: int,
    num_shards: int,
    block_samples: int,
) -> list[list[Span]]:
    """The blocks of one shard: lists of spans, at most `block_samples` samples each."""
    sizes = num_samples[order]
    ends = np.cumsum(sizes)
    starts = ends - sizes
    total = int(ends[-1]) if len(ends) else 0
    lo, hi = shard_bounds(total, shard, num_shards)
    blocks: list[list[Span]] = []
    current: list[Span] = []
    room = block_samples
    first = int(np.searchsorted(ends, lo, side="right"))
    for pos in range(first, len(order)):
        s0 = int(starts[pos])
        if s0 >= hi:
            break
        a = max(lo, s0) - s0
        b = min(hi, int(ends[pos])) - s0
        seg = int(order[pos])
        while a < b:
            take = min(room, b - a)
            current.append(Span(seg, a, a + take))
            a += take
            room -= take
            if room == 0:
                blocks.append(current)
                current, room = [], block_samples
    if current:
        blocks.append(current)
    return blocks
