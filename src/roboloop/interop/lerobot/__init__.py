"""LeRobot datasets in and out: `import_lerobot` (v3.0, and v2.1) and `export_lerobot` (v3.0).

LeRobot is a peer, not a dependency: this module reads and writes its on-disk format with
pyarrow, PyAV and json only.

The LeRobot v3.0 layout (one fps per dataset; all episodes concatenated)::

    meta/info.json                              fps, features (dtype/shape/names), path templates
    meta/stats.json                             per-feature mean/std/min/max/count (+ quantiles)
    meta/tasks.parquet                          task_index + task (the pandas index)
    meta/episodes/chunk-000/file-000.parquet    one row per episode: length, tasks, where its rows
                                                and video frames are (data/*, videos/<key>/*)
    data/chunk-000/file-000.parquet             every frame of every episode (a row group per episode)
    videos/<key>/chunk-000/file-000.mp4         every episode's frames of one camera, back to back;
                                                the episode spans [from_timestamp, to_timestamp)

v2.1 (``meta/episodes.jsonl``, ``meta/tasks.jsonl``, one parquet and one mp4 per episode) is
read as well.

Import (`import_lerobot`)
-------------------------
Every episode becomes one segment of the target dataset (segment id
``lr-<source folder>-<hash>-<episode index>``), written by `EpisodeRecorder` and
registered in one call at the end (nothing is registered if any episode fails; files
already written are removed):

- each numeric feature becomes a scalar stream on the ``time`` timeline at the dataset's
  fps (row times = the ``timestamp`` column, snapped to ``k / fps``); its ``names`` become
  the series names. Key -> entity path: ``observation.state`` -> ``/robot/joint_positions``
  (`schema.JOINT_POSITIONS`), ``action`` -> ``/robot/joint_targets`` (`schema.JOINT_TARGETS`),
  ``next.reward`` -> ``/reward``; every other key ``k`` -> ``/lerobot/k`` (verbatim, dots kept).
  A dataset roboloop exported (``meta/roboloop.json``) puts each feature back at the entity
  path it was exported from (e.g. ``observation.environment_state`` -> the cube pose).
  Multi-dimensional features are flattened row-major; string features are skipped (listed in
  the report). The bookkeeping columns (timestamp, frame_index, episode_index, index,
  task_index) are not streams.
- each video key (and each ``image`` feature) becomes an H.264 `VideoStream` camera stream:
  ``observation.images.<cam>`` -> ``/cameras/<cam>``, any other key -> ``/lerobot/<key>``. The
  source (AV1, H.264, ... whatever PyAV decodes) is decoded and re-encoded with
  `roboloop.video.H264Encoder` (one keyframe per second): remuxing would break at episode
  boundaries inside one mp4 and LeRobot's default codec is AV1. An odd frame size is cropped
  by one pixel to the even size H.264 needs.
- properties: group ``episode`` (kind, task, source, lerobot_episode_index, control_hz,
  cameras, camera_hz, camera_size) and group ``lerobot`` (codebase_version, fps, robot_type,
  length, tasks, features, dataset, and source_segment_id for a dataset roboloop exported).

Export (`export_lerobot`)
-------------------------
A saved selection is streamed through `roboloop.stream.EpisodeStream` at ``fps`` (latest-at
resampling with the stream's own time tolerance, so a frame never takes a sample from after
its time, whether or not ``fps`` divides the recording's rates; no shuffle, episodes in
selection order, every grid point ``k / fps`` of every episode) and written as a v3.0 dataset: one data parquet (a row group per episode), one mp4
per camera (H.264, yuv420p, no B-frames, a keyframe at every episode start), episodes and
tasks parquet, info.json, stats.json (mean/std/min/max/count for every feature, plus
q01/q10/q50/q90/q99 for numeric ones; camera statistics per channel in [0, 1]). Entity path
-> key: `schema.lerobot_key` (the inverse of the import mapping; the cube pose becomes
``observation.environment_state``; another path ``/a/b`` becomes ``a.b``). Scalars are
written as float32. ``meta/roboloop.json`` records the provenance (selection, its digest, the
segment id of every episode, the entity path of every feature, the export config); importing
the export back puts every feature at the path it came from (without that file, the key
mapping above applies). The folder is written under a temporary
name and renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from roboloop import schema
from roboloop.catalog import Catalog
from roboloop.config import Config, ConfigError, check
from roboloop.episode import EpisodeRecorder
from roboloop.errors import RoboloopError
from roboloop.video import DEFAULT_CRF, H264Encoder
from roboloop.workspace import forget_checksum

log = logging.getLogger(__name__)

INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
PROVENANCE_PATH = "meta/roboloop.json"
"""Written by `export_lerobot` next to LeRobot's own metadata (LeRobot ignores it): selection, digest, segment ids."""
CODEBASE_VERSION = "v3.0"
BOOKKEEPING = ("timestamp", "frame_index", "episode_index", "index", "task_index")
"""Columns every LeRobot frame has; they are not imported as streams."""
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
_NUMERIC = {"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool"}


class LeRobotFormatError(RoboloopError):
    """A LeRobot dataset that cannot be read (missing or malformed file); the message names the file."""


class LeRobotExportError(RoboloopError):
    """An export that cannot be written where it was asked to go; the message names the folder."""


