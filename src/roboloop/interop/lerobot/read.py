"""Importing a LeRobot dataset.

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
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import rerun as rr
import rerun.blueprint as rrb
from PIL import Image

from roboloop import schema
from roboloop.catalog.client import Catalog
from roboloop.config import Config, ConfigError, check
from roboloop.interop.lerobot.format import (
    BOOKKEEPING,
    DATA_PATH,
    EPISODES_DIR,
    INFO_PATH,
    NUMERIC_DTYPES,
    PROVENANCE_PATH,
    TASKS_PATH,
    VIDEO_PATH,
    LeRobotFormatError,
    Progress,
    load_json,
    read_parquet,
    version_tuple,
)
from roboloop.record.episode import APPLICATION_ID, EpisodeRecorder
from roboloop.video import DEFAULT_CRF, H264Encoder
from roboloop.workspace import atomic_path, forget_checksum

log = logging.getLogger(__name__)

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




def _read_source(root: Path, episodes_wanted: Sequence[int] | None = None) -> _Source:
    """The dataset at `root`, checked: info.json, its features by kind, the episodes wanted and every file they need."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise LeRobotFormatError(f"{root}: no such folder")
    info, version, fps = _read_info(root)
    scalar_keys, video_keys, image_keys, skipped = _features_by_kind(info["features"])
    episodes, tasks = _read_episodes(root, info, version, fps, video_keys, episodes_wanted)
    _check_files(episodes, [*scalar_keys, *image_keys])
    segments, paths = _read_provenance(root)
    return _Source(root, info, version, fps, episodes, scalar_keys, video_keys, image_keys, skipped, tasks, segments, paths)


def _read_info(root: Path) -> tuple[dict[str, Any], str, int]:
    """meta/info.json, its codebase version and fps, checked."""
    info_path = root / INFO_PATH
    info = load_json(info_path)
    if not isinstance(info, dict):
        raise LeRobotFormatError(f"{info_path}: expected a JSON object")
    for key in ("fps", "features", "codebase_version"):
        if key not in info:
            raise LeRobotFormatError(f"{info_path}: no {key!r} entry")
    version = str(info["codebase_version"])
    try:
        version_tuple(version)
    except ValueError:
        raise LeRobotFormatError(f"{info_path}: unrecognised codebase_version {version!r}") from None
    fps = info["fps"]
    if not isinstance(fps, (int, float)) or fps <= 0 or int(fps) != fps:
        raise LeRobotFormatError(f"{info_path}: fps must be a positive integer, got {fps!r}")
    features = info["features"]
    if not isinstance(features, dict) or not features:
        raise LeRobotFormatError(f"{info_path}: 'features' must be a non-empty object")
    return info, version, int(fps)


def _features_by_kind(features: Mapping[str, Any]) -> tuple[list[str], list[str], list[str], dict[str, str]]:
    """(scalar keys, video keys, image keys, skipped key -> reason); bookkeeping columns are none of these."""
    scalar_keys, video_keys, image_keys, skipped = [], [], [], {}
    for key, ft in features.items():
        if key in BOOKKEEPING:
            continue
        dtype = ft.get("dtype") if isinstance(ft, dict) else None
        if dtype == "video":
            video_keys.append(key)
        elif dtype == "image":
            image_keys.append(key)
        elif dtype in NUMERIC_DTYPES:
            scalar_keys.append(key)
        else:
            skipped[key] = f"dtype {dtype!r} is not numeric, image or video"
    return scalar_keys, video_keys, image_keys, skipped


def _read_episodes(root: Path, info: dict, version: str, fps: int, video_keys: list[str],
                   episodes_wanted: Sequence[int] | None) -> tuple[list[_Episode], dict[int, str]]:
    """The episodes (those wanted, in that order) and tasks, from the metadata of the dataset's version."""
    major, minor = version_tuple(version)
    if major == 3:
        episodes, tasks = _read_v3_episodes(root, info, video_keys)
    elif (major, minor) == (2, 1) or (major == 2 and minor == 0):
        episodes, tasks = _read_v21_episodes(root, info, video_keys, fps)
    else:
        raise LeRobotFormatError(f"{root / INFO_PATH}: codebase_version {version} is not supported (v3.0 and v2.1 are)")
    if episodes_wanted is not None:
        by_index = {e.index: e for e in episodes}
        missing = [i for i in episodes_wanted if i not in by_index]
        if missing:
            raise LeRobotFormatError(f"{root}: no episode(s) {missing}; the dataset has {len(episodes)} episode(s)")
        episodes = [by_index[i] for i in episodes_wanted]
    if not episodes:
        raise LeRobotFormatError(f"{root}: the dataset has no episodes")
    return episodes, tasks


