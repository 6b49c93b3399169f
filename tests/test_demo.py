"""End to end: `run_demo` drives the real simulator, recorder, catalog, refine, curate and loader."""

from __future__ import annotations

import math

import pytest

from roboloop import curate, schema
from roboloop.catalog import Catalog
from roboloop.demo import DemoConfig, run_demo

pytestmark = [pytest.mark.sim, pytest.mark.slow]


def test_demo_runs_the_loop_and_reruns_incrementally(ws):
    cfg = DemoConfig(episodes=4, workers=1, cameras=("top",), width=64, height=48, stream_rate_hz=10.0)
    lines: list[str] = []
    with Catalog(ws, url="") as cat:
        result = run_demo(cat, cfg, say=lines.append)
        assert result.collected == 4
        assert result.successes == 4  # the scripted demonstrator under the four demo variations
        assert result.refined == 4
        table = cat.segment_table(cfg.dataset)
        assert table.num_rows == 4
        assert {"signals.jerk_peak", "outcome.success", "scene.lighting"} <= set(table.column_names)
        v1 = curate.load(cat, "demo-v1")
        assert sorted(v1.train_ids + v1.holdout_ids) == sorted(table.column("segment_id").to_pylist())
        # The streamed epoch covers every grid point of every training episode exactly once:
        # each episode spans [0, (steps - 1) / 50 Hz], sampled at 10 Hz from its start.
        steps = table.column("outcome.steps").to_pylist()
        by_id = dict(zip(table.column("segment_id").to_pylist(), steps))
        expected = sum(math.floor((by_id[s] - 1) / schema.CONTROL_HZ * cfg.stream_rate_hz + 1e-9) + 1 for s in v1.train_ids)
        assert result.streamed_samples == expected
        assert result.batch_shapes["top"][1:] == (3, 48, 64)
        assert result.batch_shapes["action"][1:] == (cfg.action_chunk, 14)

    with Catalog(ws, url="") as cat:  # a restart restores everything; a re-run collects nothing new
        again = run_demo(cat, cfg, say=lines.append)
        assert again.collected == 0 and again.refined == 0
        assert cat.segment_table(cfg.dataset).num_rows == 4
    assert any("success" in line for line in lines)
