"""Derived signals and quality flags, written as layers (raw recordings are never touched).

Signals
-------
`refine(catalog, dataset)` reads the scalar streams the signals need for many segments
per query (``dataset.filter_segments(batch).filter_contents(entities).reader(index="time")``,
one DataFusion query per batch of `batch_size` segments, never one file at a time),
splits the Arrow result per segment, evaluates the signals (video streams are read per
segment and decoded only when a signal iterates its frames) and writes the values as
properties of the ``signals`` group into the segment's `signals` layer: one small
property-only RRD per segment (`datasets/<ds>/signals/<segment_id>.rrd`, same recording id
as the segment), registered with REPLACE. The `base` layer file is only read.

The signal interface (`@signal`, `EpisodeStreams`, `SkipSignal`, signals by import path and
entry point) is in `refine/signals.py`. Each layer records, per signal, the version of the
function that computed it (`signal_versions.<name>`). By default the segments computed are
those without a `signals` layer and those where a signal's recorded version differs from
the current one; naming signals (`signals=[...]`) also fills them in where they are
missing; `all_segments` recomputes every segment. A new layer version holds the new values
of the signals computed now (one that can no longer be computed disappears instead of
going stale) and carries over the values of every other signal. Every signals layer also
carries `signals.refined_at` (UTC, ISO 8601) and `signals.version`. A signal that needs
what an episode lacks (ALOHA's 14 joints, the cube, a camera) raises `SkipSignal`: no value
and no `signal_versions.<name>` is stored for it (it is not done), only `signal_skips.<name>`
(the version that skipped), and `RefineReport.not_applicable` holds its first reason and the
count. A skipped signal is retried when named (`signals=[...]`) or when its version changes; a
plain `refine` leaves it alone at the same version (another robot's episodes are not re-read
for ALOHA's joint signals every time). A default signal with no version on a segment whose
layer records other signals' versions (a first `refine --signal X`) is computed.

Built-in signals (joint positions are `/robot/joint_positions`: indexes 0-5 left arm,
6 left gripper, 7-12 right arm, 13 right gripper; arm joints in radians):

- `duration_s`: time of the last joint-position sample minus the first.
- `arm_activity_left`, `arm_activity_right`: joint travel of one arm, the sum over its 6
  arm joints and all steps of |q[t+1] - q[t]| (radians).
- `jerk_mean`, `jerk_peak`: joint jerk of the 12 arm joints, the third finite difference
  of positions divided by dt^3 (dt = median sample interval), in rad/s^3; mean and max of
  its absolute value over all joints and steps. Needs >= 4 samples.
- `idle_fraction`: fraction of the step intervals in which every arm joint speed
  |Δq|/dt is below `IDLE_SPEED` (0.05 rad/s): the whole robot stands still.
- `gripper_closes_left|right`, `gripper_opens_left|right`: gripper close / open events,
  counted by a hysteresis detector: a close is a drop of at least `GRIPPER_EVENT_DELTA`
  (0.1, grippers are normalized 0 closed .. 1 open) below the highest position since the
  last event; an open is a rise of at least that much above the lowest. Noise smaller
  than the delta never counts.
- `cube_height_peak`: highest cube z (metres) from `/state/cube_pose` ([x, y, z, qw, qx,
  qy, qz]); `cube_lift`: peak minus the first z. Skipped when the episode has no cube stream.

The joint signals (all but `duration_s`) are skipped on episodes whose joint positions are
not ALOHA's 14; `duration_s` on episodes without `/robot/joint_positions`. The image signal
`sharpness` is in `refine/images.py`.

Quality flags
-------------
`flag(catalog, dataset, segment_ids=... | where=..., reason=...)` writes the `quality`
layer: `quality.flagged = true`, `quality.reason`, `quality.flagged_at` (UTC ISO 8601).
`unflag` writes the same layer with `quality.flagged = false` (reason "unflagged: ..."
and the time of the change) rather than unregistering it: the verdict history is
visible in the segment table, the column keeps one type, and a restart restores it like
any other layer. Selections leave out segments whose `quality.flagged` is true unless
asked to include them.

Layer files are never rewritten (DESIGN.md, "Files are immutable; versions are new
files"): a recomputed `signals` layer or a new verdict is a NEW file
`datasets/<ds>/<layer>/<segment_id>.<n>.rrd` (`<segment_id>.rrd` is version 0; see
`Workspace.next_version_path`), registered with REPLACE; restore registers the newest
version only. Superseded versions are deleted when no catalog process can still read
them: at the start of an embedded catalog that is alone on the workspace, or by
`roboloop gc` (`Workspace.collect_garbage`).
"""

from __future__ import annotations

