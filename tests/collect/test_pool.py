"""Worker pools reused across collects (`roboloop.collect.pool`): same episodes as a fresh simulator, one set of
processes for the whole block, and nothing left running or half-written after an error.

Real simulator and catalog; short episodes without cameras.
"""

from __future__ import annotations

import os
from operator import add, mul

import numpy as np
import psutil
import pytest

from roboloop import schema
from roboloop.collect.pool import Context, WorkerPool, abandon, active_pool, reuse_workers
from roboloop.collect.run import CollectConfig, RecordingSpec, collect
from roboloop.envs.aloha import SceneConditions
from tests.fixtures.policies import HoldStill

pytestmark = pytest.mark.sim

STEPS = 40
SPEC = RecordingSpec(cameras=(), scene_hz=10)
CONDITIONS = (SceneConditions.from_names(yaw="any"), SceneConditions.from_names(lighting="dim"))


class CrashesAtStep:
    """A policy that fails mid-episode (importable by name, so spawned workers can build it)."""

    policy_id = "crashes-v0"

    def __init__(self, sim=None) -> None:
        pass

    def reset(self) -> None:
        pass

    def action(self, step, observation):
        if step == 5:
            raise RuntimeError("policy crashed at step 5")
        return observation.joint_positions


def _config(dataset: str, workers: int, **kw) -> CollectConfig:
    return CollectConfig(dataset=dataset, episodes=3, seed=7, conditions=CONDITIONS, workers=workers, spec=SPEC, steps=STEPS, **kw)


def _workers() -> set[int]:
    """Pids of this process's spawned worker processes alive now."""
    out = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE and any("spawn_main" in a for a in p.cmdline()):
                out.add(p.pid)
        except psutil.Error:
            pass
    return out


def _recorded(catalog, report) -> dict[int, tuple]:
    """seed -> (outcome, joint positions, cube poses) as the catalog serves them."""
    out = {}
    ds = catalog.dataset(report.dataset)
    for r in report.results:
        arrays = []
        for entity in (schema.JOINT_POSITIONS, schema.CUBE_POSE):
            t = ds.filter_segments([r.segment_id]).filter_contents([entity]).reader(index=schema.TIMELINE).to_arrow_table()
            arrays.append(np.array(t.column(f"{entity}:{schema.SCALARS_COMPONENT}").to_pylist()))
        out[r.seed] = (r.outcome, *arrays)
    return out


def _assert_same(a: dict[int, tuple], b: dict[int, tuple]) -> None:
    assert sorted(a) == sorted(b) == [7, 8, 9]
    for seed in a:
        assert a[seed][0] == b[seed][0]
        for x, y in zip(a[seed][1:], b[seed][1:]):
            assert x.shape == y.shape and x.shape[0] == STEPS
            np.testing.assert_array_equal(x, y)  # bit-identical


def test_reused_pool_records_what_fresh_simulators_record_and_stops_on_error(ws, catalog):
    reference = _recorded(catalog, collect(catalog, _config("fresh", workers=1)))  # a new simulator in this process
    assert _workers() == set()
    with pytest.raises(RuntimeError, match="policy crashed at step 5"):
        with reuse_workers(2) as pool:
            assert active_pool(2) is pool and active_pool(3) is None
            first = collect(catalog, _config("pooled", workers=2))
            started = _workers()
            assert len(started) == 2
            # another policy on the same workers and simulators, then the demonstrator again
            rollouts = collect(catalog, _config("pooledevals", workers=2, kind=schema.KIND_ROLLOUT), policy_factory=HoldStill)
            again = collect(catalog, _config("pooledagain", workers=2))
            assert _workers() == started  # no process was started for the later collects
            with reuse_workers(2) as inner:  # a nested block reuses the open pool
                assert inner is pool
            collect(catalog, _config("crashing", workers=2, kind=schema.KIND_ROLLOUT), policy_factory=CrashesAtStep)
    assert pool.closed and active_pool(2) is None
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in started)
    _assert_same(_recorded(catalog, first), reference)
    _assert_same(_recorded(catalog, again), reference)
    assert [r.outcome[schema.OUTCOME_SUCCESS] for r in rollouts.results] == [False] * 3
    # the crashed collect left no half-written or unpublished file behind
    assert ws.stale_temp_files() == []
    assert "crashing" not in ws.datasets() or list(ws.segment_files("crashing", schema.BASE_LAYER)) == []


def test_contexts_are_built_once_per_worker_and_abandon_cancels_queued_jobs():
    with WorkerPool(1) as pool:
        token = Context.of(os.urandom, 16)  # built once in the worker: every job naming it sees the same bytes
        first, second = (pool.submit(token, add, b"").result() for _ in range(2))
        assert len(first) == 16 and first == second
        assert pool.submit(Context.of(os.urandom, 16), add, b"").result() == first  # equal arguments, one context
        assert len(pool.submit(Context.of(os.urandom, 17), add, b"").result()) == 17
        ctx = Context.of(int, "21")
        assert [pool.submit(ctx, mul, k).result() for k in (1, 2)] == [21, 42]
        jobs = [pool.submit(ctx, mul, k) for k in range(200)]
        discarded = []
        abandon(jobs, discarded.append)
        assert all(f.done() for f in jobs)
        assert any(f.cancelled() for f in jobs)  # queued ones never ran
        assert sorted(discarded) == sorted(f.result() for f in jobs if not f.cancelled())
    assert pool.closed
    with pytest.raises(RuntimeError, match="closed"):
        pool.submit(ctx, mul, 1)