# --- configs ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImportConfig(Config):
    """How to import a local LeRobot dataset."""

    path: str
    """Root folder of the LeRobot dataset (holds meta/info.json)."""
    dataset: str
    """roboloop dataset that receives one segment per episode."""
    kind: str = schema.KIND_DEMO
    """`episode.kind` of the imported segments."""
    task: str | None = None
    """Override `episode.task` (default: the episode's first LeRobot task)."""
    crf: int = DEFAULT_CRF
    """H.264 quality of the re-encoded cameras (lower = better, larger)."""
    episodes: tuple[int, ...] | None = None
    """Import only these LeRobot episode indices (default: all)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(bool(self.path), "ImportConfig.path must name the LeRobot dataset folder")
        try:
            schema.validate_demo_dataset_name(self.dataset)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        check(bool(self.kind), "ImportConfig.kind must not be empty (e.g. 'demo')")
        check(0 <= self.crf <= 51, f"ImportConfig.crf must be in [0, 51], got {self.crf}")
        if self.episodes is not None:
            check(all(isinstance(e, int) and e >= 0 for e in self.episodes), f"ImportConfig.episodes must be indices >= 0, got {self.episodes}")
            check(len(set(self.episodes)) == len(self.episodes), f"ImportConfig.episodes has duplicates: {self.episodes}")


SPLITS = ("train", "holdout", "all")


@dataclass(frozen=True)
class ExportConfig(Config):
    """How to export a saved selection as a LeRobot v3.0 dataset."""

    selection: str
    """Saved selection name (`roboloop curate --dataset D --name NAME`)."""
    out_dir: str
    """Folder to create (must not exist unless `overwrite`)."""
    fps: int
    """The dataset's one frame rate: every stream is resampled (latest-at) onto k / fps."""
    split: str = "train"
    """Which episodes: the selection's `train` ids, `holdout` ids, or `all` (train then holdout, as splits train/test)."""
    features: dict[str, str] | None = None
    """LeRobot key -> entity path to export (default: every scalar and camera stream, keys from `schema.lerobot_key`)."""
    exclude: tuple[str, ...] = ()
    """Entity paths left out of the default features."""
    task: str | None = None
    """Task text for every episode (default: the segment's `episode.task`)."""
    robot_type: str | None = None
    """`robot_type` written to info.json."""
    crf: int = DEFAULT_CRF
    """H.264 quality of the mp4 files."""
    gop: int | None = None
    """Frames between keyframes (default: fps, one per second); every episode also starts with one."""
    overwrite: bool = False
    """Replace an existing `out_dir`, only when it is an earlier export (its `meta/roboloop.json`); never a file or workspace folder."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(
            isinstance(self.fps, int) and not isinstance(self.fps, bool) and self.fps > 0,
            f"ExportConfig.fps must be a positive integer (LeRobot stores one integer fps), got {self.fps!r}",
        )
        check(self.split in SPLITS, f"ExportConfig.split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        check(bool(self.selection), "ExportConfig.selection must name a saved selection")
        check(bool(self.out_dir), "ExportConfig.out_dir must name the folder to write")
        check(0 <= self.crf <= 51, f"ExportConfig.crf must be in [0, 51], got {self.crf}")
        check(self.gop is None or self.gop >= 1, f"ExportConfig.gop must be >= 1, got {self.gop}")
        if self.features is not None:
            check(bool(self.features), "ExportConfig.features must name at least one key -> entity path")
            reserved = sorted(k for k in self.features if k in BOOKKEEPING)
            check(not reserved, f"ExportConfig.features: {reserved} are LeRobot bookkeeping columns; choose other keys")


# --- reports -----------------------------------------------------------------------------------

@dataclass
class ImportReport:
    """What `import_lerobot` created."""

    dataset: str
    source: str
    codebase_version: str
    fps: int
    segment_ids: list[str] = field(default_factory=list)  # one per episode, in the order of episode_indices
    episode_indices: list[int] = field(default_factory=list)
    frames: int = 0
    streams: dict[str, str] = field(default_factory=dict)  # LeRobot key -> entity path (scalars)
    cameras: dict[str, str] = field(default_factory=dict)  # LeRobot key -> entity path (H.264)
    skipped_features: dict[str, str] = field(default_factory=dict)  # key -> reason
    seconds: float = 0.0


@dataclass
class ExportReport:
    """What `export_lerobot` wrote."""

    out_dir: Path
    selection: str
    dataset: str
    fps: int
    segment_ids: list[str] = field(default_factory=list)
    frames: int = 0
    features: dict[str, str] = field(default_factory=dict)  # LeRobot key -> entity path
    cameras: list[str] = field(default_factory=list)  # LeRobot video keys
    seconds: float = 0.0


Progress = Callable[[int, int], None]


# =============================================================================================
# reading a LeRobot dataset
# =============================================================================================

@dataclass
class _Episode:
    index: int
    length: int
    tasks: list[str]
    data_file: Path
    videos: dict[str, tuple[Path, float, float]]  # key -> (mp4, from_ts, to_ts)


@dataclass
class _Source:
    root: Path
    info: dict[str, Any]
    version: str
    fps: int
    episodes: list[_Episode]
    scalar_keys: list[str]
    video_keys: list[str]
    image_keys: list[str]
    skipped: dict[str, str]
    tasks: dict[int, str]
    source_segments: dict[int, str] = field(default_factory=dict)  # episode index -> roboloop segment id (our own exports)
    source_paths: dict[str, str] = field(default_factory=dict)  # feature key -> the entity path it was exported from (our own exports)

    @property
    def features(self) -> dict[str, dict]:
        return self.info["features"]


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise LeRobotFormatError(f"{path}: missing (is this a LeRobot dataset folder?)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LeRobotFormatError(f"{path}: not valid JSON: {exc}") from exc


def _read_parquet(path: Path, columns: Sequence[str] | None = None) -> pa.Table:
    if not path.is_file():
        raise LeRobotFormatError(f"{path}: missing (referenced by the dataset's metadata)")
    try:
        return pq.read_table(path, columns=list(columns) if columns is not None else None)
    except Exception as exc:
        raise LeRobotFormatError(f"{path}: unreadable parquet: {exc}") from exc


def _version_tuple(version: str) -> tuple[int, int]:
    m = re.match(r"^v?(\d+)\.(\d+)", str(version))
    if not m:
        raise ValueError(version)
    return int(m.group(1)), int(m.group(2))


def _read_source(root: Path, episodes_wanted: Sequence[int] | None = None) -> _Source:
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise LeRobotFormatError(f"{root}: no such folder")
    info_path = root / INFO_PATH
    info = _load_json(info_path)
    if not isinstance(info, dict):
        raise LeRobotFormatError(f"{info_path}: expected a JSON object")
    for key in ("fps", "features", "codebase_version"):
        if key not in info:
            raise LeRobotFormatError(f"{info_path}: no {key!r} entry")
    version = str(info["codebase_version"])
    try:
        major, minor = _version_tuple(version)
    except ValueError:
        raise LeRobotFormatError(f"{info_path}: unrecognised codebase_version {version!r}") from None
    fps = info["fps"]
    if not isinstance(fps, (int, float)) or fps <= 0 or int(fps) != fps:
        raise LeRobotFormatError(f"{info_path}: fps must be a positive integer, got {fps!r}")
    fps = int(fps)
    features = info["features"]
    if not isinstance(features, dict) or not features:
        raise LeRobotFormatError(f"{info_path}: 'features' must be a non-empty object")

    scalar_keys, video_keys, image_keys, skipped = [], [], [], {}
    for key, ft in features.items():
        if key in BOOKKEEPING:
            continue
        dtype = ft.get("dtype") if isinstance(ft, dict) else None
        if dtype == "video":
            video_keys.append(key)
        elif dtype == "image":
            image_keys.append(key)
        elif dtype in _NUMERIC:
            scalar_keys.append(key)
        else:
            skipped[key] = f"dtype {dtype!r} is not numeric, image or video"

    if major == 3:
        episodes, tasks = _read_v3_episodes(root, info, video_keys)
    elif (major, minor) == (2, 1) or (major == 2 and minor == 0):
        episodes, tasks = _read_v21_episodes(root, info, video_keys, fps)
    else:
        raise LeRobotFormatError(f"{info_path}: codebase_version {version} is not supported (v3.0 and v2.1 are)")
    if episodes_wanted is not None:
        by_index = {e.index: e for e in episodes}
        missing = [i for i in episodes_wanted if i not in by_index]
        if missing:
            raise LeRobotFormatError(f"{root}: no episode(s) {missing}; the dataset has {len(episodes)} episode(s)")
        episodes = [by_index[i] for i in episodes_wanted]
    if not episodes:
        raise LeRobotFormatError(f"{root}: the dataset has no episodes")

    # every referenced file must exist and open before anything is written
    for data_file in sorted({e.data_file for e in episodes}):
        if not data_file.is_file():
            raise LeRobotFormatError(f"{data_file}: missing (data file of episode(s) {[e.index for e in episodes if e.data_file == data_file]})")
        try:
            names = set(pq.read_schema(data_file).names)
        except Exception as exc:
            raise LeRobotFormatError(f"{data_file}: unreadable parquet: {exc}") from exc
        need = {"episode_index", *scalar_keys, *image_keys}
        lacking = sorted(need - names)
        if lacking:
            raise LeRobotFormatError(f"{data_file}: no column(s) {', '.join(lacking)} (declared in {INFO_PATH})")
    for mp4 in sorted({v[0] for e in episodes for v in e.videos.values()}):
        _probe_video(mp4)
    segments, paths = _read_provenance(root)
    return _Source(root, info, version, fps, episodes, scalar_keys, video_keys, image_keys, skipped, tasks, segments, paths)


def _read_provenance(root: Path) -> tuple[dict[int, str], dict[str, str]]:
    """(episode index -> original segment id, feature key -> original entity path) when roboloop exported
    the dataset (best effort: an unreadable file or entry is ignored with a warning)."""
    path = root / PROVENANCE_PATH
    if not path.is_file():
        return {}, {}
    try:
        prov = json.loads(path.read_text(encoding="utf-8"))
        ids = prov["segment_ids"]
        segments = {i: str(s) for i, s in enumerate(ids)}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return {}, {}
    features = prov.get("features") if isinstance(prov, dict) else None
    paths: dict[str, str] = {}
    for key, entity in (features.items() if isinstance(features, dict) else ()):
        if isinstance(entity, str) and _ENTITY.match(entity) and not entity.startswith("/__"):
            paths[str(key)] = entity
        else:
            log.warning("%s: ignoring feature %r -> %r (not an entity path)", path, key, entity)
    return segments, paths


_ENTITY = re.compile(r"^(/[A-Za-z0-9_.-]+)+$")


def _entity_for(src: _Source, key: str, *, camera: bool) -> str:
    """Entity path of feature `key`: where roboloop exported it from (round trip), else `schema.lerobot_entity`."""
    path = src.source_paths.get(key)
    if path is not None and camera == path.startswith(schema.CAMERA_ROOT + "/"):
        return path
    return schema.lerobot_entity(key, camera=camera)


def _read_tasks_parquet(path: Path) -> dict[int, str]:
    table = _read_parquet(path)
    names = table.column_names
    if "task_index" not in names:
        raise LeRobotFormatError(f"{path}: no 'task_index' column")
    task_col = "task" if "task" in names else next((n for n in names if n.startswith("__index_level_")), None)
    if task_col is None:
        raise LeRobotFormatError(f"{path}: no 'task' column (or pandas index)")
    return {int(i): str(t) for i, t in zip(table.column("task_index").to_pylist(), table.column(task_col).to_pylist())}


def _read_v3_episodes(root: Path, info: dict, video_keys: list[str]) -> tuple[list[_Episode], dict[int, str]]:
    files = sorted((root / EPISODES_DIR).glob("chunk-*/file-*.parquet"))
    if not files:
        raise LeRobotFormatError(f"{root / EPISODES_DIR}: no chunk-*/file-*.parquet episode metadata")
    tasks_path = root / TASKS_PATH
    tasks = _read_tasks_parquet(tasks_path) if tasks_path.is_file() else {}
    data_tpl = info.get("data_path") or DATA_PATH
    video_tpl = info.get("video_path") or VIDEO_PATH
    rows: list[dict] = []
    for f in files:
        table = _read_parquet(f)
        need = ["episode_index", "length", "data/chunk_index", "data/file_index"]
        for key in video_keys:
            need += [f"videos/{key}/{c}" for c in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")]
        lacking = [c for c in need if c not in table.column_names]
        if lacking:
            raise LeRobotFormatError(f"{f}: no column(s) {', '.join(lacking)}")
        cols = need + (["tasks"] if "tasks" in table.column_names else [])
        rows += table.select(cols).to_pylist()
    if any("tasks" not in r for r in rows) and not tasks:
        raise LeRobotFormatError(f"{tasks_path}: missing, and the episode metadata has no 'tasks' column")
    episodes = []
    for r in sorted(rows, key=lambda r: r["episode_index"]):
        data_file = root / data_tpl.format(chunk_index=r["data/chunk_index"], file_index=r["data/file_index"])
        videos = {}
        for key in video_keys:
            p = f"videos/{key}/"
            mp4 = root / video_tpl.format(video_key=key, chunk_index=r[p + "chunk_index"], file_index=r[p + "file_index"])
            videos[key] = (mp4, float(r[p + "from_timestamp"]), float(r[p + "to_timestamp"]))
        ep_tasks = [str(t) for t in (r.get("tasks") or [])]
        episodes.append(_Episode(int(r["episode_index"]), int(r["length"]), ep_tasks, data_file, videos))
    return episodes, tasks


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise LeRobotFormatError(f"{path}: missing")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError as exc:
                raise LeRobotFormatError(f"{path}:{n}: not valid JSON: {exc}") from exc
    return out


def _read_v21_episodes(root: Path, info: dict, video_keys: list[str], fps: int) -> tuple[list[_Episode], dict[int, str]]:
    tasks = {int(t["task_index"]): str(t["task"]) for t in _read_jsonl(root / "meta/tasks.jsonl")}
    chunks = int(info.get("chunks_size") or 1000)
    data_tpl = info.get("data_path") or "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
    video_tpl = info.get("video_path") or "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
    episodes = []
    for r in sorted(_read_jsonl(root / "meta/episodes.jsonl"), key=lambda r: r["episode_index"]):
        idx, length = int(r["episode_index"]), int(r["length"])
        chunk = idx // chunks
        data_file = root / data_tpl.format(episode_chunk=chunk, episode_index=idx)
        videos = {
            key: (root / video_tpl.format(episode_chunk=chunk, video_key=key, episode_index=idx), 0.0, length / fps)
            for key in video_keys
        }
        episodes.append(_Episode(idx, length, [str(t) for t in r.get("tasks") or []], data_file, videos))
    return episodes, tasks


def _probe_video(path: Path) -> None:
    import av

    if not path.is_file():
        raise LeRobotFormatError(f"{path}: missing (video file referenced by the episode metadata)")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise LeRobotFormatError(f"{path}: holds no video stream")
    except LeRobotFormatError:
        raise
    except Exception as exc:
        raise LeRobotFormatError(f"{path}: not a readable video: {exc}") from exc


# --- data columns -------------------------------------------------------------------------------

def _column_values(col: pa.ChunkedArray | pa.Array, key: str, where: Path) -> np.ndarray:
    """A numeric (possibly list-valued) column as float64 [N, D]."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    n = len(col)
    width = None
    while pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type):
        if not pa.types.is_fixed_size_list(col.type):
            lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
            if len(lengths) and (lengths.min() != lengths.max()):
                raise LeRobotFormatError(f"{where}: column {key!r} has rows of different lengths")
        if col.null_count:
            raise LeRobotFormatError(f"{where}: column {key!r} has null rows")
        col = pc.list_flatten(col)
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type)):
        raise LeRobotFormatError(f"{where}: column {key!r} is {col.type}, not numeric")
    values = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
    if n == 0:
        return np.zeros((0, 1))
    if values.size % n:
        raise LeRobotFormatError(f"{where}: column {key!r} does not have the same number of values per row")
    width = values.size // n
    return values.reshape(n, width)


