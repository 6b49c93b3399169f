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
`(shuffle_buffer + block_samples + batch_size) * bytes per sample` plus `prefetch` raw blocks.

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

import math
import queue
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.utils.data

from roboloop import schema
from roboloop.stream import decode as _decode
from roboloop.stream.fields import (
    LINEAR,
    SCALARS,
    VIDEO,
    MissingFieldError,
    ResolvedField,
    StreamError,
    resolve_fields,
    schema_columns,
)
from roboloop.stream.index import (
    SegmentIndex,
    Span,
    epoch_segment_order,
    plan_blocks,
    read_index,
    resolve_source,
    shard_bounds,
)
from roboloop.stream.resample import latest_at, latest_indices, linear, window_positions
from roboloop.stream.shuffle import BatchShuffleBuffer
from roboloop.stream.transport import ShmLoader, ShmWriter

_META = ("episode_index", "frame_index", "timestamp")
_DEFAULT_BUFFER_BYTES = 256 << 20
_DEFAULT_SCALAR_BLOCK = 16384
_DEFAULT_CAMERA_BLOCK = 128


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
        fields: Mapping[str, Any],
        rate_hz: float,
        batch_size: int | None = None,
        shuffle: bool = True,
        shuffle_buffer: int | None = None,
        block_samples: int | None = None,
        prefetch: int = 2,
        seed: int = 0,
        drop_last: bool = False,
        on_missing: str = "error",
        include_meta: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
        time_tolerance_s: float = 1e-6,
        timeline: str = schema.TIMELINE,
    ) -> None:
        super().__init__()
        if rate_hz <= 0:
            raise ValueError(f"rate_hz must be > 0, got {rate_hz}")
        if on_missing not in ("error", "skip"):
            raise ValueError(f"on_missing must be 'error' or 'skip', got {on_missing!r}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
        self.dataset_name, requested = resolve_source(source, dataset=dataset, segments=segments)
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
        entry = self._dataset_entry()
        self.fields: list[ResolvedField] = resolve_fields(fields, schema_columns(entry.schema()))
        self.rate_hz = float(rate_hz)
        self.step_ns = int(round(1e9 / rate_hz))
        self.timeline = timeline
        self.index: SegmentIndex = read_index(entry, requested, self.step_ns, timeline)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.shuffle_buffer = shuffle_buffer
        has_camera = any(f.is_camera for f in self.fields)
        self.block_samples = int(block_samples or (_DEFAULT_CAMERA_BLOCK if has_camera else _DEFAULT_SCALAR_BLOCK))
        self.prefetch = max(1, int(prefetch))
        self.seed = int(seed)
        self.drop_last = drop_last
        self.on_missing = on_missing
        self.include_meta = include_meta
        self.tol_ns = int(round(time_tolerance_s * 1e9))
        self._rank, self._world = rank, world_size
        self._parent_ddp: tuple[int, int] | None = None
        self.epoch = 0
        self._shared_epoch = None  # a spawn-context RawValue when workers persist across epochs
        self.num_workers = 0  # for __len__; set by loader()
        self._shm_slots = 0  # > 0: workers hand batches over through a shared ring (set by loader())
        self.stats: dict[str, int] = {}

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
        opts: dict[str, Any] = {"batch_size": None}
        ring = bool(num_workers > 0 and shared_ring and self.batch_size)
        if num_workers > 0:
            ctx = torch.multiprocessing.get_context("spawn")
            opts.update(multiprocessing_context=ctx, persistent_workers=persistent_workers, prefetch_factor=prefetch_factor)
            if persistent_workers:
                self._shared_epoch = ctx.RawValue("q", self.epoch)
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
        state["_parent_ddp"] = _live_ddp() or self._parent_ddp
        if not self.url:
            raise StreamError("this stream has no catalog URL, so worker processes cannot connect; pass a Catalog or URL")
        return state

    def _dataset_entry(self):
        if self._entry is None:
            if self._client is None:
                from rerun.catalog import CatalogClient

                self._client = CatalogClient(self.url)
            names = self._client.dataset_names()
            if self.dataset_name not in names:
                from roboloop.catalog import UnknownDatasetError

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
        fetcher = _Fetcher(self._dataset_entry(), blocks, self.fields, self.index, self.timeline, self.prefetch)
        try:
            for spans, raws in fetcher:
                arrays = self._materialize(spans, raws, decoders, warned)
                if not arrays:
                    continue
                if pool is None:
                    pool = BatchShuffleBuffer(
                        batch_size=batch,
                        buffer=self._buffer_samples(arrays, batch),
                        max_block=self.block_samples,
                        shuffle=self.shuffle,
                        rng=rng,
                        drop_last=self.drop_last and self.batch_size is not None,
                    )
                self.stats["blocks"] += 1
                self.stats["samples"] += len(next(iter(arrays.values())))
                for out in pool.push(arrays):
                    yield from self._emit(out, writer)
            if pool is not None:
                for out in pool.finish():
                    yield from self._emit(out, writer)
        finally:
            fetcher.close()
            for d in decoders.values():
                d.close()

    def _buffer_samples(self, arrays: Mapping[str, np.ndarray], batch: int) -> int:
        if not self.shuffle:
            return 0
        if self.shuffle_buffer is not None:
            return int(self.shuffle_buffer)
        per_sample = sum(a.itemsize * (a.size // max(1, len(a))) for a in arrays.values() if len(a)) or 1
        return int(max(4 * batch, min(50_000, _DEFAULT_BUFFER_BYTES // per_sample)))

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

    # --- one block ---------------------------------------------------------------------------
    def _materialize(self, spans: list[Span], raws: dict[str, _decode.RawSegment], decoders, warned: set[str]) -> dict[str, np.ndarray] | None:
        ids = self.index.segment_ids
        kept: list[Span] = []
        for sp in spans:
            sid = ids[sp.seg]
            raw = raws[sid]
            missing = [f for f in self.fields if f.name not in raw.streams]
            if not missing:
                kept.append(sp)
                continue
            if self.on_missing == "error":
                raise MissingFieldError(missing[0].name, missing[0].path, [sid])
            if sid not in warned:
                warned.add(sid)
                self.stats["skipped_segments"] = self.stats.get("skipped_segments", 0) + 1
                warnings.warn(
                    f"segment {sid}: no data for field(s) {', '.join(f.name for f in missing)}; skipping its samples "
                    "(on_missing='skip')",
                    RuntimeWarning,
                    stacklevel=3,
                )
        if not kept:
            return None
        n = sum(sp.size for sp in kept)
        out: dict[str, np.ndarray] = {}
        if self.include_meta:
            out["episode_index"] = np.empty(n, np.int64)
            out["frame_index"] = np.empty(n, np.int64)
            out["timestamp"] = np.empty(n, np.float64)
        pos = 0
        for sp in kept:
            sid = ids[sp.seg]
            raw = raws[sid]
            start = int(self.index.start_ns[sp.seg])
            n_grid = int(self.index.num_samples[sp.seg])
            sl = slice(pos, pos + sp.size)
            if self.include_meta:
                k = np.arange(sp.k0, sp.k1, dtype=np.int64)
                out["episode_index"][sl] = sp.seg
                out["frame_index"][sl] = k
                out["timestamp"][sl] = k * (self.step_ns / 1e9)
            for f in self.fields:
                stream = raw.streams[f.name]
                positions, mask, lo, hi = window_positions(sp.k0, sp.k1, f.window, n_grid)
                grid = start + np.arange(lo, hi + 1, dtype=np.int64) * self.step_ns
                if mask is not None:
                    # no row yet at or before that time: not a real value
                    mask &= (start + positions * self.step_ns + self.tol_ns) >= stream.times[0]
                    _put(out, f"{f.name}_mask", sl, mask, n)
                if f.kind == SCALARS:
                    fn = linear if f.resample == LINEAR else latest_at
                    g = fn(stream.times, stream.values, grid, self.tol_ns)
                    vals = g if f.window is None else g[positions - lo]  # no window: positions - lo is 0..n-1
                    _put(out, f.name, sl, vals.astype(f.dtype, copy=False), n)
                else:
                    self._camera(f, sid, stream, grid, positions - lo, out, sl, n, decoders)
            pos += sp.size
        return out

    def _camera(self, f: ResolvedField, sid: str, stream, grid, rel, out, sl, n, decoders) -> None:
        rows = latest_indices(stream.times, grid, self.tol_ns)
        np.maximum(rows, 0, out=rows)
        per_pos = rows[rel]  # [m] or [m, K]: the source row shown at each output entry
        needed, first, inverse = np.unique(per_pos.reshape(-1), return_index=True, return_inverse=True)
        lead = per_pos.shape  # output entries of this span

        def target(j: int, h: int, w: int) -> np.ndarray:
            arr = out.get(f.name)
            if arr is None:
                arr = out[f.name] = np.empty((n,) + lead[1:] + (3, h, w), np.uint8)
            elif arr.shape[-2:] != (h, w):
                raise StreamError(f"field {f.name!r}: frame size {w}x{h} in segment {sid} differs from {arr.shape[-1]}x{arr.shape[-2]}")
            return arr[sl][np.unravel_index(int(first[j]), lead)]

        if f.kind == VIDEO:
            dec = decoders.get(f.name)
            if dec is None:
                dec = decoders[f.name] = _decode.VideoDecoder()

            def sink(j: int, frame) -> None:
                _decode.frame_to_chw(frame, target(j, frame.height, frame.width), dec._reformatter)

            dec.decode(f"{sid}|{f.name}", stream, needed, sink)
        else:
            for j, r in enumerate(needed):
                img = _decode.decode_image(stream.sample(int(r)))
                target(j, img.shape[1], img.shape[2])[...] = img
        if f.name not in out:
            raise StreamError(f"field {f.name!r}: no frame could be decoded in segment {sid}")
        # outputs showing the same source frame: copy from the one it was decoded into
        src = first[inverse]
        dup = np.flatnonzero(src != np.arange(len(src)))
        if len(dup):
            block = out[f.name][sl]
            flat = block.reshape((-1,) + block.shape[len(lead) :])
            flat[dup] = flat[src[dup]]


def _put(out: dict[str, np.ndarray], name: str, sl: slice, vals: np.ndarray, n: int) -> None:
    arr = out.get(name)
    if arr is None:
        arr = out[name] = np.empty((n,) + vals.shape[1:], dtype=vals.dtype)
    elif arr.shape[1:] != vals.shape[1:]:
        raise StreamError(f"field {name!r}: shape {vals.shape[1:]} differs from {arr.shape[1:]} in another segment")
    arr[sl] = vals


class _Fetcher:
    """Background thread fetching each block's segments from the catalog, `prefetch` blocks ahead.

    A segment split over consecutive blocks is fetched once and handed on.
    """

    _DONE = object()

    def __init__(self, entry, blocks: list[list[Span]], fields: list[ResolvedField], index: SegmentIndex, timeline: str, prefetch: int) -> None:
        self.entry, self.blocks, self.fields, self.index, self.timeline = entry, blocks, fields, index, timeline
        self.paths = sorted({f.path for f in fields})
        self.q: queue.Queue = queue.Queue(maxsize=prefetch)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="roboloop-stream-fetch", daemon=True)
        self.thread.start()

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        prev: dict[str, _decode.RawSegment] = {}
        try:
            for spans in self.blocks:
                if self.stop.is_set():
                    return
                ids = list(dict.fromkeys(self.index.segment_ids[sp.seg] for sp in spans))
                todo = [s for s in ids if s not in prev]
                raws = {s: prev[s] for s in ids if s in prev}
                if todo:
                    table = (
                        self.entry.filter_segments(todo)
                        .filter_contents(self.paths)
                        .reader(index=self.timeline)
                        .to_arrow_table()
                    )
                    raws.update(_decode.split_block(table, self.fields, todo, timeline=self.timeline))
                prev = raws
                if not self._put((spans, raws)):
                    return
            self._put(self._DONE)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            self._put(exc)

    def __iter__(self):
        while True:
            item = self.q.get()
            if item is self._DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
