"""One block of an epoch: fetched from the catalog in the background, resampled and decoded into arrays.

`BlockFetcher` runs one catalog query per block (`filter_segments` + `filter_contents` +
`reader(index=timeline)`) in a background thread, `prefetch` blocks ahead.
`BlockMaterializer` turns a block's raw rows into per-sample arrays on the output grid
(vectorized resampling for scalars, H.264 / JPEG decoding for cameras, windows + masks,
meta columns). Neither knows about epochs, shards, workers or batches (`dataset.py` does).
"""

from __future__ import annotations

import queue
import threading
import warnings

import numpy as np

from roboloop.stream import decode as _decode
from roboloop.stream.fields import LINEAR, SCALARS, VIDEO, MissingFieldError, ResolvedField, StreamError
from roboloop.stream.index import SegmentIndex, Span
from roboloop.stream.resample import latest_at, latest_indices, linear, window_positions


class BlockMaterializer:
    """Arrays of one block's samples: every field resampled onto the grid, cameras decoded."""

    def __init__(self, fields: list[ResolvedField], index: SegmentIndex, *, step_ns: int, tol_ns: int, include_meta: bool, on_missing: str) -> None:
        self.fields, self.index = fields, index
        self.step_ns, self.tol_ns = step_ns, tol_ns
        self.include_meta, self.on_missing = include_meta, on_missing

    def materialize_cached(self, spans: list[Span], raws: dict[str, _decode.RawSegment], cached: dict[str, dict[str, np.ndarray]], cache,
                           sample_bytes: int | None, decoders, warned: set[str], stats: dict[str, int], tried: set[str]) -> list[dict[str, np.ndarray]]:
        """`materialize` through a `SegmentCache`, as a list of pieces whose concatenation equals `materialize`'s arrays
        (the shuffle buffer takes them without the concatenation): a cached segment's spans are slices of its arrays;
        an uncached one is materialized whole and offered to the cache when its estimated size (`sample_bytes` per
        sample) fits, else as before. `tried`: segments already offered this epoch. Empty when every span was skipped."""
        ids = self.index.segment_ids
        pieces: list[dict[str, np.ndarray] | None] = []
        run: list[Span] = []
        for sp in spans:
            sid = ids[sp.seg]
            arrays = cached.get(sid) or cache.peek(sid)
            if arrays is None and sid not in tried:
                tried.add(sid)
                arrays = self._whole(sp.seg, raws[sid], cache, sample_bytes, decoders, warned, stats)
            if arrays is None:
                run.append(sp)
                continue
            if run:
                pieces.append(self.materialize(run, raws, decoders, warned, stats))
                run = []
            pieces.append({k: v[sp.k0 : sp.k1] for k, v in arrays.items()})
        if run:
            pieces.append(self.materialize(run, raws, decoders, warned, stats))
        return [p for p in pieces if p]

    def _whole(self, seg: int, raw: _decode.RawSegment, cache, sample_bytes: int | None, decoders, warned, stats) -> dict[str, np.ndarray] | None:
        """All samples of segment `seg` (kept in `cache` if they fit), or None when it cannot be cached (too big, a field missing)."""
        n = int(self.index.num_samples[seg])
        if any(f.name not in raw.streams and f.fill is None for f in self.fields):
            return None  # on_missing handles it in `materialize`
        if sample_bytes is not None and n * sample_bytes > cache.room():
            cache.drop()
            return None
        arrays = self.materialize([Span(seg, 0, n)], {raw.segment_id: raw}, decoders, warned, stats)
        if arrays is not None:
            cache.put(raw.segment_id, arrays)
        return arrays

    def materialize(self, spans: list[Span], raws: dict[str, _decode.RawSegment], decoders, warned: set[str], stats: dict[str, int]) -> dict[str, np.ndarray] | None:
        """Resample and decode one block's spans into arrays of its samples (None if every span was skipped)."""
        ids = self.index.segment_ids
        kept: list[Span] = []
        for sp in spans:
            sid = ids[sp.seg]
            raw = raws[sid]
            missing = [f for f in self.fields if f.name not in raw.streams and f.fill is None]
            if not missing:
                kept.append(sp)
                continue
            if self.on_missing == "error":
                raise MissingFieldError(missing[0].name, missing[0].path, [sid])
            if sid not in warned:
                warned.add(sid)
                stats["skipped_segments"] = stats.get("skipped_segments", 0) + 1
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
                if f.name not in raw.streams:  # a field with `fill` this segment does not record
                    lead = (sp.size,) if f.window is None else (sp.size, len(f.window))
                    _put(out, f.name, sl, np.zeros((*lead, f.fill), f.dtype), n)
                    if f.window is not None:
                        _put(out, f"{f.name}_mask", sl, np.zeros(lead, bool), n)
                    continue
                stream = raw.streams[f.name]
                positions, mask, lo, hi = window_positions(sp.k0, sp.k1, f.window, n_grid)
                grid = start + np.arange(lo, hi + 1, dtype=np.int64) * self.step_ns
                if mask is not None:
                    # no row yet at or before that time: not a real value
                    mask &= (start + positions * self.step_ns + self.tol_ns) >= stream.times[0]
                    _put(out, f"{f.name}_mask", sl, mask, n)
                if f.kind == SCALARS:
                    fn = linear if f.resample == LINEAR else latest_at
                    g = fn(stream.times, stream.values, grid, self.tol_ns).astype(f.dtype, copy=False)
                    if f.window is None:  # positions - lo is 0..n-1
                        _put(out, f.name, sl, g, n)
                    else:  # gathered straight into the output (converted first: fewer bytes to move)
                        np.take(g, positions - lo, axis=0, mode="clip",  # in range; "raise" would buffer `out`
                                out=_slot(out, f.name, sl, positions.shape[1:] + g.shape[1:], g.dtype, n))
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
                _decode.frame_to_chw(frame, target(j, frame.height, frame.width), dec.reformatter)

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