def _feature_names(ft: Mapping[str, Any], width: int) -> list[str] | None:
    names = ft.get("names")
    if isinstance(names, Mapping):  # {"motors": [...]} style
        flat: list[str] = []
        for v in names.values():
            flat += [str(x) for x in (v if isinstance(v, (list, tuple)) else [v])]
        names = flat
    if isinstance(names, (list, tuple)):
        flat = []
        for v in names:
            flat += [str(x) for x in v] if isinstance(v, (list, tuple)) else [str(v)]
        if len(flat) == width:
            return flat
    return None


def _snap_times(ts: np.ndarray, fps: int) -> np.ndarray:
    """Times close to a frame k / fps become exactly k / fps (float32 timestamps otherwise drift)."""
    k = np.round(ts * fps)
    close = np.abs(ts * fps - k) < 1e-3
    return np.where(close, k / fps, ts)


# --- video -----------------------------------------------------------------------------------------

class _VideoReader:
    """Decodes one mp4 forwards; hands out the frames of consecutive [from, to) time spans."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._container = None
        self._frames: Iterator | None = None
        self._pending = None
        self._last_t = -math.inf

    def _open(self, seek_to: float | None = None) -> None:
        import av

        self.close()
        try:
            self._container = av.open(str(self.path))
            stream = self._container.streams.video[0]
            stream.codec_context.thread_count = 1
            if seek_to is not None and seek_to > 0 and stream.time_base is not None:
                self._container.seek(int(seek_to / stream.time_base), stream=stream, backward=True, any_frame=False)
            self._frames = self._container.decode(stream)
        except Exception as exc:
            raise LeRobotFormatError(f"{self.path}: cannot decode video: {exc}") from exc
        self._pending = None
        self._last_t = -math.inf

    def frames(self, t0: float, t1: float, fps: int) -> Iterator[tuple[float, np.ndarray]]:
        """(time since t0, RGB frame) of every frame with t0 <= t < t1 (half a frame of slack)."""
        eps = 0.5 / fps
        if self._frames is None or t0 < self._last_t - eps:
            self._open(seek_to=t0 if t0 > 2.0 else None)
        elif t0 - self._last_t > 5.0:
            self._open(seek_to=t0)
        counter = 0
        while True:
            frame = self._pending
            self._pending = None
            if frame is None:
                try:
                    frame = next(self._frames)
                except StopIteration:
                    return
                except Exception as exc:
                    raise LeRobotFormatError(f"{self.path}: cannot decode video: {exc}") from exc
            t = frame.time
            if t is None:
                t = self._last_t + 1.0 / fps if self._last_t > -math.inf else counter / fps
            counter += 1
            if t < t0 - eps:
                self._last_t = t
                continue
            if t >= t1 - eps:
                self._pending = frame
                return
            self._last_t = t
            yield t - t0, frame.to_ndarray(format="rgb24")

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
            self._frames = None


def _even(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    if h % 2 or w % 2:
        rgb = rgb[: h - h % 2, : w - w % 2]
    return np.ascontiguousarray(rgb)


class _CameraEncoder:
    """Re-encodes one episode's frames of one camera as H.264 samples with their times."""

    def __init__(self, fps: int, crf: int) -> None:
        self.fps, self.crf = fps, crf
        self.enc: H264Encoder | None = None
        self.times: list[float] = []
        self.samples: list = []
        self.size: tuple[int, int] | None = None

    def add(self, t: float, rgb: np.ndarray) -> None:
        rgb = _even(rgb)
        if self.enc is None:
            h, w = rgb.shape[:2]
            self.size = (w, h)
            self.enc = H264Encoder(w, h, self.fps, gop=self.fps, crf=self.crf)
        if self.times and t <= self.times[-1]:
            return  # a duplicate timestamp: keep the first frame
        self.times.append(t)
        self.samples += self.enc.encode(rgb)

    def finish(self) -> tuple[np.ndarray, list]:
        if self.enc is not None:
            self.samples += self.enc.flush()
        if len(self.samples) != len(self.times):
            raise RuntimeError(f"H.264 encoder produced {len(self.samples)} samples for {len(self.times)} frames")
        return np.asarray(self.times, dtype=np.float64), self.samples


