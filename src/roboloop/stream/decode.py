"""From one fetched Arrow table to per-segment numpy streams, and camera decoding.

`split_block` turns the reader output of a block of segments (rows = union of the
fields' times, columns null where a field has no row) into one `RawSegment` per
segment: for each field, its own row times (int64 ns) and values, or for cameras the
encoded samples as zero-copy slices of the Arrow buffer.

`VideoDecoder` decodes only the H.264 frames a block needs: from the keyframe at or
before the first needed frame, straight through, converting just the needed frames to
RGB; it keeps one open decoder per (segment, field), so the next block of the same
segment continues where this one stopped instead of seeking back to a keyframe.
"""

from __future__ import annotations

import io
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import av
import av.video.reformatter
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from roboloop import schema
from roboloop.stream.fields import LINEAR, SCALARS, VIDEO, ResolvedField


@dataclass
class RawStream:
    """One field's rows in one segment."""

    times: np.ndarray  # int64 ns, sorted
    values: np.ndarray | None = None  # scalars: [n, D]
    blob: np.ndarray | None = None  # cameras: flat uint8 buffer
    starts: np.ndarray | None = None  # cameras: byte range of each row's sample
    ends: np.ndarray | None = None
    keyframes: np.ndarray | None = None  # video: bool per row

    def __len__(self) -> int:
        return len(self.times)

    def sample(self, i: int) -> bytes:
        return self.blob[self.starts[i] : self.ends[i]].tobytes()


@dataclass
class RawSegment:
    segment_id: str
    streams: dict[str, RawStream] = field(default_factory=dict)  # field name -> rows (absent: no data)


