"""The signal interface: a user's signal by import path and by entry point, versions, and ALOHA-only signals
skipping (with one reason per signal) on another robot's episodes."""

from __future__ import annotations

import logging
import sys
import textwrap

import numpy as np
import pytest

from roboloop import schema
from roboloop.catalog.client import Catalog
from roboloop.record.episode import EpisodeRecorder
from roboloop.refine import layers as refine
from roboloop.refine import signals
from tests.reliability.test_hostile_inputs import _invoke

DS = "robot6"

USER_SIGNAL = '''
import numpy as np
from roboloop.refine import signal


@signal("reach", version={version}, streams=["/robot/joint_positions"])
def reach(ep):
    """Joint-space reach of the episode."""
    q = ep.values("/robot/joint_positions")
    if {version} == 1:
        return {{"max": float(np.abs(q).max()), "span": float(np.ptp(q[:, 0]))}}
    return {{"max": float(np.abs(q).max() * 2)}}


def not_a_signal(ep):
    return 1.0
'''


def signals_of(catalog, segment_id: str, group: str = schema.SIGNALS) -> dict:
    row = next(r for r in catalog.segment_table(DS).to_pylist() if r["segment_id"] == segment_id)
    return {k.split(".", 1)[1]: v for k, v in row.items() if k.startswith(group + ".")}


def record_six_joint(ws, segment_id: str, seed: int) -> np.ndarray:
    """An episode of a 6-joint arm (no cube, no camera), recorded with EpisodeRecorder directly."""
    rng = np.random.default_rng(seed)
    t = np.arange(40) / 30.0
    q = np.cumsum(rng.normal(size=(40, 6)), axis=0) * 0.05
    with EpisodeRecorder(ws.segment_path(DS, schema.BASE_LAYER, segment_id), segment_id) as rec:
        rec.log_scalar_columns(schema.JOINT_POSITIONS, t, q)
        rec.set_properties(schema.EPISODE, {"kind": "demo", "seed": seed})
    return q


def write_module(folder, name: str, version: int) -> None:
    (folder / f"{name}.py").write_text(USER_SIGNAL.format(version=version))


@pytest.fixture
def user_modules(tmp_path, monkeypatch):
    """A folder on sys.path for the user's signal modules; the registry is restored afterwards."""
    folder = tmp_path / "usercode"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    before = dict(signals.SIGNALS)
    yield folder
    signals.SIGNALS.clear()
    signals.SIGNALS.update(before)
    for mod in [m for m in sys.modules if m.startswith("roboloop_test_")]:
        del sys.modules[mod]


def test_aloha_signals_skip_on_a_six_joint_robot_with_one_reason_each(catalog, ws):
    qs = {f"ep{i}": record_six_joint(ws, f"ep{i}", i) for i in range(3)}
    catalog.register_files(DS, [ws.segment_path(DS, schema.BASE_LAYER, s) for s in qs])

    code, out = _invoke(ws.root, "refine", "-d", DS)
    assert code == 0, out
    joint_signals = ["arm_activity_left", "arm_activity_right", "jerk_mean", "jerk_peak", "idle_fraction",
                     "gripper_closes_left", "gripper_opens_left", "gripper_closes_right", "gripper_opens_right"]
    lines = out.splitlines()
    for name in joint_signals:
        hits = [ln for ln in lines if ln.strip().startswith(f"{name}:")]
        assert hits == [f"  {name}: skipped on 3 episode(s): needs ALOHA's 14 joints in /robot/joint_positions; the episode has 6"]
    for name in ("cube_height_peak", "cube_lift"):
        hits = [ln for ln in lines if ln.strip().startswith(f"{name}:")]
        assert hits == [f"  {name}: skipped on 3 episode(s): needs the cube pose /state/cube_pose; the episode has no such stream"]
    assert "sharpness" not in out  # image signals run only when named
    catalog.close()  # the command wrote the layers through its own catalog: read them back after a restart
    with Catalog(ws, url="") as again:
        for seg in qs:
            got = signals_of(again, seg)
            assert got["duration_s"] == pytest.approx(39 / 30)
            assert all(got.get(name) is None for name in joint_signals)
            # a skipped signal is not done (no version), but its skip is recorded: a plain re-run has nothing to do
            assert "jerk_peak" not in signals_of(again, seg, schema.SIGNAL_VERSIONS)
            assert signals_of(again, seg, schema.SIGNAL_SKIPS)["jerk_peak"] == "1"
        rerun = refine.refine(again, DS)
        assert rerun.computed == [] and rerun.skipped == 3 and rerun.skipped_signals["jerk_peak"] == 3
    code, out = _invoke(ws.root, "refine", "-d", DS)
    assert code == 0 and "every segment already has signals (3)" in out
    assert "  jerk_peak: skipped earlier on 3 of them (retry with --signal jerk_peak, or bump its version)" in out.splitlines()
    # named, it is retried (and skips again)
    code, out = _invoke(ws.root, "refine", "-d", DS, "--signal", "jerk_peak")
    assert code == 0 and "signals for 3 segment(s)" in out
    assert "  jerk_peak: skipped on 3 episode(s): needs ALOHA's 14 joints in /robot/joint_positions; the episode has 6" in out


