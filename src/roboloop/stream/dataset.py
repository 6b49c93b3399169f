"""`EpisodeStream`: a streaming, multi-rate `IterableDataset` over catalog segments.

    from roboloop.stream import EpisodeStream, Field

    stream = EpisodeStream(
        catalog,                                   # Catalog, CatalogClient or catalog URL
        ("aloha", train_ids),                      # or a curate selection, or dataset=/segments=
        fields={
            "state": "/robot/joint_positions",                             # latest-at, float32 [B, 14]
            "action": Field("/robot/joint_targets", window=range(0, 10)),  # [B, 10, 14] + action_mask
            "top": Field("/cameras/top"),                                  # H.264 -> uint8 [B, 3, H, W]
        },
        rate_hz=50,
        batch_size=256,
    )
    for epoch in range(n):
        stream.set_epoch(epoch)
        for batch in stream.loader(num_workers=2):
            ...

How it streams
--------------
Construction reads the dataset schema (fields are checked; an unknown path lists the
available ones) and the index: each segment's `time` range (`get_index_ranges`). Nothing
else. Each epoch, the grid samples of all segments are ordered (segments permuted by
`(seed, epoch)` when shuffling), cut into one contiguous shard per (DDP rank, DataLoader
worker) and into blocks of at most `block_samples` samples. A background thread fetches
the next `prefetch` blocks from the catalog (`filter_segments` + `filter_contents` +
`reader(index="time")`, one query per block); the iterating thread resamples them with
vectorized numpy, decodes the camera frames the block needs, and pushes them through a
batch shuffle buffer (`shuffle_buffer` samples). Memory is bounded by
`(shuffle_buffer + block_samples + batch_size) * bytes per sample` plus `prefetch` raw blocks;
the constructor measures the bytes per sample on the first segment (windows scaled, never
allocated) and raises `StreamError` when that bound exceeds `MEMORY_FRACTION` of the memory
available, instead of running out of memory mid-epoch. It also refuses `segments=[]` and a
dataset with no episodes (`StreamConfig` refuses non-finite rates and impossible DDP ranks).

Fetch once (`cache_mb`, default 512 MB). What a process fetched is kept as ready samples
(each segment's arrays: fields resampled, windows, camera frames decoded) in a
`SegmentCache` within `cache_mb`, so epochs after the first neither query nor decode the
segments it holds. The cache is empty until the first iteration (nothing is fetched before the
loop asks). With DataLoader workers each worker caches its own shard in `cache_mb /
num_workers` (the budget is the total of the stream's process; with shuffling a worker's
shard changes every epoch, so its cache fills over a few epochs); the caches live as long as
the workers do (use `persistent_workers=True`). When the data exceeds the budget, what is
fetched after the cache is full is not kept and the resident part stays (the best choice for
a loop over epochs: see `roboloop.stream.cache`). The budget is cut to the
memory left after the buffers' bound. `cache_info()` says what it holds. Batches are the
same with or without it.

Semantics
---------
- The grid of a segment is `start + k / rate_hz` for `k = 0 .. floor((end - start) * rate_hz)`
  (`start`/`end`: the segment's first/last time over all its data). Every grid sample
  is emitted exactly once per epoch across all workers and ranks (shards differ in size
  by at most one sample; with `drop_last=False` each worker's last batch may be partial).
- Resampling per field: see `roboloop.stream.fields`. Values at grid points are exact
  (rows within `time_tolerance_s` after a grid time count as at it).
- Windows never cross an episode boundary: offsets outside the episode repeat the edge
  value and `<name>_mask` is False there. The mask is also False where the field has no
  row at or before that time yet.
- With `include_meta=True` (default) every batch also has `episode_index` (int64, into
  `stream.segment_ids`), `frame_index` (int64 grid step k) and `timestamp` (float64 s
  since the segment's start).
- `on_missing`: what to do with a segment that has no data for a field. `"error"`
  (default) raises `MissingFieldError` naming the field and segments; `"skip"` warns
  once per segment and leaves that segment's samples out of the epoch (so the
  exactly-once guarantee then covers the remaining segments).
- `set_epoch(e)` reseeds the segment order and the shuffle buffer. Call it before
  creating the epoch's iterator. With `loader(..., persistent_workers=True)` the workers
  are spawned once and live across epochs (no 2-3 s start-up per epoch); `set_epoch`
  reaches them through a shared value created for that loader.
- Workers (start method `spawn`; `fork` deadlocks with the catalog client) reconnect
  with `CatalogClient(url)`; the process that owns the embedded server must keep its
  `Catalog` alive. Torch threads are set to 1 in workers.
"""

