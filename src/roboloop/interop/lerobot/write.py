"""Exporting a saved selection as a LeRobot dataset.

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

Corrective episodes (`episode.kind = 'corrective'`): ``action`` is what roboloop's training uses as
the target (`roboloop.train.corrective`): the expert's label (`/control/expert_action`) where a
step is expert-labelled, else the executed `/robot/joint_targets`; demonstrations keep their own
action. The executed action is kept as ``executed_action`` and ``action_is_label`` says which rows
hold a label (1) and which the policy's own action (0); ``control.source`` says who was in control
(demonstrations: 1, the expert). The raw `/control/*` streams are not default features (their
content is in those three); `features=` exports exactly the streams it names.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from roboloop import curate, schema
from roboloop.catalog.client import Catalog
from roboloop.config import Config, check
from roboloop.interop.lerobot.format import (
    BOOKKEEPING,
    CODEBASE_VERSION,
    DATA_PATH,
    EPISODES_PATH,
    INFO_PATH,
    PROVENANCE_PATH,
    STATS_PATH,
    TASKS_PATH,
    VIDEO_PATH,
    FeatureStats,
    LeRobotExportError,
    LeRobotFormatError,
    Progress,
    tasks_table,
)
from roboloop.stream import EpisodeStream, Field, MissingFieldError
from roboloop.stream.fields import schema_columns
from roboloop.train.corrective import SOURCE_FIELD, control_fields, expert_targets, segment_labelling
from roboloop.video import DEFAULT_CRF

log = logging.getLogger(__name__)

# --- configs ----------------------------------------------------------------------------------

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
    derived: bool = False
    """Computed from other streams (corrective episodes: the executed action, the label flag, the source), not read."""
    stored: str | None = None
    """The entity path the provenance records when it is not `path` (`action` as a training target)."""

    @property
    def recorded(self) -> str:
        """The entity path importing this feature back puts it at (meta/roboloop.json)."""
        return self.stored or self.path


CONTROL_STREAMS = (schema.CONTROL_SOURCE, schema.CONTROL_EXPERT_ACTION, schema.CONTROL_POLICY_ACTION)
"""Corrective bookkeeping streams: left out of the default features (see the module docstring)."""


def _default_features(entry, cfg: ExportConfig) -> list[_OutFeature]:
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
        if p.startswith("/__") or p in cfg.exclude or p in CONTROL_STREAMS:
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
    t_start = time.perf_counter()
    out = _target_folder(catalog, cfg)
    plan = _plan(catalog, cfg)
    stream = _episode_stream(catalog, cfg, plan)
    tmp = _temp_folder(out)
    writer: _DatasetWriter | None = None
    try:
        writer = _DatasetWriter(tmp, cfg, plan)
        writer.write_episodes(_batches(stream, plan), on_progress)
        writer.write_meta()
        _fsync_tree(tmp)
        _move_into_place(tmp, out, catalog.workspace.root)
    except BaseException as exc:
        if writer is not None:
            writer.abort()
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise LeRobotExportError(f"writing the export to {out} failed: {exc}; nothing was left behind "
                                     "(check free space and permissions, then run it again)") from exc
        raise
    return ExportReport(
        out_dir=out,
        selection=cfg.selection,
        dataset=plan.selection.dataset,
        fps=cfg.fps,
        segment_ids=list(plan.ids),
        frames=writer.frames,
        features={f.key: f.recorded for f in plan.feats},
        cameras=list(writer.videos),
        seconds=time.perf_counter() - t_start,
    )


def _target_folder(catalog: Catalog, cfg: ExportConfig) -> Path:
    """The export's folder, refused when it exists and may not be replaced."""
    out = Path(cfg.out_dir).expanduser().resolve()
    if (out.exists() or out.is_symlink()) and not cfg.overwrite:
        raise LeRobotFormatError(f"{out}: already exists; choose a new folder or pass --overwrite")
    check_overwritable(out, catalog.workspace.root)
    return out