def _check_files(episodes: list[_Episode], columns: list[str]) -> None:
    """Every data file the episodes reference opens and has `columns`; every mp4 decodes (before anything is written)."""
    for data_file in sorted({e.data_file for e in episodes}):
        if not data_file.is_file():
            raise LeRobotFormatError(f"{data_file}: missing (data file of episode(s) {[e.index for e in episodes if e.data_file == data_file]})")
        try:
            names = set(pq.read_schema(data_file).names)
        except Exception as exc:
            raise LeRobotFormatError(f"{data_file}: unreadable parquet: {exc}") from exc
        need = {"episode_index", *columns}
        lacking = sorted(need - names)
        if lacking:
            raise LeRobotFormatError(f"{data_file}: no column(s) {', '.join(lacking)} (declared in {INFO_PATH})")
    for mp4 in sorted({v[0] for e in episodes for v in e.videos.values()}):
        _probe_video(mp4)


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
    table = read_parquet(path)
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
        table = read_parquet(f)
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
        table = read_parquet(ep.data_file)
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
    """One episode as a new RRD at `path`: its scalar streams, cameras (re-encoded to H.264) and properties; its rows."""
    sub = _episode_table(src, ep, data_cache)
    t = _row_times(sub, src.fps)
    tasks = _episode_tasks(src, ep, sub)
    cam_sizes: dict[str, tuple[int, int]] = {}
    with EpisodeRecorder(path, sid) as rec:
        for key, entity in streams.items():
            values = _column_values(sub.column(key), key, ep.data_file)
            rec.log_scalar_columns(entity, t, values)
            names = _feature_names(src.features[key], values.shape[1])
            if names:
                rec.set_series_names(entity, names)
        for key in src.video_keys:
            cam_sizes[key] = _log_video(rec, cams[key], src, ep, key, cfg.crf, readers)
        for key in src.image_keys:
            enc = _CameraEncoder(src.fps, cfg.crf)
            for ti, cell in zip(t, sub.column(key).to_pylist()):
                enc.add(float(ti), _decode_image_cell(cell, key, ep.data_file))
            times, samples = enc.finish()
            _log_camera(rec, cams[key], times, samples)
            cam_sizes[key] = enc.size
        task_text = cfg.task or (tasks[0] if tasks else "")
        _set_properties(rec, src, ep, cfg, task_text, tasks, sub.num_rows, [*streams, *cams],
                        [cams[k].rsplit("/", 1)[-1] for k in cam_sizes], next(iter(cam_sizes.values()), None))
        if task_text:
            rec.log_static(schema.TASK, rr.TextDocument(task_text))
    return sub.num_rows


def _row_times(sub: pa.Table, fps: int) -> np.ndarray:
    """Each row's time in seconds: its `timestamp` snapped to k / fps, else its frame index / fps, else its position."""
    if "timestamp" in sub.column_names:
        return _snap_times(sub.column("timestamp").to_numpy(zero_copy_only=False).astype(np.float64), fps)
    if "frame_index" in sub.column_names:
        return sub.column("frame_index").to_numpy(zero_copy_only=False).astype(np.float64) / fps
    return np.arange(sub.num_rows) / fps


def _episode_tasks(src: _Source, ep: _Episode, sub: pa.Table) -> list[str]:
    """The episode's tasks: from the episodes metadata, else those its rows' `task_index` names."""
    tasks = list(ep.tasks)
    if not tasks and "task_index" in sub.column_names:
        for ti in dict.fromkeys(sub.column("task_index").to_pylist()):
            if ti is not None and int(ti) in src.tasks:
                tasks.append(src.tasks[int(ti)])
    return tasks


def _log_video(rec: EpisodeRecorder, entity: str, src: _Source, ep: _Episode, key: str, crf: int,
               readers: dict[str, _VideoReader]) -> tuple[int, int]:
    """The episode's span of video `key`, decoded and re-encoded as an H.264 camera stream; returns its (w, h)."""
    mp4, t0, t1 = ep.videos[key]
    reader = readers.get(key)
    if reader is None or reader.path != mp4:  # one open file per camera (v2.1: a file per episode)
        if reader is not None:
            reader.close()
        reader = readers[key] = _VideoReader(mp4)
    enc = _CameraEncoder(src.fps, crf)
    for rel, rgb in reader.frames(t0, t1, src.fps):
        enc.add(float(_snap_times(np.asarray([rel]), src.fps)[0]), rgb)
    times, samples = enc.finish()
    if not len(times):
        raise LeRobotFormatError(f"{mp4}: no frames of episode {ep.index} in [{t0:.3f}, {t1:.3f}) s")
    _log_camera(rec, entity, times, samples)
    return enc.size


def _set_properties(rec: EpisodeRecorder, src: _Source, ep: _Episode, cfg: ImportConfig, task_text: str, tasks: list[str],
                    length: int, features: list[str], camera_names: list[str], first_size: tuple[int, int] | None) -> None:
    """Property groups `episode` and `lerobot` (module docstring); `first_size`: (w, h) of the first camera."""
    rec.set_properties(
        schema.EPISODE,
        {
            schema.EPISODE_KIND: cfg.kind,
            schema.EPISODE_TASK: task_text,
            schema.EPISODE_SOURCE: f"lerobot:{src.root}",
            schema.EPISODE_LEROBOT_INDEX: ep.index,
            schema.EPISODE_CONTROL_HZ: src.fps,
            schema.EPISODE_CAMERAS: ",".join(camera_names) if camera_names else "none",
            schema.EPISODE_CAMERA_HZ: src.fps if camera_names else None,
            schema.EPISODE_CAMERA_SIZE: f"{first_size[0]}x{first_size[1]}" if first_size else None,
        },
    )
    rec.set_properties(
        schema.LEROBOT,
        {
            "codebase_version": src.version,
            "fps": src.fps,
            "robot_type": src.info.get("robot_type") or None,
            "length": length,
            "tasks": tasks or None,
            "features": sorted(features),
            "dataset": src.root.name,
            "source_segment_id": src.source_segments.get(ep.index),
        },
    )


def _log_camera(rec: EpisodeRecorder, entity: str, times: np.ndarray, samples: list) -> None:
    rec.log_static(entity, rr.VideoStream(codec=rr.VideoCodec.H264))
    rec.log_columns(
        entity, times, rr.VideoStream.columns(sample=[s.sample for s in samples], is_keyframe=[s.is_keyframe for s in samples])
    )


def _save_blueprint(ws, dataset: str, scalar_paths: list[str], camera_paths: list[str]) -> Path:
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