def _decode_image_cell(cell: Any, key: str, where: Path) -> np.ndarray:
    import io

    from PIL import Image

    data = cell.get("bytes") if isinstance(cell, Mapping) else cell
    if not data:
        raise LeRobotFormatError(f"{where}: image feature {key!r} has a row without embedded bytes (external image files are not supported)")
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


# =============================================================================================
# import
# =============================================================================================

def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-_")
    return (s or "dataset")[:40]


def segment_id_for(root: Path, episode_index: int) -> str:
    """The segment id an imported episode gets: stable for one source folder, distinct across folders."""
    root = Path(root).expanduser().resolve()
    h = hashlib.sha256(str(root).encode("utf-8")).hexdigest()[:8]
    return schema.validate_segment_id(f"lr-{_slug(root.name)}-{h}-{episode_index:06d}")


def import_lerobot(
    catalog: Catalog,
    path: str | os.PathLike[str],
    dataset: str,
    *,
    kind: str = schema.KIND_DEMO,
    task: str | None = None,
    crf: int = DEFAULT_CRF,
    episodes: Sequence[int] | None = None,
    on_progress: Progress | None = None,
) -> ImportReport:
    """Import a local LeRobot dataset (v3.0 or v2.1) into `dataset`: one segment per episode.

    See the module docstring for the key -> entity path mapping and the properties
    written. Everything is checked before anything is written; any failure (a missing or
    malformed file, an undecodable video) raises `LeRobotFormatError` naming the file and
    leaves the workspace and the catalog without any of the new segments. Importing the
    same folder twice into one dataset is refused (the segment ids are derived from it).
    """
    cfg = ImportConfig(path=str(path), dataset=dataset, kind=kind, task=task, crf=crf, episodes=None if episodes is None else tuple(episodes))
    return import_from_config(catalog, cfg, on_progress=on_progress)


def import_from_config(catalog: Catalog, cfg: ImportConfig, *, on_progress: Progress | None = None) -> ImportReport:
    """`import_lerobot` driven by an `ImportConfig` (what the CLI calls)."""
    t_start = time.perf_counter()
    src = _read_source(Path(cfg.path), cfg.episodes)
    ws = catalog.workspace
    ids = [segment_id_for(src.root, e.index) for e in src.episodes]
    existing = [s for s in ids if ws.segment_path(cfg.dataset, schema.BASE_LAYER, s).exists()]
    if existing:
        raise LeRobotFormatError(
            f"{src.root}: {len(existing)} of its episode(s) are already imported into dataset {cfg.dataset!r} "
            f"(e.g. segment {existing[0]}); import into another dataset or remove those segments first"
        )
    report = ImportReport(dataset=cfg.dataset, source=str(src.root), codebase_version=src.version, fps=src.fps)
    report.skipped_features = dict(src.skipped)
    cams = {k: _entity_for(src, k, camera=True) for k in [*src.video_keys, *src.image_keys]}
    streams = {k: _entity_for(src, k, camera=False) for k in src.scalar_keys}
    clash = sorted(set(cams.values()) & set(streams.values())) or sorted(
        p for p in set(cams.values()) if list(cams.values()).count(p) > 1
    )
    if clash:
        raise LeRobotFormatError(f"{src.root / INFO_PATH}: features map onto the same entity path(s) {clash}")
    report.streams, report.cameras = streams, cams

    written: list[Path] = []
    data_cache: dict[Path, tuple[pa.Table, np.ndarray]] = {}
    readers: dict[str, _VideoReader] = {}  # video key -> reader of its current file
    try:
        for n, (ep, sid) in enumerate(zip(src.episodes, ids)):
            frames = _write_episode(ws.segment_path(cfg.dataset, schema.BASE_LAYER, sid), sid, src, ep, cfg, streams, cams, data_cache, readers)
            written.append(ws.segment_path(cfg.dataset, schema.BASE_LAYER, sid))
            report.frames += frames
            if on_progress:
                on_progress(n + 1, len(src.episodes))
            if len(data_cache) > 1:  # keep only the data file in use
                for f in list(data_cache)[:-1]:
                    del data_cache[f]
        registered = catalog.register_files(cfg.dataset, written)
        if sorted(registered) != sorted(ids):
            raise RuntimeError(f"registered {sorted(registered)}, expected {sorted(ids)}")
        report.segment_ids = list(ids)  # aligned with episode_indices
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
            forget_checksum(p)
        raise
    finally:
        for r in readers.values():
            r.close()
    report.episode_indices = [e.index for e in src.episodes]
    if not ws.blueprint_path(cfg.dataset).is_file():
        try:
            _save_blueprint(ws, cfg.dataset, list(streams.values()), list(cams.values()))
            catalog.register_blueprint(cfg.dataset, ws.blueprint_path(cfg.dataset))
        except Exception as exc:  # noqa: BLE001 - a blueprint is a convenience, never a reason to fail
            log.warning("could not write a default blueprint for %s: %s", cfg.dataset, exc)
    report.seconds = time.perf_counter() - t_start
    return report