import fnmatch
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from roboloop import faults, rows, schema
from roboloop.catalog.client import Catalog
from roboloop.predicate import EmptySelectionError, flagged_ids_from_table
from roboloop.predicate.select import select_ids
from roboloop.record.episode import write_layer_version
from roboloop.refine.signals import (  # noqa: F401 - the interface's names, re-exported where they lived before signals.py
    SIGNALS,
    EpisodeStreams,
    RefineError,
    Signal,
    SignalFailedError,
    SignalImportError,
    SkipSignal,
    UnknownSignalError,
    compute_signals,
    owner,
    resolve_signals,
    signal,
)

SIGNALS_VERSION = 1
"""Bump when a built-in signal's definition changes (then `refine --all`)."""

LEFT_ARM = slice(0, 6)
LEFT_GRIPPER = 6
RIGHT_ARM = slice(7, 13)
RIGHT_GRIPPER = 13
ARM_JOINTS = np.r_[0:6, 7:13]
CUBE_Z = 2

IDLE_SPEED = 0.05
"""rad/s: below this on every arm joint, a step counts as idle."""
GRIPPER_EVENT_DELTA = 0.1
"""Normalized gripper travel that makes an open or close event."""

DEFAULT_BATCH = 250
WRITE_THREADS = 4


ALOHA_JOINTS = 14


def _joints(ep: EpisodeStreams, min_rows: int = 2) -> tuple[np.ndarray, np.ndarray] | None:
    """ALOHA's joint positions; SkipSignal on episodes of another robot, None when too short."""
    s = ep.get(schema.JOINT_POSITIONS)
    if s is None:
        raise SkipSignal(f"needs ALOHA's {ALOHA_JOINTS} joints in {schema.JOINT_POSITIONS}; the episode has no such stream")
    if s[1].shape[1] != ALOHA_JOINTS:
        raise SkipSignal(f"needs ALOHA's {ALOHA_JOINTS} joints in {schema.JOINT_POSITIONS}; the episode has {s[1].shape[1]}")
    return s if len(s[0]) >= min_rows else None


def _cube(ep: EpisodeStreams) -> np.ndarray | None:
    v = ep.values(schema.CUBE_POSE)
    if v is None:
        raise SkipSignal(f"needs the cube pose {schema.CUBE_POSE}; the episode has no such stream")
    return v if v.shape[1] > CUBE_Z else None


def _median_dt(t: np.ndarray) -> float | None:
    dt = float(np.median(np.diff(t)))
    return dt if dt > 0 else None


@signal(schema.SIGNAL_DURATION_S)
def duration_s(ep: EpisodeStreams) -> float | None:
    """Last minus first joint-position time, seconds."""
    t = ep.times(schema.JOINT_POSITIONS)
    if t is None:
        raise SkipSignal(f"needs {schema.JOINT_POSITIONS}; the episode has no such stream")
    return float(t[-1] - t[0])


def _arm_activity(ep: EpisodeStreams, arm: slice) -> float | None:
    s = _joints(ep)
    return None if s is None else float(np.abs(np.diff(s[1][:, arm], axis=0)).sum())


@signal(schema.SIGNAL_ARM_ACTIVITY_LEFT)
def arm_activity_left(ep: EpisodeStreams) -> float | None:
    """Left-arm joint travel: sum of |Δq| over its 6 joints, radians."""
    return _arm_activity(ep, LEFT_ARM)


@signal(schema.SIGNAL_ARM_ACTIVITY_RIGHT)
def arm_activity_right(ep: EpisodeStreams) -> float | None:
    """Right-arm joint travel: sum of |Δq| over its 6 joints, radians."""
    return _arm_activity(ep, RIGHT_ARM)


def _abs_jerk(ep: EpisodeStreams) -> np.ndarray | None:
    return ep.memo("abs_jerk", lambda: _compute_abs_jerk(ep))


def _compute_abs_jerk(ep: EpisodeStreams) -> np.ndarray | None:
    s = _joints(ep, min_rows=4)
    if s is None:
        return None
    dt = _median_dt(s[0])
    if dt is None:
        return None
    return np.abs(np.diff(s[1][:, ARM_JOINTS], n=3, axis=0)) / dt**3


@signal(schema.SIGNAL_JERK_MEAN)
def jerk_mean(ep: EpisodeStreams) -> float | None:
    """Mean |third difference / dt^3| over the 12 arm joints, rad/s^3."""
    j = _abs_jerk(ep)
    return None if j is None else float(j.mean())


@signal(schema.SIGNAL_JERK_PEAK)
def jerk_peak(ep: EpisodeStreams) -> float | None:
    """Peak |third difference / dt^3| over the 12 arm joints, rad/s^3."""
    j = _abs_jerk(ep)
    return None if j is None else float(j.max())


