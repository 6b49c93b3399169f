"""refine: signals computed through catalog queries match numpy on the logged arrays; layers only."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from roboloop import curate, schema
from roboloop.catalog.client import Catalog
from roboloop.predicate import EmptySelectionError
from roboloop.record.episode import EpisodeRecorder
from roboloop.refine import layers as refine

DS = "demo"
STREAMS = {schema.JOINT_POSITIONS: (50.0, 14), schema.JOINT_TARGETS: (50.0, 14)}
WITH_CUBE = {**STREAMS, schema.CUBE_POSE: (20.0, 7)}


# --- independent expectations ----------------------------------------------------------------

def expected(t: np.ndarray, q: np.ndarray, cube: np.ndarray | None) -> dict:
    """Signals written out directly from their definitions (not using refine's helpers)."""
    out = {"duration_s": t[-1] - t[0]}
    left = [0, 1, 2, 3, 4, 5]
    right = [7, 8, 9, 10, 11, 12]
    out["arm_activity_left"] = sum(abs(q[i + 1, j] - q[i, j]) for i in range(len(q) - 1) for j in left)
    out["arm_activity_right"] = sum(abs(q[i + 1, j] - q[i, j]) for i in range(len(q) - 1) for j in right)
    dt = np.median(t[1:] - t[:-1])
    arm = q[:, left + right]
    jerk = np.abs(arm[3:] - 3 * arm[2:-1] + 3 * arm[1:-2] - arm[:-3]) / dt**3
    out["jerk_mean"] = jerk.mean()
    out["jerk_peak"] = jerk.max()
    speeds = np.abs(arm[1:] - arm[:-1]) / (t[1:] - t[:-1])[:, None]
    out["idle_fraction"] = float(np.mean([all(s < refine.IDLE_SPEED for s in row) for row in speeds]))
    for side, idx in (("left", 6), ("right", 13)):
        closes, opens = zigzag(q[:, idx], refine.GRIPPER_EVENT_DELTA)
        out[f"gripper_closes_{side}"] = closes
        out[f"gripper_opens_{side}"] = opens
    if cube is not None:
        out["cube_height_peak"] = cube[:, 2].max()
        out["cube_lift"] = cube[:, 2].max() - cube[0, 2]
    return out


def zigzag(g: np.ndarray, delta: float) -> tuple[int, int]:
    """Count reversals of at least `delta` (a close is a fall from a running high, an open a rise from a low)."""
    closes = opens = 0
    direction = None
    extreme_hi = extreme_lo = g[0]
    for x in g:
        if direction in (None, "up"):
            extreme_hi = max(extreme_hi, x)
            if extreme_hi - x >= delta:
                closes, direction, extreme_lo = closes + 1, "down", x
                continue
        if direction in (None, "down"):
            extreme_lo = min(extreme_lo, x)
            if x - extreme_lo >= delta:
                opens, direction, extreme_hi = opens + 1, "up", x
    return closes, opens


def write_scripted(ws, segment_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An episode with a known shape: still for 1 s, then the right arm moves; one close and one open."""
    n = 150
    t = np.arange(n) / 50.0
    q = np.zeros((n, 14))
    q[:, 6] = 1.0
    q[:, 13] = 1.0
    moving = np.arange(n) >= 50
    q[moving, 7] = np.linspace(0, 1.0, moving.sum())  # right shoulder sweeps 1 rad
    q[60:100, 13] = 0.2  # right gripper closes ...
    q[100:, 13] = 0.9  # ... and opens again
    cube = np.zeros((n, 7))
    cube[:, 2] = 0.02
    cube[80:120, 2] = np.linspace(0.02, 0.3, 40)
    with EpisodeRecorder(ws.segment_path(DS, schema.BASE_LAYER, segment_id), segment_id) as rec:
        rec.log_scalar_columns(schema.JOINT_POSITIONS, t, q)
        rec.log_scalar_columns(schema.CUBE_POSE, t, cube)
        rec.set_properties(schema.EPISODE, {"kind": "demo", "seed": 7})
    return t, q, cube


def signals_of(catalog: Catalog, segment_id: str) -> dict:
    st = catalog.segment_table(DS)
    row = next(r for r in st.to_pylist() if r["segment_id"] == segment_id)
    return {k.split(".", 1)[1]: v for k, v in row.items() if k.startswith("signals.")}


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- tests -----------------------------------------------------------------------------------

def test_gripper_events_hysteresis():
    g = np.array([1.0, 1.0, 0.95, 0.5, 0.0, 0.05, 0.02, 1.0, 0.95, 0.97, 0.2, 0.25])
    assert refine.gripper_events(g) == (2, 1)
    assert refine.gripper_events(np.full(10, 0.5)) == (0, 0)
    assert refine.gripper_events(0.5 + 0.04 * np.sin(np.arange(50))) == (0, 0)  # noise below the delta


def test_signals_match_numpy_and_base_is_untouched(catalog, ws, synthetic_episode):
    eps, paths = {}, []
    for i in range(5):
        ep, path = synthetic_episode(ws, DS, f"ep{i}", duration_s=1.5, seed=i, scalar_streams=WITH_CUBE if i % 2 == 0 else STREAMS)
        eps[ep.segment_id], _ = ep, paths.append(path)
    t, q, cube = write_scripted(ws, "scripted")
    paths.append(ws.segment_path(DS, schema.BASE_LAYER, "scripted"))
    catalog.register_files(DS, paths)
    before = {p: sha(p) for p in paths}

    report = refine.refine(catalog, DS, batch_size=2)  # several batches
    assert sorted(report.computed) == sorted([*eps, "scripted"])

    for seg, ep in eps.items():
        t_e, q_e = ep.streams[schema.JOINT_POSITIONS]
        cube_e = ep.streams[schema.CUBE_POSE][1] if schema.CUBE_POSE in ep.streams else None
        got = signals_of(catalog, seg)
        want = expected(t_e, q_e, cube_e)
        for name, value in want.items():
            assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-12), (seg, name)
        if cube_e is None:
            assert got["cube_height_peak"] is None and got["cube_lift"] is None
        assert got["version"] == refine.SIGNALS_VERSION and got["refined_at"]

    got = signals_of(catalog, "scripted")
    want = expected(t, q, cube)
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
    # the shape we built is what the signals say
    assert got["arm_activity_left"] == 0.0
    assert got["arm_activity_right"] == pytest.approx(1.0)
    assert got["idle_fraction"] == pytest.approx(50 / 149)  # steps 0..50 are still (the sweep starts at 0)
    assert (got["gripper_closes_right"], got["gripper_opens_right"]) == (1, 1)
    assert (got["gripper_closes_left"], got["gripper_opens_left"]) == (0, 0)
    assert got["cube_height_peak"] == pytest.approx(0.3)
    assert got["cube_lift"] == pytest.approx(0.28)
    assert got["duration_s"] == pytest.approx(149 / 50)

    # raw recordings are byte-identical, and nothing new appeared in the base folder
    assert {p: sha(p) for p in paths} == before
    assert sorted(ws.segment_files(DS, schema.BASE_LAYER)) == sorted(paths)
    assert len(ws.segment_files(DS, schema.SIGNALS_LAYER)) == len(paths)
    # base-layer properties are intact
    row = next(r for r in catalog.segment_table(DS).to_pylist() if r["segment_id"] == "scripted")
    assert row["episode.seed"] == 7 and row["episode.kind"] == "demo"
    assert sorted(row["layers"]) == ["base", "signals"]

    # --all recomputes (and still never touches base)
    again = refine.refine(catalog, DS, all_segments=True)
    assert len(again.computed) == len(paths)
    assert {p: sha(p) for p in paths} == before


def test_new_only_by_default_all_recomputes_and_other_signals_are_kept(catalog, ws, synthetic_episode):
    paths = [synthetic_episode(ws, DS, f"ep{i}", duration_s=0.5, seed=i)[1] for i in range(3)]
    catalog.register_files(DS, paths)
    first = refine.refine(catalog, DS, signals=["duration_s"])
    assert first.computed == ["ep0", "ep1", "ep2"]
    assert signals_of(catalog, "ep0")["duration_s"] == pytest.approx(0.48)
    assert "signals.jerk_peak" not in catalog.segment_table(DS).column_names

    _, p = synthetic_episode(ws, DS, "ep3", duration_s=0.5, seed=3)
    catalog.register_files(DS, [p])
    second = refine.refine(catalog, DS)  # ep0..ep2 never had the other built-ins (only duration_s was named): computed
    assert second.computed == ["ep0", "ep1", "ep2", "ep3"] and second.skipped == 0
    assert signals_of(catalog, "ep0")["jerk_peak"] > 0
    assert refine.refine(catalog, DS).computed == []

    full = refine.refine(catalog, DS, all_segments=True)
    assert full.computed == ["ep0", "ep1", "ep2", "ep3"]
    assert signals_of(catalog, "ep0")["jerk_peak"] > 0  # REPLACE re-registration shows the new file's values

    # recomputing one segment with a subset writes a new layer version that keeps the other signals' values
    before = signals_of(catalog, "ep1")
    refine.refine(catalog, DS, segment_ids=["ep1"], signals=["duration_s"])
    after = signals_of(catalog, "ep1")
    assert after["refined_at"] >= before["refined_at"]
    assert {k: v for k, v in after.items() if k != "refined_at"} == {k: v for k, v in before.items() if k != "refined_at"}
    assert sorted(p.name for p in ws.segment_files(DS, schema.SIGNALS_LAYER)) == ["ep0.2.rrd", "ep1.3.rrd", "ep2.2.rrd", "ep3.1.rrd"]

    with pytest.raises(refine.RefineError, match="no segment"):
        refine.refine(catalog, DS, segment_ids=["nope"])
    with pytest.raises(refine.UnknownSignalError, match="unknown signal"):
        refine.refine(catalog, DS, signals=["nope"])


def test_signal_registry_is_extensible(catalog, ws, synthetic_episode):
    @refine.signal("left_gripper_travel_test")
    def _travel(ep):
        q = ep.values(schema.JOINT_POSITIONS)
        return float(np.abs(np.diff(q[:, 6])).sum())

    try:
        ep, p = synthetic_episode(ws, DS, "x0", duration_s=0.5)
        catalog.register_files(DS, [p])
        refine.refine(catalog, DS)
        q = ep.streams[schema.JOINT_POSITIONS][1]
        assert signals_of(catalog, "x0")["left_gripper_travel_test"] == pytest.approx(np.abs(np.diff(q[:, 6])).sum())
    finally:
        refine.SIGNALS.pop("left_gripper_travel_test", None)


def test_flag_excludes_from_selections_and_unflag_restores(catalog, ws, synthetic_episode):
    paths = [
        synthetic_episode(ws, DS, f"ep{i}", duration_s=0.5, seed=i, properties={"scene": {"region": "near" if i < 4 else "far"}})[1]
        for i in range(6)
    ]
    catalog.register_files(DS, paths)
    before = {p: sha(p) for p in paths}

    flagged = refine.flag(catalog, DS, where="scene.region = 'far'", reason="camera glitch")
    assert flagged == ["ep4", "ep5"]
    refine.flag(catalog, DS, segment_ids=["ep0"], reason="operator error")
    assert refine.flagged_ids(catalog, DS) == ["ep0", "ep4", "ep5"]
    row = next(r for r in catalog.segment_table(DS).to_pylist() if r["segment_id"] == "ep0")
    assert row["quality.flagged"] is True and row["quality.reason"] == "operator error" and row["quality.flagged_at"]

    assert curate.select(catalog, DS).segment_ids == ("ep1", "ep2", "ep3")
    assert curate.select(catalog, DS, include_flagged=True).segment_ids == tuple(f"ep{i}" for i in range(6))
    with pytest.raises(EmptySelectionError, match="2 flagged"):
        curate.select(catalog, DS, where="scene.region = 'far'")

    # unflag by predicate: only flagged matches change
    assert refine.unflag(catalog, DS, where="scene.region = 'far'", reason="false alarm") == ["ep4", "ep5"]
    assert refine.unflag(catalog, DS, segment_ids=["ep1"]) == []  # was never flagged
    assert refine.flagged_ids(catalog, DS) == ["ep0"]
    row = next(r for r in catalog.segment_table(DS).to_pylist() if r["segment_id"] == "ep4")
    assert row["quality.flagged"] is False and row["quality.reason"] == "unflagged: false alarm"
    assert curate.select(catalog, DS).segment_ids == ("ep1", "ep2", "ep3", "ep4", "ep5")

    with pytest.raises(refine.RefineError, match="reason"):
        refine.flag(catalog, DS, segment_ids=["ep1"], reason=" ")
    with pytest.raises(refine.RefineError, match="exactly one"):
        refine.flag(catalog, DS, reason="x")
    assert {p: sha(p) for p in paths} == before

    # layers survive a restart (restored from the workspace)
    catalog.close()
    with Catalog(ws, url="") as again:
        assert refine.flagged_ids(again, DS) == ["ep0"]
        assert curate.select(again, DS).segment_ids == ("ep1", "ep2", "ep3", "ep4", "ep5")