def _episode_table(src: _Source, ep: _Episode, cache: dict[Path, tuple[pa.Table, np.ndarray]]) -> pa.Table:
    if ep.data_file not in cache:
        table = _read_parquet(ep.data_file)
        cache[ep.data_file] = (table, table.column("episode_index").to_numpy(zero_copy_only=False))
    table, ep_col = cache[ep.data_file]
    rows = np.flatnonzero(ep_col == ep.index)
    if len(rows) == 0:
        raise LeRobotFormatError(f"{ep.data_file}: no rows of episode {ep.index}")
    sub = table.take(pa.array(rows))
    if "frame_index" in sub.column_names:
        order = np.argsort(sub.column("frame_index").to_numpy(zero_copy_only=False), kind="stable")
        sub = sub.take(pa.array(order))
    if ep.length and sub.num_rows != ep.length:
        log.warning("%s: episode %d has %d rows, its metadata says %d", ep.data_file, ep.index, sub.num_rows, ep.length)
    return sub


def _write_episode(path, sid, src: _Source, ep: _Episode, cfg: ImportConfig, streams, cams, data_cache, readers) -> int:
    import rerun as rr

    sub = _episode_table(src, ep, data_cache)
    n = sub.num_rows
    if "timestamp" in sub.column_names:
        t = _snap_times(sub.column("timestamp").to_numpy(zero_copy_only=False).astype(np.float64), src.fps)
    elif "frame_index" in sub.column_names:
        t = sub.column("frame_index").to_numpy(zero_copy_only=False).astype(np.float64) / src.fps
    else:
        t = np.arange(n) / src.fps
    tasks = list(ep.tasks)
    if not tasks and "task_index" in sub.column_names:
        for ti in dict.fromkeys(sub.column("task_index").to_pylist()):
            if ti is not None and int(ti) in src.tasks:
                tasks.append(src.tasks[int(ti)])
    cam_sizes: dict[str, tuple[int, int]] = {}
    with EpisodeRecorder(path, sid) as rec:
        for key, entity in streams.items():
            values = _column_values(sub.column(key), key, ep.data_file)
            rec.log_scalar_columns(entity, t, values)
            names = _feature_names(src.features[key], values.shape[1])
            if names:
                rec.set_series_names(entity, names)
        for key in src.video_keys:
            mp4, t0, t1 = ep.videos[key]
            reader = readers.get(key)
            if reader is None or reader.path != mp4:  # one open file per camera (v2.1: a file per episode)
                if reader is not None:
                    reader.close()
                reader = readers[key] = _VideoReader(mp4)
            enc = _CameraEncoder(src.fps, cfg.crf)
            for rel, rgb in reader.frames(t0, t1, src.fps):
                enc.add(float(_snap_times(np.asarray([rel]), src.fps)[0]), rgb)
            times, samples = enc.finish()
            if not len(times):
                raise LeRobotFormatError(f"{mp4}: no frames of episode {ep.index} in [{t0:.3f}, {t1:.3f}) s")
            _log_camera(rec, cams[key], times, samples)
            cam_sizes[key] = enc.size
        for key in src.image_keys:
            enc = _CameraEncoder(src.fps, cfg.crf)
            for ti, cell in zip(t, sub.column(key).to_pylist()):
                enc.add(float(ti), _decode_image_cell(cell, key, ep.data_file))
            times, samples = enc.finish()
            _log_camera(rec, cams[key], times, samples)
            cam_sizes[key] = enc.size
        camera_names = [cams[k].rsplit("/", 1)[-1] for k in cam_sizes]
        first_size = next(iter(cam_sizes.values()), None)
        task_text = cfg.task or (tasks[0] if tasks else "")
        rec.set_properties(
            schema.EPISODE,
            {
                schema.EPISODE_KIND: cfg.kind,
                schema.EPISODE_TASK: task_text,
                schema.EPISODE_SOURCE: f"lerobot:{src.root}",
                schema.EPISODE_LEROBOT_INDEX: ep.index,
                schema.EPISODE_CONTROL_HZ: src.fps,
                schema.EPISODE_CAMERAS: ",".join(camera_names) if camera_names else "none",
                schema.EPISODE_CAMERA_HZ: src.fps if cam_sizes else None,
                schema.EPISODE_CAMERA_SIZE: f"{first_size[0]}x{first_size[1]}" if first_size else None,
            },
        )
        rec.set_properties(
            schema.LEROBOT,
            {
                "codebase_version": src.version,
                "fps": src.fps,
                "robot_type": src.info.get("robot_type") or None,
                "length": n,
                "tasks": tasks or None,
                "features": sorted([*streams, *cams]),
                "dataset": src.root.name,
                "source_segment_id": src.source_segments.get(ep.index),
            },
        )
        if task_text:
            rec.log_static(schema.TASK, rr.TextDocument(task_text))
    return n


def _log_camera(rec: EpisodeRecorder, entity: str, times: np.ndarray, samples: list) -> None:
    import rerun as rr

    rec.log_static(entity, rr.VideoStream(codec=rr.VideoCodec.H264))
    rec.log_columns(
        entity, times, rr.VideoStream.columns(sample=[s.sample for s in samples], is_keyframe=[s.is_keyframe for s in samples])
    )


def _save_blueprint(ws, dataset: str, scalar_paths: list[str], camera_paths: list[str]) -> Path:
    import rerun.blueprint as rrb

    from roboloop.episode import APPLICATION_ID
    from roboloop.workspace import atomic_path

    rows = []
    if camera_paths:
        rows.append(rrb.Horizontal(*[rrb.Spatial2DView(origin=p, name=p.rsplit("/", 1)[-1]) for p in camera_paths]))
    if scalar_paths:
        rows.append(rrb.Horizontal(*[rrb.TimeSeriesView(origin=p, name=p.rsplit("/", 1)[-1]) for p in scalar_paths[:4]]))
    rows.append(rrb.TextDocumentView(origin=schema.TASK, name="task"))
    final = ws.blueprint_path(dataset)
    with atomic_path(final) as tmp:
        rrb.Blueprint(rrb.Vertical(*rows), collapse_panels=False).save(APPLICATION_ID, tmp)
    return final