@signal(schema.SIGNAL_IDLE_FRACTION)
def idle_fraction(ep: EpisodeStreams) -> float | None:
    """Fraction of step intervals with every arm joint speed below IDLE_SPEED."""
    s = _joints(ep)
    if s is None:
        return None
    t, q = s
    dt = np.diff(t)
    dt = np.where(dt > 0, dt, np.inf)
    speed = np.abs(np.diff(q[:, ARM_JOINTS], axis=0)) / dt[:, None]
    return float(np.all(speed < IDLE_SPEED, axis=1).mean())


def gripper_events(g: np.ndarray, delta: float = GRIPPER_EVENT_DELTA) -> tuple[int, int]:
    """(closes, opens) of a gripper position series, by hysteresis with threshold `delta`."""
    closes = opens = 0
    state = 0  # 0 unknown, -1 closing (tracking the low), +1 opening (tracking the high)
    g = np.asarray(g, dtype=np.float64)
    if len(g) == 0 or float(g.max() - g.min()) < delta:
        return 0, 0
    hi = lo = float(g[0])
    for x in g.tolist():
        if state >= 0:
            hi = max(hi, x)
        if state <= 0:
            lo = min(lo, x)
        if state >= 0 and hi - x >= delta:
            closes += 1
            state, lo = -1, x
        elif state <= 0 and x - lo >= delta:
            opens += 1
            state, hi = 1, x
    return closes, opens


def _gripper(ep: EpisodeStreams, index: int, which: int) -> int | None:
    s = _joints(ep)
    if s is None:
        return None
    return ep.memo(("gripper_events", index), lambda: gripper_events(s[1][:, index]))[which]


@signal(schema.SIGNAL_GRIPPER_CLOSES_LEFT)
def gripper_closes_left(ep: EpisodeStreams) -> int | None:
    """Close events of the left gripper."""
    return _gripper(ep, LEFT_GRIPPER, 0)


@signal(schema.SIGNAL_GRIPPER_OPENS_LEFT)
def gripper_opens_left(ep: EpisodeStreams) -> int | None:
    """Open events of the left gripper."""
    return _gripper(ep, LEFT_GRIPPER, 1)


@signal(schema.SIGNAL_GRIPPER_CLOSES_RIGHT)
def gripper_closes_right(ep: EpisodeStreams) -> int | None:
    """Close events of the right gripper."""
    return _gripper(ep, RIGHT_GRIPPER, 0)


@signal(schema.SIGNAL_GRIPPER_OPENS_RIGHT)
def gripper_opens_right(ep: EpisodeStreams) -> int | None:
    """Open events of the right gripper."""
    return _gripper(ep, RIGHT_GRIPPER, 1)


@signal(schema.SIGNAL_CUBE_HEIGHT_PEAK, streams=[schema.CUBE_POSE])
def cube_height_peak(ep: EpisodeStreams) -> float | None:
    """Highest cube z, metres (skipped without a cube stream)."""
    v = _cube(ep)
    return None if v is None else float(np.nanmax(v[:, CUBE_Z]))


@signal(schema.SIGNAL_CUBE_LIFT, streams=[schema.CUBE_POSE])
def cube_lift(ep: EpisodeStreams) -> float | None:
    """Highest cube z minus its first z, metres (skipped without a cube stream)."""
    v = _cube(ep)
    return None if v is None else float(np.nanmax(v[:, CUBE_Z]) - v[0, CUBE_Z])


# --- batched reads -------------------------------------------------------------------------