def put_unless_stopped(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Put `item` on a bounded queue, giving up (False) once `stop` is set: a producer thread never hangs on a full queue."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _slot(out: dict[str, np.ndarray], name: str, sl: slice, tail: tuple[int, ...], dtype, n: int) -> np.ndarray:
    """The rows `sl` of output array `name` (`[n, *tail]`, allocated on first use) to write a span's values into."""
    arr = out.get(name)
    if arr is None:
        arr = out[name] = np.empty((n, *tail), dtype=dtype)
    elif arr.shape[1:] != tuple(tail):
        raise StreamError(f"field {name!r}: shape {tuple(tail)} differs from {arr.shape[1:]} in another segment")
    return arr[sl]


def _put(out: dict[str, np.ndarray], name: str, sl: slice, vals: np.ndarray, n: int) -> None:
    _slot(out, name, sl, vals.shape[1:], vals.dtype, n)[...] = vals


class BlockFetcher:
    """Background thread fetching each block's segments from the catalog, `prefetch` blocks ahead.

    A segment split over consecutive blocks is fetched once and handed on. With a `cache`
    (`roboloop.stream.cache.SegmentCache`), a segment it holds is not queried: its cached
    arrays are handed on instead. Items: `(spans, raw rows by segment id, cached arrays by segment id)`.
    """

    _DONE = object()

    def __init__(self, entry, blocks: list[list[Span]], fields: list[ResolvedField], index: SegmentIndex, timeline: str, prefetch: int,
                 cache=None) -> None:
        self.entry, self.blocks, self.fields, self.index, self.timeline = entry, blocks, fields, index, timeline
        self.cache = cache
        self.paths = sorted({f.path for f in fields})
        self.q: queue.Queue = queue.Queue(maxsize=prefetch)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="roboloop-stream-fetch", daemon=True)
        self.thread.start()

    def _put(self, item) -> bool:
        return put_unless_stopped(self.q, item, self.stop)

    def _run(self) -> None:
        prev: dict[str, _decode.RawSegment] = {}
        prev_cached: dict[str, dict[str, np.ndarray]] = {}
        try:
            for spans in self.blocks:
                if self.stop.is_set():
                    return
                ids = list(dict.fromkeys(self.index.segment_ids[sp.seg] for sp in spans))
                raws = {s: prev[s] for s in ids if s in prev}
                cached = {s: prev_cached[s] for s in ids if s in prev_cached}  # a split segment is counted once
                todo = []
                for s in ids:
                    if s not in raws and s not in cached:
                        hit = self.cache.get(s) if self.cache is not None else None
                        if hit is None:
                            todo.append(s)
                        else:
                            cached[s] = hit
                if todo:
                    table = (
                        self.entry.filter_segments(todo)
                        .filter_contents(self.paths)
                        .reader(index=self.timeline)
                        .to_arrow_table()
                    )
                    raws.update(_decode.split_block(table, self.fields, todo, timeline=self.timeline))
                prev, prev_cached = raws, cached
                if not self._put((spans, raws, cached)):
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