# =============================================================================================
# export
# =============================================================================================

def export_lerobot(
    catalog: Catalog,
    selection_name: str,
    out_dir: str | os.PathLike[str],
    fps: int,
    *,
    split: str = "train",
    features: Mapping[str, str] | None = None,
    exclude: Sequence[str] = (),
    task: str | None = None,
    robot_type: str | None = None,
    crf: int = DEFAULT_CRF,
    gop: int | None = None,
    overwrite: bool = False,
    on_progress: Progress | None = None,
) -> ExportReport:
    """Write the saved selection `selection_name` as a LeRobot v3.0 dataset in `out_dir`.

    Every stream is resampled at `fps` through `EpisodeStream` (see the module docstring).
    Raises `UnknownSelectionError`, `LeRobotFormatError` (e.g. `out_dir` exists) or the
    loader's errors (a feature missing in some episode names the field and segments).
    """
    cfg = ExportConfig(
        selection=selection_name,
        out_dir=str(out_dir),
        fps=int(fps) if isinstance(fps, float) and fps.is_integer() else fps,
        split=split,
        features=dict(features) if features is not None else None,
        exclude=tuple(exclude),
        task=task,
        robot_type=robot_type,
        crf=crf,
        gop=gop,
        overwrite=overwrite,
    )
    return export_from_config(catalog, cfg, on_progress=on_progress)


@dataclass
class _OutFeature:
    key: str
    path: str
    component: str
    camera: bool
    names: list[str] | None = None
    width: int | None = None
    size: tuple[int, int] | None = None  # (w, h) of a camera


def _default_features(entry, cfg: ExportConfig) -> list[_OutFeature]:
    from roboloop.stream.fields import schema_columns

    columns = schema_columns(entry.schema())
    out: list[_OutFeature] = []
    if cfg.features is not None:
        for key, path in cfg.features.items():
            p = path if path.startswith("/") else "/" + path
            comps = columns.get(p, set())
            if schema.SCALARS_COMPONENT in comps:
                out.append(_OutFeature(key, p, schema.SCALARS_COMPONENT, False))
            elif schema.VIDEO_SAMPLE_COMPONENT in comps:
                out.append(_OutFeature(key, p, schema.VIDEO_SAMPLE_COMPONENT, True))
            elif "EncodedImage:blob" in comps:
                out.append(_OutFeature(key, p, "EncodedImage:blob", True))
            else:
                known = sorted(q for q in columns if not q.startswith("/__"))
                raise LeRobotFormatError(f"feature {key!r}: {p} is not a scalar or camera stream of {entry.name!r}; streams: {', '.join(known)}")
        return out
    for p in sorted(columns):
        if p.startswith("/__") or p in cfg.exclude:
            continue
        comps = columns[p]
        if schema.SCALARS_COMPONENT in comps:
            out.append(_OutFeature(schema.lerobot_key(p), p, schema.SCALARS_COMPONENT, False))
        elif schema.VIDEO_SAMPLE_COMPONENT in comps:
            out.append(_OutFeature(schema.lerobot_key(p), p, schema.VIDEO_SAMPLE_COMPONENT, True))
        elif "EncodedImage:blob" in comps:
            out.append(_OutFeature(schema.lerobot_key(p), p, "EncodedImage:blob", True))
    keys = [f.key for f in out]
    dup = sorted({k for k in keys if keys.count(k) > 1} | {k for k in keys if k in BOOKKEEPING})
    if dup:
        raise LeRobotFormatError(f"entity paths map onto the same or a reserved LeRobot key {dup}; pass features={{key: path}} explicitly")
    if not out:
        raise LeRobotFormatError(f"dataset {entry.name!r} has no scalar or camera streams to export")
    return out


def _series_names(entry, segment_id: str, paths: list[str]) -> dict[str, list[str]]:
    """Static `SeriesLines:names` of scalar streams in one segment (best effort)."""
    try:
        table = entry.filter_segments([segment_id]).filter_contents(paths).reader(index=None).to_arrow_table()
    except Exception:  # noqa: BLE001
        return {}
    out = {}
    for p in paths:
        col = f"{p}:SeriesLines:names"
        if col in table.column_names:
            vals = [v for v in table.column(col).to_pylist() if v]
            if vals:
                out[p] = [str(x) for x in vals[0]]
    return out


class _Mp4Writer:
    """All episodes of one camera, back to back, as one H.264 mp4 (frame k at pts k / fps)."""

    def __init__(self, path: Path, fps: int, crf: int, gop: int) -> None:
        self.path, self.fps, self.crf, self.gop = path, fps, crf, gop
        self.container = None
        self.stream = None
        self.n = 0
        self.size: tuple[int, int] | None = None

    def add(self, rgb: np.ndarray, *, keyframe: bool = False) -> None:
        import av

        h, w = rgb.shape[:2]
        if self.container is None:
            if w % 2 or h % 2:
                raise LeRobotFormatError(f"{self.path}: H.264 needs an even frame size, got {w}x{h}")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.container = av.open(str(self.path), "w", format="mp4")
            s = self.container.add_stream("libx264", rate=self.fps)
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
            s.options = {
                "crf": str(self.crf),
                "preset": "veryfast",
                "x264-params": f"keyint={self.gop}:min-keyint=1:scenecut=0:bframes=0:threads=1",
            }
            self.stream, self.size = s, (w, h)
        elif (w, h) != self.size:
            raise LeRobotFormatError(f"{self.path}: frame size {w}x{h} differs from {self.size[0]}x{self.size[1]} of earlier episodes")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.n
        if keyframe:
            frame.pict_type = av.video.frame.PictureType.I
        self.n += 1
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        if self.container is not None:
            for packet in self.stream.encode(None):
                self.container.mux(packet)
            self.container.close()
            self.container = None


