"""Collection on Ray actors (a local Ray instance): same episodes as local workers, registered as they arrive."""

from __future__ import annotations

import glob
import tempfile

import numpy as np
import pytest

from roboloop import schema
from roboloop.catalog.client import Catalog
from roboloop.collect.run import CollectConfig, collect
from roboloop.envs.aloha.recording import RecordingSpec
from roboloop.workspace import Workspace

pytestmark = pytest.mark.sim
ray = pytest.importorskip("ray")

SPEC = RecordingSpec(cameras=("top",), width=64, height=48, camera_hz=25, scene_hz=10)
STEPS = 20
SCRATCH = f"{tempfile.gettempdir()}/roboloop-ray-*"


def _joints(cat: Catalog, dataset: str, segment: str) -> np.ndarray:
    t = cat.dataset(dataset).filter_segments([segment]).filter_contents([schema.JOINT_POSITIONS]).reader(index=schema.TIMELINE).to_arrow_table()
    return np.array(t.column(f"{schema.JOINT_POSITIONS}:{schema.SCALARS_COMPONENT}").to_pylist())


def test_ray_executor_records_the_same_episodes_as_local_workers(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ws = Workspace(tmp_path / "ws")
    with Catalog(ws, url="") as cat:
        arrived: list[tuple[str, int]] = []

        def on_result(result) -> None:  # called once the episode is registered
            arrived.append((result.segment_id, cat.segment_table("viaray").num_rows))

        before = set(glob.glob(SCRATCH))
        cfg = CollectConfig(dataset="viaray", episodes=3, seed=7, workers=2, spec=SPEC, steps=STEPS, executor="ray")
        rep = collect(cat, cfg, on_result=on_result)
        assert not ray.is_initialized()  # the local instance it started is shut down
        assert set(glob.glob(SCRATCH)) <= before  # the actors removed their scratch folders
        assert sorted(r.seed for r in rep.results) == [7, 8, 9]
        assert [n for _, n in arrived] == [1, 2, 3]  # each one registered as it arrived
        for r in rep.results:
            assert r.path == ws.segment_path("viaray", schema.BASE_LAYER, r.segment_id) and r.path.is_file()
        local = collect(cat, CollectConfig(dataset="vialocal", episodes=3, seed=7, workers=1, spec=SPEC, steps=STEPS))
        by_seed = {r.seed: r for r in local.results}
        rows = {r["episode.seed"]: r for r in cat.segment_table("viaray").to_pylist()}
        for r in rep.results:
            other = by_seed[r.seed]
            assert r.outcome == other.outcome
            np.testing.assert_array_equal(_joints(cat, "viaray", r.segment_id), _joints(cat, "vialocal", other.segment_id))
            assert rows[r.seed]["episode.cameras"] == "top"
    with Catalog(ws, url="") as again:  # and they survive a restart like any episode
        assert again.segment_table("viaray").num_rows == 3


def test_executor_is_validated():
    with pytest.raises(ValueError, match="executor"):
        CollectConfig(executor="slurm")
    with pytest.raises(ValueError, match="ray_address"):
        CollectConfig(ray_address="auto")
    cfg = CollectConfig(executor="ray", ray_address="auto", workers=4)
    assert CollectConfig.from_dict(cfg.to_dict()) == cfg