from __future__ import annotations

import atexit
import dataclasses
import math
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.utils.data
from rerun.catalog import CatalogClient

from roboloop.catalog.client import UnknownDatasetError
from roboloop.stream import decode as _decode
from roboloop.stream.blocks import BlockFetcher, BlockMaterializer
from roboloop.stream.cache import SegmentCache
from roboloop.stream.config import StreamConfig
from roboloop.stream.fields import (
    ResolvedField,
    StreamError,
    resolve_fields,
    schema_columns,
)
from roboloop.stream.index import (
    EpisodeSource,
    SegmentIndex,
    Span,
    epoch_segment_order,
    plan_blocks,
    read_index,
    shard_bounds,
)
from roboloop.stream.shuffle import BatchShuffleBuffer
from roboloop.stream.transport import ShmLoader, ShmWriter

_META = ("episode_index", "frame_index", "timestamp")
_CACHE_KEYS = ("bytes", "budget_bytes", "segments", "hits", "misses", "dropped")
_DEFAULT_BUFFER_BYTES = 256 << 20
_DEFAULT_SCALAR_BLOCK = 16384
_DEFAULT_CAMERA_BLOCK = 128


MEMORY_FRACTION = 0.5
"""Share of the available memory (MemAvailable) one stream's buffers may take."""