class _Stats:
    """Running per-feature statistics: exact for scalars (values kept); cameras per channel in [0, 1].

    Camera statistics are computed on every frame, spatially subsampled to at most ~160
    pixels a side (LeRobot itself estimates them on sampled, downsampled frames).
    """

    def __init__(self) -> None:
        self.values: dict[str, list[np.ndarray]] = {}
        self.cam: dict[str, dict[str, Any]] = {}

    def add_scalars(self, key: str, values: np.ndarray) -> None:
        self.values.setdefault(key, []).append(values)

    def add_frames(self, key: str, frames_chw: np.ndarray) -> None:
        """frames [B, 3, H, W] uint8."""
        step = max(1, math.ceil(max(frames_chw.shape[2:]) / 160))
        x = frames_chw[:, :, ::step, ::step]
        wide = x.astype(np.uint32)
        part = {
            "sum": x.sum(axis=(0, 2, 3), dtype=np.uint64).astype(np.float64),
            "sq": (wide * wide).sum(axis=(0, 2, 3), dtype=np.uint64).astype(np.float64),
            "min": x.min(axis=(0, 2, 3)).astype(np.float64),
            "max": x.max(axis=(0, 2, 3)).astype(np.float64),
            "px": x.shape[0] * x.shape[2] * x.shape[3],
            "frames": x.shape[0],
        }
        self._merge_cam(key, part)

    def _merge_cam(self, key: str, part: dict[str, Any]) -> None:
        s = self.cam.get(key)
        if s is None:
            self.cam[key] = dict(part)
            return
        for k in ("sum", "sq", "px", "frames"):
            s[k] = s[k] + part[k]
        s["min"] = np.minimum(s["min"], part["min"])
        s["max"] = np.maximum(s["max"], part["max"])

    def merge(self, other: _Stats) -> None:
        """Add another (e.g. one episode's) statistics to these."""
        for key, parts in other.values.items():
            self.values.setdefault(key, []).extend(parts)
        for key, part in other.cam.items():
            self._merge_cam(key, part)

    def result(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for key, parts in self.values.items():
            v = np.concatenate(parts).astype(np.float64)
            d = {
                "min": v.min(axis=0).tolist(),
                "max": v.max(axis=0).tolist(),
                "mean": v.mean(axis=0).tolist(),
                "std": v.std(axis=0).tolist(),
                "count": [len(v)],
            }
            for q in QUANTILES:
                d[f"q{round(q * 100):02d}"] = np.quantile(v, q, axis=0).tolist()
            out[key] = d
        for key, s in self.cam.items():
            px = max(1, s["px"])
            mean = s["sum"] / px / 255.0
            std = np.sqrt(np.maximum(0.0, s["sq"] / px / 255.0**2 - mean * mean))

            def c(a):
                return [[[float(x)]] for x in a]

            out[key] = {"min": c(s["min"] / 255.0), "max": c(s["max"] / 255.0), "mean": c(mean), "std": c(std), "count": [int(s["frames"])]}
        return out


def _tasks_table(tasks: list[str]) -> pa.Table:
    """tasks.parquet as pandas writes it: `task_index` column, `task` as the (named) index."""
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())})
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64", "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def is_earlier_export(folder: Path) -> bool:
    """True when `folder` is a dataset `export_lerobot` wrote: a real folder with `meta/roboloop.json` saying so."""
    marker = folder / PROVENANCE_PATH
    if folder.is_symlink() or not folder.is_dir() or marker.is_symlink() or not marker.is_file():
        return False
    try:
        body = json.loads(marker.read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(body, dict) and body.get("exported_by") == "roboloop"


def check_overwritable(out: Path, workspace_root: Path) -> None:
    """Raise `LeRobotFormatError` unless an existing `out` may be replaced by `--overwrite`.

    Only an earlier export is replaced (the `meta/roboloop.json` marker every export writes),
    never a file or a symlink, never a folder that holds the workspace or lies inside it (its
    recordings are the system of record), never any other folder.
    """
    if not (out.exists() or out.is_symlink()):
        return
    ws = Path(workspace_root).resolve()
    if out.is_symlink() or not out.is_dir():
        raise LeRobotFormatError(f"{out}: is a file, not an earlier export; --overwrite replaces only a folder this "
                                 "command wrote. Choose a new folder or remove the file yourself")
    real = out.resolve()
    if real == ws or ws.is_relative_to(real):
        raise LeRobotFormatError(f"{out}: holds the roboloop workspace {ws}; --overwrite would delete its recordings. "
                                 "Choose a new folder outside the workspace")
    if real.is_relative_to(ws):
        raise LeRobotFormatError(f"{out}: is inside the roboloop workspace {ws}; --overwrite never replaces workspace "
                                 "folders. Choose a new folder outside the workspace")
    if not is_earlier_export(real):
        raise LeRobotFormatError(f"{out}: is not an earlier roboloop export (no {PROVENANCE_PATH} written by "
                                 "export-lerobot); --overwrite replaces only those. Choose a new folder, or empty or "
                                 "remove this one yourself")


def export_from_config(catalog: Catalog, cfg: ExportConfig, *, on_progress: Progress | None = None) -> ExportReport:
    """`export_lerobot` driven by an `ExportConfig` (what the CLI calls)."""
    from roboloop import curate
    from roboloop.stream import EpisodeStream, Field

    t_start = time.perf_counter()
    out = Path(cfg.out_dir).expanduser().resolve()
    if (out.exists() or out.is_symlink()) and not cfg.overwrite:
        raise LeRobotFormatError(f"{out}: already exists; choose a new folder or pass --overwrite")
    check_overwritable(out, catalog.workspace.root)
    sel = curate.load(catalog, cfg.selection)
    train, held = list(sel.train_ids), list(sel.holdout_ids)
    ids = {"train": train, "holdout": held, "all": train + held}[cfg.split]
    if not ids:
        raise LeRobotFormatError(f"selection {cfg.selection!r} has no {cfg.split} episodes; choose another split")
    entry = catalog.dataset(sel.dataset)
    feats = _default_features(entry, cfg)
    names = _series_names(entry, ids[0], [f.path for f in feats if not f.camera])
    for f in feats:
        f.names = names.get(f.path)
    seg_table = catalog.segment_table(sel.dataset)
    task_by_id: dict[str, str] = {}
    if "episode.task" in seg_table.column_names:
        task_by_id = {s: (str(t) if t is not None else "") for s, t in zip(seg_table.column("segment_id").to_pylist(), seg_table.column("episode.task").to_pylist())}
    ep_tasks = [cfg.task or task_by_id.get(s) or "unknown" for s in ids]
    task_list = list(dict.fromkeys(ep_tasks))
    task_index = {t: i for i, t in enumerate(task_list)}

    fields = {f"f{i}": Field(f.path, component=f.component) for i, f in enumerate(feats)}
    has_camera = any(f.camera for f in feats)
    stream = EpisodeStream(
        catalog,
        (sel.dataset, ids),
        fields=fields,
        rate_hz=cfg.fps,
        batch_size=64 if has_camera else 4096,
        shuffle=False,
        include_meta=True,  # the stream's own time tolerance (float rounding only): latest-at at every fps
    )
    gop = cfg.gop or cfg.fps

    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except OSError as exc:
        blocker = next((p for p in out.parents if p.exists()), None)
        reason = f"{blocker} is a file, not a folder" if blocker is not None and not blocker.is_dir() else \
            f"{exc.strerror or exc} ({exc.filename})"
        raise LeRobotExportError(f"cannot write the export to {out}: {reason}; "
                                 "choose an output folder inside a folder you can write") from None
    writers: dict[str, _Mp4Writer] = {}
    try:
        data_path = tmp / DATA_PATH.format(chunk_index=0, file_index=0)
        data_path.parent.mkdir(parents=True, exist_ok=True)
        stats = _Stats()
        for f in feats:
            if f.camera:
                writers[f.key] = _Mp4Writer(tmp / VIDEO_PATH.format(video_key=f.key, chunk_index=0, file_index=0), cfg.fps, cfg.crf, gop)
        episode_rows: list[dict[str, Any]] = []
        pq_writer: pq.ParquetWriter | None = None
        global_index = 0
        video_frames = dict.fromkeys(writers, 0)

        def finish(ep: int, acc: dict[str, list[np.ndarray]], frame_idx: list[np.ndarray], ep_stats: _Stats) -> None:
            nonlocal pq_writer, global_index
            k = np.concatenate(frame_idx)
            n = len(k)
            if not np.array_equal(k, np.arange(n)):
                raise RuntimeError(f"segment {ids[ep]}: grid frames out of order")
            cols: dict[str, pa.Array] = {}
            for f in feats:
                if f.camera:
                    continue
                v = np.concatenate(acc[f.key]).astype(np.float32)
                f.width = v.shape[1]
                if v.shape[1] == 1:  # shape [1]: a plain column, as LeRobot's `datasets.Value` features are stored
                    cols[f.key] = pa.array(v[:, 0], pa.float32())
                else:
                    cols[f.key] = pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1), pa.float32()), v.shape[1])
            book = {
                "timestamp": (k / cfg.fps).astype(np.float32),
                "frame_index": k.astype(np.int64),
                "episode_index": np.full(n, ep, np.int64),
                "index": np.arange(global_index, global_index + n, dtype=np.int64),
                "task_index": np.full(n, task_index[ep_tasks[ep]], np.int64),
            }
            for name, arr in book.items():
                cols[name] = pa.array(arr)
                ep_stats.add_scalars(name, arr.reshape(-1, 1))
            table = pa.table(cols)
            if pq_writer is None:
                pq_writer = pq.ParquetWriter(data_path, table.schema)
            pq_writer.write_table(table)
            row: dict[str, Any] = {
                "episode_index": ep,
                "tasks": [ep_tasks[ep]],
                "length": n,
                "data/chunk_index": 0,
                "data/file_index": 0,
                "dataset_from_index": global_index,
                "dataset_to_index": global_index + n,
            }
            for key in writers:
                row[f"videos/{key}/chunk_index"] = 0
                row[f"videos/{key}/file_index"] = 0
                row[f"videos/{key}/from_timestamp"] = video_frames[key] / cfg.fps - n / cfg.fps
                row[f"videos/{key}/to_timestamp"] = video_frames[key] / cfg.fps
            row["meta/episodes/chunk_index"] = 0
            row["meta/episodes/file_index"] = 0
            stats.merge(ep_stats)
            for key, st in ep_stats.result().items():
                for stat, val in st.items():
                    row[f"stats/{key}/{stat}"] = val
            episode_rows.append(row)
            global_index += n

        cur = -1
        acc: dict[str, list[np.ndarray]] = {}
        frame_idx: list[np.ndarray] = []
        ep_stats = _Stats()
        for batch in _batches(stream, feats):
            e = batch["episode_index"].numpy()
            k = batch["frame_index"].numpy()
            cuts = np.flatnonzero(np.diff(e)) + 1
            for rows in np.split(np.arange(len(e)), cuts):
                ep = int(e[rows[0]])
                if ep != cur:
                    if cur >= 0:
                        finish(cur, acc, frame_idx, ep_stats)
                        if on_progress:
                            on_progress(cur + 1, len(ids))
                    cur, acc, frame_idx, ep_stats = ep, {f.key: [] for f in feats}, [], _Stats()
                frame_idx.append(k[rows])
                for i, f in enumerate(feats):
                    x = batch[f"f{i}"].numpy()[rows]
                    if f.camera:
                        ep_stats.add_frames(f.key, x)
                        w = writers[f.key]
                        for j in range(len(x)):
                            w.add(x[j].transpose(1, 2, 0), keyframe=int(k[rows[j]]) == 0)
                            video_frames[f.key] += 1
                    else:
                        acc[f.key].append(x)
                        ep_stats.add_scalars(f.key, x.astype(np.float32))
        if cur < 0:
            raise LeRobotFormatError(f"selection {cfg.selection!r}: the stream yielded no frames")
        finish(cur, acc, frame_idx, ep_stats)
        if on_progress:
            on_progress(cur + 1, len(ids))
        if pq_writer is not None:
            pq_writer.close()
        for w in writers.values():
            w.close()
        if len(episode_rows) != len(ids):
            raise RuntimeError(f"exported {len(episode_rows)} episodes of {len(ids)}")

        ep_path = tmp / EPISODES_PATH.format(chunk_index=0, file_index=0)
        ep_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(episode_rows), ep_path)
        pq.write_table(_tasks_table(task_list), tmp / TASKS_PATH)
        (tmp / STATS_PATH).write_text(json.dumps(stats.result(), indent=2))
        info = _info_json(cfg, feats, writers, len(ids), global_index, len(task_list), len(train) if cfg.split == "all" else None)
        (tmp / INFO_PATH).write_text(json.dumps(info, indent=4))
        provenance = {
            "exported_by": "roboloop",
            "selection": cfg.selection,
            "selection_digest": sel.digest,
            "dataset": sel.dataset,
            "split": cfg.split,
            "segment_ids": list(ids),
            "features": {f.key: f.path for f in feats},
            "config": cfg.to_dict(),
        }
        (tmp / PROVENANCE_PATH).write_text(json.dumps(provenance, indent=2))
        _fsync_tree(tmp)
        if out.exists() or out.is_symlink():
            check_overwritable(out, catalog.workspace.root)  # again: it may have changed while we exported
            old = out.parent / f".{out.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException as exc:
        for w in writers.values():
            with contextlib.suppress(Exception):
                w.close()
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise LeRobotExportError(f"writing the export to {out} failed: {exc}; nothing was left behind "
                                     "(check free space and permissions, then run it again)") from exc
        raise
    return ExportReport(
        out_dir=out,
        selection=cfg.selection,
        dataset=sel.dataset,
        fps=cfg.fps,
        segment_ids=list(ids),
        frames=global_index,
        features={f.key: f.path for f in feats},
        cameras=list(writers),
        seconds=time.perf_counter() - t_start,
    )


