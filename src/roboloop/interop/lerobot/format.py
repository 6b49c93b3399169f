"""The LeRobot dataset format: file layout, errors, reading its JSON and parquet, tasks and statistics.

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
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from roboloop.errors import RoboloopError

__all__ = [
    "BOOKKEEPING",
    "CODEBASE_VERSION",
    "DATA_PATH",
    "EPISODES_DIR",
    "EPISODES_PATH",
    "INFO_PATH",
    "NUMERIC_DTYPES",
    "PROVENANCE_PATH",
    "QUANTILES",
    "STATS_PATH",
    "TASKS_PATH",
    "VIDEO_PATH",
    "FeatureStats",
    "LeRobotExportError",
    "LeRobotFormatError",
    "Progress",
    "load_json",
    "read_parquet",
    "tasks_table",
    "version_tuple",
]

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
NUMERIC_DTYPES = {"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool"}


class LeRobotFormatError(RoboloopError):
    """A LeRobot dataset that cannot be read (missing or malformed file); the message names the file."""


class LeRobotExportError(RoboloopError):
    """An export that cannot be written where it was asked to go; the message names the folder."""



Progress = Callable[[int, int], None]
"""`on_progress(done, total)`: episodes done so far of all."""


def load_json(path: Path) -> Any:
    if not path.is_file():
        raise LeRobotFormatError(f"{path}: missing (is this a LeRobot dataset folder?)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LeRobotFormatError(f"{path}: not valid JSON: {exc}") from exc


def read_parquet(path: Path, columns: Sequence[str] | None = None) -> pa.Table:
    if not path.is_file():
        raise LeRobotFormatError(f"{path}: missing (referenced by the dataset's metadata)")
    try:
        return pq.read_table(path, columns=list(columns) if columns is not None else None)
    except Exception as exc:
        raise LeRobotFormatError(f"{path}: unreadable parquet: {exc}") from exc


def version_tuple(version: str) -> tuple[int, int]:
    m = re.match(r"^v?(\d+)\.(\d+)", str(version))
    if not m:
        raise ValueError(version)
    return int(m.group(1)), int(m.group(2))



class FeatureStats:
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

    def merge(self, other: FeatureStats) -> None:
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


def tasks_table(tasks: list[str]) -> pa.Table:
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