@dataclass
class _ExportPlan:
    """What an export writes: the selection's episodes in order, the features, each episode's task."""

    selection: curate.Selection
    ids: list[str]
    n_train: int | None
    """Episodes of the train split when the export holds both splits (train first), else None."""
    feats: list[_OutFeature]
    ep_tasks: list[str]
    tasks: list[str]
    """The distinct tasks in order of first appearance (task_index = position)."""
    labelling: np.ndarray | None = None
    """Per episode, how its steps are labelled (`train.corrective.segment_labelling`); None without corrective episodes."""
    action_width: int = 0
    """Width of the action (the zeros an episode without an expert label streams in its place)."""

    @property
    def task_index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tasks)}


def _plan(catalog: Catalog, cfg: ExportConfig) -> _ExportPlan:
    """Load the selection and decide the episodes, features (with their series names) and tasks."""
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
    plan = _ExportPlan(sel, ids, len(train) if cfg.split == "all" else None, feats, ep_tasks, list(dict.fromkeys(ep_tasks)))
    action = next((f for f in feats if f.path == schema.JOINT_TARGETS), None)
    labelling = segment_labelling(catalog, sel.dataset, ids) if cfg.features is None and action is not None else None
    if labelling is not None:
        plan.labelling, plan.action_width = labelling, _scalar_width(entry, ids[int(np.argmax(labelling))], schema.JOINT_TARGETS)
        action.stored = schema.LEROBOT_TRAINING_TARGET
        feats += [_OutFeature(schema.LEROBOT_EXECUTED_ACTION, schema.JOINT_TARGETS, schema.SCALARS_COMPONENT, False, names=action.names,
                              derived=True),
                  _OutFeature(schema.LEROBOT_ACTION_IS_LABEL, f"{schema.LEROBOT_ROOT}/{schema.LEROBOT_ACTION_IS_LABEL}",
                              schema.SCALARS_COMPONENT, False, derived=True),
                  _OutFeature(schema.lerobot_key(schema.CONTROL_SOURCE), schema.CONTROL_SOURCE, schema.SCALARS_COMPONENT, False,
                              derived=True)]
    return plan


def _scalar_width(entry, segment_id: str, path: str) -> int:
    """How many scalars stream `path` of one segment holds per row."""
    table = entry.filter_segments([segment_id]).filter_contents([path]).reader(index="time").to_arrow_table()
    column = table.column(f"{path}:{schema.SCALARS_COMPONENT}")
    return len(next(v for v in column.to_pylist() if v))


def _with_training_target(batch: dict, plan: _ExportPlan) -> dict:
    """A stream batch of an export with corrective episodes: `action` becomes the training target (train's own rule,
    `expert_targets`), and the derived features (executed action, label flag, source) are filled in."""
    index = {f.key: f"f{i}" for i, f in enumerate(plan.feats)}
    action = next(index[f.key] for f in plan.feats if f.path == schema.JOINT_TARGETS and not f.derived)
    executed = batch[action]
    enc = {"action": executed[:, None, :].to(torch.float32), "action_mask": torch.ones(len(executed), 1, dtype=torch.bool)}
    enc = expert_targets(enc, batch, plan.labelling, expert_steps_only=True)  # the mask: which rows are labelled
    source = batch[SOURCE_FIELD][:, 0].to(torch.float32)
    known = batch[f"{SOURCE_FIELD}_mask"][:, 0, None]
    batch[action] = enc["action"][:, 0]
    batch[index[schema.LEROBOT_EXECUTED_ACTION]] = executed
    batch[index[schema.LEROBOT_ACTION_IS_LABEL]] = enc["action_mask"].to(torch.float32)
    batch[index[schema.lerobot_key(schema.CONTROL_SOURCE)]] = torch.where(known, source, float(schema.SOURCE_EXPERT))
    return batch


def _episode_stream(catalog: Catalog, cfg: ExportConfig, plan: _ExportPlan) -> EpisodeStream:
    """The episodes' features resampled at `cfg.fps`, in selection order (field `f<i>` = feature i)."""
    fields = {f"f{i}": Field(f.path, component=f.component) for i, f in enumerate(plan.feats) if not f.derived}
    if plan.labelling is not None:
        fields.update(control_fields(1, plan.action_width))
    has_camera = any(f.camera for f in plan.feats)
    return EpisodeStream(
        catalog,
        (plan.selection.dataset, plan.ids),
        fields=fields,
        rate_hz=cfg.fps,
        batch_size=64 if has_camera else 4096,
        shuffle=False,
        include_meta=True,  # the stream's own time tolerance (float rounding only): latest-at at every fps
        cache_mb=0,  # one pass: nothing to reuse
    )