def _batches(stream, feats: list[_OutFeature]) -> Iterator[dict]:
    """The stream's batches; a stream missing in some episode becomes an error that says how to export anyway."""
    from roboloop.stream import MissingFieldError

    try:
        yield from stream
    except MissingFieldError as exc:
        f = feats[int(exc.field_name[1:])]
        raise LeRobotFormatError(
            f"{f.path} (feature {f.key!r}) has no data in segment(s) {', '.join(exc.segment_ids)}; a LeRobot dataset has the "
            f"same features in every episode: leave it out (--exclude {f.path} / exclude=[...]) or export a selection "
            "whose episodes all have it"
        ) from None


def _info_json(cfg: ExportConfig, feats: list[_OutFeature], writers, episodes: int, frames: int, tasks: int, n_train: int | None) -> dict:
    features: dict[str, dict] = {}
    for f in feats:
        if f.camera:
            w, h = writers[f.key].size or (0, 0)
            features[f.key] = {
                "dtype": "video",
                "shape": [h, w, 3],
                "names": ["height", "width", "channels"],
                "info": {
                    "video.height": h,
                    "video.width": w,
                    "video.codec": "h264",
                    "video.pix_fmt": "yuv420p",
                    "video.is_depth_map": False,
                    "video.fps": cfg.fps,
                    "video.channels": 3,
                    "has_audio": False,
                },
            }
        else:
            width = f.width or 1
            names = f.names if f.names and len(f.names) == width else [f"{f.key}_{i}" for i in range(width)]
            features[f.key] = {"dtype": "float32", "shape": [width], "names": names}
    features["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
    for name in ("frame_index", "episode_index", "index", "task_index"):
        features[name] = {"dtype": "int64", "shape": [1], "names": None}
    splits = {"train": f"0:{episodes}"}
    if n_train is not None and n_train < episodes:
        splits = {"train": f"0:{n_train}", "test": f"{n_train}:{episodes}"}
    return {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": cfg.robot_type,
        "total_episodes": episodes,
        "total_frames": frames,
        "total_tasks": tasks,
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 200,
        "fps": cfg.fps,
        "splits": splits,
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if writers else None,
        "features": features,
    }


def _fsync_tree(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