def test_user_signal_by_import_path_and_version_change(catalog, ws, user_modules):
    qs = {f"ep{i}": record_six_joint(ws, f"ep{i}", i) for i in range(3)}
    catalog.register_files(DS, [ws.segment_path(DS, schema.BASE_LAYER, s) for s in qs])
    refine.refine(catalog, DS)  # the built-ins first
    write_module(user_modules, "roboloop_test_reach", 1)

    first = refine.refine(catalog, DS, signals=["roboloop_test_reach:reach"])
    assert first.computed == sorted(qs) and first.signals == ["reach"]
    for seg, q in qs.items():
        got = signals_of(catalog, seg)
        assert got["reach_max"] == pytest.approx(np.abs(q).max())
        assert got["reach_span"] == pytest.approx(q[:, 0].max() - q[:, 0].min())
        assert got["duration_s"] == pytest.approx(39 / 30)  # kept from the first run
        assert signals_of(catalog, seg, schema.SIGNAL_VERSIONS)["reach"] == "1"

    # unchanged: nothing to do, on the command line too
    assert refine.refine(catalog, DS, signals=["roboloop_test_reach:reach"]).computed == []
    code, out = _invoke(ws.root, "refine", "-d", DS, "--signal", "roboloop_test_reach:reach")
    assert code == 0 and "every segment already has reach at their current version(s) (3)" in out

    # a new version of the function: recomputed everywhere, as a new layer version; other signals kept
    files_before = {p.name for p in ws.segment_files(DS, schema.SIGNALS_LAYER)}
    del sys.modules["roboloop_test_reach"]
    write_module(user_modules, "roboloop_test_reach", 2)
    second = refine.refine(catalog, DS, signals=["roboloop_test_reach:reach"])
    assert second.computed == sorted(qs)
    assert {p.name for p in ws.segment_files(DS, schema.SIGNALS_LAYER)}.isdisjoint(files_before)
    for seg, q in qs.items():
        got = signals_of(catalog, seg)
        assert got["reach_max"] == pytest.approx(2 * np.abs(q).max())
        assert got.get("reach_span") is None  # v2 no longer computes it: gone, not stale
        assert got["duration_s"] == pytest.approx(39 / 30)
        assert signals_of(catalog, seg, schema.SIGNAL_VERSIONS)["reach"] == "2"


def test_bad_import_paths_say_what_is_wrong(ws, user_modules):
    write_module(user_modules, "roboloop_test_bad", 1)
    (user_modules / "roboloop_test_broken.py").write_text("raise RuntimeError('boom')\n")
    (user_modules / "roboloop_test_needs.py").write_text("import roboloop_test_not_installed\n")
    (user_modules / "roboloop_test_clash.py").write_text(
        "from roboloop.refine import signal\n\n@signal('jerk_peak')\ndef mine(ep):\n    return 1.0\n")
    cases = {
        "roboloop_test_nope:reach": "cannot import module 'roboloop_test_nope'",
        "roboloop_test_bad:missing": "module 'roboloop_test_bad' has no attribute 'missing'; its signals: roboloop_test_bad:reach",
        "roboloop_test_bad:not_a_signal": "roboloop_test_bad.not_a_signal is not a signal; declare it with @roboloop.refine.signal",
        "roboloop_test_broken:x": "importing module 'roboloop_test_broken' failed: RuntimeError: boom",
        "roboloop_test_needs:x": ("importing module 'roboloop_test_needs' failed: ModuleNotFoundError: No module named "
                                  "'roboloop_test_not_installed'"),
        "roboloop_test_bad:": "must look like 'package.module:function'",
        "roboloop_test_clash:mine": "signal name 'jerk_peak' is already taken by roboloop.refine.layers:jerk_peak",
    }
    for spec, message in cases.items():
        with pytest.raises(signals.SignalImportError) as err:
            signals.resolve_signals([spec])
        assert message in str(err.value), spec
        assert ("PYTHONPATH" in str(err.value)) == (spec == "roboloop_test_nope:reach"), spec
    assert signals.SIGNALS["jerk_peak"].fn.__module__ == "roboloop.refine.layers"  # the built-in is still the one registered
    code, out = _invoke(ws.root, "refine", "-d", DS, "--signal", "roboloop_test_nope:reach")
    assert code == 1 and "Traceback" not in out
    assert "signal 'roboloop_test_nope:reach': cannot import module 'roboloop_test_nope'" in out
    with pytest.raises(signals.UnknownSignalError, match="package.module:function"):
        signals.resolve_signals(["nope"])