def read_streams(dataset_entry, segment_ids: Sequence[str], entities: Sequence[str]) -> dict[str, EpisodeStreams]:
    """Read the scalar streams `entities` of many segments with one catalog query.

    Returns segment id -> EpisodeStreams (segments with none of the streams map to an
    empty EpisodeStreams). Rows of each stream are those where it has a value, sorted by time.
    """
    out = {seg: EpisodeStreams(seg) for seg in segment_ids}
    if not segment_ids or not entities:
        return out
    df = dataset_entry.filter_segments(list(segment_ids)).filter_contents(list(entities)).reader(index=schema.TIMELINE)
    table = df.to_arrow_table()
    if table.num_rows == 0:
        return out
    table = table.sort_by([(schema.SEGMENT_ID_COLUMN, "ascending"), (schema.TIMELINE, "ascending")])
    seg_col = table.column(schema.SEGMENT_ID_COLUMN)
    t_col = table.column(schema.TIMELINE)
    for entity in entities:
        name = f"{entity}:{schema.SCALARS_COMPONENT}"
        if name not in table.column_names:
            continue
        col = table.column(name)
        mask = pc.is_valid(col)
        if not pc.any(mask).as_py():
            continue
        vals = col.filter(mask).combine_chunks()
        segs = seg_col.filter(mask).to_numpy(zero_copy_only=False)
        times = pc.cast(t_col.filter(mask), pa.int64()).to_numpy(zero_copy_only=False) / 1e9
        lengths = pc.list_value_length(vals).to_numpy(zero_copy_only=False)
        flat = vals.flatten().to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        starts = np.concatenate([[0], np.flatnonzero(segs[1:] != segs[:-1]) + 1, [len(segs)]])
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        for a, b in zip(starts[:-1], starts[1:]):
            seg = str(segs[a])
            width = int(lengths[a])
            if not np.all(lengths[a:b] == width):
                raise RefineError(f"{seg}: {entity} rows have different widths; cannot compute signals")
            values = flat[offsets[a] : offsets[b]].reshape(b - a, width)
            if seg in out:
                out[seg].streams[entity] = (times[a:b], values)
    return out


def read_video(dataset_entry, segment_id: str, entity: str) -> tuple[np.ndarray, list[bytes]]:
    """(times_s, H.264 samples in time order) of one segment's video stream `entity` (empty when it has none)."""
    table = dataset_entry.filter_segments([segment_id]).filter_contents([entity]).reader(index=schema.TIMELINE).to_arrow_table()
    name = f"{entity}:{schema.VIDEO_SAMPLE_COMPONENT}"
    if table.num_rows == 0 or name not in table.column_names:
        return np.empty(0), []
    table = table.filter(pc.is_valid(table.column(name))).sort_by(schema.TIMELINE)
    times = pc.cast(table.column(schema.TIMELINE), pa.int64()).to_numpy(zero_copy_only=False) / 1e9
    col = table.column(name)
    rows_ = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    first = np.asarray(rows_.offsets, dtype=np.int64)[:-1]  # each row holds one sample: take its first blob
    blobs = rows_.values
    if pa.types.is_binary(blobs.type) or pa.types.is_large_binary(blobs.type):
        return times, [blobs[int(j)].as_py() for j in first]
    flat = blobs.values.to_numpy(zero_copy_only=False)
    offsets = np.asarray(blobs.offsets, dtype=np.int64)
    return times, [flat[offsets[j] : offsets[j + 1]].tobytes() for j in first]


def dataset_streams(dataset_entry) -> dict[str, set[str]]:
    """Entity path -> its (non-static) components in a dataset."""
    out: dict[str, set[str]] = {}
    for col in dataset_entry.schema().component_columns():
        if getattr(col, "is_static", False) or getattr(col, "is_property", False):
            continue
        out.setdefault(str(col.entity_path), set()).add(col.component)
    return out


def resolve_streams(sig: Signal, available: Mapping[str, set[str]]) -> tuple[list[str], list[str]]:
    """(scalar entities, video entities) a signal reads in a dataset; shell patterns match the dataset's entities."""
    scalars, videos = [], []
    for pattern in sig.streams:
        if any(ch in pattern for ch in "*?["):
            matches = sorted(e for e, comps in available.items() if fnmatch.fnmatchcase(e, pattern)
                             and comps & {schema.SCALARS_COMPONENT, schema.VIDEO_SAMPLE_COMPONENT})
        else:
            matches = [pattern]
        for entity in matches:
            (videos if schema.VIDEO_SAMPLE_COMPONENT in available.get(entity, ()) else scalars).append(entity)
    return scalars, videos


def image_streams(sig: Signal, available: Mapping[str, set[str]]) -> list[str]:
    """Image streams (PNG/JPEG, `log_image`) a signal's stream patterns match: frame signals decode only H.264 video."""
    return sorted(e for e, comps in available.items() if schema.ENCODED_IMAGE_COMPONENT in comps
                  and schema.VIDEO_SAMPLE_COMPONENT not in comps
                  and any(fnmatch.fnmatchcase(e, pattern) for pattern in sig.streams))


def reads_frames(sig: Signal, videos: Sequence[str] = ()) -> bool:
    """Whether a signal decodes camera frames: it reads a video stream, or declares streams under `/cameras`."""
    root = schema.CAMERA_ROOT
    return bool(videos) or any(p == root or p.startswith(root + "/") for p in sig.streams)


# --- refine --------------------------------------------------------------------------------