def _temp_folder(out: Path) -> Path:
    """A new folder next to `out` that the export is written into (renamed onto `out` when complete)."""
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
    return tmp


def _move_into_place(tmp: Path, out: Path, workspace_root: Path) -> None:
    """Rename the finished export onto `out`; an earlier export there is replaced, and only that."""
    if out.exists() or out.is_symlink():
        check_overwritable(out, workspace_root)  # again: it may have changed while we exported
        old = out.parent / f".{out.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


@dataclass
class _EpisodeFrames:
    """One episode's rows gathered from the stream's batches until it ends."""

    index: int
    scalars: dict[str, list[np.ndarray]]
    frame_idx: list[np.ndarray] = field(default_factory=list)
    stats: FeatureStats = field(default_factory=FeatureStats)


class _DatasetWriter:
    """The v3.0 dataset being written into a folder: the data parquet, one mp4 per camera, episode rows, statistics."""

    def __init__(self, root: Path, cfg: ExportConfig, plan: _ExportPlan) -> None:
        self.root, self.cfg, self.plan = root, cfg, plan
        self.data_path = root / DATA_PATH.format(chunk_index=0, file_index=0)
        self.data_path.parent.mkdir(parents=True, exist_ok=True)
        self.stats = FeatureStats()
        gop = cfg.gop or cfg.fps
        self.videos = {f.key: _Mp4Writer(root / VIDEO_PATH.format(video_key=f.key, chunk_index=0, file_index=0), cfg.fps, cfg.crf, gop)
                       for f in plan.feats if f.camera}
        self.video_frames = dict.fromkeys(self.videos, 0)
        self.episode_rows: list[dict[str, Any]] = []
        self.parquet: pq.ParquetWriter | None = None
        self.frames = 0
        """Rows written so far (the dataset-wide `index` of the next row)."""

    def write_episodes(self, batches: Iterator[dict], on_progress: Progress | None) -> None:
        """Cut the batches (rows in episode order) into episodes and write each one when it ends."""
        ep: _EpisodeFrames | None = None
        for batch in batches:
            e = batch["episode_index"].numpy()
            k = batch["frame_index"].numpy()
            cuts = np.flatnonzero(np.diff(e)) + 1
            for rows in np.split(np.arange(len(e)), cuts):
                index = int(e[rows[0]])
                if ep is None or index != ep.index:
                    if ep is not None:
                        self.finish_episode(ep, on_progress)
                    ep = _EpisodeFrames(index, {f.key: [] for f in self.plan.feats})
                self.add_rows(ep, batch, rows, k)
        if ep is None:
            raise LeRobotFormatError(f"selection {self.cfg.selection!r}: the stream yielded no frames")
        self.finish_episode(ep, on_progress)
        if self.parquet is not None:
            self.parquet.close()
        for w in self.videos.values():
            w.close()
        if len(self.episode_rows) != len(self.plan.ids):
            raise RuntimeError(f"exported {len(self.episode_rows)} episodes of {len(self.plan.ids)}")

    def add_rows(self, ep: _EpisodeFrames, batch: dict, rows: np.ndarray, k: np.ndarray) -> None:
        """One episode's rows of a batch: camera frames straight into their mp4, scalars kept until the episode ends."""
        ep.frame_idx.append(k[rows])
        for i, f in enumerate(self.plan.feats):
            x = batch[f"f{i}"].numpy()[rows]
            if f.camera:
                ep.stats.add_frames(f.key, x)
                w = self.videos[f.key]
                for j in range(len(x)):
                    w.add(x[j].transpose(1, 2, 0), keyframe=int(k[rows[j]]) == 0)
                    self.video_frames[f.key] += 1
            else:
                ep.scalars[f.key].append(x)
                ep.stats.add_scalars(f.key, x.astype(np.float32))

    def finish_episode(self, ep: _EpisodeFrames, on_progress: Progress | None) -> None:
        """Write the episode's rows (a row group) and its episodes row; merge its statistics."""
        k = np.concatenate(ep.frame_idx)
        if not np.array_equal(k, np.arange(len(k))):
            raise RuntimeError(f"segment {self.plan.ids[ep.index]}: grid frames out of order")
        table = self._data_table(ep, k)
        if self.parquet is None:
            self.parquet = pq.ParquetWriter(self.data_path, table.schema)
        self.parquet.write_table(table)
        self.episode_rows.append(self._episode_row(ep, len(k)))
        self.frames += len(k)
        if on_progress:
            on_progress(ep.index + 1, len(self.plan.ids))

    def _data_table(self, ep: _EpisodeFrames, k: np.ndarray) -> pa.Table:
        n, fps = len(k), self.cfg.fps
        cols: dict[str, pa.Array] = {}
        for f in self.plan.feats:
            if f.camera:
                continue
            v = np.concatenate(ep.scalars[f.key]).astype(np.float32)
            f.width = v.shape[1]
            if v.shape[1] == 1:  # shape [1]: a plain column, as LeRobot's `datasets.Value` features are stored
                cols[f.key] = pa.array(v[:, 0], pa.float32())
            else:
                cols[f.key] = pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1), pa.float32()), v.shape[1])
        book = {
            "timestamp": (k / fps).astype(np.float32),
            "frame_index": k.astype(np.int64),
            "episode_index": np.full(n, ep.index, np.int64),
            "index": np.arange(self.frames, self.frames + n, dtype=np.int64),
            "task_index": np.full(n, self.plan.task_index[self.plan.ep_tasks[ep.index]], np.int64),
        }
        for name, arr in book.items():
            cols[name] = pa.array(arr)
            ep.stats.add_scalars(name, arr.reshape(-1, 1))
        return pa.table(cols)

    def _episode_row(self, ep: _EpisodeFrames, n: int) -> dict[str, Any]:
        fps = self.cfg.fps
        row: dict[str, Any] = {
            "episode_index": ep.index,
            "tasks": [self.plan.ep_tasks[ep.index]],
            "length": n,
            "data/chunk_index": 0,
            "data/file_index": 0,
            "dataset_from_index": self.frames,
            "dataset_to_index": self.frames + n,
        }
        for key in self.videos:
            row[f"videos/{key}/chunk_index"] = 0
            row[f"videos/{key}/file_index"] = 0
            row[f"videos/{key}/from_timestamp"] = self.video_frames[key] / fps - n / fps
            row[f"videos/{key}/to_timestamp"] = self.video_frames[key] / fps
        row["meta/episodes/chunk_index"] = 0
        row["meta/episodes/file_index"] = 0
        self.stats.merge(ep.stats)
        for key, st in ep.stats.result().items():
            for stat, val in st.items():
                row[f"stats/{key}/{stat}"] = val
        return row

    def write_meta(self) -> None:
        """The episodes and tasks parquet, stats.json, info.json and the provenance (meta/roboloop.json)."""
        cfg, plan, root = self.cfg, self.plan, self.root
        ep_path = root / EPISODES_PATH.format(chunk_index=0, file_index=0)
        ep_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(self.episode_rows), ep_path)
        pq.write_table(tasks_table(plan.tasks), root / TASKS_PATH)
        (root / STATS_PATH).write_text(json.dumps(self.stats.result(), indent=2))
        info = _info_json(cfg, plan.feats, self.videos, len(plan.ids), self.frames, len(plan.tasks), plan.n_train)
        (root / INFO_PATH).write_text(json.dumps(info, indent=4))
        provenance = {
            "exported_by": "roboloop",
            "selection": cfg.selection,
            "selection_digest": plan.selection.digest,
            "dataset": plan.selection.dataset,
            "split": cfg.split,
            "segment_ids": list(plan.ids),
            "features": {f.key: f.recorded for f in plan.feats},
            "config": cfg.to_dict(),
        }
        (root / PROVENANCE_PATH).write_text(json.dumps(provenance, indent=2))

    def abort(self) -> None:
        """Close the mp4 files (their folder is about to be removed)."""
        for w in self.videos.values():
            with contextlib.suppress(Exception):
                w.close()


def _batches(stream, plan: _ExportPlan) -> Iterator[dict]:
    """The stream's batches (with the training target where episodes are corrective); a stream missing in some episode
    becomes an error that says how to export anyway."""
    try:
        for batch in stream:
            yield batch if plan.labelling is None else _with_training_target(batch, plan)
    except MissingFieldError as exc:
        f = plan.feats[int(exc.field_name[1:])]
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