def test_entry_point_signals_are_found_and_run_by_default(catalog, ws, user_modules):
    (user_modules / "roboloop_test_plugin.py").write_text(textwrap.dedent('''
        from roboloop.refine import signal

        @signal("first_joint_mean", version="2024a")
        def first_joint_mean(ep):
            """Mean of joint 0."""
            return float(ep.values("/robot/joint_positions")[:, 0].mean())
    '''))
    dist = user_modules / "roboloop_test_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: roboloop-test-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[roboloop.signals]\nfirst_joint_mean = roboloop_test_plugin:first_joint_mean\n")

    q = record_six_joint(ws, "ep0", 0)
    catalog.register_files(DS, [ws.segment_path(DS, schema.BASE_LAYER, "ep0")])
    report = refine.refine(catalog, DS)
    assert "first_joint_mean" in report.signals
    assert signals_of(catalog, "ep0")["first_joint_mean"] == pytest.approx(q[:, 0].mean())
    assert signals_of(catalog, "ep0", schema.SIGNAL_VERSIONS)["first_joint_mean"] == "2024a"
    assert [s.name for s in signals.resolve_signals(["first_joint_mean"])] == ["first_joint_mean"]


SKIPPING_SIGNAL = '''
from roboloop.refine import SkipSignal, signal


@signal("firstq", version=1, streams=["/robot/joint_positions"])
def firstq(ep):
    q = ep.values("/robot/joint_positions")
    if {broken}:
        raise SkipSignal("my bug")
    return float(q[0, 0])
'''


def test_a_named_signal_first_then_plain_refine_computes_the_builtins_and_a_skip_is_retried(catalog, ws, user_modules):
    qs = {f"ep{i}": record_six_joint(ws, f"ep{i}", i) for i in range(2)}
    catalog.register_files(DS, [ws.segment_path(DS, schema.BASE_LAYER, s) for s in qs])
    (user_modules / "roboloop_test_firstq.py").write_text(SKIPPING_SIGNAL.format(broken=True))
    first = refine.refine(catalog, DS, signals=["roboloop_test_firstq:firstq"])
    assert first.computed == sorted(qs) and first.not_applicable["firstq"] == ("my bug", 2)
    for seg in qs:
        assert "firstq" not in signals_of(catalog, seg, schema.SIGNAL_VERSIONS)
        assert "duration_s" not in signals_of(catalog, seg)
    # the built-ins were never computed on these segments: a plain refine computes them
    plain = refine.refine(catalog, DS)
    assert plain.computed == sorted(qs)
    for seg in qs:
        assert signals_of(catalog, seg)["duration_s"] == pytest.approx(39 / 30)
    assert refine.refine(catalog, DS).computed == []
    # the user fixes the function without bumping its version: the skipped segments are retried
    del sys.modules["roboloop_test_firstq"]
    (user_modules / "roboloop_test_firstq.py").write_text(SKIPPING_SIGNAL.format(broken=False))
    fixed = refine.refine(catalog, DS, signals=["roboloop_test_firstq:firstq"])
    assert fixed.computed == sorted(qs) and not fixed.not_applicable
    for seg, q in qs.items():
        got = signals_of(catalog, seg)
        assert got["firstq"] == pytest.approx(q[0, 0]) and got["duration_s"] == pytest.approx(39 / 30)
        assert signals_of(catalog, seg, schema.SIGNAL_VERSIONS)["firstq"] == "1"
        assert "firstq" not in signals_of(catalog, seg, schema.SIGNAL_SKIPS)
    assert refine.refine(catalog, DS, signals=["roboloop_test_firstq:firstq"]).computed == []


RAISING_SIGNAL = '''
from roboloop.refine import signal


def helper(q):
    raise ValueError("my bug")


@signal("boom", streams=["/robot/joint_positions"])
def boom(ep):
    return helper(ep.values("/robot/joint_positions"))
'''


def test_a_signal_that_raises_names_its_line_and_shows_its_traceback_with_v(catalog, ws, user_modules):
    record_six_joint(ws, "ep0", 0)
    catalog.register_files(DS, [ws.segment_path(DS, schema.BASE_LAYER, "ep0")])
    path = user_modules / "roboloop_test_boom.py"
    path.write_text(RAISING_SIGNAL)
    catalog.close()
    code, out = _invoke(ws.root, "refine", "-d", DS, "--signal", "roboloop_test_boom:boom")
    assert code == 1
    assert (f"error: signal 'boom' failed on segment 'ep0': ValueError: my bug (at {path}:6 in helper; roboloop -v shows "
            f"the traceback)") in " ".join(out.split("\n"))
    assert "Traceback" not in out
    code, out = _invoke(ws.root, "-v", "refine", "-d", DS, "--signal", "roboloop_test_boom:boom")
    assert code == 1
    tb = out[out.index("Traceback"):out.index("error:")]
    # the user's frames, from the signal function down, and none of roboloop's
    assert f'File "{path}", line 11, in boom' in tb and f'File "{path}", line 6, in helper' in tb
    assert 'raise ValueError("my bug")' in tb and "roboloop/refine" not in tb
    # -v turns on roboloop's debug lines, not the query engine's (hundreds of plan lines per query)
    assert logging.getLogger("roboloop.refine").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("datafusion.execution").isEnabledFor(logging.DEBUG)
    logging.getLogger("roboloop").setLevel(logging.NOTSET)  # as a run without -v leaves it