def _combine(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    return col


def _valid_mask(arr: pa.Array) -> np.ndarray:
    if arr.null_count == 0:
        return np.ones(len(arr), dtype=bool)
    return pc.is_valid(arr).to_numpy(zero_copy_only=False)


def _list_offsets(arr: pa.Array) -> np.ndarray:
    return np.asarray(arr.offsets, dtype=np.int64)


def _scalar_values(arr: pa.Array, rows: np.ndarray, out_dtype: np.dtype, name: str, segment_id: str) -> np.ndarray:
    """[n, D] values of list<number> rows (one row = one logged vector)."""
    offsets = _list_offsets(arr)
    flat = arr.values
    if flat.null_count:
        flat = pc.fill_null(flat, np.nan)
    flat = flat.to_numpy(zero_copy_only=False)
    starts = offsets[rows]
    widths = offsets[rows + 1] - starts
    if len(widths) == 0:
        return np.empty((0, 0), dtype=out_dtype)
    d = int(widths[0])
    if np.any(widths != d):
        raise ValueError(f"field {name!r}: rows of different widths {sorted(set(widths.tolist()))[:5]} in segment {segment_id}")
    n = len(rows)
    s0 = int(starts[0])
    if n == 1 or np.all(np.diff(starts) == d):
        vals = flat[s0 : s0 + n * d].reshape(n, d)
    else:
        vals = flat[starts[:, None] + np.arange(d)]
    return vals.astype(out_dtype, copy=False)


def _blob_ranges(arr: pa.Array, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For list<list<uint8>> (one blob per row) or list<binary>: flat buffer and byte ranges of each row's first blob."""
    outer = _list_offsets(arr)
    inner_arr = arr.values
    first = outer[rows]
    if pa.types.is_list(inner_arr.type) or pa.types.is_large_list(inner_arr.type):
        inner = _list_offsets(inner_arr)
        flat = inner_arr.values.to_numpy(zero_copy_only=False)
    elif pa.types.is_binary(inner_arr.type) or pa.types.is_large_binary(inner_arr.type):
        buffers = inner_arr.buffers()
        off_dtype = np.int64 if pa.types.is_large_binary(inner_arr.type) else np.int32
        inner = np.frombuffer(buffers[1], dtype=off_dtype)[inner_arr.offset : inner_arr.offset + len(inner_arr) + 1].astype(np.int64)
        flat = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.empty(0, np.uint8)
    else:
        raise TypeError(f"unsupported blob column type {arr.type}")
    return flat, inner[first], inner[first + 1]


def split_block(table: pa.Table, fields: Sequence[ResolvedField], segment_ids: Sequence[str], *, timeline: str = schema.TIMELINE) -> dict[str, RawSegment]:
    """Split one reader table (several segments) into per-segment, per-field numpy rows."""
    out = {s: RawSegment(s) for s in segment_ids}
    if table.num_rows == 0:
        return out
    seg_col = _combine(table.column(schema.SEGMENT_ID_COLUMN))
    times_all = _combine(table.column(timeline)).cast(pa.int64()).to_numpy(zero_copy_only=False)
    if len(segment_ids) == 1:
        groups = {segment_ids[0]: np.arange(table.num_rows)}
    else:
        enc = pc.dictionary_encode(seg_col)
        codes = enc.indices.to_numpy(zero_copy_only=False)
        names = enc.dictionary.to_pylist()
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
        groups = {names[c]: order[bounds[c] : bounds[c + 1]] for c in range(len(names))}
    columns = {}
    for f in fields:
        if f.column in table.column_names:
            arr = _combine(table.column(f.column))
            kf = _combine(table.column(f.keyframe_column)) if f.keyframe_column and f.keyframe_column in table.column_names else None
            columns[f.name] = (arr, _valid_mask(arr), kf)
    for seg, rows in groups.items():
        if seg not in out:
            continue
        t = times_all[rows]
        if len(t) > 1 and np.any(np.diff(t) < 0):
            o = np.argsort(t, kind="stable")
            rows, t = rows[o], t[o]
        for f in fields:
            if f.name not in columns:
                continue
            arr, valid, kf = columns[f.name]
            r = rows[valid[rows]]
            if len(r) == 0:
                continue
            ft = times_all[r]
            if f.kind == SCALARS:
                dtype = np.float64 if f.resample == LINEAR else f.dtype
                out[seg].streams[f.name] = RawStream(ft, values=_scalar_values(arr, r, dtype, f.name, seg))
            else:
                blob, starts, ends = _blob_ranges(arr, r)
                keyframes = None
                if f.kind == VIDEO:
                    keyframes = _keyframes(kf, r, blob, starts, ends)
                out[seg].streams[f.name] = RawStream(ft, blob=blob, starts=starts, ends=ends, keyframes=keyframes)
    return out


def _keyframes(kf: pa.Array | None, rows: np.ndarray, blob: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    if kf is not None:
        valid = _valid_mask(kf)
        if valid[rows].all():
            offsets = _list_offsets(kf)
            flat = kf.values.to_numpy(zero_copy_only=False)
            return flat[offsets[rows]].astype(bool)
    # No (or incomplete) keyframe column: find IDR NAL units in the Annex-B samples.
    return np.array([_has_idr(blob[s:e]) for s, e in zip(starts, ends)], dtype=bool)


def _has_idr(sample: np.ndarray) -> bool:
    data = sample.tobytes()
    i = data.find(b"\x00\x00\x01")
    while i >= 0 and i + 3 < len(data):
        if data[i + 3] & 0x1F == 5:
            return True
        i = data.find(b"\x00\x00\x01", i + 3)
    return False


# --- cameras ---------------------------------------------------------------------------------



def frame_to_chw(frame, out: np.ndarray, reformatter) -> None:
    """Write a decoded av.VideoFrame into `out` ([3, H, W] uint8) without an HWC round trip."""
    g = reformatter.reformat(frame, format="gbrp")
    h, w = out.shape[1], out.shape[2]
    for c, plane in zip((1, 2, 0), g.planes):  # gbrp planes are G, B, R
        out[c] = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:h, :w]


@dataclass
class _Session:
    ctx: object
    next_row: int  # the next packet row this context expects (it has decoded all before it)


class VideoDecoder:
    """Decode needed H.264 frames of one field, keeping open decoders per segment (LRU)."""

    def __init__(self, codec: str = "h264", max_sessions: int = 8) -> None:
        self.codec = codec
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self.reformatter = av.video.reformatter.VideoReformatter()
        self.frames_decoded = 0

    def _new_ctx(self):
        ctx = av.CodecContext.create(self.codec, "r")
        ctx.thread_count = 1
        return ctx

    def decode(self, key: str, raw: RawStream, needed: np.ndarray, sink: Callable[[int, object], None]) -> None:
        """Decode rows `needed` (sorted, unique) and call `sink(j, av_frame)` for `needed[j]`.

        Packets are fed in row order from the keyframe at or before each needed frame
        (or from where this segment's open decoder stopped, when that is closer); only
        needed frames reach `sink` (and thus RGB conversion).
        """
        n = len(needed)
        if n == 0:
            return
        kf_rows = np.flatnonzero(raw.keyframes)
        sess = self._sessions.pop(key, None)
        j = 0
        while j < n:
            target = int(needed[j])
            p = int(np.searchsorted(kf_rows, target, side="right")) - 1
            kstart = int(kf_rows[p]) if p >= 0 else 0
            if sess is None or sess.next_row > target:
                sess = _Session(self._new_ctx(), kstart)
            elif sess.next_row < kstart:
                sess.next_row = kstart  # an IDR resets the decoder: skip the GOPs in between
            pending: deque[int] = deque()
            while sess.next_row <= target:
                r = sess.next_row
                frames = sess.ctx.decode(av.Packet(raw.sample(r)))
                pending.append(r)
                sess.next_row = r + 1
                for frame in frames:
                    got = pending.popleft()
                    self.frames_decoded += 1
                    while j < n and int(needed[j]) == got:
                        sink(j, frame)
                        j += 1
            if pending:  # the decoder holds frames back: drain it (this context is then spent)
                for frame in sess.ctx.decode(None):
                    got = pending.popleft()
                    self.frames_decoded += 1
                    while j < n and int(needed[j]) == got:
                        sink(j, frame)
                        j += 1
                sess = None
                if j < n and int(needed[j]) <= target:
                    raise RuntimeError(f"video {key}: frame {target} could not be decoded")
        if sess is not None:
            self._sessions[key] = sess
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)

    def close(self) -> None:
        self._sessions.clear()


def decode_image(data: bytes) -> np.ndarray:
    """Decode a JPEG/PNG blob to [3, H, W] uint8."""
    with Image.open(io.BytesIO(data)) as im:
        rgb = np.asarray(im.convert("RGB"))
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


__all__ = ["RawSegment", "RawStream", "VideoDecoder", "decode_image", "frame_to_chw", "split_block"]