def memory_limit_bytes() -> int | None:
    """`MEMORY_FRACTION` of the memory available now (Linux /proc/meminfo), or None when unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(int(line.split()[1]) * 1024 * MEMORY_FRACTION)
    except (OSError, ValueError, IndexError):
        return None
    return None


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _exit_now() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    os._exit(0)


def _end_worker_without_teardown() -> None:
    """Make this DataLoader worker process end without interpreter teardown (registered once per worker).

    When an epoch ends, the DataLoader joins its workers before the epoch's `StopIteration`, and a
    process holding torch and rerun spends ~1 s in teardown (module and thread clean-up): every
    non-persistent epoch waited for it. A worker holds nothing to finalize (its batches have been
    handed over; it only read the catalog), so its first exit handler (handlers run last-registered
    first; this one is registered when the worker starts iterating) flushes stdout/stderr and exits.
    Exit handlers a `worker_init_fn` registered are skipped.
    """
    global _exit_registered
    if not _exit_registered:
        atexit.register(_exit_now)
        _exit_registered = True


_exit_registered = False


def _live_ddp() -> tuple[int, int] | None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return None


class EpisodeStream(torch.utils.data.IterableDataset):
    """Stream resampled, batched samples of catalog segments into training. See the module doc."""

    def __init__(
        self,
        catalog: Any,
        source: Any = None,
        *,
        dataset: str | None = None,
        segments: Sequence[str] | None = None,
        config: StreamConfig | None = None,
        **options: Any,
    ) -> None:
        """`EpisodeStream(catalog, source, config=StreamConfig(...))`, or the config's fields as keywords
        (`fields=..., rate_hz=..., batch_size=..., seed=...`); not both."""
        super().__init__()
        if config is not None and options:
            raise TypeError(f"pass either config= or the options ({', '.join(sorted(options))}), not both")
        if config is None:
            if "fields" not in options or "rate_hz" not in options:
                raise TypeError("EpisodeStream needs fields= and rate_hz= (or config=StreamConfig(...))")
            known = set(StreamConfig.__dataclass_fields__)
            unknown = sorted(set(options) - known)
            if unknown:
                raise TypeError(f"unknown EpisodeStream option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
            config = StreamConfig(**options)  # ConfigError is a ValueError
        self.config = config
        self.source = EpisodeSource.of(source, dataset=dataset, segments=segments)
        self.dataset_name = self.source.dataset
        requested = None if self.source.segment_ids is None else list(self.source.segment_ids)
        self._catalog_obj = catalog if hasattr(catalog, "client") and hasattr(catalog, "url") else None
        self._client = self._catalog_obj.client if self._catalog_obj is not None else None
        if isinstance(catalog, str):
            self.url = catalog
        elif self._catalog_obj is not None:
            self.url = self._catalog_obj.url
        elif hasattr(catalog, "get_dataset"):  # a CatalogClient
            self._client = catalog
            self.url = getattr(catalog, "url", None)
        else:
            raise TypeError("catalog must be a roboloop Catalog, a rerun CatalogClient or a catalog URL")
        self._entry = None
        if requested is not None and not requested:
            raise StreamError(f"segments=[] selects no episode of {self.dataset_name!r}; pass segment ids, or None for every segment")
        entry = self._dataset_entry()
        columns = schema_columns(entry.schema())
        if not columns and not entry.segment_ids():
            raise StreamError(f"dataset {self.dataset_name!r} has no episodes yet (0 segments): nothing to stream; collect or import episodes first")
        self.fields: list[ResolvedField] = resolve_fields(config.fields, columns)
        self.rate_hz = config.rate_hz
        self.step_ns = int(round(1e9 / config.rate_hz))
        self.timeline = config.timeline
        self.index: SegmentIndex = read_index(entry, requested, self.step_ns, self.timeline)
        self.batch_size = config.batch_size
        self.shuffle = config.shuffle
        self.shuffle_buffer = config.shuffle_buffer
        has_camera = any(f.is_camera for f in self.fields)
        self.block_samples = int(config.block_samples or (_DEFAULT_CAMERA_BLOCK if has_camera else _DEFAULT_SCALAR_BLOCK))
        self.prefetch = max(1, int(config.prefetch))
        self.seed = int(config.seed)
        self.drop_last = config.drop_last
        self.on_missing = config.on_missing
        self.include_meta = config.include_meta
        self.tol_ns = int(round(config.time_tolerance_s * 1e9))
        self._rank, self._world = config.rank, config.world_size
        self._parent_ddp: tuple[int, int] | None = None
        self._blocks = BlockMaterializer(
            self.fields, self.index, step_ns=self.step_ns, tol_ns=self.tol_ns, include_meta=self.include_meta, on_missing=self.on_missing
        )
        self.cache_bytes = int(config.cache_mb * (1 << 20))
        self.sample_bytes = self._check_memory()
        self.epoch = 0
        self._shared_epoch = None  # a spawn-context RawValue when workers persist across epochs
        self.num_workers = 0  # for __len__; set by loader()
        self._shm_slots = 0  # > 0: workers hand batches over through a shared ring (set by loader())
        self.stats: dict[str, int] = {}
        self._cache: SegmentCache | None = None  # made by the first iteration in each process (lazy)
        self._cache_board = None  # a spawn-context RawArray: each worker's cache numbers, for cache_info()

    @classmethod
    def from_config(cls, catalog: Any, source: Any, config: StreamConfig) -> EpisodeStream:
        """The stream a saved `StreamConfig` describes, over `source` (see `EpisodeSource.of`)."""
        return cls(catalog, source, config=config)

    # --- public helpers ------------------------------------------------------------------------
    @property
    def segment_ids(self) -> list[str]:
        return self.index.segment_ids

    @property
    def num_samples(self) -> int:
        """Grid samples per epoch over all ranks and workers (before any `on_missing='skip'`)."""
        return self.index.total

    def set_epoch(self, epoch: int) -> None:
        """Reseed segment order and shuffle buffer (like `DistributedSampler.set_epoch`)."""
        self.epoch = int(epoch)
        if self._shared_epoch is not None:
            self._shared_epoch.value = self.epoch

    def _current_epoch(self) -> int:
        """The epoch to plan: the shared value in persistent workers, else our own copy."""
        return int(self._shared_epoch.value) if self._shared_epoch is not None else self.epoch

    def cache_info(self) -> dict[str, int]:
        """What the segment cache holds now: `bytes` (held), `budget_bytes`, `segments`, `hits`, `misses`, `dropped`.

        Summed over the DataLoader workers when a loader with workers ran (their caches live in
        the workers; each publishes its numbers after every block), else this process's cache.
        """
        board = self._cache_board
        if board is not None and any(board):
            vals = np.frombuffer(board, dtype=np.int64).reshape(-1, len(_CACHE_KEYS)).sum(axis=0)
            return dict(zip(_CACHE_KEYS, (int(v) for v in vals)))
        if self._cache is not None:
            return self._cache.info()
        return dict.fromkeys(_CACHE_KEYS, 0) | {"budget_bytes": self.cache_bytes}

    def _segment_cache(self, info) -> SegmentCache | None:
        """This process's cache (created on first use; a worker's budget is its share of `cache_bytes`)."""
        if self.cache_bytes <= 0:
            return None
        if self._cache is None:
            self._cache = SegmentCache(self.cache_bytes // (info.num_workers if info is not None else 1))
        return self._cache

    def _publish_cache(self, cache: SegmentCache | None, info) -> None:
        if cache is None or info is None or self._cache_board is None:
            return
        row = np.frombuffer(self._cache_board, dtype=np.int64).reshape(-1, len(_CACHE_KEYS))[info.id]
        row[:] = [cache.info()[k] for k in _CACHE_KEYS]

    def __len__(self) -> int:
        """Items this rank yields per epoch: batches if `batch_size`, else samples (assumes `num_workers`)."""
        rank, world = self._topology()
        nw = max(1, self.num_workers)
        total = self.index.total
        items = 0
        for w in range(nw):
            lo, hi = shard_bounds(total, rank * nw + w, world * nw)
            n = hi - lo
            if self.batch_size:
                items += n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)
            else:
                items += n
        return items

    def loader(
        self,
        num_workers: int = 0,
        *,
        prefetch_factor: int = 4,
        pin_memory: bool = False,
        shared_ring: bool = True,
        persistent_workers: bool = False,
        **kwargs: Any,
    ):
        """A DataLoader set up for this stream: ready-made batches, spawned workers.

        With `persistent_workers`, the workers are spawned once and reused every epoch;
        `set_epoch` still reshuffles them (create one loader, then per epoch call
        `set_epoch(e)` and iterate it).

        With workers and `shared_ring` (default), each worker hands batches over through
        one shared-memory ring instead of a new shared-memory segment per tensor per batch
        (see `roboloop.stream.transport`); the returned object iterates like the DataLoader
        and yields plain dicts of tensors.
        """
        self.num_workers = num_workers
        self._cache_board = None
        opts: dict[str, Any] = {"batch_size": None}
        ring = bool(num_workers > 0 and shared_ring and self.batch_size)
        if num_workers > 0:
            ctx = torch.multiprocessing.get_context("spawn")
            opts.update(multiprocessing_context=ctx, persistent_workers=persistent_workers, prefetch_factor=prefetch_factor)
            if persistent_workers:
                self._shared_epoch = ctx.RawValue("q", self.epoch)
            self._cache_board = ctx.RawArray("q", num_workers * len(_CACHE_KEYS)) if self.cache_bytes > 0 else None
        if not ring:
            opts["pin_memory"] = pin_memory
        opts.update(kwargs)
        self._shm_slots = prefetch_factor + 3 if ring else 0
        dl = torch.utils.data.DataLoader(self, num_workers=num_workers, **opts)
        return ShmLoader(dl, pin_memory=pin_memory) if ring else dl

    # --- pickling / connection -----------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_catalog_obj"] = None
        state["_client"] = None
        state["_entry"] = None
        state["_cache"] = None  # a worker fills its own
        state["_parent_ddp"] = _live_ddp() or self._parent_ddp
        if not self.url:
            raise StreamError("this stream has no catalog URL, so worker processes cannot connect; pass a Catalog or URL")
        return state

    def _dataset_entry(self):
        if self._entry is None:
            if self._client is None:
                self._client = CatalogClient(self.url)
            names = self._client.dataset_names()
            if self.dataset_name not in names:
                raise UnknownDatasetError(self.dataset_name, sorted(names))
            self._entry = self._client.get_dataset(self.dataset_name)
        return self._entry

    def _topology(self) -> tuple[int, int]:
        if self._rank is not None or self._world is not None:
            return int(self._rank or 0), int(self._world or 1)
        return _live_ddp() or self._parent_ddp or (0, 1)

    # --- iteration -----------------------------------------------------------------------------
    def plan(self, worker: int = 0, num_workers: int = 1) -> list[list[Span]]:
        """This epoch's blocks for one (rank, worker) shard."""
        rank, world = self._topology()
        order = epoch_segment_order(len(self.index.segment_ids), shuffle=self.shuffle, seed=self.seed, epoch=self._current_epoch())
        return plan_blocks(
            self.index.num_samples,
            order=order,
            shard=rank * num_workers + worker,
            num_shards=world * num_workers,
            block_samples=self.block_samples,
        )

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if info is not None:
            torch.set_num_threads(1)
            _end_worker_without_teardown()
        rank, _ = self._topology()
        blocks = self.plan(worker, num_workers)
        if not blocks:
            return
        rng = np.random.default_rng([self.seed, self._current_epoch(), rank, worker, 7])
        batch = self.batch_size or 256
        pool: BatchShuffleBuffer | None = None
        decoders: dict[str, _decode.VideoDecoder] = {}
        self.stats = {"samples": 0, "blocks": 0, "skipped_segments": 0}
        warned: set[str] = set()
        writer = ShmWriter(worker, self._shm_slots) if (info is not None and self._shm_slots and self.batch_size) else None
        cache = self._segment_cache(info)
        fetcher = BlockFetcher(self._dataset_entry(), blocks, self.fields, self.index, self.timeline, self.prefetch, cache)
        try:
            tried: set[str] = set()
            for spans, raws, cached in fetcher:
                if cache is None:
                    one = self._blocks.materialize(spans, raws, decoders, warned, self.stats)
                    pieces = [one] if one else []
                else:
                    pieces = self._blocks.materialize_cached(spans, raws, cached, cache, self.sample_bytes, decoders, warned, self.stats, tried)
                if not pieces:
                    continue
                if pool is None:
                    pool = BatchShuffleBuffer(
                        batch_size=batch,
                        buffer=self._buffer_samples(pieces[0], batch),
                        max_block=self.block_samples,
                        shuffle=self.shuffle,
                        rng=rng,
                        drop_last=self.drop_last and self.batch_size is not None,
                    )
                self.stats["blocks"] += 1
                self.stats["samples"] += sum(len(next(iter(p.values()))) for p in pieces)
                self._publish_cache(cache, info)
                for out in pool.push(pieces):
                    yield from self._emit(out, writer)
            if pool is not None:
                for out in pool.finish():
                    yield from self._emit(out, writer)
        finally:
            fetcher.close()
            for d in decoders.values():
                d.close()

    def _buffer_samples(self, arrays: Mapping[str, np.ndarray], batch: int) -> int:
        per_sample = sum(a.itemsize * (a.size // max(1, len(a))) for a in arrays.values() if len(a)) or 1
        return self._buffer_for(per_sample, batch)

    def _buffer_for(self, per_sample: int, batch: int) -> int:
        """Samples the shuffle buffer holds for samples of `per_sample` bytes."""
        if not self.shuffle:
            return 0
        if self.shuffle_buffer is not None:
            return int(self.shuffle_buffer)
        return int(max(4 * batch, min(50_000, _DEFAULT_BUFFER_BYTES // max(1, per_sample))))

    def _check_memory(self) -> int | None:
        """Bytes of one sample (measured on the first segment), after checking that the buffers fit in memory.

        A worker holds about `(shuffle_buffer + block_samples + batch_size)` samples at once.
        One sample of the first segment is materialized with every window cut to one step
        (so a huge window is never allocated), then scaled by the window lengths. Raises
        `StreamError` when the estimate exceeds `MEMORY_FRACTION` of the memory available
        (MemAvailable); returns None when it cannot be measured (no segment has every field).
        """
        per_sample = self._probe_sample_bytes()
        if per_sample is None:
            return None
        batch = self.batch_size or 256
        held = self._buffer_for(per_sample, batch) + self.block_samples + batch
        need = per_sample * held
        limit = memory_limit_bytes()
        if limit is not None and need > limit:
            windows = ", ".join(f"{f.name}: {len(f.window)} steps" for f in self.fields if f.window is not None) or "none"
            raise StreamError(
                f"this stream needs about {_human(need)} per worker ({_human(per_sample)} per sample x {held} samples held: "
                f"shuffle buffer + block_samples {self.block_samples} + batch {batch}), more than the {_human(limit)} it may use "
                f"({MEMORY_FRACTION:.0%} of the memory available); windows: {windows}. "
                "Shorten the windows, lower shuffle_buffer / block_samples / batch_size, or record smaller camera images"
            )
        if limit is not None and self.cache_bytes > limit - need:  # the cache never takes memory the buffers need
            self.cache_bytes = max(0, limit - need)
        return per_sample

    def _probe_sample_bytes(self) -> int | None:
        if not self.index.segment_ids:
            return None
        sid = self.index.segment_ids[0]
        single = [dataclasses.replace(f, window=None) for f in self.fields]
        table = (
            self._dataset_entry().filter_segments([sid]).filter_contents(sorted({f.path for f in single})).reader(index=self.timeline).to_arrow_table()
        )
        raws = _decode.split_block(table, single, [sid], timeline=self.timeline)
        if any(f.name not in raws[sid].streams for f in single):
            return None
        probe = BlockMaterializer(single, self.index, step_ns=self.step_ns, tol_ns=self.tol_ns, include_meta=self.include_meta, on_missing="error")
        decoders: dict[str, _decode.VideoDecoder] = {}
        try:
            out = probe.materialize([Span(0, 0, 1)], raws, decoders, set(), {})
        finally:
            for d in decoders.values():
                d.close()
        total = 0
        for f in self.fields:
            steps = 1 if f.window is None else len(f.window)
            total += out[f.name].nbytes * steps + (steps if f.window is not None else 0)  # + the bool mask
        for m in _META if self.include_meta else ():
            total += out[m].nbytes
        return int(total)

    def _emit(self, out: dict[str, np.ndarray], writer=None) -> Iterator[Any]:
        arrays: dict[str, np.ndarray] = {}
        for f in self.fields:
            a = out[f.name]
            if f.is_camera and f.dtype.kind == "f":
                a = np.multiply(a, np.asarray(1.0 / 255.0, dtype=f.dtype), dtype=f.dtype)
            arrays[f.name] = a
            if f.window is not None:
                arrays[f"{f.name}_mask"] = out[f"{f.name}_mask"]
        if self.include_meta:
            for m in _META:
                arrays[m] = out[m]
        if self.batch_size is not None:
            if writer is not None:
                yield writer.write(arrays, self.batch_size)
            else:
                yield {k: torch.from_numpy(v) for k, v in arrays.items()}
        else:
            tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}
            n = len(next(iter(tensors.values())))
            for i in range(n):
                yield {k: v[i] for k, v in tensors.items()}
