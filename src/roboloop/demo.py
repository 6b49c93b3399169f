"""`roboloop demo`: the loop, as far as it is built, on the embedded catalog.

collect (scripted handovers in MuJoCo, recorded with camera video and provenance) ->
refine (signals layer) -> flag (quality layer) -> curate (train/holdout by query, and a
stricter re-run) -> stream (the curated training set through the multi-rate loader) ->
query (success by condition). Re-running reuses what the workspace already holds: only
missing episodes are collected, only new episodes refined.

Every stage reports through `say(text)` so the CLI decides how it looks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from roboloop import schema
from roboloop.catalog import Catalog
from roboloop.config import Config, check

# Scene variations the demo cycles through (physics-neutral: the demonstrator should
# succeed under all of them; they make `success by condition` show real groups).
DEMO_VARIATIONS: tuple[dict[str, Any], ...] = (
    {"lighting": "normal", "table": "dark"},
    {"lighting": "dim", "table": "dark"},
    {"lighting": "normal", "table": "light"},
    {"lighting": "bright", "table": "wood"},
)


@dataclass(frozen=True)
class DemoConfig(Config):
    """What the demo builds the loop on."""

    dataset: str = schema.DEFAULT_DATASET
    "Dataset to build the loop on."
    episodes: int = 24
    "Demonstrations the dataset should hold (missing ones are collected)."
    workers: int = 2
    "Worker processes for collection and streaming."
    seed: int = 0
    "Base seed (new episodes continue after the highest seed the dataset holds)."
    cameras: tuple[str, ...] = ("top",)
    "Cameras to record."
    width: int = 320
    "Recorded camera width."
    height: int = 240
    "Recorded camera height."
    stream_rate_hz: float = 10.0
    "Rate of the streamed training samples."
    action_chunk: int = 10
    "Action window length (grid steps) in the streamed samples."

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.episodes >= 1, f"episodes must be >= 1, got {self.episodes}")
        check(self.workers >= 1, f"workers must be >= 1, got {self.workers}")


@dataclass
class DemoResult:
    collected: int = 0
    successes: int = 0
    refined: int = 0
    flagged: list[str] = field(default_factory=list)
    selection_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (train, holdout)
    streamed_samples: int = 0
    stream_samples_per_s: float = 0.0
    batch_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


def _existing_demos(catalog: Catalog, dataset: str) -> tuple[int, int]:
    """(number of demo episodes already registered, the next unused seed)."""
    if dataset not in catalog.dataset_names():
        return 0, 0
    table = catalog.segment_table(dataset)
    col = schema.friendly_column(schema.EPISODE, schema.EPISODE_SEED)
    seeds = table.column(col).to_pylist() if col in table.column_names else []
    seeds = [s for s in seeds if s is not None]
    return table.num_rows, (max(seeds) + 1 if seeds else 0)


def run_demo(
    catalog: Catalog,
    config: DemoConfig | None = None,
    *,
    say: Callable[[str], None] = print,
    on_episode: Callable[[Any], None] | None = None,
) -> DemoResult:
    """Run every built stage of the loop on `config.dataset`; returns what happened."""
    from roboloop import collect, curate, refine
    from roboloop.recording import RecordingSpec
    from roboloop.sim import SceneConditions

    cfg = config or DemoConfig()
    out = DemoResult()
    ds = cfg.dataset

    # 1. collect ---------------------------------------------------------------------------
    have, next_seed = _existing_demos(catalog, ds)
    missing = max(0, cfg.episodes - have)
    if missing:
        say(f"[1/6] collect: {missing} scripted handover episode(s) into '{ds}' ({have} already there), "
            f"{cfg.workers} worker(s), camera {','.join(cfg.cameras)} {cfg.width}x{cfg.height} H.264")
        conditions = [SceneConditions.from_names(**v) for v in DEMO_VARIATIONS]
        spec = RecordingSpec(cameras=cfg.cameras, width=cfg.width, height=cfg.height)
        report = collect.collect(
            catalog,
            collect.CollectConfig(
                dataset=ds, episodes=missing, conditions=conditions, seed=cfg.seed + next_seed, workers=cfg.workers, spec=spec
            ),
            on_result=on_episode,
        )
        out.collected, out.successes = len(report.results), report.successes
        say(f"      {out.successes}/{out.collected} strict successes, {report.episodes_per_minute:.1f} episodes/min")
    else:
        say(f"[1/6] collect: '{ds}' already holds {have} episodes (>= {cfg.episodes}); nothing to collect")

    # 2. refine ----------------------------------------------------------------------------
    rep = refine.refine(catalog, ds)
    out.refined = len(rep.computed)
    say(f"[2/6] refine: signals computed for {out.refined} new episode(s) (layer '{schema.SIGNALS_LAYER}'; base untouched)")

    # 3. flag a quality problem -------------------------------------------------------------
    table = catalog.segment_table(ds)
    jerk_col = schema.friendly_column(schema.SIGNALS, schema.SIGNAL_JERK_PEAK)
    jerk = [v for v in table.column(jerk_col).to_pylist() if v is not None] if jerk_col in table.column_names else []
    if len(jerk) >= 10:
        threshold = float(np.quantile(jerk, 0.9))
        where = f"{jerk_col} > {threshold:.6g}"
        out.flagged = refine.flag(catalog, ds, reason="demo: jerkiest 10% of episodes", where=where)
        say(f"[3/6] flag: {len(out.flagged)} episode(s) where {where} -> layer '{schema.QUALITY_LAYER}', left out of selections")
    else:
        say("[3/6] flag: too few episodes to pick a jerk threshold; skipped")

    # 4. curate ----------------------------------------------------------------------------
    success_col = schema.friendly_column(schema.OUTCOME, schema.OUTCOME_SUCCESS)
    idle_col = schema.friendly_column(schema.SIGNALS, schema.SIGNAL_IDLE_FRACTION)
    queries = {"demo-v1": f"{success_col} = true"}
    idle = [v for v in table.column(idle_col).to_pylist() if v is not None] if idle_col in table.column_names else []
    if idle:  # a stricter threshold is a re-run of the query, not a rebuild
        queries["demo-v2"] = f"{success_col} = true and {idle_col} <= {float(np.median(idle)):.4g}"
    for name, where in queries.items():
        try:
            sel = curate.save(catalog, curate.select(catalog, ds, where, holdout=0.1), name, replace=True)
        except Exception as exc:  # noqa: BLE001 - an empty stricter selection is a result, not a crash
            say(f"[4/6] curate {name}: {where!r} -> {exc}")
            continue
        out.selection_sizes[name] = (len(sel.train_ids), len(sel.holdout_ids))
        say(f"[4/6] curate {name}: {where!r} -> {len(sel.train_ids)} train / {len(sel.holdout_ids)} holdout "
            f"(digest {sel.digest[:12]})")

    # 5. stream ----------------------------------------------------------------------------
    if "demo-v1" in out.selection_sizes:
        from roboloop.stream import EpisodeStream, Field

        sel = curate.load(catalog, "demo-v1")
        fields = {
            "state": schema.JOINT_POSITIONS,
            "cube": schema.CUBE_POSE,
            "action": Field(schema.JOINT_TARGETS, window=range(cfg.action_chunk)),
        }
        for cam in cfg.cameras:
            fields[cam] = schema.camera_path(cam)
        stream = EpisodeStream(catalog, sel, fields=fields, rate_hz=cfg.stream_rate_hz, batch_size=64, seed=cfg.seed)
        t0 = time.perf_counter()
        n = 0
        for batch in stream.loader(num_workers=min(2, cfg.workers)):
            if not out.batch_shapes:
                out.batch_shapes = {k: tuple(v.shape) for k, v in batch.items()}
            n += int(batch["state"].shape[0])
        dt = time.perf_counter() - t0
        out.streamed_samples, out.stream_samples_per_s = n, n / dt if dt > 0 else 0.0
        shapes = ", ".join(f"{k} {list(v)}" for k, v in out.batch_shapes.items() if not k.endswith("_index") and k != "timestamp")
        say(f"[5/6] stream: one epoch of 'demo-v1' train at {cfg.stream_rate_hz:g} Hz: {n} samples "
            f"({out.stream_samples_per_s:.0f}/s incl. worker start-up, H.264 decoded on the fly)")
        say(f"      batch: {shapes}")

    # 6. query -----------------------------------------------------------------------------
    say("[6/6] query: success by lighting and table colour")
    lighting_col, table_col = schema.friendly_column(schema.SCENE, "lighting"), schema.friendly_column(schema.SCENE, "table")
    result = catalog.sql(
        f'SELECT "{lighting_col}" AS lighting, "{table_col}" AS table_colour, count(*) AS episodes, '
        f'avg(CAST("{success_col}" AS DOUBLE)) AS success_rate FROM "{ds}" GROUP BY 1, 2 ORDER BY 1, 2'
    )
    for row in result.to_pylist():
        say(f"      {row['lighting']:<7} {row['table_colour']:<6} n={row['episodes']:<3} success {row['success_rate']:.0%}")
    return out