@dataclass
class RefineReport:
    dataset: str
    computed: list[str] = field(default_factory=list)
    skipped: int = 0  # segments left alone: they already had these signals at these versions
    skipped_signals: dict[str, int] = field(default_factory=dict)  # of those: signal -> segments where it skipped (SkipSignal)
    skips: dict[str, set[str]] = field(default_factory=dict)  # segment computed now -> signals that raised SkipSignal
    values: dict[str, dict[str, Any]] = field(default_factory=dict)  # values computed now (other signals' kept ones not included)
    signals: list[str] = field(default_factory=list)  # the signals evaluated
    not_applicable: dict[str, tuple[str, int]] = field(default_factory=dict)  # signal -> (first reason, episodes skipped)
    seconds: float = 0.0
    read_seconds: float = 0.0  # waiting for reads (the next batch is read in the background)
    compute_seconds: float = 0.0
    write_seconds: float = 0.0
    register_seconds: float = 0.0

    def stats(self) -> list[dict[str, Any]]:
        """Per signal over the computed segments: `signal` (friendly name), `n`, `min`, `mean`, `max` (finite values only)."""
        return signal_stats(self.values)


def signal_stats(values: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Summary of signal values (`segment id -> {signal: value}`), one row per numeric signal with a finite value."""
    by_name: dict[str, list[float]] = {}
    for row in values.values():
        for k, v in row.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                by_name.setdefault(k, []).append(float(v))
    out = []
    for k, vs in by_name.items():
        vs = [v for v in vs if math.isfinite(v)]
        if vs:
            out.append({"signal": schema.friendly_column(schema.SIGNALS, k), "n": len(vs), "min": min(vs), "mean": sum(vs) / len(vs), "max": max(vs)})
    return out


BOOKKEEPING = ("refined_at", "version")
"""`signals.*` properties every signals layer carries that are not signal values."""


@dataclass
class _Plan:
    """What one refine run evaluates: the signals, what they read, and each segment's previous values."""

    chosen: list[Signal]
    scalars: list[str]
    cameras: dict[str, tuple[str, ...]]
    todo: list[str]
    previous: dict[str, tuple[dict[str, Any], dict[str, str], dict[str, str]]]  # segment -> (signals.*, signal_versions.*, signal_skips.*)
    skipped_signals: dict[str, int] = field(default_factory=dict)  # left-alone segments where a chosen signal had skipped
    images: dict[str, list[str]] = field(default_factory=dict)  # frame signal -> PNG image streams it matched but cannot decode


def _plan(ds, table: pa.Table, dataset: str, signals: Sequence[str] | None, all_segments: bool,
          segment_ids: Sequence[str] | None) -> tuple[_Plan, int]:
    all_ids = table.column(schema.SEGMENT_ID).to_pylist() if table.num_rows else []
    available = dataset_streams(ds) if all_ids else {}
    resolved = {sig.name: (sig, *resolve_streams(sig, available)) for sig in resolve_signals(signals)}
    # Signals that decode video run only when named: decoding costs ~100x a scalar signal.
    chosen = [sig for sig, _, videos in resolved.values() if signals is not None or not reads_frames(sig, videos)]
    if segment_ids is not None:
        _check_ids(dataset, segment_ids, all_ids)
        todo = list(dict.fromkeys(segment_ids))
    elif all_segments:
        todo = sorted(all_ids)
    else:
        todo = sorted(_stale(table, all_ids, chosen, named=signals is not None))
    previous = _previous(table, set(all_ids))
    left = set(all_ids) - set(todo)
    skipped_signals = {}
    for sig in chosen:
        n = sum(1 for seg in left if sig.name in previous.get(seg, ({}, {}, {}))[2] and sig.name not in previous[seg][1])
        if n:
            skipped_signals[sig.name] = n
    plan = _Plan(chosen, sorted({e for sig in chosen for e in resolved[sig.name][1]}),
                 {sig.name: tuple(resolved[sig.name][2]) for sig in chosen}, todo,
                 {seg: previous[seg] for seg in todo if seg in previous}, skipped_signals,
                 {sig.name: image_streams(sig, available) for sig in chosen if reads_frames(sig, resolved[sig.name][2])})
    return plan, (len(all_ids) - len(todo) if segment_ids is None else 0)


def _stale(table: pa.Table, all_ids: list[str], chosen: list[Signal], *, named: bool) -> list[str]:
    """Segments without a signals layer, or whose recorded version of a chosen signal differs (or, when the
    signals were named, is missing). For the defaults, a signal with no version counts as current when it skipped
    at its current version or when the layer predates per-signal versions (it records no version nor skip)."""
    layers = table.column(schema.LAYERS).to_pylist() if table.num_rows else []

    def column(group: str, name: str) -> list[Any]:
        col = schema.friendly_column(group, name)
        return table.column(col).to_pylist() if col in table.column_names else [None] * len(all_ids)

    recorded = {sig.name: column(schema.SIGNAL_VERSIONS, sig.name) for sig in chosen}
    skipped = {sig.name: column(schema.SIGNAL_SKIPS, sig.name) for sig in chosen}
    prefixes = (schema.SIGNAL_VERSIONS + ".", schema.SIGNAL_SKIPS + ".")  # a layer with neither predates versions
    any_version = [any(v is not None for v in vals) for vals in zip(
        *(table.column(c).to_pylist() for c in table.column_names if c.startswith(prefixes)), strict=True)] or [False] * len(all_ids)

    def stale(s: Signal, i: int) -> bool:
        have = recorded[s.name][i]
        if have == s.version:
            return False
        if named or have is not None:
            return True
        return skipped[s.name][i] != s.version and any_version[i]

    return [seg for i, seg in enumerate(all_ids)
            if schema.SIGNALS_LAYER not in (layers[i] or []) or any(stale(s, i) for s in chosen)]


def _previous(table: pa.Table, segs: set[str]) -> dict[str, tuple[dict[str, Any], dict[str, str], dict[str, str]]]:
    """Each segment's current `signals.*` values, `signal_versions.*` and `signal_skips.*` (null ones left out)."""
    if not segs or table.num_rows == 0:
        return {}
    prefixes = {g: g + "." for g in (schema.SIGNALS, schema.SIGNAL_VERSIONS, schema.SIGNAL_SKIPS)}
    cols = [c for c in table.column_names if c.startswith(tuple(prefixes.values()))]
    out = {}
    wanted = table.select([schema.SEGMENT_ID, *cols])
    wanted = wanted.filter(pc.is_in(wanted.column(schema.SEGMENT_ID), value_set=pa.array(sorted(segs))))
    for row in wanted.to_pylist():
        groups: dict[str, dict[str, Any]] = {g: {} for g in prefixes}
        for c in cols:
            group, _, name = c.partition(".")
            if row[c] is not None:
                groups[group][name] = row[c]
        out[row[schema.SEGMENT_ID]] = (groups[schema.SIGNALS], groups[schema.SIGNAL_VERSIONS], groups[schema.SIGNAL_SKIPS])
    return out


def merged_layer(previous: tuple[dict[str, Any], ...] | None, new: Mapping[str, Any],
                 chosen: Sequence[Signal], stamp: str, skipped: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
    """The property groups of a segment's new signals layer: the chosen signals' new values (an old value
    that can no longer be computed disappears) over the other signals' previous ones, and every version.
    A chosen signal in `skipped` (it raised SkipSignal) gets no version, only its `signal_skips` entry."""
    old_values, old_versions, old_skips = (*(previous or ()), {}, {}, {})[:3]
    recomputed = {sig.name for sig in chosen}
    skipped = set(skipped)
    names = set(old_versions) | set(SIGNALS) | recomputed
    kept = {k: v for k, v in old_values.items() if k not in BOOKKEEPING and owner(k, names) not in recomputed}
    versions = {k: v for k, v in old_versions.items() if k not in skipped}
    versions.update({sig.name: sig.version for sig in chosen if sig.name not in skipped})
    skips = {k: v for k, v in old_skips.items() if k not in recomputed}
    skips.update({sig.name: sig.version for sig in chosen if sig.name in skipped})
    out = {
        schema.SIGNALS: {**kept, **new, "refined_at": stamp, "version": SIGNALS_VERSION},
        schema.SIGNAL_VERSIONS: versions,
    }
    if skips:
        out[schema.SIGNAL_SKIPS] = skips
    return out


def refine(
    catalog: Catalog,
    dataset: str,
    *,
    all_segments: bool = False,
    segment_ids: Sequence[str] | None = None,
    signals: Sequence[str] | None = None,
    batch_size: int = DEFAULT_BATCH,
    progress: Callable[[int, int], None] | None = None,
) -> RefineReport:
    """Compute signals for the segments of `dataset` that need them (all with `all_segments`).

    A segment needs them when it has no `signals` layer yet, when a signal's recorded version
    differs from its current one, or (for signals named in `signals`) when it lacks that signal.
    `segment_ids` restricts the work to those segments (always recomputed). `signals` picks
    signals by registered name or import path `package.module:function` (default: every
    registered signal except those that decode video, which run only when named). Values of
    signals not computed now are kept in the new layer version. `progress(done, total)` is
    called after each batch.

    Writers of the `signals` layer (`refine`, `write_signals`) take the dataset's `signals_lock` and see the layer's
    newest versions first (`Catalog.refresh_layer`): each carries the others' values over, so two at once never
    lose one's signals (the later version used to drop what the earlier one wrote; both had reported success).
    """
    with catalog.workspace.lock(signals_lock(dataset)):
        catalog.refresh_layer(dataset, schema.SIGNALS_LAYER)
        return _refine(catalog, dataset, all_segments=all_segments, segment_ids=segment_ids, signals=signals,
                       batch_size=batch_size, progress=progress)


def signals_lock(dataset: str) -> str:
    """The workspace lock (`Workspace.lock`) every writer of `dataset`'s `signals` layer holds while it reads and writes."""
    return f"signals-{dataset}"


def _refine(catalog: Catalog, dataset: str, *, all_segments: bool, segment_ids: Sequence[str] | None,
            signals: Sequence[str] | None, batch_size: int, progress: Callable[[int, int], None] | None) -> RefineReport:
    t0 = time.perf_counter()
    report = RefineReport(dataset)
    ds = catalog.dataset(dataset)
    plan, report.skipped = _plan(ds, catalog.segment_table(dataset), dataset, signals, all_segments, segment_ids)
    report.signals = [sig.name for sig in plan.chosen]
    report.skipped_signals = plan.skipped_signals
    stamp = rows.now_iso()
    if progress:
        progress(0, len(plan.todo))
    size = max(1, batch_size)
    batches = [plan.todo[i : i + size] for i in range(0, len(plan.todo), size)]

    def write(seg: str, values: dict[str, Any]) -> Path:
        groups = merged_layer(plan.previous.get(seg), values, plan.chosen, stamp, report.skips.get(seg, ()))
        return write_layer_version(catalog.workspace, dataset, schema.SIGNALS_LAYER, seg, groups)

    # The next batch is read while this one is computed and written; layer files are
    # written by a few threads (the RRD writer spends its time outside the GIL).
    with ThreadPoolExecutor(1) as reader, ThreadPoolExecutor(WRITE_THREADS) as writers:
        pending = reader.submit(read_streams, ds, batches[0], plan.scalars) if batches else None
        for k, batch in enumerate(batches):
            t1 = time.perf_counter()
            episodes = pending.result()
            if k + 1 < len(batches):
                pending = reader.submit(read_streams, ds, batches[k + 1], plan.scalars)
            t2 = time.perf_counter()
            for seg in batch:
                _evaluate(report, plan, episodes[seg], ds)
            t2b = time.perf_counter()
            paths = list(writers.map(lambda seg: write(seg, report.values[seg]), batch))
            t3 = time.perf_counter()
            catalog.register_files(dataset, paths, layer=schema.SIGNALS_LAYER, validate=False)
            faults.point("layer.registered")
            t4 = time.perf_counter()
            report.read_seconds += t2 - t1
            report.compute_seconds += t2b - t2
            report.write_seconds += t3 - t2b
            report.register_seconds += t4 - t3
            report.computed.extend(batch)
            if progress:
                progress(len(report.computed), len(plan.todo))
    report.seconds = time.perf_counter() - t0
    return report


def write_signals(catalog: Catalog, dataset: str, values: Mapping[str, Mapping[str, Any]],
                  versions: Mapping[str, int]) -> list[Path]:
    """Write signal values computed outside `refine` (e.g. `analyze.value`: `signals.value`) as a new version of each
    segment's `signals` layer, registered with REPLACE.

    `values`: segment id -> {key: value} (keys without the `signals.` prefix; a signal's provenance as `<name>_<what>`
    keys); `versions`: signal name -> version, recorded as `signal_versions.<name>`. Every other signal's value, version
    and skip of the segment is carried over, so a later `refine` keeps these and these keep refine's.
    """
    if not values:
        return []
    with catalog.workspace.lock(signals_lock(dataset)):  # see `refine`
        catalog.refresh_layer(dataset, schema.SIGNALS_LAYER)
        paths = _write_signals(catalog, dataset, values, versions)
    faults.point("layer.registered")
    return paths


def _write_signals(catalog: Catalog, dataset: str, values: Mapping[str, Mapping[str, Any]],
                   versions: Mapping[str, int]) -> list[Path]:
    previous = _previous(catalog.segment_table(dataset), set(values))
    stamp = rows.now_iso()
    paths = []
    for seg, new in values.items():
        old_values, old_versions, old_skips = previous.get(seg, ({}, {}, {}))
        groups: dict[str, dict[str, Any]] = {
            schema.SIGNALS: {**{k: v for k, v in old_values.items() if k not in BOOKKEEPING}, **new,
                             "refined_at": stamp, "version": SIGNALS_VERSION},
            schema.SIGNAL_VERSIONS: {**old_versions, **versions},
        }
        if old_skips:
            groups[schema.SIGNAL_SKIPS] = dict(old_skips)
        paths.append(write_layer_version(catalog.workspace, dataset, schema.SIGNALS_LAYER, seg, groups))
    catalog.register_files(dataset, paths, layer=schema.SIGNALS_LAYER, validate=False)
    return paths


def _evaluate(report: RefineReport, plan: _Plan, ep: EpisodeStreams, ds) -> None:
    ep.video = lambda entity: read_video(ds, ep.segment_id, entity)
    res = compute_signals(ep, plan.chosen, cameras=plan.cameras)
    report.values[ep.segment_id] = res.values
    for name, entities in plan.images.items():
        for entity in entities:
            key = f"{name} ({entity})"
            first, n = report.not_applicable.get(key, (f"{entity} holds images (log_image, PNG), not an H.264 video "
                                                        f"stream; record that camera with log_video_frame", 0))
            report.not_applicable[key] = (first, n + 1)
    report.skips[ep.segment_id] = set(res.skipped)
    for name, reason in res.skipped.items():
        first, n = report.not_applicable.get(name, (reason, 0))
        report.not_applicable[name] = (first, n + 1)


def _check_ids(dataset: str, ids: Sequence[str], known: Sequence[str]) -> None:
    known_set = set(known)
    missing = [s for s in ids if s not in known_set]
    if missing:
        sample = ", ".join(sorted(known)[:10]) + (" ..." if len(known) > 10 else "")
        raise RefineError(
            f"dataset {dataset!r} has no segment(s) {', '.join(missing)}; it has {len(known)} segments"
            + (f": {sample}" if known else "")
        )


# --- quality flags -------------------------------------------------------------------------

def _target_ids(catalog: Catalog, dataset: str, segment_ids: Sequence[str] | None, where: str | None) -> tuple[pa.Table, list[str]]:
    if (segment_ids is None or len(segment_ids) == 0) == (where is None or not where.strip()):
        raise RefineError("give either segment ids or a --where predicate (exactly one of them)")
    table = catalog.segment_table(dataset)
    if segment_ids:
        _check_ids(dataset, segment_ids, table.column(schema.SEGMENT_ID).to_pylist() if table.num_rows else [])
        return table, list(dict.fromkeys(segment_ids))
    ids = select_ids(table, where, include_flagged=True, dataset=dataset)
    if not ids:
        raise EmptySelectionError(f"no segment of {dataset!r} matches {where!r}; nothing was changed")
    return table, ids


def _write_quality(catalog: Catalog, dataset: str, ids: Sequence[str], props: dict[str, Any]) -> None:
    paths = [write_layer_version(catalog.workspace, dataset, schema.QUALITY_LAYER, seg, {schema.QUALITY: props}) for seg in ids]
    catalog.register_files(dataset, paths, layer=schema.QUALITY_LAYER, validate=False)
    faults.point("layer.registered")


def flag(
    catalog: Catalog,
    dataset: str,
    *,
    reason: str,
    segment_ids: Sequence[str] | None = None,
    where: str | None = None,
) -> list[str]:
    """Mark segments as flagged (by ids, or every segment matching `where`); returns their ids."""
    if not reason or not reason.strip():
        raise RefineError("a flag needs a reason (--reason TEXT)")
    _, ids = _target_ids(catalog, dataset, segment_ids, where)
    _write_quality(catalog, dataset, ids, {schema.QUALITY_FLAGGED: True, schema.QUALITY_REASON: reason.strip(), schema.QUALITY_FLAGGED_AT: rows.now_iso()})
    return ids


def unflag(
    catalog: Catalog,
    dataset: str,
    *,
    segment_ids: Sequence[str] | None = None,
    where: str | None = None,
    reason: str = "",
) -> list[str]:
    """Clear the flag of flagged segments (by ids, or matching `where`); returns the ids changed.

    Writes `quality.flagged = false` (reason "unflagged[: reason]", flagged_at = now);
    segments that were not flagged are left alone.
    """
    table, ids = _target_ids(catalog, dataset, segment_ids, where)
    flagged = set(flagged_ids_from_table(table))
    ids = [s for s in ids if s in flagged]
    if ids:
        text = "unflagged" + (f": {reason.strip()}" if reason and reason.strip() else "")
        _write_quality(catalog, dataset, ids, {schema.QUALITY_FLAGGED: False, schema.QUALITY_REASON: text, schema.QUALITY_FLAGGED_AT: rows.now_iso()})
    return ids


def flagged_ids(catalog: Catalog, dataset: str) -> list[str]:
    """Segments of `dataset` currently flagged."""
    return flagged_ids_from_table(catalog.segment_table(dataset))
